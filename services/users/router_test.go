package main

import (
	"crypto/ed25519"
	"maps"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/courier-dev/courier/services/internal/auth"
	"github.com/courier-dev/courier/services/internal/auth/authtest"
	"github.com/courier-dev/courier/services/internal/mailjob"
	"github.com/courier-dev/courier/services/internal/outbox"
	"github.com/courier-dev/courier/services/internal/servicetest"
	"github.com/courier-dev/courier/services/internal/sqlitedb"
	"github.com/courier-dev/courier/services/kit"
)

// testKey is the users service's signing key in the tests (PKCS #8 PEM).
var testKey = mustKey()

func mustKey() []byte {
	k, err := auth.GenerateKey()
	if err != nil {
		panic(err)
	}
	return k
}

// testAPI is the users router on the kit's engine over real SQLite, with a
// real outbox relay publishing to an in-memory publisher. The real brokers
// are exercised in run_test.go.
type testAPI struct {
	srv    *httptest.Server
	pub    *servicetest.Publisher
	relay  *outbox.Relay
	tokens *auth.Tokens
}

func newTestAPI(t *testing.T) *testAPI {
	t.Helper()
	db, err := sqlitedb.Open(t.Context(), filepath.Join(t.TempDir(), "users.db"), migrations)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	tokens := authtest.Tokens(t, authtest.Key(t, testKey))
	// MinCost keeps the tests fast; the hashing is still real bcrypt.
	passwords, err := newBcryptHasher(bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	pub := &servicetest.Publisher{}
	relay := servicetest.StartRelay(t, db, pub)
	srv := httptest.NewServer(servicetest.Handler(t, func(c *kit.Config) { c.BodyLimit = 4096 }, newRouter(&store{db: db}, passwords, tokens, relay, servicetest.Logger(t))))
	t.Cleanup(srv.Close)
	return &testAPI{srv: srv, pub: pub, relay: relay, tokens: tokens}
}

func isUser(id float64, name, email string) servicetest.Check {
	return func(t *testing.T, r servicetest.Response) {
		t.Helper()
		want := map[string]any{"id": id, "name": name, "email": email}
		if email == "" {
			delete(want, "email") // not shown to this caller
		}
		if !maps.Equal(r.Body, want) {
			t.Errorf("user = %v, want exactly %v", r.Body, want)
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
		check      servicetest.Check
	}{
		{"register", "POST", "/api/users", ada, 201, func(t *testing.T, r servicetest.Response) {
			isUser(1, "Ada Lovelace", "ada@example.com")(t, r)
			if h := r.Header; h.Get("Location") != "/api/users/1" {
				t.Errorf("Location = %q, want /api/users/1", h.Get("Location"))
			}
		}},
		{"register trims the name", "POST", "/api/users",
			`{"name":"  Charles Babbage ","email":"charles@example.com","password":"difference engine"}`, 201,
			isUser(2, "Charles Babbage", "charles@example.com")},
		{"register duplicate e-mail, other case", "POST", "/api/users",
			`{"name":"Impostor","email":"ADA@example.com","password":"something else"}`, 409,
			servicetest.HasFields(map[string]string{"email": "is already registered"})},
		{"register invalid JSON", "POST", "/api/users", `{"name":`, 400, servicetest.HasError("malformed request body")},
		{"register empty body", "POST", "/api/users", ``, 400, servicetest.HasError("request body is empty")},
		{"register missing fields", "POST", "/api/users", `{}`, 400,
			servicetest.HasFields(map[string]string{"name": "is required", "email": "is required", "password": "is required"})},
		{"register bad e-mail", "POST", "/api/users", `{"name":"N","email":"not-an-address","password":"long enough"}`, 400,
			servicetest.HasFields(map[string]string{"email": "must be a valid e-mail"})},
		{"register short password", "POST", "/api/users", `{"name":"N","email":"n@example.com","password":"short"}`, 400,
			servicetest.HasFields(map[string]string{"password": "must be at least 8 characters long"})},
		{"register password over bcrypt's 72 bytes", "POST", "/api/users",
			`{"name":"N","email":"n@example.com","password":"` + strings.Repeat("é", 40) + `"}`, 400,
			servicetest.HasFields(map[string]string{"password": "must be at most 72 bytes long"})},
		{"register blank name", "POST", "/api/users", `{"name":"   ","email":"n@example.com","password":"long enough"}`, 400,
			servicetest.HasFields(map[string]string{"name": "is required"})},
		{"register name of the wrong type", "POST", "/api/users", `{"name":5,"email":"n@example.com","password":"long enough"}`, 400,
			servicetest.HasFields(map[string]string{"name": "must be a string"})},
		{"register body over the limit", "POST", "/api/users",
			`{"name":"N","email":"n@example.com","password":"` + strings.Repeat("x", 5000) + `"}`, 413,
			servicetest.HasError("request body too large")},

		{"get user: no e-mail for others", "GET", "/api/users/1", ``, 200, isUser(1, "Ada Lovelace", "")},
		{"get unknown user", "GET", "/api/users/999", ``, 404, servicetest.HasError("user not found")},
		{"get non-numeric id", "GET", "/api/users/ada", ``, 400, servicetest.HasFields(map[string]string{"id": "must be a positive integer"})},
		{"get zero id", "GET", "/api/users/0", ``, 400, servicetest.HasFields(map[string]string{"id": "must be a positive integer"})},

		{"sign in", "POST", "/api/sessions", `{"email":"ada@example.com","password":"analytical engine"}`, 201,
			func(t *testing.T, r servicetest.Response) {
				body, h := r.Body, r.Header
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
			servicetest.HasError("wrong e-mail or password")},
		{"sign in unknown e-mail", "POST", "/api/sessions", `{"email":"nobody@example.com","password":"analytical engine"}`, 401,
			servicetest.HasError("wrong e-mail or password")},
		{"sign in missing password", "POST", "/api/sessions", `{"email":"ada@example.com"}`, 400,
			servicetest.HasFields(map[string]string{"password": "is required"})},
		{"sign in invalid JSON", "POST", "/api/sessions", `not json`, 400, servicetest.HasError("malformed request body")},

		{"unknown route", "GET", "/api/nothing", ``, 404, servicetest.HasError("not found")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := servicetest.Do(t, api.srv.Client(), tt.method, api.srv.URL+tt.path, tt.body)
			if r.Status != tt.wantStatus {
				t.Fatalf("%s %s = %d %s, want %d", tt.method, tt.path, r.Status, r.Raw, tt.wantStatus)
			}
			if tt.check != nil {
				tt.check(t, r)
			}
		})
	}

	// Exactly the two successful registrations published a welcome job.
	jobs := servicetest.WaitForJobs(t, api.relay, api.pub, 2)
	want := []struct{ to, name string }{{"ada@example.com", "Ada Lovelace"}, {"charles@example.com", "Charles Babbage"}}
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

// TestSignInLimitPerAccount: password guesses against one account are
// limited whoever makes them; other accounts are not affected, and the
// refused attempt never reaches the password check.
func TestSignInLimitPerAccount(t *testing.T) {
	api := newTestAPI(t)
	client := servicetest.HTTPClient()
	for _, email := range []string{"ada@example.com", "grace@example.com"} {
		if r := servicetest.Do(t, client, "POST", api.srv.URL+"/api/users",
			`{"name":"x","email":"`+email+`","password":"correct horse battery"}`); r.Status != 201 {
			t.Fatalf("register %s = %d", email, r.Status)
		}
	}
	wrong := `{"email":"ADA@example.com","password":"guess"}`
	for i := range signInsPerAccountBurst {
		if r := servicetest.Do(t, client, "POST", api.srv.URL+"/api/sessions", wrong); r.Status != 401 {
			t.Fatalf("guess %d = %d, want 401", i+1, r.Status)
		}
	}
	r := servicetest.Do(t, client, "POST", api.srv.URL+"/api/sessions", `{"email":"ada@example.com","password":"correct horse battery"}`)
	if r.Status != 429 || r.Header.Get("Retry-After") == "" {
		t.Fatalf("sign-in after %d guesses = %d (Retry-After %q), want 429 with Retry-After", signInsPerAccountBurst, r.Status, r.Header.Get("Retry-After"))
	}
	if r := servicetest.Do(t, client, "POST", api.srv.URL+"/api/sessions", `{"email":"grace@example.com","password":"correct horse battery"}`); r.Status != 201 {
		t.Errorf("another account's sign-in = %d, want 201", r.Status)
	}
}

// TestUserPrivacy: a user's e-mail address is shown to that user only; the
// internal look-up posts uses needs a valid sign-in token, and users
// publishes the public keys that verify its tokens.
func TestUserPrivacy(t *testing.T) {
	api := newTestAPI(t)
	client := api.srv.Client()
	for _, u := range []string{
		`{"name":"Ada","email":"ada@example.com","password":"analytical engine"}`,
		`{"name":"Grace","email":"grace@example.com","password":"compiler A-0"}`,
	} {
		if r := servicetest.Do(t, client, "POST", api.srv.URL+"/api/users", u); r.Status != 201 {
			t.Fatalf("register = %d %s", r.Status, r.Raw)
		}
	}
	ada := "Bearer " + authtest.Token(t, api.tokens, 1)
	forged := "Bearer " + authtest.Token(t, authtest.Tokens(t, nil), 1)
	for _, tt := range []struct {
		name, path string
		headers    []string
		want       int
		email      string
	}{
		{"own profile", "/api/users/1", []string{"Authorization", ada}, 200, "ada@example.com"},
		{"another user's profile", "/api/users/2", []string{"Authorization", ada}, 200, ""},
		{"anonymous", "/api/users/1", nil, 200, ""},
		{"a forged identity header", "/api/users/1", []string{"X-User-ID", "1"}, 200, ""},
		{"a token signed with another key", "/api/users/1", []string{"Authorization", forged}, 200, ""},
		{"internal look-up, signed in", "/internal/users/2", []string{"Authorization", ada}, 200, "grace@example.com"},
		{"internal look-up, anonymous", "/internal/users/2", nil, 401, ""},
		{"internal look-up, forged token", "/internal/users/2", []string{"Authorization", forged}, 401, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := servicetest.Do(t, client, "GET", api.srv.URL+tt.path, "", tt.headers...)
			if r.Status != tt.want {
				t.Fatalf("GET %s = %d %s, want %d", tt.path, r.Status, r.Raw, tt.want)
			}
			if got, _ := r.Body["email"].(string); r.Status == 200 && got != tt.email {
				t.Errorf("email = %q, want %q", got, tt.email)
			}
		})
	}
	r := servicetest.Do(t, client, "GET", api.srv.URL+auth.JWKSPath, "")
	if r.Status != 200 || !strings.Contains(string(r.Raw), auth.KeyID(authtest.Key(t, testKey).Public().(ed25519.PublicKey))) {
		t.Errorf("JWKS = %d %s, want the signing key's kid", r.Status, r.Raw)
	}
}
