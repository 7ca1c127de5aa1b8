package logging_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/courier-dev/courier/services/kit/logging"
)

// tracedContext returns a context with a span and a request id, as the
// kit's middleware sets up.
func tracedContext(requestID string) context.Context {
	tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	ctx := trace.ContextWithSpanContext(context.Background(),
		trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid}))
	if requestID != "" {
		ctx = logging.WithRequestID(ctx, requestID)
	}
	return ctx
}

// TestLogRequestMatchesSlog checks that the direct access-line encoder New's
// logger uses writes byte for byte what slog's JSONHandler writes for the
// same line, including escapes, latencies and With attributes.
func TestLogRequestMatchesSlog(t *testing.T) {
	at := time.Date(2026, 11, 26, 2, 21, 38, 123456789, time.UTC)
	base := logging.Request{
		Method: "GET", Route: "/api/users/:id", Path: "/api/users/42", Status: 200,
		Latency: 1234567 * time.Nanosecond, Bytes: 40, ClientIP: "127.0.0.1",
	}
	with := func(r logging.Request, edit func(*logging.Request)) []logging.Request {
		edit(&r)
		return []logging.Request{r}
	}
	var latencies []logging.Request
	for _, d := range []time.Duration{
		0, 500 * time.Nanosecond, time.Microsecond, 10 * time.Microsecond, 100 * time.Microsecond,
		1001 * time.Microsecond, 1010 * time.Microsecond, 1100 * time.Microsecond, 999999 * time.Microsecond,
		123456789 * time.Microsecond, (1e12 - 1) * time.Microsecond, 1e12 * time.Microsecond,
		1e15*time.Microsecond + 7, -time.Millisecond,
	} {
		r := base
		r.Latency = d
		latencies = append(latencies, r)
	}

	tests := []struct {
		name  string
		ctx   context.Context
		level slog.Level
		at    time.Time
		with  []any
		reqs  []logging.Request
	}{
		{name: "plain", ctx: tracedContext("req-1"), at: at, reqs: []logging.Request{base}},
		{name: "no ids", ctx: context.Background(), at: at, reqs: []logging.Request{base}},
		{name: "request id only", ctx: logging.WithRequestID(context.Background(), `a"b\c`), at: at, reqs: []logging.Request{base}},
		{name: "error at ERROR", ctx: tracedContext("req-2"), level: slog.LevelError, at: at, reqs: with(base, func(r *logging.Request) {
			r.Status, r.Error = 500, "Error #01: boom\n\ttab <html> & \x01"
		})},
		{name: "escapes and bad UTF-8", ctx: tracedContext("r"), at: at, reqs: with(base, func(r *logging.Request) {
			r.Path, r.Route = "/caf\xc3\xa9/\xff/\u2028\u2029/\"q\"/\x7f/\x1f", "unmatched"
		})},
		{name: "latencies", ctx: tracedContext("r"), at: at, reqs: latencies},
		{name: "whole second", ctx: tracedContext("r"), at: at.Truncate(time.Second), reqs: []logging.Request{base}},
		{name: "other zone", ctx: tracedContext("r"), level: slog.LevelWarn, at: at.In(time.FixedZone("x", 5*3600+1800)), reqs: []logging.Request{base}},
		{name: "with attributes", ctx: tracedContext("r"), at: at, reqs: []logging.Request{base},
			with: []any{"service", "users", "n", -7, "u", uint64(9), "ok", true, "d", time.Second, "q", `"<x>"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, req := range tt.reqs {
				var direct, viaSlog bytes.Buffer
				fast := logging.New(&direct, slog.LevelDebug).With(tt.with...)
				// NewHandler around a JSONHandler is a logger LogRequest
				// cannot take the direct path for: this line goes through slog.
				slow := slog.New(logging.NewHandler(slog.NewJSONHandler(&viaSlog, &slog.HandlerOptions{Level: slog.LevelDebug}))).With(tt.with...)
				logging.LogRequest(tt.ctx, fast, tt.level, tt.at, &req)
				logging.LogRequest(tt.ctx, slow, tt.level, tt.at, &req)
				if direct.String() != viaSlog.String() {
					t.Errorf("direct encoder wrote\n%s\nslog wrote\n%s", direct.String(), viaSlog.String())
				}
				if !strings.HasSuffix(direct.String(), "}\n") || strings.Count(direct.String(), "\n") != 1 {
					t.Errorf("not one line: %q", direct.String())
				}
			}
		})
	}
}

// TestLogRequestTimes checks the cached-second time format against slog's
// for times that share a second, change second, zone or year range.
func TestLogRequestTimes(t *testing.T) {
	req := &logging.Request{Method: "GET", Route: "/x", Path: "/x", Status: 200}
	base := time.Date(2026, 11, 26, 23, 59, 59, 0, time.UTC)
	var times []time.Time
	for _, ns := range []int{0, 1, 10, 100000, 120000000, 999999999, 500000000} {
		times = append(times, base.Add(time.Duration(ns)))
	}
	times = append(times,
		base.Add(time.Second), base.Add(time.Second+time.Millisecond), base,
		base.In(time.FixedZone("a", -(3*3600+30*60))), base.In(time.FixedZone("b", 14*3600)),
		base.Add(2*time.Second+123*time.Microsecond).Local(), time.Now(), time.Now().UTC(),
		time.Date(1, 1, 1, 0, 0, 0, 5, time.UTC), time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC),
		time.Date(12000, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(-5, 1, 1, 0, 0, 0, 0, time.UTC), base,
	)
	for _, at := range times {
		var direct, viaSlog bytes.Buffer
		logging.LogRequest(context.Background(), logging.New(&direct, slog.LevelInfo), slog.LevelInfo, at, req)
		slow := slog.New(logging.NewHandler(slog.NewJSONHandler(&viaSlog, nil)))
		logging.LogRequest(context.Background(), slow, slog.LevelInfo, at, req)
		d, v := direct.String(), viaSlog.String()
		if y := at.Year(); y < 0 || y >= 10000 {
			// slog writes an error before the time there (and invalid
			// JSON); the direct encoder writes the time alone.
			if want := `{"time":"` + at.Format(time.RFC3339Nano) + `",`; !strings.HasPrefix(d, want) {
				t.Errorf("time %v: direct wrote %s, want prefix %s", at, d, want)
			}
			continue
		}
		if d != v {
			t.Errorf("time %v: direct\n%s\nslog\n%s", at, d, v)
		}
	}
}

func TestLogRequestHonoursLevelAndFallsBack(t *testing.T) {
	req := &logging.Request{Method: "GET", Route: "/x", Path: "/x", Status: 200}
	var buf bytes.Buffer
	l := logging.New(&buf, slog.LevelWarn)
	logging.LogRequest(context.Background(), l, slog.LevelInfo, time.Now(), req)
	if buf.Len() != 0 {
		t.Errorf("logged below the level: %q", buf.String())
	}
	logging.LogRequest(context.Background(), l, slog.LevelError, time.Now(), req)
	if !strings.Contains(buf.String(), `"level":"ERROR","msg":"request"`) {
		t.Errorf("line at ERROR missing: %q", buf.String())
	}

	// A group and an Any attribute are not encoded directly; the line
	// still comes out, through slog, with them.
	buf.Reset()
	grouped := logging.New(&buf, slog.LevelInfo).With("m", map[string]int{"a": 1}).WithGroup("g")
	logging.LogRequest(context.Background(), grouped, slog.LevelInfo, time.Now(), req)
	if !strings.Contains(buf.String(), `"m":{"a":1},"g":{"method":"GET"`) {
		t.Errorf("fallback line = %q", buf.String())
	}
}

// TestLinesDoNotInterleave writes access lines and ordinary lines from many
// goroutines and checks every line is whole.
func TestLinesDoNotInterleave(t *testing.T) {
	var buf bytes.Buffer
	l := logging.New(&buf, slog.LevelInfo).With("service", "users")
	req := &logging.Request{Method: "GET", Route: "/x", Path: strings.Repeat("p", 300), Status: 200}
	ctx := tracedContext("req")
	done := make(chan struct{})
	for g := range 8 {
		go func() {
			defer func() { done <- struct{}{} }()
			for range 200 {
				if g%2 == 0 {
					logging.LogRequest(ctx, l, slog.LevelInfo, time.Now(), req)
				} else {
					l.InfoContext(ctx, "handler line", "k", strings.Repeat("v", 300))
				}
			}
		}()
	}
	for range 8 {
		<-done
	}
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if len(lines) != 8*200 {
		t.Fatalf("%d lines, want %d", len(lines), 8*200)
	}
	for _, line := range lines {
		if !strings.HasPrefix(line, `{"time":"`) || !strings.HasSuffix(line, `"request_id":"req"}`) {
			t.Fatalf("torn line: %q", line)
		}
	}
}

func BenchmarkLogRequest(b *testing.B) {
	req := &logging.Request{
		Method: "GET", Route: "/api/users/:id", Path: "/api/users/42", Status: 200,
		Latency: 1234567 * time.Nanosecond, Bytes: 40, ClientIP: "127.0.0.1",
	}
	ctx := tracedContext("8f14e45f-ceea-467f-a8d3-2b9c1e0f7a61")
	for _, bc := range []struct {
		name string
		l    *slog.Logger
	}{
		{"direct", logging.New(io.Discard, slog.LevelInfo).With("service", "users")},
		{"slog", slog.New(logging.NewHandler(slog.NewJSONHandler(io.Discard, nil))).With("service", "users")},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				logging.LogRequest(ctx, bc.l, slog.LevelInfo, time.Now(), req)
			}
		})
	}
}
