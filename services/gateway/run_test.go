package main

import (
	"maps"
	"testing"
	"time"

	"github.com/courier-dev/courier/services/internal/servicetest"
	"github.com/courier-dev/courier/services/kit/contract"
)

// startGateway runs the whole gateway in front of two echo upstreams, with
// extra added to the operator's environment.
func startGateway(t *testing.T, extra map[string]string) *servicetest.Running {
	users, posts := newEchoUpstream(t, "users"), newEchoUpstream(t, "posts")
	env := map[string]string{
		contract.EnvAppName: "blog", contract.EnvServiceName: "gateway",
		contract.ServiceURLEnv("users"): users.URL,
		contract.ServiceURLEnv("posts"): posts.URL,
	}
	maps.Copy(env, extra)
	return servicetest.Start(t, run, "gateway", env)
}

// TestRun starts the whole gateway and forwards a signed-in write through it.
func TestRun(t *testing.T) {
	svc := startGateway(t, nil)
	svc.WaitReady(t)
	client := servicetest.HTTPClient()
	r := servicetest.Do(t, client, "POST", svc.APIURL+"/api/posts", `{}`, "Authorization", "Bearer "+token(t, testKey, 9, time.Now()))
	if e := decodeEcho(t, r); r.Status != 200 || e.Service != "posts" || e.UserID != "9" {
		t.Fatalf("POST /api/posts = %d %s, want it forwarded to posts as user 9", r.Status, r.Raw)
	}
	if r := servicetest.Do(t, client, "POST", svc.APIURL+"/api/posts", `{}`); r.Status != 401 {
		t.Fatalf("POST /api/posts without a token = %d %s, want 401", r.Status, r.Raw)
	}
	if err := svc.Stop(t); err != nil {
		t.Fatalf("run returned %v after SIGTERM", err)
	}
}

func TestRunRejectsBadConfig(t *testing.T) {
	base := map[string]string{
		contract.ServiceURLEnv("users"): "http://users:8080", contract.ServiceURLEnv("posts"): "http://posts:8080",
	}
	tests := []struct {
		name    string
		change  map[string]string
		wantErr string
	}{
		{"no users URL", map[string]string{contract.ServiceURLEnv("users"): ""}, contract.ServiceURLEnv("users")},
		{"no posts URL", map[string]string{contract.ServiceURLEnv("posts"): ""}, contract.ServiceURLEnv("posts")},
		{"posts URL without scheme", map[string]string{contract.ServiceURLEnv("posts"): "posts:8080"}, contract.ServiceURLEnv("posts")},
		{"trusted proxy not an address", map[string]string{"TRUSTED_PROXIES": "10.0.0.0/8,ingress"}, "TRUSTED_PROXIES"},
		{"upstream timeout not below the request timeout", map[string]string{"UPSTREAM_TIMEOUT": "10s", contract.EnvRequestTimeout: "10s"}, "UPSTREAM_TIMEOUT"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			servicetest.RunFails(t, run, "gateway", base, tt.change, tt.wantErr)
		})
	}
}

// TestPerClientLimitsBehindAProxy: with the ingress's address in
// TRUSTED_PROXIES, the client of the per-client limits is the one
// X-Forwarded-For names, so clients behind one ingress do not share a limit.
func TestPerClientLimitsBehindAProxy(t *testing.T) {
	svc := startGateway(t, map[string]string{"TRUSTED_PROXIES": "127.0.0.1"})
	httpc := servicetest.HTTPClient()
	signUp := func(client string) int {
		return servicetest.Do(t, httpc, "POST", svc.APIURL+"/api/users", `{}`, "X-Forwarded-For", client).Status
	}
	for range signUpsPerClient.burst {
		if got := signUp("203.0.113.1"); got != 200 {
			t.Fatalf("sign-up within the burst = %d", got)
		}
	}
	if got := signUp("203.0.113.1"); got != 429 {
		t.Errorf("the first client's sign-up past its burst = %d, want 429", got)
	}
	if got := signUp("203.0.113.2"); got != 200 {
		t.Errorf("another client behind the same proxy = %d, want 200", got)
	}
}
