package main

import (
	"maps"
	"path/filepath"
	"strings"
	"testing"

	"github.com/courier-dev/courier/services/internal/mailjob"
	"github.com/courier-dev/courier/services/internal/servicetest"
	"github.com/courier-dev/courier/services/kit/contract"
	"github.com/courier-dev/courier/test/brokertest"
)

// natsEnv is the environment the operator would give posts with a NATS
// broker at natsURL and users at usersURL, plus the development topology.
func natsEnv(natsURL, usersURL string) map[string]string {
	return map[string]string{
		contract.EnvAppName: "blog", contract.EnvServiceName: "posts",
		contract.EnvBrokerKind: contract.BrokerNATS, contract.EnvBrokerURL: natsURL,
		contract.QueueEnv(mailjob.Queue): contract.QueueName("blog", mailjob.Queue),
		contract.EnvDevDeclareTopology:   "true",
		contract.ServiceURLEnv("users"):  usersURL,
	}
}

// TestRunWithNATS runs the whole service against a real (embedded) NATS
// JetStream server and a users upstream over HTTP: a comment puts a
// notification job for the post's author on the queue, carrying the
// request's trace context.
func TestRunWithNATS(t *testing.T) {
	n := brokertest.StartNATS(t)
	users := newUsersUpstream(t)
	jobs := servicetest.ConsumeJobs(t, contract.BrokerNATS, n.URL, "blog")
	env := natsEnv(n.URL, users.URL)
	env["DATABASE_PATH"] = filepath.Join(t.TempDir(), "posts.db")
	svc := servicetest.Start(t, run, "posts", env)
	svc.WaitReady(t, "broker", "database")
	client := servicetest.HTTPClient()
	if r := servicetest.Do(t, client, "POST", svc.APIURL+"/api/posts", `{"title":"On engines","body":"b"}`, as(1)...); r.Status != 201 {
		t.Fatalf("create post = %d %s", r.Status, r.Raw)
	}
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	r := servicetest.Do(t, client, "POST", svc.APIURL+"/api/posts/1/comments", `{"body":"Splendid."}`,
		append(as(2), "traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")...)
	if r.Status != 201 {
		t.Fatalf("comment = %d %s", r.Status, r.Raw)
	}

	job, msg := servicetest.NextJob(t, jobs)
	want := map[string]string{
		mailjob.DataName: "Ada Lovelace", mailjob.DataPostID: "1", mailjob.DataPostTitle: "On engines",
		mailjob.DataCommenterName: "Charles Babbage", mailjob.DataComment: "Splendid.",
	}
	if job.Template != mailjob.TemplateComment || job.To != "ada@example.com" || !maps.Equal(job.Data, want) {
		t.Errorf("job = %+v, want a comment e-mail to ada@example.com with %v", job, want)
	}
	if tp := msg.Headers[contract.HeaderTraceParent]; !strings.Contains(tp, traceID) {
		t.Errorf("message traceparent = %q, want the request's trace %s", tp, traceID)
	}
	if err := svc.Stop(t); err != nil {
		t.Fatalf("run returned %v after SIGTERM", err)
	}
}

func TestRunRejectsBadConfig(t *testing.T) {
	base := map[string]string{
		contract.EnvAppName: "blog", contract.EnvBrokerKind: contract.BrokerNATS, contract.EnvBrokerURL: "nats://127.0.0.1:1",
		contract.QueueEnv(mailjob.Queue): "blog.emails", contract.ServiceURLEnv("users"): "http://127.0.0.1:1",
		"DATABASE_PATH": filepath.Join(t.TempDir(), "posts.db"),
	}
	tests := []struct {
		name    string
		change  map[string]string
		wantErr string
	}{
		{"no users URL", map[string]string{contract.ServiceURLEnv("users"): ""}, contract.ServiceURLEnv("users")},
		{"relative users URL", map[string]string{contract.ServiceURLEnv("users"): "users:8080"}, contract.ServiceURLEnv("users")},
		{"bad users timeout", map[string]string{"USERS_TIMEOUT": "-1s"}, "USERS_TIMEOUT"},
		{"no broker", map[string]string{contract.EnvBrokerKind: ""}, contract.EnvBrokerKind},
		{"database directory missing", map[string]string{"DATABASE_PATH": filepath.Join(t.TempDir(), "nope", "posts.db")}, "posts.db"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			servicetest.RunFails(t, run, "posts", base, tt.change, tt.wantErr)
		})
	}
}
