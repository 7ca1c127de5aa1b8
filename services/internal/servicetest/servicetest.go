// Package servicetest holds the test helpers the blog services share: the
// kit's engine without running the service, an in-memory publisher for the
// outbox relay, a running relay, JSON requests and polling with a deadline.
package servicetest

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/courier-dev/courier/services/internal/mailjob"
	"github.com/courier-dev/courier/services/internal/outbox"
	"github.com/courier-dev/courier/services/kit"
)

// Engine returns the kit's Gin engine, middleware and all, for a router
// under test; configure adjusts the kit's defaults (for example a small
// body limit). The kit binds its listeners in New; they stay unused because
// the test serves the engine itself, and are closed at cleanup because Run
// never runs.
func Engine(t testing.TB, configure func(*kit.Config)) *gin.Engine {
	t.Helper()
	cfg, err := kit.LoadConfig(func(string) string { return "" }, nil)
	if err != nil {
		t.Fatal(err)
	}
	if configure != nil {
		configure(&cfg)
	}
	svc, err := kit.New(t.Context(), cfg,
		kit.WithListeners(Listen(t), Listen(t)), kit.WithLogOutput(testWriter(t)))
	if err != nil {
		t.Fatal(err)
	}
	return svc.Engine()
}

// Logger logs to the test's output.
func Logger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter(t), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func testWriter(t testing.TB) io.Writer {
	if o, ok := t.(interface{ Output() io.Writer }); ok {
		return o.Output()
	}
	return io.Discard
}

// Listen opens a loopback listener closed at cleanup.
func Listen(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	return ln
}

// Publisher is an in-memory outbox.Publisher that keeps the e-mail jobs it
// is given. Anything else (another queue, an undecodable body) is refused
// and recorded in Refused.
type Publisher struct {
	mu      sync.Mutex
	jobs    []mailjob.Job
	refused []string
}

// Publish records a job published to mailjob.Queue.
func (p *Publisher) Publish(_ context.Context, queue string, body []byte) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	job, err := mailjob.Decode(body)
	if err == nil && queue != mailjob.Queue {
		err = &wrongQueue{queue}
	}
	if err != nil {
		p.refused = append(p.refused, err.Error())
		return "", err
	}
	p.jobs = append(p.jobs, job)
	return job.ID, nil
}

type wrongQueue struct{ queue string }

func (e *wrongQueue) Error() string {
	return "published to queue " + e.queue + ", not " + mailjob.Queue
}

// Jobs returns the jobs published so far.
func (p *Publisher) Jobs() []mailjob.Job {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]mailjob.Job(nil), p.jobs...)
}

// Refused returns why publishes were refused.
func (p *Publisher) Refused() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.refused...)
}

// StartRelay runs an outbox relay from db to pub until the test ends.
func StartRelay(t testing.TB, db *sql.DB, pub outbox.Publisher) *outbox.Relay {
	t.Helper()
	relay := outbox.NewRelay(db, pub, Logger(t))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- relay.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("outbox relay: %v", err)
		}
	})
	return relay
}

// WaitForJobs waits until the relay has published everything and pub holds
// n jobs, and returns them. It fails the test if more than n arrive.
func WaitForJobs(t testing.TB, relay *outbox.Relay, pub *Publisher, n int) []mailjob.Job {
	t.Helper()
	WaitFor(t, "an empty outbox", func() bool {
		pending, err := relay.Pending(context.Background())
		return err == nil && pending == 0
	})
	jobs := pub.Jobs()
	if len(jobs) != n {
		t.Fatalf("published %d jobs, want %d: %+v (refused: %v)", len(jobs), n, jobs, pub.Refused())
	}
	return jobs
}

// WaitFor polls cond until it holds, failing the test after 10 seconds.
func WaitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Response is a decoded JSON response.
type Response struct {
	Status int
	Header http.Header
	// Body is the decoded JSON object, nil for an empty body.
	Body map[string]any
	Raw  []byte
}

// Do sends a request with a JSON body (none if body is "") and headers
// given as name-value pairs, and decodes the JSON object it answers.
func Do(t testing.TB, client *http.Client, method, url, body string, headers ...string) Response {
	t.Helper()
	var r io.Reader = http.NoBody
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, url, r)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	out := Response{Status: resp.StatusCode, Header: resp.Header, Raw: raw}
	if len(bytes.TrimSpace(raw)) > 0 {
		if err := json.Unmarshal(raw, &out.Body); err != nil {
			t.Fatalf("%s %s: body %q is not a JSON object: %v", method, url, raw, err)
		}
	}
	return out
}

// Fields returns the "fields" object of an error response as strings.
func (r Response) Fields() map[string]string {
	f, _ := r.Body["fields"].(map[string]any)
	if f == nil {
		return nil
	}
	out := make(map[string]string, len(f))
	for k, v := range f {
		s, _ := v.(string)
		out[k] = s
	}
	return out
}
