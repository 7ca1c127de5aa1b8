package kit_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/courier-dev/courier/services/kit"
)

// logBuffer collects the service's JSON log lines; handlers, the server and
// the test read and write it from different goroutines.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// lines parses every line logged so far.
func (l *logBuffer) lines(t *testing.T) []map[string]any {
	t.Helper()
	l.mu.Lock()
	data := l.b.String()
	l.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(data), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line is not JSON: %q: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}

// find returns the lines with the given msg.
func (l *logBuffer) find(t *testing.T, msg string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, m := range l.lines(t) {
		if m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

// one returns the single line with msg, failing otherwise.
func (l *logBuffer) one(t *testing.T, msg string) map[string]any {
	t.Helper()
	got := l.find(t, msg)
	if len(got) != 1 {
		t.Fatalf("want one %q log line, got %d: %v", msg, len(got), l.lines(t))
	}
	return got[0]
}

func localListener(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	// Run closes it too; closing twice is harmless.
	t.Cleanup(func() { _ = ln.Close() })
	return ln
}

// newService builds a Service from env on loopback listeners, logging into
// the returned buffer.
func newService(t *testing.T, env map[string]string, opts ...kit.Option) (*kit.Service, *logBuffer) {
	t.Helper()
	return newServiceWithQueues(t, env, nil, opts...)
}

// newServiceWithQueues is newService for a service using the logical queues.
func newServiceWithQueues(t *testing.T, env map[string]string, queues []string, opts ...kit.Option) (*kit.Service, *logBuffer) {
	t.Helper()
	cfg, err := kit.LoadConfig(envMap(env), nil, queues...)
	if err != nil {
		t.Fatalf("LoadConfig: %v", err)
	}
	logs := &logBuffer{}
	all := append([]kit.Option{
		kit.WithLogOutput(logs),
		kit.WithListeners(localListener(t), localListener(t)),
		kit.WithBuildInfo(kit.BuildInfo{Version: "v1.2.3", Revision: "abc123"}),
	}, opts...)
	svc, err := kit.New(context.Background(), cfg, envMap(env), all...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return svc, logs
}

// running is a Service whose Run goes on in the background.
type running struct {
	svc    *kit.Service
	cancel context.CancelFunc
	done   chan error
}

func start(t *testing.T, svc *kit.Service, app kit.App) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{svc: svc, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- svc.Run(ctx, app) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-r.done:
			// Tests that check Run's result read it themselves (and put it
			// back); here any clean-up error is worth seeing.
			if err != nil {
				t.Logf("Run returned at cleanup: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("Run did not return after cleanup cancelled it")
		}
	})
	return r
}

// stop cancels Run's context and returns Run's error.
func (r *running) stop(t *testing.T) error {
	t.Helper()
	r.cancel()
	return r.wait(t)
}

func (r *running) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-r.done:
		r.done <- err // keep it for the cleanup
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return")
		return nil
	}
}

func (r *running) apiURL(path string) string {
	return "http://" + r.svc.HTTPAddr().String() + path
}

func (r *running) adminURL(path string) string {
	return "http://" + r.svc.AdminAddr().String() + path
}

var client = &http.Client{Timeout: 10 * time.Second}

// get returns the status and body of a GET.
func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read %s: %v", url, err)
	}
	return resp.StatusCode, string(body)
}
