package logging_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"testing"

	"go.opentelemetry.io/otel/trace"

	"github.com/courier-dev/courier/services/kit/logging"
)

func TestHandlerAddsIDsFromContext(t *testing.T) {
	tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	traced := trace.ContextWithSpanContext(context.Background(),
		trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid}))
	traced = logging.WithRequestID(traced, "req-1")

	tests := []struct {
		name string
		ctx  context.Context
		log  func(l *slog.Logger, ctx context.Context)
		want map[string]any
	}{
		{"plain", traced, func(l *slog.Logger, ctx context.Context) { l.InfoContext(ctx, "m") },
			map[string]any{"trace_id": tid.String(), "span_id": sid.String(), "request_id": "req-1"}},
		{"after With", traced, func(l *slog.Logger, ctx context.Context) { l.With("service", "users").InfoContext(ctx, "m") },
			map[string]any{"trace_id": tid.String(), "request_id": "req-1", "service": "users"}},
		{"no ids without context values", context.Background(), func(l *slog.Logger, ctx context.Context) { l.InfoContext(ctx, "m") },
			map[string]any{"trace_id": nil, "request_id": nil}},
		{"below the level", traced, func(l *slog.Logger, ctx context.Context) { l.DebugContext(ctx, "m") }, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			tt.log(logging.New(&buf, slog.LevelInfo), tt.ctx)
			if tt.want == nil {
				if buf.Len() != 0 {
					t.Errorf("logged %q below the level", buf.String())
				}
				return
			}
			var line map[string]any
			if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
				t.Fatalf("not JSON: %q", buf.String())
			}
			for k, v := range tt.want {
				if line[k] != v {
					t.Errorf("%s = %v, want %v (line %v)", k, line[k], v, line)
				}
			}
		})
	}
}
