package controller

import (
	"context"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/courier-dev/courier/operator/api/v1alpha1"
	"github.com/courier-dev/courier/services/kit/contract"
)

// svc is a service as a user writes it in YAML, before defaulting.
type svc = map[string]any

// appObject is an app as kubectl would send it: untyped, so zero values and
// wrong types reach the API server as written.
func appObject(ns, name string, services ...svc) *unstructured.Unstructured {
	list := make([]any, len(services))
	for i, s := range services {
		list[i] = s
	}
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": v1alpha1.GroupVersion.String(),
		"kind":       "MicroserviceApp",
		"metadata":   map[string]any{"name": name, "namespace": ns},
		"spec":       map[string]any{"services": list},
	}}
	return u
}

// with returns a valid service named name with the given fields added.
func with(name string, fields svc) svc {
	s := svc{"name": name, "image": "ghcr.io/courier-dev/" + name + ":1"}
	for k, v := range fields {
		s[k] = v
	}
	return s
}

// TestValidation sends invalid apps to the API server and expects each
// rejected with a message naming the offending field; valid ones pass.
// Requests are dry runs, so the controller never sees them.
func TestValidation(t *testing.T) {
	t.Parallel()
	ns := namespace(t)

	invalid := []struct {
		name     string
		app      *unstructured.Unstructured
		wantText []string // every string must appear in the error
	}{
		{"no services", appObject(ns, "a"),
			[]string{"spec.services", "at least 1"}},
		{"duplicate service names", appObject(ns, "a", with("users", nil), with("users", nil)),
			[]string{"spec.services[1]", "Duplicate value"}},
		{"service name not a DNS label", appObject(ns, "a", with("Users_1", nil)),
			[]string{"spec.services[0].name", "should match"}},
		{"missing image", appObject(ns, "a", svc{"name": "users"}),
			[]string{"spec.services[0].image", "Required value"}},
		{"empty image", appObject(ns, "a", with("users", svc{"image": ""})),
			[]string{"spec.services[0].image", "at least 1 chars"}},
		{"negative replicas", appObject(ns, "a", with("users", svc{"replicas": -1})),
			[]string{"spec.services[0].replicas", "greater than or equal to 0"}},
		{"http port zero", appObject(ns, "a", with("users", svc{"httpPort": 0})),
			[]string{"spec.services[0].httpPort", "greater than or equal to 1"}},
		{"admin port out of range", appObject(ns, "a", with("users", svc{"adminPort": 70000})),
			[]string{"spec.services[0].adminPort", "less than or equal to 65535"}},
		{"ports not distinct", appObject(ns, "a", with("users", svc{"httpPort": 9090})),
			[]string{"spec.services[0].adminPort", "adminPort must differ from httpPort"}},
		{"calls an unknown service", appObject(ns, "a", with("gateway", svc{"calls": []any{"users", "nope"}}), with("users", nil)),
			[]string{"spec.services", "spec.services[].calls must name services of this app"}},
		{"calls itself", appObject(ns, "a", with("users", svc{"calls": []any{"users"}})),
			[]string{"spec.services[0].calls", "calls must not name the service itself"}},
		{"calls a service twice", appObject(ns, "a", with("gateway", svc{"calls": []any{"users", "users"}}), with("users", nil)),
			[]string{"spec.services[0].calls[1]", "Duplicate value"}},
		{"duplicate env names", appObject(ns, "a", with("users", svc{"env": []any{
			map[string]any{"name": "A", "value": "1"}, map[string]any{"name": "A", "value": "2"},
		}})),
			[]string{"spec.services[0].env[1]", "Duplicate value"}},
		{"probe on an unknown port", appObject(ns, "a", with("users", svc{"probes": map[string]any{
			"liveness": map[string]any{"port": "metrics"},
		}})),
			[]string{"spec.services[0].probes.liveness.port", "Unsupported value"}},
		{"probe path not absolute", appObject(ns, "a", with("users", svc{"probes": map[string]any{
			"readiness": map[string]any{"path": "readyz"},
		}})),
			[]string{"spec.services[0].probes.readiness.path", "should match"}},
		{"probe period zero", appObject(ns, "a", with("users", svc{"probes": map[string]any{
			"startup": map[string]any{"periodSeconds": 0},
		}})),
			[]string{"spec.services[0].probes.startup.periodSeconds", "greater than or equal to 1"}},
		{"metrics path not absolute", appObject(ns, "a", with("users", svc{"metrics": map[string]any{"path": "metrics"}})),
			[]string{"spec.services[0].metrics.path", "should match"}},
		{"object names too long", appObject(ns, strings.Repeat("a", 40), with(strings.Repeat("b", 30), nil)),
			[]string{"metadata.name and each spec.services[].name together must be at most 62 characters"}},
		{"unknown pull policy", appObject(ns, "a", with("users", svc{"imagePullPolicy": "Sometimes"})),
			[]string{"spec.services[0].imagePullPolicy", "Unsupported value"}},
	}
	for _, tt := range invalid {
		t.Run("rejects "+tt.name, func(t *testing.T) {
			err := k8s.Create(context.Background(), tt.app, client.DryRunAll)
			if !apierrors.IsInvalid(err) {
				t.Fatalf("create: %v, want an Invalid error", err)
			}
			for _, want := range tt.wantText {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err.Error(), want)
				}
			}
		})
	}

	valid := []struct {
		name string
		app  *unstructured.Unstructured
	}{
		{"minimal", appObject(ns, "a", with("users", nil))},
		{"scaled to zero with custom ports", appObject(ns, "a", with("users", svc{"replicas": 0, "httpPort": 1, "adminPort": 65535}))},
		{"calls other services", appObject(ns, "a",
			with("gateway", svc{"calls": []any{"users", "posts"}}), with("users", nil), with("posts", svc{"calls": []any{"users"}}))},
		{"every override", appObject(ns, "a", with("users", svc{
			"imagePullPolicy": "IfNotPresent",
			"command":         []any{"/users"},
			"args":            []any{"--verbose"},
			"env":             []any{map[string]any{"name": "LOG_LEVEL", "value": "debug"}},
			"envFrom":         []any{map[string]any{"secretRef": map[string]any{"name": "s"}}},
			"resources":       map[string]any{"limits": map[string]any{"memory": "1Gi"}},
			"probes": map[string]any{
				"liveness":  map[string]any{"path": "/healthz", "port": "http", "periodSeconds": 30},
				"readiness": map[string]any{"timeoutSeconds": 5, "failureThreshold": 1},
				"startup":   map[string]any{"initialDelaySeconds": 0},
			},
			"metrics": map[string]any{"path": "/internal/metrics", "port": "http"},
		}))},
		{"names exactly at the limit", appObject(ns, strings.Repeat("a", 31), with(strings.Repeat("b", 31), nil))},
	}
	for _, tt := range valid {
		t.Run("accepts "+tt.name, func(t *testing.T) {
			if err := k8s.Create(context.Background(), tt.app, client.DryRunAll); err != nil {
				t.Fatalf("create: %v", err)
			}
		})
	}
}

// TestDefaultsFollowContract checks that the API server fills in the
// contract's ports and paths; the CRD's markers can only hold them as
// literals.
func TestDefaultsFollowContract(t *testing.T) {
	t.Parallel()
	ns := namespace(t)
	u := appObject(ns, "defaults", with("users", svc{"metrics": map[string]any{}}))
	if err := k8s.Create(context.Background(), u, client.DryRunAll); err != nil {
		t.Fatalf("create: %v", err)
	}
	app := &v1alpha1.MicroserviceApp{}
	if err := k8s.Scheme().Convert(u, app, nil); err != nil {
		t.Fatalf("convert: %v", err)
	}
	s := app.Spec.Services[0]
	if s.HTTPPort != contract.HTTPPort || s.AdminPort != contract.AdminPort {
		t.Errorf("ports defaulted to %d/%d, want the contract's %d/%d", s.HTTPPort, s.AdminPort, contract.HTTPPort, contract.AdminPort)
	}
	if s.Replicas == nil || *s.Replicas != 1 {
		t.Errorf("replicas defaulted to %v, want 1", s.Replicas)
	}
	if s.Metrics.Path != contract.MetricsPath || string(s.Metrics.Port) != contract.AdminPortName {
		t.Errorf("metrics defaulted to %s on %s, want the contract's %s on %s", s.Metrics.Path, s.Metrics.Port, contract.MetricsPath, contract.AdminPortName)
	}
}
