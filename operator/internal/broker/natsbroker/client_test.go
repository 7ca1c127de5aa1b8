package natsbroker_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/courier-dev/courier/operator/internal/broker"
	"github.com/courier-dev/courier/operator/internal/broker/natsbroker"
	"github.com/courier-dev/courier/services/kit/contract"
	"github.com/courier-dev/courier/services/kit/messaging"
	"github.com/courier-dev/courier/test/poll"
)

// system is a real nats-server in operator mode with a full JWT resolver
// (deletes allowed), trusting a freshly generated managed operator.
type system struct {
	srv     *server.Server
	url     string
	managed natsbroker.Managed
}

func (s *system) System() natsbroker.System { return s.managed.System(s.url) }

func startSystem(t *testing.T) *system {
	t.Helper()
	m, err := natsbroker.GenerateManaged("blog")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	conf := fmt.Sprintf(`
host: 127.0.0.1
port: -1
server_name: courier-test
jetstream: {store_dir: %q}
operator: %s
system_account: %s
resolver: {type: full, dir: %q, allow_delete: true}
resolver_preload: {%s: %s}
`, filepath.Join(dir, "js"), m.OperatorJWT, m.SystemAccount(), filepath.Join(dir, "jwt"), m.SystemAccount(), m.SystemAccountJWT)
	path := filepath.Join(dir, "nats.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(path)
	if err != nil {
		t.Fatalf("nats.conf: %v", err)
	}
	opts.NoLog, opts.NoSigs = true, true
	srv, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	return &system{srv: srv, url: srv.ClientURL(), managed: m}
}

// blog is the example app: users and posts publish e-mail jobs, the mailer
// consumes them, the gateway uses no queue.
func blog(app string) broker.Topology {
	return broker.Topology{
		App:    app,
		Queues: []broker.QueueSpec{{Name: "emails", Type: broker.QueueClassic, MaxDeliveries: 3}},
		Services: []broker.ServicePerms{
			{Name: "gateway"},
			{Name: "users", Publishes: []string{"emails"}},
			{Name: "posts", Publishes: []string{"emails"}},
			{Name: "mailer", Consumes: []string{"emails"}},
		},
	}
}

// credentials issues an account and every queue-using service's creds.
func credentials(t *testing.T, topo broker.Topology) natsbroker.Credentials {
	t.Helper()
	seed, err := natsbroker.GenerateAccount()
	if err != nil {
		t.Fatal(err)
	}
	c := natsbroker.Credentials{AccountSeed: seed, Services: map[string][]byte{}}
	for _, s := range topo.Services {
		if len(s.Publishes)+len(s.Consumes) == 0 {
			continue
		}
		if c.Services[s.Name], err = natsbroker.IssueUser(topo.App, s.Name, seed); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

func declare(t *testing.T, n *natsbroker.NATS, sys natsbroker.System, topo broker.Topology, c natsbroker.Credentials) []broker.Change {
	t.Helper()
	changes, err := n.Declare(t.Context(), sys, topo, c)
	if err != nil {
		t.Fatalf("Declare: %v", err)
	}
	return changes
}

// credsFile writes creds where a Secret volume would put them.
func credsFile(t *testing.T, creds []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "nats.creds")
	if err := os.WriteFile(path, creds, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// kitConnect connects the service kit as the operator deploys a service:
// the URL, the creds file and the inbox prefix, no topology declared.
func kitConnect(t *testing.T, url, app, service string, creds []byte, queues ...string) messaging.Broker {
	t.Helper()
	physical := map[string]string{}
	for _, q := range queues {
		physical[q] = contract.QueueName(app, q)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	b, err := messaging.Connect(ctx, messaging.Config{
		Kind: contract.BrokerNATS, URL: url, App: app, Queues: physical,
		CredentialsFile: credsFile(t, creds), InboxPrefix: natsbroker.InboxPrefix(service),
		AuthRetryFor: 2 * time.Second,
	})
	if err != nil {
		t.Fatalf("kit connect as %s: %v", service, err)
	}
	t.Cleanup(func() { _ = b.Close(context.Background()) })
	return b
}

// rawConn connects with creds and collects the permission violations the
// server reports.
type rawConn struct {
	nc         *nats.Conn
	mu         sync.Mutex
	violations []string
}

func dialRaw(t *testing.T, url string, creds []byte) *rawConn {
	t.Helper()
	r := &rawConn{}
	nc, err := nats.Connect(url, nats.UserCredentials(credsFile(t, creds)),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			r.mu.Lock()
			r.violations = append(r.violations, err.Error())
			r.mu.Unlock()
		}))
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(nc.Close)
	r.nc = nc
	return r
}

// refused checks that the server refuses what do does, naming subject.
func (r *rawConn) refused(t *testing.T, what, subject string, do func() error) {
	t.Helper()
	if err := do(); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	poll.Until(t, what+" refused with a permissions violation", func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		for _, v := range r.violations {
			if strings.Contains(v, "Permissions Violation") && strings.Contains(v, fmt.Sprintf("%q", subject)) {
				return true
			}
		}
		return false
	})
}

// TestDeclareLeastPrivilege declares the blog on a real server and checks
// every guarantee with the services' own credentials: a job published by
// users through the kit reaches the mailer's kit through the topology
// Declare made; users may not publish elsewhere, read the queue or manage
// JetStream; the mailer may not publish jobs; another app's account sees
// nothing of the blog.
func TestDeclareLeastPrivilege(t *testing.T) {
	s := startSystem(t)
	n := natsbroker.New()
	topo := blog("blog")
	creds := credentials(t, topo)

	changes := declare(t, n, s.System(), topo, creds)
	want := []string{"create account blog", "create stream COURIER_BLOG", "create consumer blog_emails"}
	if got := changeStrings(changes); strings.Join(got, "; ") != strings.Join(want, "; ") {
		t.Errorf("first Declare = %q, want %q", got, want)
	}
	if again := declare(t, n, s.System(), topo, creds); len(again) != 0 {
		t.Errorf("second Declare = %q, want no changes", changeStrings(again))
	}

	users := kitConnect(t, s.url, "blog", "users", creds.Services["users"], "emails")
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	id, err := users.Publish(ctx, "emails", []byte(`{"to":"ada@example.com"}`))
	if err != nil {
		t.Fatalf("users publish: %v", err)
	}

	mailer := kitConnect(t, s.url, "blog", "mailer", creds.Services["mailer"], "emails")
	got := make(chan messaging.Message, 1)
	cctx, stop := context.WithCancel(t.Context())
	consumed := make(chan error, 1)
	go func() {
		consumed <- mailer.Consume(cctx, "emails", func(_ context.Context, m messaging.Message) error {
			select {
			case got <- m:
			default:
			}
			return nil
		}, messaging.ConsumeOptions{})
	}()
	select {
	case m := <-got:
		if m.ID != id || string(m.Body) != `{"to":"ada@example.com"}` {
			t.Errorf("mailer got %q (id %s), want the job users published (id %s)", m.Body, m.ID, id)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the mailer did not receive the job users published")
	}
	stop()
	if err := <-consumed; err != nil {
		t.Errorf("Consume: %v", err)
	}

	u := dialRaw(t, s.url, creds.Services["users"])
	u.refused(t, "users publish to the dead letters", "blog.emails.dead", func() error { return u.nc.Publish("blog.emails.dead", nil) })
	u.refused(t, "users subscribe to the queue", "blog.emails", func() error { _, err := u.nc.SubscribeSync("blog.emails"); return err })
	u.refused(t, "users subscribe to every inbox", "_INBOX.>", func() error { _, err := u.nc.SubscribeSync("_INBOX.>"); return err })
	u.refused(t, "users read the mailer's inbox", "_INBOX_mailer.>", func() error { _, err := u.nc.SubscribeSync("_INBOX_mailer.>"); return err })
	u.refused(t, "users pull from the consumer", "$JS.API.CONSUMER.MSG.NEXT.COURIER_BLOG.blog_emails", func() error {
		return u.nc.Publish("$JS.API.CONSUMER.MSG.NEXT.COURIER_BLOG.blog_emails", nil)
	})
	u.refused(t, "users delete the stream", "$JS.API.STREAM.DELETE.COURIER_BLOG", func() error {
		return u.nc.Publish("$JS.API.STREAM.DELETE.COURIER_BLOG", nil)
	})
	m := dialRaw(t, s.url, creds.Services["mailer"])
	m.refused(t, "the mailer publishes a job", "blog.emails", func() error { return m.nc.Publish("blog.emails", nil) })
	m.refused(t, "the mailer publishes to another app", "other.emails", func() error { return m.nc.Publish("other.emails", nil) })
	m.refused(t, "the mailer creates a consumer", "$JS.API.CONSUMER.CREATE.COURIER_BLOG.x", func() error {
		return m.nc.Publish("$JS.API.CONSUMER.CREATE.COURIER_BLOG.x", nil)
	})

	// Another app, declared on the same system, has its own account: its
	// users cannot see the blog's stream or receive the blog's messages.
	other := blog("other")
	otherCreds := credentials(t, other)
	declare(t, n, s.System(), other, otherCreds)
	stats, err := n.QueueStats(t.Context(), s.System(), other, otherCreds.AccountSeed)
	if err != nil {
		t.Fatal(err)
	}
	if stats[0].Messages != 0 {
		t.Errorf("other app's queue holds %d messages, want 0", stats[0].Messages)
	}
	if _, err := adminJetStream(t, s, otherCreds.AccountSeed).Stream(t.Context(), "COURIER_BLOG"); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Errorf("the blog's stream from the other app's account: %v, want not found", err)
	}
	ou := dialRaw(t, s.url, otherCreds.Services["users"])
	if _, err := users.Publish(ctx, "emails", []byte("second")); err != nil {
		t.Fatal(err)
	}
	// The blog's second job waits in the blog's stream, not the other's.
	blogStats, err := n.QueueStats(t.Context(), s.System(), topo, creds.AccountSeed)
	if err != nil {
		t.Fatal(err)
	}
	if blogStats[0].Messages != 1 {
		t.Errorf("blog queue holds %d messages, want 1", blogStats[0].Messages)
	}
	ou.refused(t, "another app's user publishes the blog's subject", "blog.emails", func() error { return ou.nc.Publish("blog.emails", nil) })
}

// TestDeclareRepairsDrift deletes the consumer and replaces the account JWT
// by hand; Declare puts both back.
func TestDeclareRepairsDrift(t *testing.T) {
	s := startSystem(t)
	n := natsbroker.New()
	topo := blog("blog")
	creds := credentials(t, topo)
	declare(t, n, s.System(), topo, creds)

	js := adminJetStream(t, s, creds.AccountSeed)
	if err := js.DeleteConsumer(t.Context(), "COURIER_BLOG", "blog_emails"); err != nil {
		t.Fatal(err)
	}
	changes := declare(t, n, s.System(), topo, creds)
	if got := strings.Join(changeStrings(changes), "; "); got != "create consumer blog_emails" {
		t.Errorf("Declare after deleting the consumer = %q, want the consumer created", got)
	}
	if _, err := js.UpdateConsumer(t.Context(), "COURIER_BLOG", jetstream.ConsumerConfig{
		Durable: "blog_emails", FilterSubject: "blog.emails", AckPolicy: jetstream.AckExplicitPolicy,
		AckWait: natsbroker.AckWait, MaxDeliver: 100,
	}); err != nil {
		t.Fatal(err)
	}
	changes = declare(t, n, s.System(), topo, creds)
	if got := strings.Join(changeStrings(changes), "; "); got != "update consumer blog_emails (maxDeliver)" {
		t.Errorf("Declare after changing maxDeliver = %q", got)
	}

	// Rotation: new creds for users. The account's signing keys change, and
	// the old creds are refused.
	old := creds.Services["users"]
	fresh, err := natsbroker.IssueUser("blog", "users", creds.AccountSeed)
	if err != nil {
		t.Fatal(err)
	}
	creds.Services["users"] = fresh
	changes = declare(t, n, s.System(), topo, creds)
	if got := strings.Join(changeStrings(changes), "; "); got != "update account blog (signing keys)" {
		t.Errorf("Declare after rotating users = %q", got)
	}
	if nc, err := nats.Connect(s.url, nats.UserCredentials(credsFile(t, old))); err == nil {
		nc.Close()
		t.Error("the rotated-out creds still connect")
	}
	if nc, err := nats.Connect(s.url, nats.UserCredentials(credsFile(t, fresh))); err != nil {
		t.Errorf("the new creds: %v", err)
	} else {
		nc.Close()
	}
}

// TestQueueStatsAndDelete counts a waiting job and a dead letter, then
// deletes the app: a retained queue holding messages is kept; with the
// delete policy everything goes, the account too.
func TestQueueStatsAndDelete(t *testing.T) {
	s := startSystem(t)
	n := natsbroker.New()
	topo := blog("blog")
	creds := credentials(t, topo)
	declare(t, n, s.System(), topo, creds)
	js := adminJetStream(t, s, creds.AccountSeed)
	for _, subj := range []string{"blog.emails", "blog.emails", "blog.emails.dead"} {
		if _, err := js.Publish(t.Context(), subj, []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	stats, err := n.QueueStats(t.Context(), s.System(), topo, creds.AccountSeed)
	if err != nil {
		t.Fatal(err)
	}
	want := broker.QueueStat{Queue: "emails", Name: "blog.emails", Exists: true, Messages: 2, DeadLetters: 1}
	if len(stats) != 1 || stats[0] != want {
		t.Errorf("QueueStats = %+v, want [%+v]", stats, want)
	}

	res, err := n.Delete(t.Context(), s.System(), topo, creds.AccountSeed)
	if err != nil {
		t.Fatalf("Delete (retain): %v", err)
	}
	if strings.Join(res.Retained, ",") != "blog.emails" {
		t.Errorf("Retained = %q, want blog.emails", res.Retained)
	}
	if nc, err := nats.Connect(s.url, nats.UserCredentials(credsFile(t, creds.Services["users"]))); err == nil {
		nc.Close()
		t.Error("a service's creds still connect after Delete")
	}

	topo.Queues[0].DeletionPolicy = broker.Delete
	if res, err = n.Delete(t.Context(), s.System(), topo, creds.AccountSeed); err != nil {
		t.Fatalf("Delete (delete): %v", err)
	}
	if len(res.Retained) != 0 {
		t.Errorf("Retained = %q, want none", res.Retained)
	}
	if _, err := adminJetStreamErr(s, creds.AccountSeed); err == nil {
		t.Error("the account still accepts its own users after Delete")
	}
	// Deleting again finds nothing and succeeds.
	if _, err := n.Delete(t.Context(), s.System(), topo, creds.AccountSeed); err != nil {
		t.Errorf("second Delete: %v", err)
	}
}

// TestDeleteUnreachable: with the server gone, Delete says so quickly, so a
// finalizer never blocks on it.
func TestDeleteUnreachable(t *testing.T) {
	s := startSystem(t)
	topo := blog("blog")
	creds := credentials(t, topo)
	s.srv.Shutdown()
	s.srv.WaitForShutdown()
	n := natsbroker.New(natsbroker.WithDialTimeout(time.Second))
	start := time.Now()
	_, err := n.Delete(t.Context(), s.System(), topo, creds.AccountSeed)
	if !errors.Is(err, broker.ErrUnreachable) {
		t.Fatalf("Delete = %v, want ErrUnreachable", err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("Delete took %s with the server gone", took)
	}
	if _, err := n.Declare(t.Context(), s.System(), topo, creds); !errors.Is(err, broker.ErrUnreachable) {
		t.Errorf("Declare = %v, want ErrUnreachable", err)
	}
}

// TestDeclareRefusesBadInput names the field or service at fault.
func TestDeclareRefusesBadInput(t *testing.T) {
	s := startSystem(t)
	n := natsbroker.New()
	topo := blog("blog")
	creds := credentials(t, topo)
	delete(creds.Services, "mailer")
	if _, err := n.Declare(t.Context(), s.System(), topo, creds); err == nil || !strings.Contains(err.Error(), "service mailer: no credentials") {
		t.Errorf("Declare without the mailer's creds = %v", err)
	}
	otherSeed, _ := natsbroker.GenerateAccount()
	creds.Services["mailer"], _ = natsbroker.IssueUser("blog", "mailer", otherSeed)
	if _, err := n.Declare(t.Context(), s.System(), topo, creds); err == nil || !strings.Contains(err.Error(), "service mailer: credentials: a user of account") {
		t.Errorf("Declare with creds of another account = %v", err)
	}
	creds.Services["mailer"], _ = natsbroker.IssueUser("blog", "mailer", creds.AccountSeed)
	sys := s.System()
	sys.SystemUserCreds = nil
	if _, err := n.Declare(t.Context(), sys, topo, creds); err == nil || !strings.Contains(err.Error(), natsbroker.SecretKeySystemUserCreds) {
		t.Errorf("Declare without system creds = %v", err)
	}
}

func adminJetStreamErr(s *system, accountSeed string) (jetstream.JetStream, error) {
	creds, err := natsbroker.AdminCreds(accountSeed)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "creds")
	if err != nil {
		return nil, err
	}
	defer func() { _ = os.RemoveAll(dir) }()
	path := filepath.Join(dir, "admin.creds")
	if err := os.WriteFile(path, creds, 0o600); err != nil {
		return nil, err
	}
	nc, err := nats.Connect(s.url, nats.UserCredentials(path))
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	_, err = js.AccountInfo(context.Background())
	return js, err
}

// adminJetStream is an unrestricted user of the app's account, for
// tampering with the topology as a person with nsc would.
func adminJetStream(t *testing.T, s *system, accountSeed string) jetstream.JetStream {
	t.Helper()
	creds, err := natsbroker.AdminCreds(accountSeed)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(s.url, nats.UserCredentials(credsFile(t, creds)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

func changeStrings(cs []broker.Change) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.String()
	}
	return out
}

// TestVerifyAndResolver: Verify passes right after Declare and reports
// broker.ErrDrift once the account no longer holds a service's key (its
// creds were replaced and not declared yet); every connection dials
// through the resolver, so a Service name reaches a local server.
func TestVerifyAndResolver(t *testing.T) {
	s := startSystem(t)
	local := strings.TrimPrefix(s.url, "nats://")
	var dialed []string
	n := natsbroker.New(natsbroker.WithResolver(func(_ context.Context, addr string) (string, error) {
		dialed = append(dialed, addr)
		if addr == "blog-broker.apps.svc:4222" {
			return local, nil
		}
		return addr, nil
	}))
	sys := s.managed.System("nats://blog-broker.apps.svc:4222")
	topo := blog("blog")
	creds := credentials(t, topo)
	declare(t, n, sys, topo, creds)
	if !slices.Contains(dialed, "blog-broker.apps.svc:4222") {
		t.Errorf("dialed %v, want the Service's address resolved", dialed)
	}
	if err := n.Verify(t.Context(), sys, topo, creds); err != nil {
		t.Fatalf("Verify after Declare: %v", err)
	}
	fresh, err := natsbroker.IssueUser("blog", "mailer", creds.AccountSeed)
	if err != nil {
		t.Fatal(err)
	}
	creds.Services["mailer"] = fresh
	if err := n.Verify(t.Context(), sys, topo, creds); !errors.Is(err, broker.ErrDrift) {
		t.Fatalf("Verify with the mailer's creds replaced = %v, want ErrDrift", err)
	}
	declare(t, n, sys, topo, creds)
	if err := n.Verify(t.Context(), sys, topo, creds); err != nil {
		t.Fatalf("Verify after declaring again: %v", err)
	}
}
