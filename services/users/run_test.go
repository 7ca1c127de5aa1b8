package main

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/courier-dev/courier/services/internal/mailjob"
	"github.com/courier-dev/courier/services/internal/servicetest"
	"github.com/courier-dev/courier/services/kit/contract"
	"github.com/courier-dev/courier/test/brokertest"
)

func natsEnv(t *testing.T, url string) map[string]string {
	return map[string]string{
		contract.EnvAppName: "blog", contract.EnvServiceName: "users",
		contract.EnvBrokerKind: contract.BrokerNATS, contract.EnvBrokerURL: url,
		contract.QueueEnv(mailjob.Queue): contract.QueueName("blog", mailjob.Queue),
		contract.EnvDevDeclareTopology:   "true",
		"DATABASE_PATH":                  filepath.Join(t.TempDir(), "users.db"),
		"TOKEN_PRIVATE_KEY":              string(testKey),
	}
}

// TestRunWithNATS runs the whole service against a real (embedded) NATS
// JetStream server: signing up puts a welcome job on the queue, carrying
// the request's trace context; the service is ready with its database and
// broker, and shuts down cleanly.
func TestRunWithNATS(t *testing.T) {
	n := brokertest.StartNATS(t)
	jobs := servicetest.ConsumeJobs(t, contract.BrokerNATS, n.URL, "blog")
	svc := servicetest.Start(t, run, "users", natsEnv(t, n.URL))
	svc.WaitReady(t, "broker", "database")
	client := servicetest.HTTPClient()

	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	r := servicetest.Do(t, client, "POST", svc.APIURL+"/api/users",
		`{"name":"Grace Hopper","email":"grace@example.com","password":"compiler A-0"}`,
		"traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
	if r.Status != 201 {
		t.Fatalf("sign up = %d %s", r.Status, r.Raw)
	}
	job, msg := servicetest.NextJob(t, jobs)
	if job.Template != mailjob.TemplateWelcome || job.To != "grace@example.com" || job.Data[mailjob.DataName] != "Grace Hopper" {
		t.Errorf("job = %+v, want a welcome e-mail to grace@example.com", job)
	}
	if tp := msg.Headers[contract.HeaderTraceParent]; !strings.Contains(tp, traceID) {
		t.Errorf("message traceparent = %q, want the request's trace %s", tp, traceID)
	}

	if r := servicetest.Do(t, client, "POST", svc.APIURL+"/api/sessions",
		`{"email":"grace@example.com","password":"compiler A-0"}`); r.Status != 201 {
		t.Errorf("sign in = %d %s", r.Status, r.Raw)
	}
	if err := svc.Stop(t); err != nil {
		t.Fatalf("run returned %v after SIGTERM", err)
	}
}

// TestSignUpWhileTheBrokerIsDown: sign-up does not depend on the broker;
// the welcome job waits in the outbox and is published once NATS is back.
func TestSignUpWhileTheBrokerIsDown(t *testing.T) {
	n := brokertest.StartNATS(t)
	svc := servicetest.Start(t, run, "users", natsEnv(t, n.URL))
	client := servicetest.HTTPClient()

	n.Stop(t)
	r := servicetest.Do(t, client, "POST", svc.APIURL+"/api/users",
		`{"name":"Grace Hopper","email":"grace@example.com","password":"compiler A-0"}`)
	if r.Status != 201 {
		t.Fatalf("sign up with the broker down = %d %s, want 201", r.Status, r.Raw)
	}
	n.Start(t)

	jobs := servicetest.ConsumeJobs(t, contract.BrokerNATS, n.URL, "blog")
	if job, _ := servicetest.NextJob(t, jobs); job.To != "grace@example.com" {
		t.Errorf("job = %+v, want the welcome e-mail to grace@example.com", job)
	}
	if err := svc.Stop(t); err != nil {
		t.Fatalf("run returned %v after SIGTERM", err)
	}
}

// TestBrokerStallNeverStopsTheService: a broker that goes silent while the
// service declares its topology, for longer than every timeout on the way,
// is waited out: the service keeps running and serving sign-ups, and the
// welcome job arrives once the broker answers again.
func TestBrokerStallNeverStopsTheService(t *testing.T) {
	n := brokertest.StartNATS(t)
	proxy := brokertest.StartProxy(t, strings.TrimPrefix(n.URL, "nats://"), false)
	proxy.StallWhenClientSends("$JS.API.CONSUMER.CREATE")
	svc := servicetest.Start(t, run, "users", natsEnv(t, "nats://"+proxy.Addr))
	client := servicetest.HTTPClient()

	r := servicetest.Do(t, client, "POST", svc.APIURL+"/api/users",
		`{"name":"Grace Hopper","email":"grace@example.com","password":"compiler A-0"}`)
	if r.Status != 201 {
		t.Fatalf("sign up with the broker stalled = %d %s, want 201", r.Status, r.Raw)
	}
	// Longer than JetStream's API timeout and the kit's declare timeout.
	svc.RunsFor(t, 15*time.Second)
	if proxy.Accepts() < 2 {
		t.Fatalf("users reached the broker %d time(s) during the stall, want it to retry", proxy.Accepts())
	}
	proxy.Resume()

	jobs := servicetest.ConsumeJobs(t, contract.BrokerNATS, n.URL, "blog")
	if job, _ := servicetest.NextJob(t, jobs); job.To != "grace@example.com" {
		t.Errorf("job = %+v, want the welcome e-mail to grace@example.com", job)
	}
	svc.WaitReady(t, "broker")
	if err := svc.Stop(t); err != nil {
		t.Fatalf("run returned %v after SIGTERM", err)
	}
}

func TestRunRejectsBadConfig(t *testing.T) {
	base := map[string]string{
		contract.EnvAppName: "blog", contract.EnvBrokerKind: contract.BrokerNATS, contract.EnvBrokerURL: "nats://127.0.0.1:1",
		contract.QueueEnv(mailjob.Queue): "blog.emails", "TOKEN_PRIVATE_KEY": string(testKey),
		"DATABASE_PATH": filepath.Join(t.TempDir(), "users.db"),
	}
	tests := []struct {
		name    string
		change  map[string]string
		wantErr string
	}{
		{"no signing key", map[string]string{"TOKEN_PRIVATE_KEY": ""}, "TOKEN_PRIVATE_KEY"},
		{"signing key not PEM", map[string]string{"TOKEN_PRIVATE_KEY": "0123456789abcdef0123456789abcdef"}, "TOKEN_PRIVATE_KEY"},
		{"previous keys not PEM", map[string]string{"TOKEN_PREVIOUS_PUBLIC_KEYS": "junk"}, "TOKEN_PREVIOUS_PUBLIC_KEYS"},
		{"bad ttl", map[string]string{"TOKEN_TTL": "soon"}, "TOKEN_TTL"},
		{"no broker", map[string]string{contract.EnvBrokerKind: ""}, contract.EnvBrokerKind},
		{"no queue mapping", map[string]string{contract.QueueEnv(mailjob.Queue): ""}, contract.QueueEnv(mailjob.Queue)},
		{"database directory missing", map[string]string{"DATABASE_PATH": filepath.Join(t.TempDir(), "nope", "users.db")}, "users.db"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			servicetest.RunFails(t, run, "users", base, tt.change, tt.wantErr)
		})
	}
}
