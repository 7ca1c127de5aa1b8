package main

import (
	"crypto/ed25519"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/courier-dev/courier/services/internal/auth"
	"github.com/courier-dev/courier/services/internal/auth/authtest"
	"github.com/courier-dev/courier/services/internal/servicetest"
	"github.com/courier-dev/courier/services/kit"
	"github.com/courier-dev/courier/services/kit/contract"
)

// testKey signs the tests' tokens, as users' key does; testTokens verifies
// them, and the echo upstreams publish its public key as users does.
var (
	testKey    = authtest.MustKey()
	testTokens = authtest.MustTokens(testKey)
)

// echo is what the echo upstreams answer: the request as they received it.
type echo struct {
	Service     string `json:"service"`
	Method      string `json:"method"`
	Path        string `json:"path"`
	Query       string `json:"query"`
	UserID      string `json:"user_id"`
	HasUserID   bool   `json:"has_user_id"`
	Auth        string `json:"authorization"`
	RequestID   string `json:"request_id"`
	TraceParent string `json:"traceparent"`
	Forwarded   string `json:"x_forwarded_for"`
	Body        string `json:"body"`
}

// echoUpstream is a real HTTP server standing in for users or posts that
// answers with what it received and counts requests.
type echoUpstream struct {
	*httptest.Server
	hits atomic.Int64
}

func newEchoUpstream(t *testing.T, service string) *echoUpstream {
	u := &echoUpstream{}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == auth.JWKSPath { // users' public keys, not a forwarded request
			_, _ = w.Write(testTokens.JWKS())
			return
		}
		u.hits.Add(1)
		body, _ := io.ReadAll(r.Body)
		_, hasUserID := r.Header[http.CanonicalHeaderKey(auth.HeaderUserID)]
		status := http.StatusOK
		if r.URL.Query().Get("status") == "403" { // lets a test check statuses pass through
			status = http.StatusForbidden
		}
		w.Header().Set("Content-Type", "application/json")
		// As the kit does: the upstream answers with the id it logged.
		w.Header().Set(kit.RequestIDHeader, r.Header.Get(kit.RequestIDHeader))
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(echo{
			Service: service, Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery,
			UserID: verifiedCaller(r), HasUserID: hasUserID,
			Auth: r.Header.Get("Authorization"), RequestID: r.Header.Get(kit.RequestIDHeader),
			TraceParent: r.Header.Get("traceparent"), Forwarded: r.Header.Get("X-Forwarded-For"),
			Body: string(body),
		})
	}))
	t.Cleanup(u.Close)
	return u
}

// verifiedCaller is the user id the forwarded bearer token verifies as, as
// posts would check it, or "".
func verifiedCaller(r *http.Request) string {
	id, err := testTokens.Verify(auth.BearerToken(r.Header.Get("Authorization")))
	if err != nil {
		return ""
	}
	return strconv.FormatInt(id, 10)
}

// newGateway serves the gateway router on the kit's engine, forwarding to
// the given base URLs.
func newGateway(t *testing.T, usersURL, postsURL string, timeout time.Duration) *httptest.Server {
	t.Helper()
	verifier := testTokens
	log := servicetest.Logger(t)
	upstreamFor := func(name, raw string) *upstream {
		u, err := parseBaseURL(raw)
		if err != nil {
			t.Fatal(err)
		}
		return newUpstream(name, u, timeout, log)
	}
	srv := httptest.NewServer(servicetest.Handler(t, func(c *kit.Config) { c.BodyLimit = 1024 }, mustRouter(t, upstreamFor("users", usersURL), upstreamFor("posts", postsURL), verifier)))
	t.Cleanup(srv.Close)
	return srv
}

func token(t *testing.T, key ed25519.PrivateKey, userID int64, now time.Time) string {
	t.Helper()
	tokens, err := auth.New(key, time.Hour, nil, auth.WithClock(func() time.Time { return now }))
	if err != nil {
		t.Fatal(err)
	}
	s, _, err := tokens.Issue(userID)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func decodeEcho(t *testing.T, r servicetest.Response) echo {
	t.Helper()
	var e echo
	if err := json.Unmarshal(r.Raw, &e); err != nil {
		t.Fatalf("upstream answer %q: %v", r.Raw, err)
	}
	return e
}

func TestRoutes(t *testing.T) {
	users, posts := newEchoUpstream(t, "users"), newEchoUpstream(t, "posts")
	gw := newGateway(t, users.URL, posts.URL, 2*time.Second)

	valid := "Bearer " + token(t, testKey, 42, time.Now())
	expired := "Bearer " + token(t, testKey, 42, time.Now().Add(-2*time.Hour))
	forged := "Bearer " + token(t, authtest.MustKey(), 42, time.Now())
	const spoof = "1" // a client claiming to be user 1

	type forwarded struct {
		service, method, path, query string
		// userID is who the forwarded token verifies as; "" means none.
		userID string
	}
	tests := []struct {
		name       string
		method     string
		path       string
		body       string
		headers    []string
		wantStatus int
		want       *forwarded // nil: the gateway answers itself
		wantError  string
	}{
		{"sign up is public", "POST", "/api/users", `{"name":"n"}`, nil, 200, &forwarded{"users", "POST", "/api/users", "", ""}, ""},
		{"sign up drops a spoofed user id", "POST", "/api/users", `{}`, []string{auth.HeaderUserID, spoof}, 200,
			&forwarded{"users", "POST", "/api/users", "", ""}, ""},
		{"sign in is public", "POST", "/api/sessions", `{}`, nil, 200, &forwarded{"users", "POST", "/api/sessions", "", ""}, ""},
		{"get user", "GET", "/api/users/7", ``, nil, 200, &forwarded{"users", "GET", "/api/users/7", "", ""}, ""},
		{"list posts keeps the query", "GET", "/api/posts?limit=5&offset=10", ``, nil, 200,
			&forwarded{"posts", "GET", "/api/posts", "limit=5&offset=10", ""}, ""},
		{"get post drops a spoofed user id", "GET", "/api/posts/3", ``, []string{auth.HeaderUserID, spoof}, 200,
			&forwarded{"posts", "GET", "/api/posts/3", "", ""}, ""},
		{"list comments", "GET", "/api/posts/3/comments", ``, nil, 200, &forwarded{"posts", "GET", "/api/posts/3/comments", "", ""}, ""},

		{"create post", "POST", "/api/posts", `{"title":"t"}`, []string{"Authorization", valid}, 200,
			&forwarded{"posts", "POST", "/api/posts", "", "42"}, ""},
		{"create post, lower-case scheme", "POST", "/api/posts", `{}`, []string{"Authorization", "bearer " + strings.TrimPrefix(valid, "Bearer ")}, 200,
			&forwarded{"posts", "POST", "/api/posts", "", "42"}, ""},
		{"create post overrides a spoofed user id", "POST", "/api/posts", `{}`,
			[]string{"Authorization", valid, auth.HeaderUserID, spoof}, 200, &forwarded{"posts", "POST", "/api/posts", "", "42"}, ""},
		{"update post", "PUT", "/api/posts/3", `{}`, []string{"Authorization", valid}, 200, &forwarded{"posts", "PUT", "/api/posts/3", "", "42"}, ""},
		{"delete post", "DELETE", "/api/posts/3", ``, []string{"Authorization", valid}, 200, &forwarded{"posts", "DELETE", "/api/posts/3", "", "42"}, ""},
		{"comment", "POST", "/api/posts/3/comments", `{}`, []string{"Authorization", valid}, 200,
			&forwarded{"posts", "POST", "/api/posts/3/comments", "", "42"}, ""},
		{"upstream status passes through", "DELETE", "/api/posts/3?status=403", ``, []string{"Authorization", valid}, 403,
			&forwarded{"posts", "DELETE", "/api/posts/3", "status=403", "42"}, ""},

		{"create post without a token", "POST", "/api/posts", `{}`, nil, 401, nil, "sign-in required: send Authorization: Bearer <token>"},
		{"create post with only a spoofed user id", "POST", "/api/posts", `{}`, []string{auth.HeaderUserID, spoof}, 401, nil,
			"sign-in required: send Authorization: Bearer <token>"},
		{"create post with an expired token", "POST", "/api/posts", `{}`, []string{"Authorization", expired}, 401, nil, "invalid or expired token"},
		{"create post with a forged token", "POST", "/api/posts", `{}`, []string{"Authorization", forged}, 401, nil, "invalid or expired token"},
		{"create post with garbage", "POST", "/api/posts", `{}`, []string{"Authorization", "Bearer not-a-jwt"}, 401, nil, "invalid or expired token"},
		{"create post with basic auth", "POST", "/api/posts", `{}`, []string{"Authorization", "Basic YWRhOnB3"}, 401, nil,
			"sign-in required: send Authorization: Bearer <token>"},
		{"update post without a token", "PUT", "/api/posts/3", `{}`, nil, 401, nil, "sign-in required: send Authorization: Bearer <token>"},
		{"delete post with an expired token", "DELETE", "/api/posts/3", ``, []string{"Authorization", expired}, 401, nil, "invalid or expired token"},
		{"comment without a token", "POST", "/api/posts/3/comments", `{}`, nil, 401, nil, "sign-in required: send Authorization: Bearer <token>"},

		{"unknown path", "GET", "/api/admin", ``, nil, 404, nil, "not found"},
		{"unknown nested path", "GET", "/api/posts/3/likes", ``, nil, 404, nil, "not found"},
		{"method not routed", "PATCH", "/api/users/7", `{}`, []string{"Authorization", valid}, 405, nil, "method not allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := users.hits.Load() + posts.hits.Load()
			r := servicetest.Do(t, gw.Client(), tt.method, gw.URL+tt.path, tt.body, tt.headers...)
			if r.Status != tt.wantStatus {
				t.Fatalf("%s %s = %d %s, want %d", tt.method, tt.path, r.Status, r.Raw, tt.wantStatus)
			}
			hits := users.hits.Load() + posts.hits.Load() - before
			if tt.want == nil {
				if hits != 0 {
					t.Errorf("the request reached an upstream %d times; the gateway should have answered it", hits)
				}
				if r.Body["error"] != tt.wantError {
					t.Errorf("error = %v, want %q", r.Body["error"], tt.wantError)
				}
				if tt.wantStatus == 401 && !strings.HasPrefix(r.Header.Get("WWW-Authenticate"), "Bearer") {
					t.Errorf("WWW-Authenticate = %q, want a Bearer challenge", r.Header.Get("WWW-Authenticate"))
				}
				return
			}
			e := decodeEcho(t, r)
			got := forwarded{e.Service, e.Method, e.Path, e.Query, e.UserID}
			if got != *tt.want {
				t.Errorf("forwarded %+v, want %+v", got, *tt.want)
			}
			if e.HasUserID {
				t.Errorf("upstream received %s; the gateway drops it", auth.HeaderUserID)
			}
			if want := headerValue(tt.headers, "Authorization"); e.Auth != want {
				t.Errorf("upstream received Authorization %q, want the caller's %q unchanged", e.Auth, want)
			}
			if e.Body != tt.body {
				t.Errorf("upstream received body %q, want %q", e.Body, tt.body)
			}
			if ids := r.Header.Values(kit.RequestIDHeader); len(ids) != 1 || e.RequestID != ids[0] {
				t.Errorf("upstream logged request id %q, the response carries %q: want exactly that one", e.RequestID, ids)
			}
			if e.TraceParent == "" || e.Forwarded == "" {
				t.Errorf("upstream saw traceparent %q and X-Forwarded-For %q, want both set", e.TraceParent, e.Forwarded)
			}
		})
	}
}

// TestEveryWriteRouteNeedsAToken walks the registered routes rather than a
// list in the test, so a route added later is covered too.
func TestEveryWriteRouteNeedsAToken(t *testing.T) {
	users, posts := newEchoUpstream(t, "users"), newEchoUpstream(t, "posts")
	verifier := testTokens
	log := servicetest.Logger(t)
	u, _ := url.Parse(users.URL)
	p, _ := url.Parse(posts.URL)
	router := mustRouter(t, newUpstream("users", u, time.Second, log), newUpstream("posts", p, time.Second, log), verifier)
	gw := httptest.NewServer(servicetest.Handler(t, nil, router))
	t.Cleanup(gw.Close)

	writes := 0
	for _, route := range router.(*gin.Engine).Routes() {
		if route.Method == http.MethodGet || route.Method == http.MethodHead {
			continue
		}
		writes++
		path := strings.NewReplacer(":id", "1").Replace(route.Path)
		r := servicetest.Do(t, gw.Client(), route.Method, gw.URL+path, `{}`)
		public := publicWrites[route.Method+" "+route.Path]
		if public && r.Status == http.StatusUnauthorized {
			t.Errorf("%s %s is public but answered 401", route.Method, route.Path)
		}
		if !public && r.Status != http.StatusUnauthorized {
			t.Errorf("%s %s without a token = %d %s, want 401", route.Method, route.Path, r.Status, r.Raw)
		}
	}
	if writes < 6 {
		t.Fatalf("found %d write routes; the router registers more", writes)
	}
}

func TestUpstreamFailures(t *testing.T) {
	// A port nothing listens on: opened and closed at once.
	ln := servicetest.Listen(t)
	down := "http://" + ln.Addr().String()
	_ = ln.Close()

	release := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	t.Cleanup(func() { close(release); slow.Close() })
	users := newEchoUpstream(t, "users")

	const timeout = 300 * time.Millisecond
	valid := "Bearer " + token(t, testKey, 42, time.Now())
	tests := []struct {
		name       string
		usersURL   string
		postsURL   string
		method     string
		path       string
		wantStatus int
		wantError  string
	}{
		{"posts down", users.URL, down, "GET", "/api/posts", 502, "the posts service is unavailable"},
		{"users down", down, users.URL, "POST", "/api/sessions", 502, "the users service is unavailable"},
		{"posts slow", users.URL, slow.URL, "POST", "/api/posts", 504, "the posts service did not answer in time"},
		{"users slow", slow.URL, users.URL, "GET", "/api/users/1", 504, "the users service did not answer in time"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gw := newGateway(t, tt.usersURL, tt.postsURL, timeout)
			start := time.Now()
			r := servicetest.Do(t, gw.Client(), tt.method, gw.URL+tt.path, `{}`, "Authorization", valid)
			took := time.Since(start)
			if r.Status != tt.wantStatus || r.Body["error"] != tt.wantError {
				t.Fatalf("%s %s = %d %s, want %d %q", tt.method, tt.path, r.Status, r.Raw, tt.wantStatus, tt.wantError)
			}
			if !strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
				t.Errorf("Content-Type = %q, want JSON", r.Header.Get("Content-Type"))
			}
			if took > timeout+2*time.Second {
				t.Errorf("answered after %s; the upstream timeout is %s", took, timeout)
			}
			if tt.wantStatus == http.StatusGatewayTimeout && took < timeout {
				t.Errorf("answered 504 after %s, before the %s timeout", took, timeout)
			}
		})
	}
}

func TestBodyOverTheLimitIsRefused(t *testing.T) {
	users, posts := newEchoUpstream(t, "users"), newEchoUpstream(t, "posts")
	gw := newGateway(t, users.URL, posts.URL, 2*time.Second)
	big := `{"name":"` + strings.Repeat("x", 2048) + `"}`

	// With a Content-Length the kit refuses it before the proxy runs.
	r := servicetest.Do(t, gw.Client(), "POST", gw.URL+"/api/users", big)
	if r.Status != http.StatusRequestEntityTooLarge {
		t.Fatalf("POST with a 2 KiB body = %d %s, want 413", r.Status, r.Raw)
	}

	// Chunked, the limit trips while the proxy streams the body upstream.
	req, err := http.NewRequestWithContext(t.Context(), "POST", gw.URL+"/api/users", io.MultiReader(strings.NewReader(big)))
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = -1
	resp, err := gw.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("chunked POST with a 2 KiB body = %d %s, want 413", resp.StatusCode, body)
	}
}

func TestConfigNamesTheContractVariables(t *testing.T) {
	// Struct tags must be literals; this keeps them and the contract in step.
	for field, service := range map[string]string{"UsersURL": "users", "PostsURL": "posts"} {
		f, _ := reflect.TypeFor[config]().FieldByName(field)
		name, _, _ := strings.Cut(f.Tag.Get("env"), ",")
		if want := contract.ServiceURLEnv(service); name != want {
			t.Errorf("config.%s reads %q, the contract names %q", field, name, want)
		}
	}
}

// TestPerClientRateLimits: once a client used up a route's burst, the
// gateway answers 429 with Retry-After and the upstream sees nothing more;
// other routes and the read routes are not affected.
func TestPerClientRateLimits(t *testing.T) {
	users, posts := newEchoUpstream(t, "users"), newEchoUpstream(t, "posts")
	gw := newGateway(t, users.URL, posts.URL, time.Second)
	client := servicetest.HTTPClient()
	tok := token(t, testKey, 7, time.Now())
	for _, tt := range []struct {
		name, path string
		limit      limit
		headers    []string
	}{
		{"sign-up", "/api/users", signUpsPerClient, nil},
		{"sign-in", "/api/sessions", signInsPerClient, nil},
		{"comment", "/api/posts/1/comments", commentsPerClient, []string{"Authorization", "Bearer " + tok}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			up := users
			if strings.HasPrefix(tt.path, "/api/posts") {
				up = posts
			}
			before := up.hits.Load()
			for i := range tt.limit.burst {
				if r := servicetest.Do(t, client, "POST", gw.URL+tt.path, `{}`, tt.headers...); r.Status == http.StatusTooManyRequests {
					t.Fatalf("request %d of a burst of %d refused", i+1, tt.limit.burst)
				}
			}
			r := servicetest.Do(t, client, "POST", gw.URL+tt.path, `{}`, tt.headers...)
			if r.Status != http.StatusTooManyRequests {
				t.Fatalf("request %d = %d, want 429", tt.limit.burst+1, r.Status)
			}
			if ra, err := strconv.Atoi(r.Header.Get("Retry-After")); err != nil || ra < 1 || time.Duration(ra)*time.Second > tt.limit.every+time.Second {
				t.Errorf("Retry-After = %q, want whole seconds up to %s", r.Header.Get("Retry-After"), tt.limit.every)
			}
			if got := up.hits.Load() - before; got != int64(tt.limit.burst) {
				t.Errorf("upstream saw %d requests, want the %d of the burst", got, tt.limit.burst)
			}
		})
	}
	if r := servicetest.Do(t, client, "GET", gw.URL+"/api/posts", ""); r.Status != http.StatusOK {
		t.Errorf("a read after the limits = %d, want 200", r.Status)
	}
}

// headerValue is the value of name in a servicetest.Do header list, or "".
func headerValue(headers []string, name string) string {
	for i := 0; i+1 < len(headers); i += 2 {
		if http.CanonicalHeaderKey(headers[i]) == http.CanonicalHeaderKey(name) {
			return headers[i+1]
		}
	}
	return ""
}

// mustRouter is newRouter without trusted proxies.
func mustRouter(t *testing.T, users, posts *upstream, tokens tokenVerifier) http.Handler {
	t.Helper()
	h, err := newRouter(nil, users, posts, tokens)
	if err != nil {
		t.Fatal(err)
	}
	return h
}
