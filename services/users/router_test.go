package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/courier-dev/courier/services/internal/auth"
	"github.com/courier-dev/courier/services/internal/mailjob"
	"github.com/courier-dev/courier/services/internal/outbox"
	"github.com/courier-dev/courier/services/internal/sqlitedb"
	"github.com/courier-dev/courier/services/kit"
)

var testKey = []byte("test-signing-key-0123456789abcdef")

// memoryPublisher is an in-memory broker: it records what the outbox relay
// publishes. The real brokers are exercised in run_test.go.
type memoryPublisher struct {
	mu   sync.Mutex
	jobs []mailjob.Job
	errs []error
}

func (p *memoryPublisher) Publish(_ context.Context, queue string, body []byte) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	job, err := mailjob.Decode(body)
	if err != nil || queue != mailjob.Queue {
		p.errs = append(p.errs, err)
		return "", err
	}
	p.jobs = append(p.jobs, job)
	return job.ID, nil
}

func (p *memoryPublisher) published() []mailjob.Job {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]mailjob.Job(nil), p.jobs...)
}

// testAPI is the users router on the kit's engine, over real SQLite, with a
// real outbox relay publishing to memoryPublisher.
type testAPI struct {
	srv    *httptest.Server
	pub    *memoryPublisher
	relay  *outbox.Relay
	tokens *auth.Tokens
}

func newTestAPI(t *testing.T) *testAPI {
	t.Helper()
	ctx := t.Context()
	db, err := sqlitedb.Open(ctx, filepath.Join(t.TempDir(), "users.db"), migrations)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })

	cfg, err := kit.LoadConfig(func(string) string { return "" }, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg.BodyLimit = 4096
	// The kit binds its listeners in New; these are unused because the test
	// serves the engine itself, and closed here because Run never runs.
	apiLn, adminLn := listen(t), listen(t)
	svc, err := kit.New(ctx, cfg, kit.WithListeners(apiLn, adminLn), kit.WithLogOutput(t.Output()))
	if err != nil {
		t.Fatal(err)
	}

	tokens, err := auth.New(testKey, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	// MinCost keeps the tests fast; the hashing is still real bcrypt.
	passwords, err := newBcryptHasher(bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	pub := &memoryPublisher{}
	log := slog.New(slog.NewTextHandler(t.Output(), nil))
	relay := outbox.NewRelay(db, pub, log)
	relayCtx, stopRelay := context.WithCancel(context.Background())
	relayDone := make(chan error, 1)
	go func() { relayDone <- relay.Run(relayCtx) }()
	t.Cleanup(func() {
		stopRelay()
		if err := <-relayDone; err != nil {
			t.Errorf("relay: %v", err)
		}
	})

	srv := httptest.NewServer(newRouter(svc.Engine(), &store{db: db}, passwords, tokens, relay, log))
	t.Cleanup(srv.Close)
	return &testAPI{srv: srv, pub: pub, relay: relay, tokens: tokens}
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	return ln
}

// do sends one request and returns the status and the decoded JSON body.
func (a *testAPI) do(t *testing.T, method, path, body string) (int, map[string]any, http.Header) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, a.srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := a.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]any
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &out); err != nil {
			t.Fatalf("%s %s: body %q is not a JSON object: %v", method, path, raw, err)
		}
	}
	return resp.StatusCode, out, resp.Header
}

// waitFor polls cond until it holds or a deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// check inspects a response body.
type check func(t *testing.T, body map[string]any, header http.Header)

func fields(want map[string]string) check {
	return func(t *testing.T, body map[string]any, _ http.Header) {
		t.Helper()
		got, _ := body["fields"].(map[string]any)
		if len(got) != len(want) {
			t.Errorf("fields = %v, want %v", got, want)
		}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("fields[%q] = %v, want %q", k, got[k], v)
			}
		}
	}
}

func errorIs(msg string) check {
	return func(t *testing.T, body map[string]any, _ http.Header) {
		t.Helper()
		if body["error"] != msg {
			t.Errorf("error = %v, want %q", body["error"], msg)
		}
	}
}

func isUser(id float64, name, email string) check {
	return func(t *testing.T, body map[string]any, _ http.Header) {
		t.Helper()
		want := map[string]any{"id": id, "name": name, "email": email}
		if len(body) != len(want) {
			t.Errorf("user = %v, want exactly %v", body, want)
		}
		for k, v := range want {
			if body[k] != v {
				t.Errorf("user[%q] = %v, want %v", k, body[k], v)
			}
		}
	}
}

func TestRoutes(t *testing.T) {
	api := newTestAPI(t)
	const ada = `{"name":"Ada Lovelace","email":"ada@example.com","password":"analytical engine"}`

	// The cases run in order against one database: later ones rely on the
	// account the first one creates.
	tests := []struct {
		name       string
		method     string
		path       string
		body       string
		wantStatus int
		check      check
	}{
		{"register", "POST", "/api/users", ada, 201, func(t *testing.T, body map[string]any, h http.Header) {
			isUser(1, "Ada Lovelace", "ada@example.com")(t, body, h)
			if h.Get("Location") != "/api/users/1" {
				t.Errorf("Location = %q, want /api/users/1", h.Get("Location"))
			}
		}},
		{"register trims the name", "POST", "/api/users",
			`{"name":"  Charles Babbage ","email":"charles@example.com","password":"difference engine"}`, 201,
			isUser(2, "Charles Babbage", "charles@example.com")},
		{"register duplicate e-mail, other case", "POST", "/api/users",
			`{"name":"Impostor","email":"ADA@example.com","password":"something else"}`, 409,
			fields(map[string]string{"email": "is already registered"})},
		{"register invalid JSON", "POST", "/api/users", `{"name":`, 400, errorIs("malformed request body")},
		{"register empty body", "POST", "/api/users", ``, 400, errorIs("request body is empty")},
		{"register missing fields", "POST", "/api/users", `{}`, 400,
			fields(map[string]string{"name": "is required", "email": "is required", "password": "is required"})},
		{"register bad e-mail", "POST", "/api/users", `{"name":"N","email":"not-an-address","password":"long enough"}`, 400,
			fields(map[string]string{"email": "must be a valid e-mail"})},
		{"register short password", "POST", "/api/users", `{"name":"N","email":"n@example.com","password":"short"}`, 400,
			fields(map[string]string{"password": "must be at least 8 characters long"})},
		{"register password over bcrypt's 72 bytes", "POST", "/api/users",
			`{"name":"N","email":"n@example.com","password":"` + strings.Repeat("é", 40) + `"}`, 400,
			fields(map[string]string{"password": "must be at most 72 bytes long"})},
		{"register blank name", "POST", "/api/users", `{"name":"   ","email":"n@example.com","password":"long enough"}`, 400,
			fields(map[string]string{"name": "is required"})},
		{"register name of the wrong type", "POST", "/api/users", `{"name":5,"email":"n@example.com","password":"long enough"}`, 400,
			fields(map[string]string{"name": "must be a string"})},
		{"register body over the limit", "POST", "/api/users",
			`{"name":"N","email":"n@example.com","password":"` + strings.Repeat("x", 5000) + `"}`, 413,
			errorIs("request body too large")},

		{"get user", "GET", "/api/users/1", ``, 200, isUser(1, "Ada Lovelace", "ada@example.com")},
		{"get unknown user", "GET", "/api/users/999", ``, 404, errorIs("user not found")},
		{"get non-numeric id", "GET", "/api/users/ada", ``, 400, fields(map[string]string{"id": "must be a positive integer"})},
		{"get zero id", "GET", "/api/users/0", ``, 400, fields(map[string]string{"id": "must be a positive integer"})},

		{"sign in", "POST", "/api/sessions", `{"email":"ada@example.com","password":"analytical engine"}`, 201,
			func(t *testing.T, body map[string]any, h http.Header) {
				token, _ := body["token"].(string)
				id, err := api.tokens.Verify(token)
				if err != nil || id != 1 {
					t.Errorf("token verifies as user %d, %v; want user 1", id, err)
				}
				if body["token_type"] != "Bearer" || body["user_id"] != float64(1) {
					t.Errorf("session = %v", body)
				}
				exp, err := time.Parse(time.RFC3339, body["expires_at"].(string))
				if err != nil || time.Until(exp) < 59*time.Minute {
					t.Errorf("expires_at = %v (%v), want about an hour from now", body["expires_at"], err)
				}
				if h.Get("Cache-Control") != "no-store" {
					t.Errorf("Cache-Control = %q, want no-store", h.Get("Cache-Control"))
				}
			}},
		{"sign in with the e-mail in another case", "POST", "/api/sessions", `{"email":"Ada@Example.com","password":"analytical engine"}`, 201, nil},
		{"sign in wrong password", "POST", "/api/sessions", `{"email":"ada@example.com","password":"difference engine"}`, 401,
			errorIs("wrong e-mail or password")},
		{"sign in unknown e-mail", "POST", "/api/sessions", `{"email":"nobody@example.com","password":"analytical engine"}`, 401,
			errorIs("wrong e-mail or password")},
		{"sign in missing password", "POST", "/api/sessions", `{"email":"ada@example.com"}`, 400,
			fields(map[string]string{"password": "is required"})},
		{"sign in invalid JSON", "POST", "/api/sessions", `not json`, 400, errorIs("malformed request body")},

		{"unknown route", "GET", "/api/nothing", ``, 404, errorIs("not found")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body, header := api.do(t, tt.method, tt.path, tt.body)
			if status != tt.wantStatus {
				t.Fatalf("%s %s = %d %v, want %d", tt.method, tt.path, status, body, tt.wantStatus)
			}
			if tt.check != nil {
				tt.check(t, body, header)
			}
		})
	}

	// Exactly the two successful registrations published a welcome job.
	waitFor(t, "two welcome jobs", func() bool { return len(api.pub.published()) >= 2 })
	waitFor(t, "an empty outbox", func() bool {
		n, err := api.relay.Pending(context.Background())
		return err == nil && n == 0
	})
	jobs := api.pub.published()
	want := []struct{ to, name string }{{"ada@example.com", "Ada Lovelace"}, {"charles@example.com", "Charles Babbage"}}
	if len(jobs) != len(want) {
		t.Fatalf("published %d jobs, want %d: %+v", len(jobs), len(want), jobs)
	}
	for i, j := range jobs {
		if j.Template != mailjob.TemplateWelcome || j.To != want[i].to || j.Data[mailjob.DataName] != want[i].name {
			t.Errorf("job %d = %+v, want a welcome e-mail to %s for %s", i, j, want[i].to, want[i].name)
		}
	}
	if jobs[0].ID == jobs[1].ID {
		t.Errorf("both jobs have id %q", jobs[0].ID)
	}
}

func TestPasswordsAreStoredAsBcrypt(t *testing.T) {
	ctx := t.Context()
	db, err := sqlitedb.Open(ctx, filepath.Join(t.TempDir(), "users.db"), migrations)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	h, err := newBcryptHasher(bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	hash, err := h.Hash("correct horse")
	if err != nil {
		t.Fatal(err)
	}
	s := &store{db: db}
	welcome := mailjob.New(mailjob.TemplateWelcome, "x@example.com", map[string]string{mailjob.DataName: "X"})
	if _, err := s.Register(ctx, User{Name: "X", Email: "x@example.com", PasswordHash: hash}, welcome); err != nil {
		t.Fatal(err)
	}
	var stored []byte
	if err := db.QueryRowContext(ctx, `SELECT password_hash FROM users`).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(stored), "correct horse") || bcrypt.CompareHashAndPassword(stored, []byte("correct horse")) != nil {
		t.Fatalf("stored hash %q is not a bcrypt hash of the password", stored)
	}
	for _, tc := range []struct {
		hash []byte
		pw   string
		want bool
	}{{stored, "correct horse", true}, {stored, "wrong horse", false}, {nil, "correct horse", false}} {
		if ok, err := h.Matches(tc.hash, tc.pw); err != nil || ok != tc.want {
			t.Errorf("Matches(%q) = %v, %v; want %v", tc.pw, ok, err, tc.want)
		}
	}
}
