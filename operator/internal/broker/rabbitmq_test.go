package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/courier-dev/courier/test/poll"

	rh "github.com/michaelklishin/rabbit-hole/v2"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/courier-dev/courier/services/kit/contract"
	"github.com/courier-dev/courier/test/brokertest"
)

func TestMain(m *testing.M) { brokertest.Main(m) }

// fixture is one app on the shared test broker.
type fixture struct {
	t        *testing.T
	broker   *brokertest.RabbitMQ
	admin    *rh.Client
	ep       Endpoint
	rabbit   *RabbitMQ
	topology Topology
	creds    Credentials
}

// newFixture declares nothing yet; every test uses its own app name, so its
// vhost and users do not meet another test's on the shared broker.
func newFixture(t *testing.T, app string, opts ...func(*Topology)) *fixture {
	t.Helper()
	b := brokertest.SharedRabbitMQ(t)
	admin, err := rh.NewClient(b.ManagementURL, b.AdminUser, b.AdminPassword)
	if err != nil {
		t.Fatal(err)
	}
	topo := blogTopology()
	topo.App = app
	for _, opt := range opts {
		opt(&topo)
	}
	f := &fixture{
		t:      t,
		broker: b,
		admin:  admin,
		ep: Endpoint{
			ManagementURL: b.ManagementURL, AMQPHost: b.Host, AMQPPort: b.AMQPPort,
			Username: b.AdminUser, Password: b.AdminPassword,
		},
		rabbit:   NewRabbitMQ(),
		topology: topo,
		creds:    Credentials{Services: map[string]string{}, Monitoring: GeneratePassword()},
	}
	for _, s := range topo.Services {
		f.creds.Services[s.Name] = GeneratePassword()
	}
	t.Cleanup(func() {
		// Leave the shared broker clean even when a test fails half-way.
		topo := f.topology
		topo.Queues = slices.Clone(topo.Queues)
		for i := range topo.Queues {
			topo.Queues[i].DeletionPolicy = Delete
		}
		if _, err := f.rabbit.Delete(context.Background(), f.ep, topo); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return f
}

func (f *fixture) declare() []Change {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	changes, err := f.rabbit.Declare(ctx, f.ep, f.topology, f.creds)
	if err != nil {
		f.t.Fatalf("Declare: %v", err)
	}
	return changes
}

// url is the AMQP URL of a service's user, exactly as the controller will
// write it into the service's Secret.
func (f *fixture) url(service string) string {
	return ConnectionURL(f.broker.Host, f.broker.AMQPPort, f.topology.App, UserName(f.topology.App, service), f.creds.Services[service])
}

func (f *fixture) physical(queue string) string { return contract.QueueName(f.topology.App, queue) }

// getJSON reads a path of the HTTP API as the administrator, for fields
// rabbit-hole does not model.
func (f *fixture) getJSON(path string, v any) {
	f.t.Helper()
	req, err := http.NewRequest(http.MethodGet, f.broker.ManagementURL+"/api/"+path, nil)
	if err != nil {
		f.t.Fatal(err)
	}
	req.SetBasicAuth(f.broker.AdminUser, f.broker.AdminPassword)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		f.t.Fatalf("GET %s: %s", path, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		f.t.Fatalf("decode %s: %v", path, err)
	}
}

func dial(t *testing.T, uri string) *amqp.Connection {
	t.Helper()
	conn, err := amqp.Dial(uri)
	if err != nil {
		t.Fatalf("dial %s: %v", redact(uri), err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

func redact(uri string) string {
	u, err := url.Parse(uri)
	if err != nil {
		return "<unparsable URL>"
	}
	return u.Redacted()
}

func channel(t *testing.T, conn *amqp.Connection) *amqp.Channel {
	t.Helper()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatalf("open channel: %v", err)
	}
	return ch
}

// publish publishes with publisher confirms and returns whether the broker
// acknowledged the message; a refusal closes the channel and is returned as
// the channel's *amqp.Error.
// publishTo publishes to a physical queue the way the kit does: through the
// queue's own exchange with the queue's routing key.
func publishTo(t *testing.T, ch *amqp.Channel, physicalQueue, body string) (bool, error) {
	t.Helper()
	return publish(t, ch, contract.ExchangeName(physicalQueue), contract.RoutingKey(physicalQueue), body)
}

func publish(t *testing.T, ch *amqp.Channel, exchange, key, body string) (bool, error) {
	t.Helper()
	if err := ch.Confirm(false); err != nil {
		return false, err
	}
	closed := ch.NotifyClose(make(chan *amqp.Error, 1))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, exchange, key, false, false, amqp.Publishing{
		DeliveryMode: amqp.Persistent, Body: []byte(body),
	})
	if err != nil {
		return false, err
	}
	select {
	case <-dc.Done():
		if dc.Acked() {
			return true, nil
		}
		// A channel the broker closes (a 403) fails its outstanding
		// confirms after telling its close listeners why; both may be
		// ready here, and the reason is what the caller asks about.
		select {
		case e := <-closed:
			if e != nil {
				return false, e
			}
		default:
		}
		return false, nil
	case e := <-closed:
		if e == nil {
			return false, amqp.ErrClosed
		}
		return false, e
	case <-ctx.Done():
		t.Fatalf("no confirm for a message to exchange %q", exchange)
		return false, nil
	}
}

func wantAccessRefused(t *testing.T, what string, err error) {
	t.Helper()
	var amqpErr *amqp.Error
	if !errors.As(err, &amqpErr) || amqpErr.Code != amqp.AccessRefused {
		t.Errorf("%s: got %v, want 403 ACCESS_REFUSED", what, err)
	}
}

// queueDepth counts a queue's ready messages through a passive declare, which
// the queue answers itself, unlike the HTTP API's lagging statistics.
func (f *fixture) queueDepth(name string) int {
	f.t.Helper()
	conn := dial(f.t, f.broker.URL(f.broker.AdminUser, f.broker.AdminPassword, f.topology.App))
	defer func() { _ = conn.Close() }()
	q, err := channel(f.t, conn).QueueDeclarePassive(name, true, false, false, false, nil)
	if err != nil {
		f.t.Fatalf("passive declare %s: %v", name, err)
	}
	return q.Messages
}

func TestDeclareCreatesExactlyTheTopology(t *testing.T) {
	f := newFixture(t, "exact")
	f.declare()
	vhost := f.topology.App

	exchanges, err := f.admin.ListExchangesIn(vhost)
	if err != nil {
		t.Fatal(err)
	}
	var gotExchanges []string
	for _, e := range exchanges {
		if e.Name == "" || strings.HasPrefix(e.Name, "amq.") {
			continue // every vhost's built-in exchanges
		}
		gotExchanges = append(gotExchanges, fmt.Sprintf("%s type=%s durable=%t", e.Name, e.Type, e.Durable))
	}
	wantExchanges := []string{"exact.emails.dlx type=direct durable=true", "exact.emails.exchange type=direct durable=true"}
	assertEqual(t, "exchanges", gotExchanges, wantExchanges)

	queues, err := f.admin.ListQueuesIn(vhost)
	if err != nil {
		t.Fatal(err)
	}
	var gotQueues []string
	for _, q := range queues {
		args, _ := json.Marshal(q.Arguments)
		gotQueues = append(gotQueues, fmt.Sprintf("%s durable=%t args=%s", q.Name, q.Durable, args))
	}
	wantQueues := []string{
		`exact.emails durable=true args={"x-dead-letter-exchange":"exact.emails.dlx","x-dead-letter-routing-key":"exact.emails.dlq","x-queue-type":"quorum"}`,
		`exact.emails.dlq durable=true args={"x-queue-type":"quorum"}`,
	}
	assertEqual(t, "queues", gotQueues, wantQueues)

	bindings, err := f.admin.ListBindingsIn(vhost)
	if err != nil {
		t.Fatal(err)
	}
	var gotBindings []string
	for _, b := range bindings {
		if b.Source == "" {
			continue // the default exchange binds every queue implicitly
		}
		gotBindings = append(gotBindings, fmt.Sprintf("%s -> %s %s key=%s", b.Source, b.DestinationType, b.Destination, b.RoutingKey))
	}
	wantBindings := []string{
		"exact.emails.dlx -> queue exact.emails.dlq key=exact.emails.dlq",
		"exact.emails.exchange -> queue exact.emails key=exact.emails",
	}
	assertEqual(t, "bindings", gotBindings, wantBindings)

	var policy struct {
		Pattern    string         `json:"pattern"`
		ApplyTo    string         `json:"apply-to"`
		Definition map[string]any `json:"definition"`
	}
	f.getJSON("policies/"+url.PathEscape(vhost)+"/"+url.PathEscape("exact.emails"), &policy)
	gotPolicy, _ := json.Marshal(policy)
	assertEqual(t, "policy", []string{string(gotPolicy)}, []string{
		`{"pattern":"^exact\\.emails$","apply-to":"queues","definition":{"delivery-limit":4,"max-length":10000,"message-ttl":86400000,"overflow":"reject-publish"}}`,
	})
	// The policy applies to the queue and to nothing else.
	var applied struct {
		Policy    string         `json:"policy"`
		Effective map[string]any `json:"effective_policy_definition"`
	}
	poll.Within(t, 10*time.Second, "policy applied to exact.emails", func() bool {
		f.getJSON("queues/"+url.PathEscape(vhost)+"/exact.emails", &applied)
		return applied.Policy == "exact.emails"
	})
	var dlq struct {
		Policy any `json:"policy"`
	}
	f.getJSON("queues/"+url.PathEscape(vhost)+"/exact.emails.dlq", &dlq)
	if dlq.Policy != nil && dlq.Policy != "" {
		t.Errorf("dead-letter queue has policy %v, want none", dlq.Policy)
	}

	users, err := f.admin.ListUsers()
	if err != nil {
		t.Fatal(err)
	}
	var gotUsers []string
	for _, u := range users {
		if strings.HasPrefix(u.Name, vhost+".") {
			tags := slices.Clone([]string(u.Tags))
			slices.Sort(tags)
			gotUsers = append(gotUsers, u.Name+" tags="+strings.Join(tags, ","))
		}
	}
	wantUsers := []string{
		"exact._monitoring tags=courier,management",
		"exact.mailer tags=courier",
		"exact.posts tags=courier",
		"exact.users tags=courier",
	}
	assertEqual(t, "users (gateway uses no queue and gets none)", gotUsers, wantUsers)

	perms, err := f.admin.ListPermissions()
	if err != nil {
		t.Fatal(err)
	}
	var gotPerms []string
	for _, p := range perms {
		if p.Vhost == vhost {
			gotPerms = append(gotPerms, fmt.Sprintf("%s configure=%s write=%s read=%s", p.User, p.Configure, p.Write, p.Read))
		}
	}
	wantPerms := []string{
		f.broker.AdminUser + " configure=.* write=.* read=.*",
		`exact._monitoring configure=^$ write=^$ read=^$`,
		`exact.mailer configure=^$ write=^$ read=^exact\.emails$`,
		`exact.posts configure=^$ write=^exact\.emails\.exchange$ read=^$`,
		`exact.users configure=^$ write=^exact\.emails\.exchange$ read=^$`,
	}
	assertEqual(t, "permissions", gotPerms, wantPerms)
}

func assertEqual(t *testing.T, what string, got, want []string) {
	t.Helper()
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("%s:\ngot  %q\nwant %q", what, got, want)
	}
}

func TestDeclareIsIdempotentAndWritesNothingTheSecondTime(t *testing.T) {
	f := newFixture(t, "idem")
	first := f.declare()
	if len(first) == 0 {
		t.Fatal("first Declare reported no changes")
	}
	before, err := f.admin.GetUser("idem.users")
	if err != nil {
		t.Fatal(err)
	}
	if again := f.declare(); len(again) != 0 {
		t.Errorf("second Declare changed %v, want nothing", again)
	}
	after, err := f.admin.GetUser("idem.users")
	if err != nil {
		t.Fatal(err)
	}
	// RabbitMQ re-salts on every password write, so an unchanged hash
	// proves the password was not written again.
	if before.PasswordHash != after.PasswordHash {
		t.Error("second Declare rewrote the unchanged password")
	}
}

func TestServiceCredentialsAreLeastPrivilege(t *testing.T) {
	f := newFixture(t, "perm", func(topo *Topology) {
		topo.Queues = append(topo.Queues, QueueSpec{Name: "audit", Type: QueueClassic, DeletionPolicy: Delete})
		topo.Services = append(topo.Services, ServicePerms{Name: "auditor", Consumes: []string{"audit"}, Publishes: []string{"audit"}})
	})
	f.declare()
	emails := f.physical("emails")

	users := dial(t, f.url("users"))
	if acked, err := publish(t, channel(t, users), contract.ExchangeName(emails), contract.RoutingKey(emails), "welcome"); err != nil || !acked {
		t.Fatalf("users publishing to emails: acked=%t err=%v, want a confirmed publish", acked, err)
	}
	_, err := publish(t, channel(t, users), contract.ExchangeName(f.physical("audit")), contract.RoutingKey(f.physical("audit")), "x")
	wantAccessRefused(t, "users publishing to the audit exchange", err)
	_, err = publish(t, channel(t, users), "", emails, "x")
	wantAccessRefused(t, "users publishing through the default exchange", err)
	_, err = publish(t, channel(t, users), contract.DeadLetterExchangeName(emails), contract.RoutingKey(contract.DeadLetterQueueName(emails)), "x")
	wantAccessRefused(t, "users publishing to the dead-letter exchange", err)
	_, err = channel(t, users).Consume(emails, "", false, false, false, false, nil)
	wantAccessRefused(t, "users consuming emails", err)
	_, err = channel(t, users).QueueDeclare("users-own-queue", true, false, false, false, nil)
	wantAccessRefused(t, "users declaring a queue", err)

	mailer := dial(t, f.url("mailer"))
	ch := channel(t, mailer)
	deliveries, err := ch.Consume(emails, "", false, false, false, false, nil)
	if err != nil {
		t.Fatalf("mailer consuming emails: %v", err)
	}
	select {
	case d := <-deliveries:
		if string(d.Body) != "welcome" {
			t.Errorf("mailer got %q, want the message users published", d.Body)
		}
		if err := d.Ack(false); err != nil {
			t.Fatalf("ack: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("mailer received nothing")
	}
	_, err = publish(t, channel(t, mailer), contract.ExchangeName(emails), contract.RoutingKey(emails), "x")
	wantAccessRefused(t, "mailer publishing to emails", err)
	_, err = channel(t, mailer).Consume(f.physical("audit"), "", false, false, false, false, nil)
	wantAccessRefused(t, "mailer consuming audit", err)
	_, err = channel(t, mailer).Consume(contract.DeadLetterQueueName(emails), "", false, false, false, false, nil)
	wantAccessRefused(t, "mailer consuming the dead-letter queue", err)

	// The monitoring user may open nothing over AMQP.
	monitor := dial(t, ConnectionURL(f.broker.Host, f.broker.AMQPPort, f.topology.App, MonitoringUserName(f.topology.App), f.creds.Monitoring))
	_, err = channel(t, monitor).Consume(emails, "", false, false, false, false, nil)
	wantAccessRefused(t, "monitoring user consuming emails", err)
	_, err = publish(t, channel(t, monitor), contract.ExchangeName(emails), contract.RoutingKey(emails), "x")
	wantAccessRefused(t, "monitoring user publishing to emails", err)

	// A service's credentials open only its own app's vhost.
	if _, err := amqp.Dial(ConnectionURL(f.broker.Host, f.broker.AMQPPort, "/", UserName(f.topology.App, "users"), f.creds.Services["users"])); err == nil {
		t.Error("users opened the default vhost")
	}
}

func TestDeclareRepairsDriftMadeByHand(t *testing.T) {
	f := newFixture(t, "drift")
	f.declare()
	emails := f.physical("emails")
	mustWrite := func(what string, res *http.Response, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s by hand: %v", what, err)
		}
		_ = res.Body.Close()
	}
	res, err := f.admin.DeleteUser("drift.users")
	mustWrite("delete user", res, err)
	res, err = f.admin.PutUser("drift.mailer", rh.UserSettings{Password: "changed-by-hand", Tags: rh.UserTags{ManagedTag}})
	mustWrite("change password", res, err)
	res, err = f.admin.UpdatePermissionsIn("drift", "drift.posts", rh.Permissions{Configure: ".*", Write: ".*", Read: ".*"})
	mustWrite("widen permissions", res, err)
	res, err = f.admin.DeleteBinding("drift", rh.BindingInfo{
		Source: contract.ExchangeName(emails), Destination: emails, DestinationType: "queue", RoutingKey: emails, PropertiesKey: emails,
	})
	mustWrite("delete binding", res, err)
	res, err = f.admin.DeleteQueue("drift", contract.DeadLetterQueueName(emails))
	mustWrite("delete dead-letter queue", res, err)
	res, err = f.admin.DeletePolicy("drift", emails)
	mustWrite("delete policy", res, err)
	// Declaring over HTTP needs the admin's own access to the vhost.
	res, err = f.admin.ClearPermissionsIn("drift", f.ep.Username)
	mustWrite("revoke the admin's access", res, err)

	var got []string
	for _, c := range f.declare() {
		got = append(got, c.String())
	}
	assertEqual(t, "repairs", got, []string{
		"create permissions " + f.ep.Username,
		"create policy drift.emails",
		"create queue drift.emails.dlq",
		"create binding drift.emails.exchange -> drift.emails",
		"create binding drift.emails.dlx -> drift.emails.dlq",
		"create user drift.users",
		"update user drift.mailer (password)",
		"create permissions drift.users",
		"update permissions drift.posts",
	})

	// Recreated and reset credentials work again, end to end.
	if acked, err := publishTo(t, channel(t, dial(t, f.url("users"))), emails, "again"); err != nil || !acked {
		t.Fatalf("recreated user publishing: acked=%t err=%v", acked, err)
	}
	if _, err := channel(t, dial(t, f.url("mailer"))).Consume(emails, "", false, false, false, false, nil); err != nil {
		t.Fatalf("mailer with its reset password: %v", err)
	}
	if _, err := amqp.Dial(ConnectionURL(f.broker.Host, f.broker.AMQPPort, "drift", "drift.mailer", "changed-by-hand")); err == nil {
		t.Error("the password set by hand still works")
	}
	if again := f.declare(); len(again) != 0 {
		t.Errorf("Declare after the repair changed %v, want nothing", again)
	}
}

func TestDeclareRemovesOnlyCourierUsersTheTopologyDropped(t *testing.T) {
	f := newFixture(t, "stale")
	f.declare()
	// A user made by hand with access to the vhost is not Courier's.
	res, err := f.admin.PutUser("stale.debug", rh.UserSettings{Password: "x", Tags: rh.UserTags{}})
	if err != nil {
		t.Fatal(err)
	}
	_ = res.Body.Close()
	t.Cleanup(func() { _, _ = f.admin.DeleteUser("stale.debug") })
	if res, err = f.admin.UpdatePermissionsIn("stale", "stale.debug", rh.Permissions{Read: ".*"}); err != nil {
		t.Fatal(err)
	}
	_ = res.Body.Close()

	f.topology.Services = slices.DeleteFunc(f.topology.Services, func(s ServicePerms) bool { return s.Name == "posts" })
	changes := f.declare()
	if !slices.Contains(changes, Change{Action: ActionDelete, Kind: KindUser, Name: "stale.posts"}) || len(changes) != 1 {
		t.Errorf("changes %v, want exactly the deletion of stale.posts", changes)
	}
	if _, err := f.admin.GetUser("stale.posts"); !isNotFound(err) {
		t.Errorf("stale.posts still exists (err %v)", err)
	}
	if _, err := f.admin.GetUser("stale.debug"); err != nil {
		t.Errorf("the hand-made user was touched: %v", err)
	}
}

func TestPoliciesEnforceTheLimits(t *testing.T) {
	f := newFixture(t, "limits", func(topo *Topology) {
		topo.Queues = []QueueSpec{
			{Name: "emails", Type: QueueQuorum, MaxDeliveries: 3, DeletionPolicy: Delete},
			{Name: "expiring", Type: QueueClassic, MessageTTL: 100 * time.Millisecond, DeletionPolicy: Delete},
			{Name: "bounded", Type: QueueClassic, MaxLength: 1, DeletionPolicy: Delete},
			{Name: "bounded-quorum", Type: QueueQuorum, MaxLength: 1, DeletionPolicy: Delete},
		}
		topo.Services = []ServicePerms{
			{Name: "users", Publishes: []string{"emails", "expiring", "bounded", "bounded-quorum"}},
			{Name: "mailer", Consumes: []string{"emails"}},
		}
	})
	f.declare()

	t.Run("delivery limit dead-letters after MaxDeliveries attempts", func(t *testing.T) {
		emails := f.physical("emails")
		if acked, err := publishTo(t, channel(t, dial(t, f.url("users"))), emails, "job"); err != nil || !acked {
			t.Fatalf("publish: acked=%t err=%v", acked, err)
		}
		ch := channel(t, dial(t, f.url("mailer")))
		deliveries, err := ch.Consume(emails, "", false, false, false, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		attempts := 0
		for attempts < 3 {
			select {
			case d := <-deliveries:
				attempts++
				if err := d.Nack(false, true); err != nil {
					t.Fatal(err)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("delivery %d never came", attempts+1)
			}
		}
		poll.Within(t, 10*time.Second, "message in the dead-letter queue", func() bool {
			return f.queueDepth(contract.DeadLetterQueueName(emails)) == 1
		})
		select {
		case d := <-deliveries:
			t.Fatalf("a fourth delivery (redelivered=%t) after MaxDeliveries=3", d.Redelivered)
		default:
		}
	})

	t.Run("message TTL dead-letters expired messages", func(t *testing.T) {
		q := f.physical("expiring")
		if acked, err := publishTo(t, channel(t, dial(t, f.url("users"))), q, "late"); err != nil || !acked {
			t.Fatalf("publish: acked=%t err=%v", acked, err)
		}
		poll.Within(t, 10*time.Second, "expired message dead-lettered", func() bool {
			return f.queueDepth(contract.DeadLetterQueueName(q)) == 1
		})
		if n := f.queueDepth(q); n != 0 {
			t.Errorf("queue still holds %d messages", n)
		}
	})

	t.Run("max length refuses new messages to a full classic queue", func(t *testing.T) {
		q := f.physical("bounded")
		ch := channel(t, dial(t, f.url("users")))
		if acked, err := publishTo(t, ch, q, "first"); err != nil || !acked {
			t.Fatalf("first publish: acked=%t err=%v", acked, err)
		}
		if acked, err := publishTo(t, ch, q, "second"); err != nil || acked {
			t.Fatalf("second publish to a full queue: acked=%t err=%v, want a negative confirm", acked, err)
		}
	})

	t.Run("max length on a quorum queue is soft", func(t *testing.T) {
		// A quorum queue tells its publishers to stop only after a message
		// took it over the limit, so it may hold more than max-length, but
		// then it refuses.
		q := f.physical("bounded-quorum")
		ch := channel(t, dial(t, f.url("users")))
		var acks []bool
		for i := range 4 {
			acked, err := publishTo(t, ch, q, fmt.Sprint(i))
			if err != nil {
				t.Fatal(err)
			}
			acks = append(acks, acked)
		}
		if !acks[0] || !slices.Contains(acks, false) {
			t.Errorf("confirms %v: want the first acknowledged and a later one refused", acks)
		}
		if depth := f.queueDepth(q); depth >= len(acks) {
			t.Errorf("queue holds all %d messages despite max-length 1", depth)
		}
	})

	t.Run("a changed limit applies to the existing queue", func(t *testing.T) {
		f.topology.Queues[2].MaxLength = 2
		changes := f.declare()
		want := []Change{{Action: ActionUpdate, Kind: KindPolicy, Name: f.physical("bounded")}}
		if !slices.Equal(changes, want) {
			t.Fatalf("changes %v, want %v", changes, want)
		}
		var info struct {
			Effective map[string]any `json:"effective_policy_definition"`
		}
		// The HTTP API shows the effective policy with its statistics, which
		// refresh every few seconds.
		poll.Within(t, 20*time.Second, "new max-length in effect", func() bool {
			f.getJSON("queues/limits/"+url.PathEscape(f.physical("bounded")), &info)
			return info.Effective[policyMaxLength] == float64(2)
		})
		ch := channel(t, dial(t, f.url("users")))
		q := f.physical("bounded")
		if acked, err := publishTo(t, ch, q, "second"); err != nil || !acked {
			t.Fatalf("publish after raising the limit to 2: acked=%t err=%v", acked, err)
		}
		if acked, err := publishTo(t, ch, q, "third"); err != nil || acked {
			t.Fatalf("publish beyond the raised limit: acked=%t err=%v, want a negative confirm", acked, err)
		}
	})
}

func TestDeclareReportsAQueueThatCannotChangeType(t *testing.T) {
	f := newFixture(t, "conflict")
	f.declare()
	f.topology.Queues[0].Type = QueueClassic
	_, err := f.rabbit.Declare(context.Background(), f.ep, f.topology, f.creds)
	if !errors.Is(err, ErrConflict) {
		t.Fatalf("Declare after a type change: %v, want ErrConflict", err)
	}
}

func TestDeleteRemovesUsersAndVHost(t *testing.T) {
	f := newFixture(t, "gone")
	f.declare()
	consumer := dial(t, f.url("mailer"))
	closed := consumer.NotifyClose(make(chan *amqp.Error, 1))

	res, err := f.rabbit.Delete(context.Background(), f.ep, f.topology)
	if err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if len(res.Retained) != 0 {
		t.Errorf("retained %v from empty queues", res.Retained)
	}
	if _, err := f.admin.GetVhost("gone"); !isNotFound(err) {
		t.Errorf("vhost still there (err %v)", err)
	}
	users, err := f.admin.ListUsers()
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range users {
		if strings.HasPrefix(u.Name, "gone.") {
			t.Errorf("user %s survived", u.Name)
		}
	}
	select {
	case err := <-closed:
		if err == nil || err.Code != amqp.ConnectionForced {
			t.Errorf("the service's connection closed with %v, want a forced close (%d)", err, amqp.ConnectionForced)
		}
	case <-time.After(10 * time.Second):
		t.Error("the service's open connection survived the deletion")
	}
	if _, err := f.rabbit.Delete(context.Background(), f.ep, f.topology); err != nil {
		t.Errorf("second Delete: %v", err)
	}
}

func TestDeleteRetainsQueuesThatHoldMessages(t *testing.T) {
	f := newFixture(t, "keep", func(topo *Topology) {
		topo.Queues = []QueueSpec{
			{Name: "held-quorum", Type: QueueQuorum, DeletionPolicy: Retain},
			{Name: "held-classic", Type: QueueClassic, DeletionPolicy: Retain},
			{Name: "empty", Type: QueueQuorum, DeletionPolicy: Retain},
			{Name: "dropped", Type: QueueClassic, DeletionPolicy: Delete},
		}
		topo.Services = []ServicePerms{
			{Name: "users", Publishes: []string{"held-quorum", "held-classic", "empty", "dropped"}},
			{Name: "mailer", Consumes: []string{"held-quorum", "held-classic"}},
		}
	})
	f.declare()
	pub := channel(t, dial(t, f.url("users")))
	for _, q := range []string{"held-quorum", "held-classic", "dropped"} {
		p := f.physical(q)
		if acked, err := publishTo(t, pub, p, "job"); err != nil || !acked {
			t.Fatalf("publish to %s: acked=%t err=%v", p, acked, err)
		}
	}
	// The only message of each held queue is unacknowledged at a consumer
	// when Delete runs: it must still count as held.
	sub := channel(t, dial(t, f.url("mailer")))
	for _, q := range []string{"held-quorum", "held-classic"} {
		deliveries, err := sub.Consume(f.physical(q), "", false, false, false, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		select {
		case <-deliveries:
		case <-time.After(10 * time.Second):
			t.Fatalf("no delivery from %s", q)
		}
	}

	start := time.Now()
	res, err := f.rabbit.Delete(context.Background(), f.ep, f.topology)
	if err != nil {
		t.Fatalf("Delete: %v", err)
	}
	// Closing the connections returned the messages at once; Delete did not
	// sit out consumersGoneTimeout.
	if d := time.Since(start); d >= consumersGoneTimeout/2 {
		t.Errorf("Delete took %s", d)
	}
	assertEqual(t, "retained", res.Retained, []string{"keep.held-classic", "keep.held-quorum"})
	queues, err := f.admin.ListQueuesIn("keep")
	if err != nil {
		t.Fatalf("the vhost of retained queues is gone: %v", err)
	}
	var left []string
	for _, q := range queues {
		left = append(left, q.Name)
	}
	assertEqual(t, "queues left", left, []string{"keep.held-classic", "keep.held-quorum"})
	for _, q := range []string{"keep.held-classic", "keep.held-quorum"} {
		if n := f.queueDepth(q); n != 1 {
			t.Errorf("%s holds %d messages, want the unacknowledged one back", q, n)
		}
	}
	if _, err := f.admin.GetUser("keep.users"); !isNotFound(err) {
		t.Errorf("users survived a Delete that retained queues (err %v)", err)
	}

	// Re-creating the app picks the retained messages up.
	f.declare()
	ch := channel(t, dial(t, f.url("mailer")))
	msg, ok, err := ch.Get("keep.held-quorum", true)
	if err != nil || !ok || string(msg.Body) != "job" {
		t.Errorf("after re-creating the app: got %q ok=%t err=%v, want the retained job", msg.Body, ok, err)
	}
}

func TestUnreachableBrokerFailsFast(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := l.Addr().String()
	_ = l.Close()
	topo := blogTopology()
	creds := Credentials{Services: map[string]string{"users": "a", "posts": "b", "mailer": "c"}, Monitoring: "d"}

	tests := []struct {
		name   string
		rabbit *RabbitMQ
		url    string
	}{
		{"connection refused", NewRabbitMQ(), "http://" + closedAddr},
		{"unresolvable name", NewRabbitMQ(WithResolver(func(_ context.Context, addr string) (string, error) {
			return "", fmt.Errorf("no broker named %s", addr)
		})), "http://blog-broker.apps.svc:15672"},
		// TEST-NET-1 is never routed: the network refuses at once or, where a
		// default route swallows it, the dial timeout ends the attempt.
		{"no answer", NewRabbitMQ(WithDialTimeout(300 * time.Millisecond)), "http://192.0.2.1:15672"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ep := Endpoint{ManagementURL: tt.url, Username: "admin", Password: "admin"}
			start := time.Now()
			_, err := tt.rabbit.Delete(context.Background(), ep, topo)
			if !errors.Is(err, ErrUnreachable) {
				t.Fatalf("Delete: %v, want ErrUnreachable", err)
			}
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("Delete took %s to report an unreachable broker", d)
			}
			if _, err := tt.rabbit.Declare(context.Background(), ep, topo, creds); !errors.Is(err, ErrUnreachable) {
				t.Errorf("Declare: %v, want ErrUnreachable", err)
			}
		})
	}
}

func TestWrongAdminPasswordIsUnauthorized(t *testing.T) {
	f := newFixture(t, "unauth")
	ep := f.ep
	ep.Password = "wrong"
	_, err := f.rabbit.Declare(context.Background(), ep, f.topology, f.creds)
	if !errors.Is(err, ErrUnauthorized) || errors.Is(err, ErrUnreachable) {
		t.Fatalf("Declare with a wrong password: %v, want ErrUnauthorized only", err)
	}
}

func TestResolverReachesABrokerByServiceName(t *testing.T) {
	f := newFixture(t, "resolved", func(topo *Topology) { topo.Queues[0].DeletionPolicy = Retain })
	local := net.JoinHostPort(f.broker.Host, fmt.Sprint(f.broker.ManagementPort))
	localAMQP := net.JoinHostPort(f.broker.Host, fmt.Sprint(f.broker.AMQPPort))
	var mu sync.Mutex
	var dialed []string
	rabbit := NewRabbitMQ(WithResolver(func(_ context.Context, addr string) (string, error) {
		mu.Lock()
		defer mu.Unlock()
		dialed = append(dialed, addr)
		switch addr {
		case "resolved-broker.apps.svc:15672":
			return local, nil
		case "resolved-broker.apps.svc:5672":
			return localAMQP, nil
		}
		return "", fmt.Errorf("unexpected address %s", addr)
	}))
	ep := Endpoint{
		ManagementURL: "http://resolved-broker.apps.svc:15672", AMQPHost: "resolved-broker.apps.svc", AMQPPort: 5672,
		Username: f.ep.Username, Password: f.ep.Password,
	}
	if _, err := rabbit.Declare(context.Background(), ep, f.topology, f.creds); err != nil {
		t.Fatalf("Declare through the resolver: %v", err)
	}
	// Delete of a retained quorum queue dials AMQP through the resolver too.
	if _, err := rabbit.Delete(context.Background(), ep, f.topology); err != nil {
		t.Fatalf("Delete through the resolver: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Contains(dialed, "resolved-broker.apps.svc:5672") {
		t.Errorf("AMQP was not dialed through the resolver; dialed %v", dialed)
	}
}

func TestQueueStatsWithTheMonitoringUser(t *testing.T) {
	f := newFixture(t, "stats")
	f.declare()
	emails := f.physical("emails")
	pub := channel(t, dial(t, f.url("users")))
	for i := range 2 {
		if acked, err := publishTo(t, pub, emails, fmt.Sprint(i)); err != nil || !acked {
			t.Fatalf("publish: acked=%t err=%v", acked, err)
		}
	}
	sub := channel(t, dial(t, f.url("mailer")))
	if err := sub.Qos(1, 0, false); err != nil {
		t.Fatal(err)
	}
	deliveries, err := sub.Consume(emails, "", false, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	d := <-deliveries
	if err := d.Nack(false, false); err != nil { // straight to the dead-letter queue
		t.Fatal(err)
	}

	ep := f.ep
	ep.Username, ep.Password = MonitoringUserName("stats"), f.creds.Monitoring
	want := QueueStat{Queue: "emails", Name: emails, Exists: true, Messages: 1, Consumers: 1, DeadLetters: 1}
	var got []QueueStat
	// The HTTP API's statistics refresh every few seconds.
	poll.Within(t, 20*time.Second, "queue stats "+fmt.Sprint(want), func() bool {
		got, err = f.rabbit.QueueStats(context.Background(), ep, f.topology)
		if err != nil {
			t.Fatalf("QueueStats: %v", err)
		}
		return len(got) == 1 && got[0] == want
	})

	// The monitoring user sees its own vhost only.
	other := newFixture(t, "stats-other")
	other.declare()
	if _, err := f.rabbit.QueueStats(context.Background(), ep, other.topology); !errors.Is(err, ErrUnauthorized) {
		t.Errorf("stats of another app's vhost: %v, want ErrUnauthorized", err)
	}
}

// TestListQueuesServesEveryAppOnTheBroker: one ListQueues as the
// administrator reads the queues of two apps' vhosts, and each app's
// Stats are what QueueStats reads for it alone.
func TestListQueuesServesEveryAppOnTheBroker(t *testing.T) {
	a := newFixture(t, "list-a")
	a.declare()
	b := newFixture(t, "list-b")
	b.declare()
	pub := channel(t, dial(t, a.url("users")))
	for i := range 3 {
		if acked, err := publishTo(t, pub, a.physical("emails"), fmt.Sprint(i)); err != nil || !acked {
			t.Fatalf("publish: acked=%t err=%v", acked, err)
		}
	}

	wantA := []QueueStat{{Queue: "emails", Name: a.physical("emails"), Exists: true, Messages: 3}}
	wantB := []QueueStat{{Queue: "emails", Name: b.physical("emails"), Exists: true}}
	var queues Queues
	// The HTTP API's statistics refresh every few seconds.
	poll.Within(t, 20*time.Second, "both apps' stats from one listing", func() bool {
		var err error
		if queues, err = a.rabbit.ListQueues(context.Background(), a.ep); err != nil {
			t.Fatalf("ListQueues: %v", err)
		}
		return slices.Equal(queues.Stats(a.topology), wantA) && slices.Equal(queues.Stats(b.topology), wantB)
	})
	monitor := b.ep
	monitor.Username, monitor.Password = MonitoringUserName("list-b"), b.creds.Monitoring
	alone, err := b.rabbit.QueueStats(context.Background(), monitor, b.topology)
	if err != nil {
		t.Fatalf("QueueStats: %v", err)
	}
	if !slices.Equal(alone, wantB) {
		t.Errorf("QueueStats of list-b = %v, want %v as from the listing", alone, wantB)
	}

	missing := Topology{App: "list-none", Queues: []QueueSpec{{Name: "emails"}}}
	if got := queues.Stats(missing); len(got) != 1 || got[0].Exists {
		t.Errorf("stats of a vhost the broker lacks = %v, want one queue that does not exist", got)
	}
}

// TestVerifyNoticesUsersAndPermissionsChangedByHand: Verify passes on a
// declared topology and reports ErrDrift for a user deleted or a
// permission widened by hand, and for a vhost deleted by hand.
func TestVerifyNoticesUsersAndPermissionsChangedByHand(t *testing.T) {
	f := newFixture(t, "verify")
	f.declare()
	verify := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		return f.rabbit.Verify(ctx, f.ep, f.topology)
	}
	if err := verify(); err != nil {
		t.Fatalf("Verify right after Declare: %v", err)
	}
	mailer := UserName(f.topology.App, "mailer")
	if _, err := f.admin.DeleteUser(mailer); err != nil {
		t.Fatal(err)
	}
	if err := verify(); !errors.Is(err, ErrDrift) || !strings.Contains(err.Error(), mailer) {
		t.Errorf("Verify with %s deleted: %v, want ErrDrift naming the user", mailer, err)
	}
	f.declare()
	if _, err := f.admin.UpdatePermissionsIn(f.topology.App, UserName(f.topology.App, "users"), rh.Permissions{Configure: ".*", Write: ".*", Read: ".*"}); err != nil {
		t.Fatal(err)
	}
	if err := verify(); !errors.Is(err, ErrDrift) {
		t.Errorf("Verify with widened permissions: %v, want ErrDrift", err)
	}
	f.declare()
	if err := verify(); err != nil {
		t.Errorf("Verify after the repair: %v", err)
	}
	if _, err := f.admin.DeleteVhost(f.topology.App); err != nil {
		t.Fatal(err)
	}
	if err := verify(); !errors.Is(err, ErrDrift) {
		t.Errorf("Verify with the vhost deleted: %v, want ErrDrift", err)
	}
}

// TestRunningNodesCountsTheCluster: the single test node counts itself.
func TestRunningNodesCountsTheCluster(t *testing.T) {
	f := newFixture(t, "nodes")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n, err := f.rabbit.RunningNodes(ctx, f.ep)
	if err != nil || n != 1 {
		t.Fatalf("RunningNodes = %d, %v; want the one test node", n, err)
	}
}

// TestDeclareReadsOnlyItsOwnApp: on a broker shared by many apps, what a
// Declare reads must not grow with the other apps. The management API is
// reached through a recording proxy; no request may list the broker's users
// or permissions, and a resync with nothing to repair reads the vhost, its
// definitions, its permissions and each of the app's users, nothing else.
func TestDeclareReadsOnlyItsOwnApp(t *testing.T) {
	f := newFixture(t, "ownreads")
	target, err := url.Parse(f.broker.ManagementURL)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var seen []string
	proxy := httputil.NewSingleHostReverseProxy(target)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Method+" "+r.URL.EscapedPath())
		mu.Unlock()
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	ep := f.ep
	ep.ManagementURL = srv.URL
	requests := func() []string {
		mu.Lock()
		defer mu.Unlock()
		out := seen
		seen = nil
		return out
	}

	ctx := context.Background()
	if _, err := f.rabbit.Declare(ctx, ep, f.topology, f.creds); err != nil {
		t.Fatalf("first Declare: %v", err)
	}
	for _, r := range requests() {
		if r == "GET /api/users" || r == "GET /api/permissions" || strings.HasPrefix(r, "GET /api/users?") {
			t.Errorf("the first Declare listed every app's entities: %s", r)
		}
	}
	changes, err := f.rabbit.Declare(ctx, ep, f.topology, f.creds)
	if err != nil || len(changes) != 0 {
		t.Fatalf("second Declare: changes %v, err %v; want none", changes, err)
	}
	want := []string{"GET /api/vhosts/ownreads", "GET /api/definitions/ownreads", "GET /api/vhosts/ownreads/permissions"}
	settings, err := Generate(f.topology)
	if err != nil {
		t.Fatal(err)
	}
	// Users with permissions in the vhost are read once each: the app's
	// own, and the admin, who holds full access to it.
	users := []string{f.ep.Username}
	for _, u := range settings.Users {
		users = append(users, u.Name)
	}
	slices.Sort(users)
	for _, u := range slices.Compact(users) {
		want = append(want, "GET /api/users/"+url.PathEscape(u))
	}
	got := requests()
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("a resync with nothing to repair sent\n  %v\nwant\n  %v", got, want)
	}
}
