// Package tracing sets up OpenTelemetry for a kit service: the process-wide
// W3C propagator, and one tracer provider per service that exports spans
// with the OTLP/HTTP exporter when the standard OTEL_EXPORTER_OTLP_*
// variables name an endpoint, and exports nothing otherwise.
//
// Without an endpoint the provider still mints trace and span ids (the
// logs carry them and the kit injects them downstream) but records no root
// span: nothing would read it. A sampled incoming parent is honoured either
// way, so a trace sampled upstream stays sampled downstream.
package tracing

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"sync"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
)

// The standard OpenTelemetry variables the kit reads through its getenv
// (rather than the exporter reading os.Getenv itself, so a service run
// in-process by a test gets its own). The exporter still reads the others
// it knows (OTEL_EXPORTER_OTLP_HEADERS, _TIMEOUT, _COMPRESSION, the
// certificates) from the process environment.
const (
	envEndpoint        = "OTEL_EXPORTER_OTLP_ENDPOINT"
	envTracesEndpoint  = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
	envProtocol        = "OTEL_EXPORTER_OTLP_PROTOCOL"
	envTracesProtocol  = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
	envServiceName     = "OTEL_SERVICE_NAME"
	envTracesExporter  = "OTEL_TRACES_EXPORTER"
	protocolHTTPProto  = "http/protobuf"
	tracesPathOnBase   = "/v1/traces"
	exporterNone       = "none"
	exporterOTLP       = "otlp"
	defaultServiceName = "unknown_service"
)

var installOnce sync.Once

// Install sets the global text map propagator to W3C trace context plus
// baggage, which the messaging drivers and outgoing HTTP calls use. It is
// idempotent and safe for concurrent use. Providers are per service
// (NewProvider), never global, so two services in one test process keep
// their spans apart.
func Install() {
	installOnce.Do(func() {
		otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(
			propagation.TraceContext{}, propagation.Baggage{},
		))
	})
}

// Resource names the service in its spans.
type Resource struct {
	// Service is service.name unless OTEL_SERVICE_NAME overrides it.
	Service string
	// App is service.namespace: the MicroserviceApp.
	App string
	// PodName and PodNamespace are k8s.pod.name and k8s.namespace.name.
	PodName, PodNamespace string
}

// NewProvider returns the service's tracer provider and whether it exports.
// It exports over OTLP/HTTP (protobuf) when getenv names
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (used as is) or
// OTEL_EXPORTER_OTLP_ENDPOINT (with /v1/traces appended), unless
// OTEL_TRACES_EXPORTER is "none"; a protocol other than http/protobuf, an
// exporter other than otlp or none, or a malformed endpoint is an error
// naming the variable. The caller shuts the provider down, which flushes
// the spans not yet exported.
func NewProvider(ctx context.Context, getenv func(string) string, res Resource) (*sdktrace.TracerProvider, bool, error) {
	endpoint, err := tracesEndpoint(getenv)
	if err != nil {
		return nil, false, err
	}
	if endpoint == "" {
		return sdktrace.NewTracerProvider(
			sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.NeverSample())),
		), false, nil
	}
	exp, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(endpoint))
	if err != nil {
		return nil, false, fmt.Errorf("tracing: create the OTLP exporter for %s: %w", endpoint, err)
	}
	name := getenv(envServiceName)
	if name == "" {
		name = res.Service
	}
	if name == "" {
		name = defaultServiceName
	}
	attrs := []attribute.KeyValue{semconv.ServiceName(name)}
	for _, a := range []struct {
		kv  func(string) attribute.KeyValue
		val string
	}{{semconv.ServiceNamespace, res.App}, {semconv.K8SPodName, res.PodName}, {semconv.K8SNamespaceName, res.PodNamespace}} {
		if a.val != "" {
			attrs = append(attrs, a.kv(a.val))
		}
	}
	r, err := resource.Merge(resource.Default(), resource.NewSchemaless(attrs...))
	if err != nil {
		return nil, false, fmt.Errorf("tracing: build the resource: %w", err)
	}
	// The SDK's default sampler, ParentBased(AlwaysSample), unless
	// OTEL_TRACES_SAMPLER in the process environment says otherwise.
	return sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(r)), true, nil
}

// tracesEndpoint returns the URL to export to, or "" for no export.
func tracesEndpoint(getenv func(string) string) (string, error) {
	switch v := getenv(envTracesExporter); v {
	case "", exporterOTLP:
	case exporterNone:
		return "", nil
	default:
		return "", fmt.Errorf("config: invalid %s %q: want %q or %q", envTracesExporter, v, exporterOTLP, exporterNone)
	}
	for _, name := range []string{envTracesProtocol, envProtocol} {
		if v := getenv(name); v != "" && v != protocolHTTPProto {
			return "", fmt.Errorf("config: invalid %s %q: the kit exports traces over %q only", name, v, protocolHTTPProto)
		}
	}
	for _, name := range []string{envTracesEndpoint, envEndpoint} {
		v := getenv(name)
		if v == "" {
			continue
		}
		if u, err := url.Parse(v); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return "", fmt.Errorf("config: invalid %s %q: want an http(s) URL", name, v)
		}
		if name == envEndpoint {
			// The base URL of all signals; traces go to its /v1/traces.
			return strings.TrimSuffix(v, "/") + tracesPathOnBase, nil
		}
		return v, nil
	}
	return "", nil
}
