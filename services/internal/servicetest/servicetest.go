// Package servicetest holds the test helpers the blog services share: a
// router inside the kit's middleware without running the service, an in-memory publisher for the
// outbox relay, a running relay, JSON requests and polling with a deadline.
package servicetest

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/courier-dev/courier/test/poll"

	"github.com/courier-dev/courier/services/internal/mailjob"
	"github.com/courier-dev/courier/services/internal/outbox"
	"github.com/courier-dev/courier/services/kit"
	"github.com/courier-dev/courier/services/kit/contract"
	"github.com/courier-dev/courier/services/kit/messaging"
)

// Handler returns a service's router h inside the kit's middleware, as Run
// would serve it, for a router under test; configure adjusts the kit's
// defaults (for example a small body limit). The kit binds its listeners in
// New; they stay unused because the test serves the handler itself, and are
// closed at cleanup because Run never runs.
func Handler(t testing.TB, configure func(*kit.Config), h http.Handler) http.Handler {
	t.Helper()
	cfg, err := kit.LoadConfig(func(string) string { return "" }, nil)
	if err != nil {
		t.Fatal(err)
	}
	if configure != nil {
		configure(&cfg)
	}
	svc, err := kit.New(t.Context(), cfg, func(string) string { return "" },
		kit.WithListeners(Listen(t), Listen(t)), kit.WithLogOutput(testWriter(t)))
	if err != nil {
		t.Fatal(err)
	}
	return svc.APIHandler(h)
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
	poll.Until(t, "an empty outbox", func() bool {
		pending, err := relay.Pending(context.Background())
		return err == nil && pending == 0
	})
	jobs := pub.Jobs()
	if len(jobs) != n {
		t.Fatalf("published %d jobs, want %d: %+v (refused: %v)", len(jobs), n, jobs, pub.Refused())
	}
	return jobs
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
	defer func() { _ = resp.Body.Close() }()
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

// Check inspects a response; route tests keep one per table row.
type Check func(t *testing.T, r Response)

// HasFields checks that the response is a validation error naming exactly
// these fields, with these messages.
func HasFields(want map[string]string) Check {
	return func(t *testing.T, r Response) {
		t.Helper()
		if got := r.Fields(); !maps.Equal(got, want) {
			t.Errorf("fields = %v, want %v", got, want)
		}
	}
}

// HasError checks the response's "error" message.
func HasError(msg string) Check {
	return func(t *testing.T, r Response) {
		t.Helper()
		if r.Body["error"] != msg {
			t.Errorf("error = %v, want %q", r.Body["error"], msg)
		}
	}
}

// RunFunc is a service's run function.
type RunFunc func(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error

// Running is a service started with Start.
type Running struct {
	// APIURL and AdminURL are the base URLs of the two listeners.
	APIURL, AdminURL string
	// Logs holds the service's JSON log lines.
	Logs *LogLines

	name    string
	cancel  context.CancelFunc
	done    chan error
	stopped bool
}

// Start runs a service's run function with env as its whole environment,
// on free ports (HTTP_PORT and ADMIN_PORT 0 unless env sets them), and
// waits for its "service started" log line. The service is stopped at
// cleanup if the test has not stopped it, and an error run returns then
// fails the test.
func Start(t testing.TB, run RunFunc, name string, env map[string]string) *Running {
	t.Helper()
	full := map[string]string{"HTTP_PORT": "0", "ADMIN_PORT": "0"}
	maps.Copy(full, env)
	ctx, cancel := context.WithCancel(context.Background())
	r := &Running{Logs: &LogLines{echo: testWriter(t)}, name: name, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- run(ctx, []string{name}, func(k string) string { return full[k] }, r.Logs) }()
	t.Cleanup(func() {
		if r.stopped {
			return // the test has seen what run returned
		}
		if err := r.Stop(t); err != nil {
			t.Errorf("%s: run returned %v at shutdown", name, err)
		}
	})

	var started map[string]any
	deadline := time.Now().Add(30 * time.Second)
	for started == nil {
		select {
		case err := <-r.done:
			t.Fatalf("%s exited while starting: %v", name, err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not log \"service started\" within 30s", name)
		}
		started = r.Logs.Find("service started")
		time.Sleep(10 * time.Millisecond)
	}
	r.APIURL = "http://" + loopback(t, started["http_addr"])
	r.AdminURL = "http://" + loopback(t, started["admin_addr"])
	return r
}

// loopback turns a bound address such as "[::]:41234" into "127.0.0.1:41234".
func loopback(t testing.TB, addr any) string {
	t.Helper()
	s, _ := addr.(string)
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		t.Fatalf("bound address %v: %v", addr, err)
	}
	return net.JoinHostPort("127.0.0.1", port)
}

// RunFails runs a service's run function with base, changed by change, as
// its whole environment, and fails the test unless run returns at once with
// an error that mentions want, the variable at fault. An empty value in
// change unsets the variable.
func RunFails(t *testing.T, run RunFunc, name string, base, change map[string]string, want string) {
	t.Helper()
	env := maps.Clone(base)
	maps.Copy(env, change)
	err := run(t.Context(), []string{name}, func(k string) string { return env[k] }, t.Output())
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("run = %v, want an error naming %s", err, want)
	}
}

// Stop cancels the service's context, as SIGTERM would, and returns what
// run returned, failing the test if it takes longer than 30 seconds.
func (r *Running) Stop(t testing.TB) error {
	t.Helper()
	r.cancel()
	select {
	case err := <-r.done:
		r.stopped = true
		return err
	case <-time.After(30 * time.Second):
		t.Fatalf("%s did not stop within 30s", r.name)
		return nil
	}
}

// RunsFor fails the test if run returns within d: the service must ride
// out whatever the test does to it meanwhile.
func (r *Running) RunsFor(t testing.TB, d time.Duration) {
	t.Helper()
	select {
	case err := <-r.done:
		r.stopped = true
		t.Fatalf("%s exited after a transient failure: %v", r.name, err)
	case <-time.After(d):
	}
}

// WaitReady waits until the service's /readyz answers 200 with each of the
// named checks (such as "broker" or "database") "ok", failing the test if
// run returns first or 20 seconds pass.
func (r *Running) WaitReady(t testing.TB, checks ...string) {
	t.Helper()
	client := HTTPClient()
	poll.Within(t, 20*time.Second, r.name+" ready", func() bool {
		select {
		case err := <-r.done:
			r.stopped = true
			t.Fatalf("%s exited before it was ready: %v", r.name, err)
		default:
		}
		resp := Do(t, client, http.MethodGet, r.AdminURL+contract.ReadyzPath, "")
		if resp.Status != http.StatusOK {
			return false
		}
		got, _ := resp.Body["checks"].(map[string]any)
		for _, c := range checks {
			if got[c] != "ok" {
				return false
			}
		}
		return true
	})
}

// LogLines collects JSON log lines written to it, safe for concurrent use.
type LogLines struct {
	mu    sync.Mutex
	buf   []byte
	lines []map[string]any
	echo  io.Writer
}

// Write implements io.Writer.
func (l *LogLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, _ = l.echo.Write(p)
	l.buf = append(l.buf, p...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			break
		}
		var line map[string]any
		if json.Unmarshal(l.buf[:i], &line) == nil {
			l.lines = append(l.lines, line)
		}
		l.buf = l.buf[i+1:]
	}
	return len(p), nil
}

// Find returns the first line whose msg is msg, or nil.
func (l *LogLines) Find(msg string) map[string]any {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, line := range l.lines {
		if line["msg"] == msg {
			return line
		}
	}
	return nil
}

// ConsumeJobs consumes the e-mail queue of app on a real broker, as the
// mailer would, and hands every message to the returned channel. It
// declares the development topology itself, so it may start before or
// after the publishing service.
func ConsumeJobs(t testing.TB, kind, url, app string) <-chan messaging.Message {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	broker, err := messaging.Connect(ctx, messaging.Config{
		Kind: kind, URL: url, App: app,
		Queues:          map[string]string{mailjob.Queue: contract.QueueName(app, mailjob.Queue)},
		DeclareTopology: true,
		Logger:          Logger(t),
	})
	if err != nil {
		cancel()
		t.Fatalf("connect the test consumer: %v", err)
	}
	out := make(chan messaging.Message, 100)
	done := make(chan error, 1)
	go func() {
		done <- broker.Consume(ctx, mailjob.Queue, func(_ context.Context, msg messaging.Message) error {
			out <- msg
			return nil
		}, messaging.ConsumeOptions{Concurrency: 1})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("test consumer: %v", err)
		}
		_ = broker.Close(context.Background())
	})
	return out
}

// NextJob waits up to 20 seconds for a message and decodes it as a job.
func NextJob(t testing.TB, msgs <-chan messaging.Message) (mailjob.Job, messaging.Message) {
	t.Helper()
	select {
	case msg := <-msgs:
		job, err := mailjob.Decode(msg.Body)
		if err != nil {
			t.Fatalf("message %s: %v", msg.ID, err)
		}
		return job, msg
	case <-time.After(20 * time.Second):
		t.Fatal("no job arrived within 20s")
		return mailjob.Job{}, messaging.Message{}
	}
}

// HTTPClient is a client with a timeout, so a hung service fails the test
// instead of hanging it.
func HTTPClient() *http.Client { return &http.Client{Timeout: 15 * time.Second} }
