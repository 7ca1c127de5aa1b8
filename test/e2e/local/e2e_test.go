// Package local_test runs the blog end to end on this machine: the four
// services as real processes built from this tree, an embedded NATS
// JetStream server and a real SMTP server (test/smtpsink), wired by
// hack/local/stack exactly as the local run wires them. It talks to the
// gateway only, the way a user would, and checks the inbox.
package local_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/courier-dev/courier/test/blogapi"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/courier-dev/courier/hack/local/stack"
	"github.com/courier-dev/courier/services/kit/contract"
	"github.com/courier-dev/courier/test/smtpsink"
)

// messageID is the Message-ID the mailer derives from a job id (a UUID).
var messageID = regexp.MustCompile(`^<[0-9a-f-]{36}@courier>$`)

func TestBlogEndToEnd(t *testing.T) {
	// Building may take a while on a cold cache; the system itself must
	// answer within the deadlines below.
	buildCtx, cancelBuild := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancelBuild()
	root, err := stack.ModuleRoot(buildCtx)
	if err != nil {
		t.Fatal(err)
	}
	trackSources(t, root)
	bin := t.TempDir()
	start := time.Now()
	if err := stack.Build(buildCtx, root, bin, raceEnabled); err != nil {
		t.Fatal(err)
	}
	t.Logf("built the four services (race detector %v) in %s", raceEnabled, time.Since(start).Round(time.Millisecond))

	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	ports, err := stack.FreePorts()
	if err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	st, err := stack.Start(ctx, stack.Options{BinDir: bin, DataDir: t.TempDir(), Ports: ports})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("broker, SMTP sink and four services ready in %s", time.Since(start).Round(time.Millisecond))
	t.Cleanup(func() {
		stopped := time.Now()
		stopAndCheck(t, st)
		t.Logf("stopped in %s", time.Since(stopped).Round(time.Millisecond))
	})

	api := &blogapi.Client{T: t, Ctx: ctx, Base: st.GatewayURL()}
	jobs := &emailJobs{t: t, ctx: ctx, st: st}

	// Ada registers, signs in, writes a post and comments on it: a welcome
	// e-mail and a comment notification, both to her.
	ada := api.Register("Ada Lovelace", "ada@example.com")
	adaToken := api.SignIn("ada@example.com")
	post, author := api.CreatePost(adaToken, "Notes on the Analytical Engine", "It weaves algebraic patterns.")
	if author != ada {
		t.Fatalf("post author is user %d, want Ada (%d): the gateway did not pass the caller on", author, ada)
	}
	api.Comment(adaToken, post, "Reading this back a year later: still true.")

	// A write without a token is refused at the edge and mails no one.
	api.Expect(http.MethodPost, fmt.Sprintf("/api/posts/%d/comments", post), "", map[string]string{"body": "anonymous"}, http.StatusUnauthorized, nil)

	got := jobs.settle(2)
	t.Logf("first two e-mails delivered and acked %s after start", time.Since(start).Round(time.Millisecond))
	want := []mailWant{
		{to: "ada@example.com", subject: "Welcome to the blog, Ada Lovelace", body: "Hello Ada Lovelace,"},
		{to: "ada@example.com", subject: `New comment on "Notes on the Analytical Engine"`,
			body: `Ada Lovelace commented on your post "Notes on the Analytical Engine"`},
	}
	assertMails(t, got, want)

	// Grace registers and comments on Ada's post: Grace is welcomed, and the
	// notification goes to the post's author, Ada, not to the commenter.
	api.Register("Grace Hopper", "grace@example.com")
	graceToken := api.SignIn("grace@example.com")
	api.Comment(graceToken, post, "Lovely. Have you tried it on a Mark I?")

	got = jobs.settle(4)
	t.Logf("all four e-mails delivered and acked %s after start", time.Since(start).Round(time.Millisecond))
	assertMails(t, got[2:], []mailWant{
		{to: "grace@example.com", subject: "Welcome to the blog, Grace Hopper", body: "Hello Grace Hopper,"},
		{to: "ada@example.com", subject: `New comment on "Notes on the Analytical Engine"`,
			body: "Grace Hopper commented on your post"},
	})

	// A broker outage is not an API outage: users and posts stay ready
	// (their e-mail jobs wait in their outboxes), reads and sign-ups go on
	// through the gateway, and the welcome e-mail arrives once the broker is
	// back.
	st.NATS().Stop(t)
	for _, name := range []string{"users", "posts"} {
		waitDegraded(t, ctx, st.Service(name))
	}
	api.Register("Edsger Dijkstra", "edsger@example.com")
	api.SignIn("edsger@example.com")
	api.Expect(http.MethodGet, fmt.Sprintf("/api/posts/%d", post), "", nil, http.StatusOK, nil)
	st.NATS().Start(t)
	got = jobs.settle(5)
	assertMails(t, got[4:], []mailWant{
		{to: "edsger@example.com", subject: "Welcome to the blog, Edsger Dijkstra", body: "Hello Edsger Dijkstra,"},
	})
}

// waitDegraded waits until p's /readyz reports the broker missing, and
// fails the test if it ever answers anything but 200 meanwhile.
func waitDegraded(t *testing.T, ctx context.Context, p *stack.Process) {
	t.Helper()
	client := &http.Client{Timeout: 2 * time.Second}
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.AdminURL+contract.ReadyzPath, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s /readyz: %v", p.Name, err)
		}
		var body struct {
			Status string            `json:"status"`
			Checks map[string]string `json:"checks"`
		}
		err = json.NewDecoder(resp.Body).Decode(&body)
		_ = resp.Body.Close()
		if err != nil {
			t.Fatalf("%s /readyz: %v", p.Name, err)
		}
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s /readyz = %d %+v with the broker down, want 200", p.Name, resp.StatusCode, body)
		}
		if body.Status == "degraded" && body.Checks["broker"] != "ok" {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s /readyz never reported the broker missing: last %+v", p.Name, body)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// mailWant is one expected e-mail; body is a line it must contain.
type mailWant struct{ to, subject, body string }

// assertMails checks got against want as sets (the mailer runs jobs
// concurrently, so two e-mails may arrive in either order) and that every
// e-mail carries a job-derived Message-ID of its own.
func assertMails(t *testing.T, got []smtpsink.Message, want []mailWant) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d e-mails, want %d:\n%s", len(got), len(want), describe(got))
	}
	left := slices.Clone(got)
	for _, w := range want {
		i := slices.IndexFunc(left, func(m smtpsink.Message) bool {
			return slices.Equal(m.To, []string{w.to}) && m.Header.Get("Subject") == w.subject && strings.Contains(m.Body, w.body)
		})
		if i < 0 {
			t.Errorf("no e-mail to %s with subject %q and %q in its body; got:\n%s", w.to, w.subject, w.body, describe(got))
			continue
		}
		left = slices.Delete(left, i, i+1)
	}
	seen := map[string]bool{}
	for _, m := range got {
		id := m.Header.Get("Message-Id")
		if !messageID.MatchString(id) {
			t.Errorf("Message-ID %q is not <job-uuid@courier>", id)
		}
		if seen[id] {
			t.Errorf("Message-ID %s sent twice", id)
		}
		seen[id] = true
	}
}

func describe(msgs []smtpsink.Message) string {
	var b strings.Builder
	for _, m := range msgs {
		fmt.Fprintf(&b, "  to %v  %q  %s\n", m.To, m.Header.Get("Subject"), m.Header.Get("Message-Id"))
	}
	return b.String()
}

// emailJobs watches the e-mail jobs on the broker and the e-mails at the sink.
type emailJobs struct {
	t   *testing.T
	ctx context.Context
	st  *stack.Stack
	js  jetstream.JetStream
}

// settle waits until at least n e-mails arrived and the broker is quiet:
// every job published to the stream has been delivered to the mailer and
// acked. Only then is "exactly n" a fact rather than a snapshot: a job still
// in the stream or in flight would otherwise turn up after the assertion.
// It returns the sink's messages in arrival order.
func (e *emailJobs) settle(n int) []smtpsink.Message {
	e.t.Helper()
	if e.js == nil {
		nc, err := nats.Connect(e.st.BrokerURL)
		if err != nil {
			e.t.Fatalf("connect to nats: %v", err)
		}
		e.t.Cleanup(nc.Close)
		if e.js, err = jetstream.New(nc); err != nil {
			e.t.Fatal(err)
		}
	}
	physical := contract.QueueName(stack.App, stack.QueueEmails)
	deadSubject := contract.DeadLetterSubject(physical)
	var last string
	for {
		stream, err := e.js.Stream(e.ctx, contract.StreamName(stack.App))
		if err != nil {
			e.t.Fatalf("stream: %v", err)
		}
		// Consumer first, stream second: a job published in between shows
		// as a last sequence beyond the ack floor, never the other way round.
		cons, err := stream.Consumer(e.ctx, contract.ConsumerName(physical))
		if err != nil {
			e.t.Fatalf("mailer's consumer: %v", err)
		}
		cinfo, err := cons.Info(e.ctx)
		if err != nil {
			e.t.Fatalf("consumer info: %v", err)
		}
		sinfo, err := stream.Info(e.ctx, jetstream.WithSubjectFilter(deadSubject))
		if err != nil {
			e.t.Fatalf("stream info: %v", err)
		}
		msgs := e.st.Sink.Messages()
		quiet := cinfo.NumPending == 0 && cinfo.NumAckPending == 0 && cinfo.AckFloor.Stream == sinfo.State.LastSeq
		if len(msgs) >= n && sinfo.State.LastSeq >= uint64(n) && quiet {
			if dead := sinfo.State.Subjects[deadSubject]; dead != 0 {
				e.t.Errorf("%d e-mail job(s) dead-lettered on %s", dead, deadSubject)
			}
			return msgs
		}
		last = fmt.Sprintf("%d e-mails, stream last seq %d, consumer pending %d, ack pending %d, ack floor %d",
			len(msgs), sinfo.State.LastSeq, cinfo.NumPending, cinfo.NumAckPending, cinfo.AckFloor.Stream)
		select {
		case <-e.ctx.Done():
			e.t.Fatalf("waiting for %d e-mails and a quiet broker: %v; last seen: %s\n%s", n, e.ctx.Err(), last, describe(msgs))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// stopAndCheck stops the services and fails the test if one did not shut
// down cleanly or the race detector reported anything. On failure it prints
// every service's output.
func stopAndCheck(t *testing.T, st *stack.Stack) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := st.Stop(ctx); err != nil {
		t.Errorf("stop: %v", err)
	}
	for _, p := range st.Processes() {
		if strings.Contains(p.Logs(), "WARNING: DATA RACE") {
			t.Errorf("the race detector reported a race in %s", p.Name)
		}
	}
	if t.Failed() {
		for _, p := range st.Processes() {
			t.Logf("---- %s output (last 64 KiB) ----\n%s", p.Name, p.Logs())
		}
	}
}

// trackSources stats every file the service binaries are built from. go test
// caches a passing result keyed on the test binary and the files the test
// itself touched; the services are built by a `go build` child process the
// cache cannot see, so without this an edited service would replay a stale
// pass.
func trackSources(t *testing.T, root string) {
	t.Helper()
	for _, f := range []string{"go.mod", "go.sum"} {
		if _, err := os.Stat(filepath.Join(root, f)); err != nil {
			t.Fatal(err)
		}
	}
	err := filepath.WalkDir(filepath.Join(root, "services"), func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err // directories are read, and so tracked, by the walk itself
		}
		_, err = os.Stat(path)
		return err
	})
	if err != nil {
		t.Fatalf("track service sources: %v", err)
	}
}
