package main

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/courier-dev/courier/services/internal/auth"
	"github.com/courier-dev/courier/services/internal/auth/authtest"
	"github.com/courier-dev/courier/services/internal/mailjob"
	"github.com/courier-dev/courier/services/internal/outbox"
	"github.com/courier-dev/courier/services/internal/servicetest"
	"github.com/courier-dev/courier/services/internal/sqlitedb"
	"github.com/courier-dev/courier/services/kit"
	"github.com/courier-dev/courier/services/kit/contract"
)

// usersUpstream is a real HTTP server standing in for the users service:
// it publishes the test signing key's JWKS, answers GET /internal/users/:id
// from a fixed directory for a request with a valid token, and records the
// request ids it was sent.
type usersUpstream struct {
	*httptest.Server
	mu         sync.Mutex
	requestIDs []string
	traces     []string
}

var directory = map[int64]user{
	1: {ID: 1, Name: "Ada Lovelace", Email: "ada@example.com"},
	2: {ID: 2, Name: "Charles Babbage", Email: "charles@example.com"},
}

func newUsersUpstream(t *testing.T) *usersUpstream {
	u := &usersUpstream{}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+auth.JWKSPath, func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write(testTokens.JWKS())
	})
	mux.HandleFunc("GET /internal/users/{id}", func(w http.ResponseWriter, r *http.Request) {
		if _, err := testTokens.Verify(auth.BearerToken(r.Header.Get("Authorization"))); err != nil {
			http.Error(w, `{"error":"sign-in required"}`, http.StatusUnauthorized)
			return
		}
		u.mu.Lock()
		u.requestIDs = append(u.requestIDs, r.Header.Get(kit.RequestIDHeader))
		u.traces = append(u.traces, r.Header.Get("traceparent"))
		u.mu.Unlock()
		id, _ := strconv.ParseInt(r.PathValue("id"), 10, 64)
		usr, ok := directory[id]
		if !ok {
			http.Error(w, `{"error":"user not found"}`, http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(usr)
	})
	u.Server = httptest.NewServer(mux)
	t.Cleanup(u.Close)
	return u
}

func (u *usersUpstream) seen() ([]string, []string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.requestIDs...), append([]string(nil), u.traces...)
}

// testAPI is the posts router on the kit's engine over real SQLite, calling
// a users upstream over HTTP, with a real outbox relay publishing to an
// in-memory publisher. The real brokers are exercised in run_test.go.
type testAPI struct {
	srv   *httptest.Server
	pub   *servicetest.Publisher
	relay *outbox.Relay
}

func newTestAPI(t *testing.T, usersURL string, usersTimeout time.Duration) *testAPI {
	t.Helper()
	db, err := sqlitedb.Open(t.Context(), filepath.Join(t.TempDir(), "posts.db"), migrations)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	users, err := newUsersClient(usersURL, usersTimeout)
	if err != nil {
		t.Fatal(err)
	}
	pub := &servicetest.Publisher{}
	relay := servicetest.StartRelay(t, db, pub)
	srv := httptest.NewServer(servicetest.Handler(t, nil, newRouter(&store{db: db}, users, testTokens, relay, servicetest.Logger(t))))
	t.Cleanup(srv.Close)
	return &testAPI{srv: srv, pub: pub, relay: relay}
}

// testTokens plays the users service's signing key.
var testTokens = authtest.MustTokens(nil)

// as returns the Authorization header of a signed-in user, as the gateway
// forwards it.
func as(id int64) []string {
	tok, _, err := testTokens.Issue(id)
	if err != nil {
		panic(err)
	}
	return []string{"Authorization", "Bearer " + tok}
}

func isPost(id, author float64, title, body string) servicetest.Check {
	return func(t *testing.T, r servicetest.Response) {
		t.Helper()
		if r.Body["id"] != id || r.Body["author_id"] != author || r.Body["title"] != title || r.Body["body"] != body {
			t.Errorf("post = %v, want id %v by %v titled %q with body %q", r.Body, id, author, title, body)
		}
		for _, k := range []string{"created_at", "updated_at"} {
			if _, err := time.Parse(time.RFC3339, r.Body[k].(string)); err != nil {
				t.Errorf("%s = %v: %v", k, r.Body[k], err)
			}
		}
	}
}

func listed(key string, n int) servicetest.Check {
	return func(t *testing.T, r servicetest.Response) {
		t.Helper()
		items, ok := r.Body[key].([]any)
		if !ok || len(items) != n {
			t.Errorf("%s = %v, want %d items", key, r.Body[key], n)
		}
	}
}

func TestRoutes(t *testing.T) {
	users := newUsersUpstream(t)
	api := newTestAPI(t, users.URL, 2*time.Second)
	const post = `{"title":"Notes on the engine","body":"It weaves algebraic patterns."}`

	// The cases run in order against one database: later ones rely on what
	// earlier ones created. User 1 (Ada) writes post 1; user 2 (Charles) may
	// comment on it but not change it.
	tests := []struct {
		name       string
		method     string
		path       string
		body       string
		headers    []string
		wantStatus int
		check      servicetest.Check
	}{
		{"create", "POST", "/api/posts", post, as(1), 201, func(t *testing.T, r servicetest.Response) {
			isPost(1, 1, "Notes on the engine", "It weaves algebraic patterns.")(t, r)
			if r.Header.Get("Location") != "/api/posts/1" {
				t.Errorf("Location = %q", r.Header.Get("Location"))
			}
		}},
		{"create signed out", "POST", "/api/posts", post, nil, 401, servicetest.HasError("sign-in required")},
		{"create with a malformed token", "POST", "/api/posts", post, []string{"Authorization", "Bearer ada"}, 401, servicetest.HasError("sign-in required")},
		{"create invalid JSON", "POST", "/api/posts", `{"title"`, as(1), 400, servicetest.HasError("malformed request body")},
		{"create missing fields", "POST", "/api/posts", `{}`, as(1), 400,
			servicetest.HasFields(map[string]string{"title": "is required", "body": "is required"})},
		{"create blank title", "POST", "/api/posts", `{"title":"  ","body":"b"}`, as(1), 400,
			servicetest.HasFields(map[string]string{"title": "is required"})},
		{"create title too long", "POST", "/api/posts", `{"title":"` + strings.Repeat("t", 201) + `","body":"b"}`, as(1), 400,
			servicetest.HasFields(map[string]string{"title": "must be at most 200 characters long"})},
		{"create second post", "POST", "/api/posts", `{"title":"Second","body":"b"}`, as(2), 201, isPost(2, 2, "Second", "b")},

		{"list", "GET", "/api/posts", ``, nil, 200, func(t *testing.T, r servicetest.Response) {
			listed("posts", 2)(t, r)
			if first := r.Body["posts"].([]any)[0].(map[string]any); first["id"] != float64(2) {
				t.Errorf("first listed post is %v, want the newest (2)", first["id"])
			}
		}},
		{"list a page", "GET", "/api/posts?limit=1&offset=1", ``, nil, 200, listed("posts", 1)},
		{"list past the end", "GET", "/api/posts?offset=10", ``, nil, 200, listed("posts", 0)},
		{"list with limit 0", "GET", "/api/posts?limit=0", ``, nil, 400, servicetest.HasFields(map[string]string{"limit": "must be at least 1"})},
		{"list with limit 101", "GET", "/api/posts?limit=101", ``, nil, 400, servicetest.HasFields(map[string]string{"limit": "must be at most 100"})},
		{"list with a non-numeric limit", "GET", "/api/posts?limit=all", ``, nil, 400, nil},
		{"list with a negative offset", "GET", "/api/posts?offset=-1", ``, nil, 400, servicetest.HasFields(map[string]string{"offset": "must be at least 0"})},

		{"get", "GET", "/api/posts/1", ``, nil, 200, isPost(1, 1, "Notes on the engine", "It weaves algebraic patterns.")},
		{"get unknown", "GET", "/api/posts/999", ``, nil, 404, servicetest.HasError("post not found")},
		{"get non-numeric id", "GET", "/api/posts/first", ``, nil, 400, servicetest.HasFields(map[string]string{"id": "must be a positive integer"})},

		{"update by the author", "PUT", "/api/posts/1", `{"title":"Notes, revised","body":"Now with Bernoulli numbers."}`, as(1), 200,
			isPost(1, 1, "Notes, revised", "Now with Bernoulli numbers.")},
		{"update by someone else", "PUT", "/api/posts/1", post, as(2), 403, servicetest.HasError("only the post's author may change it")},
		{"update signed out", "PUT", "/api/posts/1", post, nil, 401, servicetest.HasError("sign-in required")},
		{"update unknown", "PUT", "/api/posts/999", post, as(1), 404, servicetest.HasError("post not found")},
		{"update missing body", "PUT", "/api/posts/1", `{"title":"t"}`, as(1), 400, servicetest.HasFields(map[string]string{"body": "is required"})},
		{"update kept the post after refusals", "GET", "/api/posts/1", ``, nil, 200,
			isPost(1, 1, "Notes, revised", "Now with Bernoulli numbers.")},

		{"comment", "POST", "/api/posts/1/comments", `{"body":"Splendid."}`, as(2), 201, func(t *testing.T, r servicetest.Response) {
			if r.Body["id"] != float64(1) || r.Body["post_id"] != float64(1) || r.Body["author_id"] != float64(2) || r.Body["body"] != "Splendid." {
				t.Errorf("comment = %v", r.Body)
			}
		}},
		{"comment on one's own post", "POST", "/api/posts/1/comments", `{"body":"Thank you."}`, as(1), 201, nil},
		{"comment signed out", "POST", "/api/posts/1/comments", `{"body":"x"}`, nil, 401, servicetest.HasError("sign-in required")},
		{"comment empty", "POST", "/api/posts/1/comments", `{"body":" "}`, as(2), 400, servicetest.HasFields(map[string]string{"body": "is required"})},
		{"comment invalid JSON", "POST", "/api/posts/1/comments", `[`, as(2), 400, servicetest.HasError("malformed request body")},
		{"comment on an unknown post", "POST", "/api/posts/999/comments", `{"body":"x"}`, as(2), 404, servicetest.HasError("post not found")},
		{"comment by a user users does not know", "POST", "/api/posts/1/comments", `{"body":"x"}`, as(3), 502,
			servicetest.HasError("the users service does not know the post's author or the commenter")},
		{"list comments", "GET", "/api/posts/1/comments", ``, nil, 200, listed("comments", 2)},
		{"list comments of an unknown post", "GET", "/api/posts/999/comments", ``, nil, 404, servicetest.HasError("post not found")},

		{"delete by someone else", "DELETE", "/api/posts/1", ``, as(2), 403, servicetest.HasError("only the post's author may change it")},
		{"delete signed out", "DELETE", "/api/posts/1", ``, nil, 401, servicetest.HasError("sign-in required")},
		{"delete by the author", "DELETE", "/api/posts/1", ``, as(1), 204, nil},
		{"get deleted", "GET", "/api/posts/1", ``, nil, 404, servicetest.HasError("post not found")},
		{"comments went with the post", "GET", "/api/posts/1/comments", ``, nil, 404, nil},
		{"delete again", "DELETE", "/api/posts/1", ``, as(1), 404, servicetest.HasError("post not found")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := servicetest.Do(t, api.srv.Client(), tt.method, api.srv.URL+tt.path, tt.body, tt.headers...)
			if r.Status != tt.wantStatus {
				t.Fatalf("%s %s = %d %s, want %d", tt.method, tt.path, r.Status, r.Raw, tt.wantStatus)
			}
			if tt.check != nil {
				tt.check(t, r)
			}
		})
	}

	// The two comments, and nothing else, queued an e-mail to Ada.
	jobs := servicetest.WaitForJobs(t, api.relay, api.pub, 2)
	for i, commenter := range []string{"Charles Babbage", "Ada Lovelace"} {
		want := map[string]string{
			mailjob.DataName: "Ada Lovelace", mailjob.DataPostID: "1", mailjob.DataPostTitle: "Notes, revised",
			mailjob.DataCommenterName: commenter, mailjob.DataComment: []string{"Splendid.", "Thank you."}[i],
		}
		if j := jobs[i]; j.Template != mailjob.TemplateComment || j.To != "ada@example.com" || !maps.Equal(j.Data, want) {
			t.Errorf("job %d = %+v, want a comment e-mail to ada@example.com with %v", i, j, want)
		}
	}
}

func TestCommentPropagatesRequestIDToUsers(t *testing.T) {
	users := newUsersUpstream(t)
	api := newTestAPI(t, users.URL, 2*time.Second)
	servicetest.Do(t, api.srv.Client(), "POST", api.srv.URL+"/api/posts", `{"title":"t","body":"b"}`, as(1)...)
	const rid = "request-from-the-gateway"
	r := servicetest.Do(t, api.srv.Client(), "POST", api.srv.URL+"/api/posts/1/comments", `{"body":"c"}`,
		append(as(2), kit.RequestIDHeader, rid)...)
	if r.Status != http.StatusCreated {
		t.Fatalf("comment = %d %s", r.Status, r.Raw)
	}
	ids, traces := users.seen()
	if len(ids) != 2 || ids[0] != rid || ids[1] != rid {
		t.Errorf("users saw request ids %q, want %q twice", ids, rid)
	}
	for _, tp := range traces {
		if tp == "" {
			t.Errorf("users saw a request without traceparent: %q", traces)
		}
	}
}

// TestCommentWhenUsersFails: if the author's address cannot be had, the
// comment is refused with 502 or 504 and nothing is saved or queued.
func TestCommentWhenUsersFails(t *testing.T) {
	// A port nothing listens on: the listener is opened and closed at once.
	ln := servicetest.Listen(t)
	downURL := "http://" + ln.Addr().String()
	_ = ln.Close()

	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done() // never answers; returns when the client gives up
	}))
	t.Cleanup(slow.Close)
	broken := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "boom", http.StatusInternalServerError)
	}))
	t.Cleanup(broken.Close)

	tests := []struct {
		name       string
		url        string
		wantStatus int
		wantError  string
	}{
		{"users down", downURL, 502, "the users service is unavailable"},
		{"users slow", slow.URL, 504, "the users service did not answer in time"},
		{"users failing", broken.URL, 502, "the users service is unavailable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			api := newTestAPI(t, tt.url, 200*time.Millisecond)
			c := api.srv.Client()
			if r := servicetest.Do(t, c, "POST", api.srv.URL+"/api/posts", `{"title":"t","body":"b"}`, as(1)...); r.Status != 201 {
				t.Fatalf("create post = %d %s", r.Status, r.Raw)
			}
			start := time.Now()
			r := servicetest.Do(t, c, "POST", api.srv.URL+"/api/posts/1/comments", `{"body":"c"}`, as(2)...)
			if r.Status != tt.wantStatus || r.Body["error"] != tt.wantError {
				t.Fatalf("comment = %d %s, want %d %q", r.Status, r.Raw, tt.wantStatus, tt.wantError)
			}
			if took := time.Since(start); took > 2*time.Second {
				t.Errorf("the comment took %s to fail; the users timeout is 200ms", took)
			}
			if r := servicetest.Do(t, c, "GET", api.srv.URL+"/api/posts/1/comments", ""); !isEmptyList(r, "comments") {
				t.Errorf("comments after the failure = %s, want none", r.Raw)
			}
			servicetest.WaitForJobs(t, api.relay, api.pub, 0)
		})
	}
}

func isEmptyList(r servicetest.Response, key string) bool {
	items, ok := r.Body[key].([]any)
	return r.Status == 200 && ok && len(items) == 0
}

func TestConfigNamesTheContractVariable(t *testing.T) {
	// Struct tags must be literals; this keeps the literal and the contract
	// from drifting apart.
	f, _ := reflect.TypeFor[config]().FieldByName("UsersURL")
	name, _, _ := strings.Cut(f.Tag.Get("env"), ",")
	if want := contract.ServiceURLEnv("users"); name != want {
		t.Fatalf("config reads %q, the contract names %q", name, want)
	}
}

// TestCommentLimitPerAccount: each comment mails the post's author, so one
// account's comments are limited; another account can still comment.
func TestCommentLimitPerAccount(t *testing.T) {
	users := newUsersUpstream(t)
	api := newTestAPI(t, users.URL, time.Second)
	client := servicetest.HTTPClient()
	r := servicetest.Do(t, client, "POST", api.srv.URL+"/api/posts", `{"title":"T","body":"B"}`, as(1)...)
	if r.Status != 201 {
		t.Fatalf("create post = %d %s", r.Status, r.Raw)
	}
	url := fmt.Sprintf("%s/api/posts/%v/comments", api.srv.URL, r.Body["id"])
	for i := range commentsPerAccountBurst {
		if r := servicetest.Do(t, client, "POST", url, `{"body":"hi"}`, as(2)...); r.Status != 201 {
			t.Fatalf("comment %d = %d %s, want 201", i+1, r.Status, r.Raw)
		}
	}
	r = servicetest.Do(t, client, "POST", url, `{"body":"hi"}`, as(2)...)
	if r.Status != 429 || r.Header.Get("Retry-After") == "" {
		t.Fatalf("comment %d = %d (Retry-After %q), want 429 with Retry-After", commentsPerAccountBurst+1, r.Status, r.Header.Get("Retry-After"))
	}
	if r := servicetest.Do(t, client, "POST", url, `{"body":"hi"}`, as(1)...); r.Status != 201 {
		t.Errorf("another account's comment = %d, want 201", r.Status)
	}
	if got := len(api.pub.Jobs()); got > commentsPerAccountBurst+1 {
		t.Errorf("%d notification jobs, want at most %d", got, commentsPerAccountBurst+1)
	}
}

// TestNoTrustInTheNetwork: posts verifies every write's token itself. A
// forged identity header, sent straight to posts as any pod could, and a
// token signed with a key other than users' both get 401, and nothing is
// deleted.
func TestNoTrustInTheNetwork(t *testing.T) {
	users := newUsersUpstream(t)
	api := newTestAPI(t, users.URL, time.Second)
	client := servicetest.HTTPClient()
	if r := servicetest.Do(t, client, "POST", api.srv.URL+"/api/posts", `{"title":"Mine","body":"b"}`, as(1)...); r.Status != 201 {
		t.Fatalf("create = %d %s", r.Status, r.Raw)
	}
	forgedToken := authtest.Token(t, authtest.Tokens(t, nil), 1)
	for name, headers := range map[string][]string{
		"forged X-User-ID":     {auth.HeaderUserID, "1"},
		"token of another key": {"Authorization", "Bearer " + forgedToken},
		"both":                 {auth.HeaderUserID, "1", "Authorization", "Bearer " + forgedToken},
	} {
		t.Run(name, func(t *testing.T) {
			if r := servicetest.Do(t, client, "DELETE", api.srv.URL+"/api/posts/1", "", headers...); r.Status != 401 {
				t.Fatalf("DELETE with %s = %d %s, want 401", name, r.Status, r.Raw)
			}
		})
	}
	if r := servicetest.Do(t, client, "GET", api.srv.URL+"/api/posts/1", ""); r.Status != 200 {
		t.Fatalf("the post is gone: GET = %d", r.Status)
	}
}
