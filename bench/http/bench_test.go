package httpbench

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
)

// discardWriter is a reusable ResponseWriter, so the in-process numbers are
// the handler stacks' cost and not a recorder's allocations.
type discardWriter struct {
	h    http.Header
	code int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *discardWriter) WriteHeader(code int)        { w.code = code }

func listener(b *testing.B) net.Listener {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = ln.Close() })
	return ln
}

func kitHandler(b *testing.B, level string) http.Handler {
	b.Helper()
	svc, router, err := Kit(io.Discard, level, listener(b), listener(b))
	if err != nil {
		b.Fatal(err)
	}
	return svc.APIHandler(router)
}

// BenchmarkInProcess serves one request per op through ServeHTTP. Besides
// wall time (ns/op) it reports the process's CPU time per request
// (cpu-ns/op, garbage collection included), which other jobs on a shared
// machine disturb much less: time the benchmark spends descheduled is not
// counted.
// "kit" is the production stack with JSON access logs written to
// io.Discard; "kit-no-access-log" sets LOG_LEVEL=warn, which skips the
// access line, to show what the logging costs.
func BenchmarkInProcess(b *testing.B) {
	for _, tc := range []struct {
		name string
		h    func(*testing.B) http.Handler
	}{
		{"bare", func(*testing.B) http.Handler { return Bare() }},
		{"gin", func(*testing.B) http.Handler { return Gin() }},
		{"peer", func(*testing.B) http.Handler { return Peer(io.Discard) }},
		{"kit", func(b *testing.B) http.Handler { return kitHandler(b, "info") }},
		{"kit-no-access-log", func(b *testing.B) http.Handler { return kitHandler(b, "warn") }},
	} {
		b.Run(tc.name, func(b *testing.B) {
			h := tc.h(b)
			req := httptest.NewRequest(http.MethodGet, Path, nil)
			w := &discardWriter{h: http.Header{}}
			h.ServeHTTP(w, req)
			if w.code != 0 && w.code != http.StatusOK {
				b.Fatalf("status %d", w.code)
			}
			b.ReportAllocs()
			cpu := processCPU()
			for b.Loop() {
				clear(w.h)
				h.ServeHTTP(w, req)
			}
			b.ReportMetric(float64(processCPU()-cpu)/float64(b.N), "cpu-ns/op")
		})
	}
}
