package tracing_test

import (
	"context"
	"strings"
	"testing"

	"github.com/courier-dev/courier/services/kit/tracing"
)

// TestNewProvider: the standard variables decide whether spans are
// exported, and a setting the kit cannot honour is an error naming it.
func TestNewProvider(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		exports bool
		wantErr string
	}{
		{name: "unset: no export", env: nil},
		{name: "endpoint", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"}, exports: true},
		{name: "traces endpoint", env: map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:1/v1/traces"}, exports: true},
		{name: "exporter none wins", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_TRACES_EXPORTER": "none"}},
		{name: "http/protobuf", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, exports: true},
		{name: "grpc refused", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, wantErr: "OTEL_EXPORTER_OTLP_PROTOCOL"},
		{name: "traces protocol refused", env: map[string]string{"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json"}, wantErr: "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"},
		{name: "unknown exporter", env: map[string]string{"OTEL_TRACES_EXPORTER": "zipkin"}, wantErr: "OTEL_TRACES_EXPORTER"},
		{name: "malformed endpoint", env: map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "://nope"}, wantErr: "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"},
		{name: "endpoint without scheme", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"}, wantErr: "OTEL_EXPORTER_OTLP_ENDPOINT"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tp, exports, err := tracing.NewProvider(context.Background(), func(k string) string { return tt.env[k] }, tracing.Resource{Service: "users"})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one naming %s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = tp.Shutdown(context.Background()) }()
			if exports != tt.exports {
				t.Errorf("exports = %v, want %v", exports, tt.exports)
			}
			// Without an exporter a root span is not sampled (nothing
			// would read it) but still has ids for the logs.
			_, span := tp.Tracer("test").Start(context.Background(), "root")
			defer span.End()
			if !span.SpanContext().IsValid() || span.SpanContext().IsSampled() != tt.exports {
				t.Errorf("root span %v: want valid ids, sampled = %v", span.SpanContext(), tt.exports)
			}
		})
	}
}
