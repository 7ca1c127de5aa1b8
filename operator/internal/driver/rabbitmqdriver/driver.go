// Package rabbitmqdriver is the operator's driver for RabbitMQ 3.x
// (spec.broker.kind rabbitmq).
package rabbitmqdriver

import (
	"context"
	"crypto/rand"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/courier-dev/courier/operator/api/v1alpha1"
	"github.com/courier-dev/courier/operator/internal/broker"
	"github.com/courier-dev/courier/operator/internal/driver"
	"github.com/courier-dev/courier/operator/internal/metadata"
	"github.com/courier-dev/courier/operator/internal/resource"
	"github.com/courier-dev/courier/operator/internal/resource/kind"
	"github.com/courier-dev/courier/operator/internal/resource/rabbitmq"
)

// Driver runs RabbitMQ 3.x: one vhost per app, a user per service
// with least-privilege permissions, a monitoring user that may read the
// app's queue depths (package broker), and one listing of every queue per
// broker per interval for the apps' status (brokerQueues); a managed
// broker is a StatefulSet (package resource/rabbitmq).
type Driver struct {
	admin broker.Admin
	// queues are the brokers' queue listings, shared by their apps.
	queues brokerQueues
}

// New is the RabbitMQ driver doing the broker work through admin.
func New(admin broker.Admin) *Driver { return &Driver{admin: admin} }

var _ driver.Driver = (*Driver)(nil)

// rabbitConn is a RabbitMQ broker as one reconcile reaches it.
type rabbitConn struct {
	admin broker.Admin
	// endpoint reaches the management API as the administrator; zero
	// while the broker is blocked.
	endpoint broker.Endpoint
	// host and port are the AMQP listener the services dial.
	host string
	port int32
	// creds are the passwords wire kept or made.
	creds broker.Credentials
	app   string
	// queues and statsInterval are the driver's queue listings, shared
	// by the apps on a broker, and how old one may be.
	queues        *brokerQueues
	statsInterval time.Duration
	now           func() time.Time
}

// newConn is app's conn before the broker is reached.
func (d *Driver) newConn(h driver.Host, app string) *rabbitConn {
	cfg := h.Config()
	return &rabbitConn{admin: d.admin, app: app, queues: &d.queues, statsInterval: cfg.QueueStatsInterval, now: cfg.Now}
}

// Kinds are the managed broker's kinds of object.
func (*Driver) Kinds() []kind.Object {
	out := make([]kind.Object, 0, len(rabbitmq.Builders))
	for _, b := range rabbitmq.Builders {
		out = append(out, b.Object)
	}
	return out
}

// Topology is the spec's mapping (driver.TopologyOf) with its queue types.
func (*Driver) Topology(app *v1alpha1.MicroserviceApp, observed []v1alpha1.QueueStatus) (broker.Topology, map[string]v1alpha1.QueueType) {
	return driver.TopologyOf(app, observed)
}

// Open reaches the managed or external broker (driver.Driver).
func (d *Driver) Open(ctx context.Context, h driver.Host, s *driver.State) (driver.Conn, []error, error) {
	if s.App.Spec.Broker.Managed != nil {
		return d.openManaged(ctx, h, s)
	}
	c, err := d.openExternal(ctx, h, s)
	return c, nil, err
}

// openManaged applies the managed broker's objects and reports whether its
// nodes are ready; err is a failure to read the API server.
func (d *Driver) openManaged(ctx context.Context, h driver.Host, s *driver.State) (driver.Conn, []error, error) {
	b := resource.ManagedBroker(s.App, h.Config().ClusterDomain, h.Config().OperatorNamespace)
	names := metadata.BrokerNamesFor(b.App)
	c := d.newConn(h, s.App.Name)
	c.host, c.port = b.AMQPHost(), rabbitmq.AMQPPort
	creds, reason, err := adminCredentials(ctx, h, b)
	switch {
	case err != nil && reason == "":
		return nil, nil, err
	case err != nil:
		s.BlockedReason, s.BlockedMessage = reason, err.Error()
	}

	// The StatefulSet waits for its Secret: its nodes initialise their
	// database with the credentials and cookie they first find there.
	sts, errs := driver.ApplyManagedBroker(ctx, h, s, rabbitmq.Builders, rabbitmq.Input{Broker: b, Credentials: creds},
		map[string]string{"Secret": names.AdminSecret, "StatefulSet": names.StatefulSet})
	if s.BlockedReason != "" {
		return c, errs, nil
	}
	c.endpoint = rabbitmq.Endpoint(b, creds)
	s.BlockedReason, s.BlockedMessage, s.PodsWaiting = driver.PodsReady(sts, b.Replicas)
	if s.BlockedReason == "" && s.PodsWaiting == "" && newQuorumQueue(s.App) != "" {
		// Every pod is ready; a new quorum queue also needs every node in
		// the cluster, which the broker itself knows (seen on the real
		// node: a queue declared on one member of three). A failure to ask
		// is left to the declare, which reports it.
		want := ptr.Deref(sts.Spec.Replicas, b.Replicas)
		if n, err := d.admin.RunningNodes(ctx, c.endpoint); err == nil && int32(n) < want {
			s.PodsWaiting = fmt.Sprintf("%d of %d broker nodes have joined the cluster", n, want)
		}
	}
	return c, errs, nil
}

// adminCredentials are the managed broker's credentials: those of its
// admin Secret, or new ones for a broker that does not exist yet. They are
// never made anew for a broker that exists: its nodes take the
// administrator and cookie only when they first initialise their database,
// so new ones would lock the operator out and split the cluster. A failure
// that blocks the broker comes with its BrokerReady reason; one without a
// reason is an error reading the API.
func adminCredentials(ctx context.Context, h driver.Host, b rabbitmq.Broker) (rabbitmq.Credentials, string, error) {
	names := metadata.BrokerNamesFor(b.App)
	secret := &corev1.Secret{}
	found, err := h.GetSecret(ctx, client.ObjectKey{Namespace: b.Namespace, Name: names.AdminSecret}, secret)
	if err != nil {
		return rabbitmq.Credentials{}, "", err
	}
	if found {
		creds, err := rabbitmq.CredentialsFromSecret(secret)
		if err != nil {
			return rabbitmq.Credentials{}, v1alpha1.ReasonBrokerSecretInvalid, err
		}
		return creds, "", nil
	}
	reason, err := driver.AdminSecretLost(ctx, h, b.Namespace, names.AdminSecret, names.StatefulSet)
	if reason != "" || err != nil {
		return rabbitmq.Credentials{}, reason, err
	}
	return generateAdminCredentials(), "", nil
}

// generateAdminCredentials returns a managed broker's new random
// credentials from crypto/rand; here, not in the builders, which stay
// pure. Call it only when the admin Secret does not exist yet (see
// adminCredentials): new values would lock the operator out, since
// RabbitMQ creates its default user from them only when a node initialises
// an empty database, and nodes with different cookies cannot talk to each
// other.
func generateAdminCredentials() rabbitmq.Credentials {
	return rabbitmq.Credentials{
		// A random user name keeps the administrator's name off the list an
		// attacker would try first; lower case, so it reads like a name.
		Username: "admin-" + strings.ToLower(rand.Text()[:10]),
		Password: broker.GeneratePassword(),
		// Two rand.Text values: 52 characters of A-Z and 2-7, about 260 bits;
		// Erlang accepts cookies of up to 255 such characters.
		ErlangCookie: rand.Text() + rand.Text(),
	}
}

// openExternal reads the external broker's Secret. A missing or malformed
// Secret blocks the broker work; only failing to read it is an error.
func (d *Driver) openExternal(ctx context.Context, h driver.Host, s *driver.State) (driver.Conn, error) {
	c := d.external(h, s.App)
	admin, reason, err := externalAdmin(ctx, h, s.App)
	switch {
	case reason != "":
		s.BlockedReason, s.BlockedMessage = reason, err.Error()
		return c, nil
	case err != nil:
		return nil, err
	}
	admin.AMQPHost, admin.AMQPPort = c.host, int(c.port)
	c.endpoint = admin
	return c, nil
}

// external is the conn of an external broker before its Secret is
// read: the AMQP address the spec gives.
func (d *Driver) external(h driver.Host, app *v1alpha1.MicroserviceApp) *rabbitConn {
	ext := app.Spec.Broker.External
	c := d.newConn(h, app.Name)
	c.host, c.port = ext.Host, ext.Port
	if c.port == 0 {
		c.port = rabbitmq.AMQPPort // the kind's default port
	}
	return c
}

// externalAdmin reads the administrator's endpoint from the external
// broker's Secret, straight from the API server: the operator's cache holds
// only the Secrets it labels. A Secret that is missing or malformed comes
// with its BrokerReady reason and an error saying what is wrong; an error
// without a reason is a failure to read it.
func externalAdmin(ctx context.Context, h driver.Host, app *v1alpha1.MicroserviceApp) (broker.Endpoint, string, error) {
	secret, reason, err := h.ExternalSecret(ctx, app)
	if reason != "" || err != nil {
		return broker.Endpoint{}, reason, err
	}
	name := secret.Name
	var missing []string
	get := func(key string) string {
		v := string(secret.Data[key])
		if v == "" {
			missing = append(missing, key)
		}
		return v
	}
	ep := broker.Endpoint{
		ManagementURL: get(v1alpha1.ExternalManagementURLKey),
		Username:      get(v1alpha1.ExternalUsernameKey),
		Password:      get(v1alpha1.ExternalPasswordKey),
	}
	if len(missing) > 0 {
		return broker.Endpoint{}, v1alpha1.ReasonBrokerSecretInvalid,
			fmt.Errorf("the Secret %s lacks the key(s) %s", name, strings.Join(missing, ", "))
	}
	if u, err := url.Parse(ep.ManagementURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return broker.Endpoint{}, v1alpha1.ReasonBrokerSecretInvalid,
			fmt.Errorf("the Secret %s: %s is not an http(s) URL", name, v1alpha1.ExternalManagementURLKey)
	}
	return ep, "", nil
}

// Wire keeps the monitoring user's and every service's password, makes
// the missing ones and applies the monitoring Secret.
func (c *rabbitConn) Wire(ctx context.Context, h driver.Host, s *driver.State) ([]error, error) {
	monitoring, _, err := keptPassword(ctx, h, s.App.Namespace, metadata.MonitoringSecretName(s.App.Name), resource.MonitoringPasswordKey)
	if err != nil {
		return nil, err
	}
	c.creds = broker.Credentials{Services: map[string]string{}, Monitoring: monitoring}
	for i := range s.App.Spec.Services {
		svc := &s.App.Spec.Services[i]
		if !resource.UsesBroker(s.App, svc) {
			continue
		}
		name := metadata.ConnectionSecretName(s.App.Name, svc.Name)
		p, kept, err := keptPassword(ctx, h, s.App.Namespace, name, rabbitmq.ConnectionPasswordKey)
		if err != nil {
			return nil, err
		}
		if kept {
			s.KeptSecrets[name] = true
		}
		c.creds.Services[svc.Name] = p
		s.Wiring[svc.Name] = &resource.Broker{
			// The API's kinds are the contract's (TestBrokerKindsFollowContract).
			Kind:   string(s.App.Spec.Broker.Kind),
			Data:   rabbitmq.ConnectionData(resource.Connection(s.App, svc.Name, c.host, c.port, p)),
			URLKey: rabbitmq.ConnectionURLKey,
		}
	}
	if _, err := h.Apply(ctx, kind.Secret, resource.MonitoringSecret(s.App, monitoring)); err != nil {
		return []error{err}, nil
	}
	return nil, nil
}

// keptPassword is the password in key of the Secret name, kept, or a new
// one (see driver.Host.KeptSecretValue).
func keptPassword(ctx context.Context, h driver.Host, namespace, name, key string) (string, bool, error) {
	v, kept, err := h.KeptSecretValue(ctx, namespace, name, key, func() ([]byte, error) {
		return []byte(broker.GeneratePassword()), nil
	})
	return string(v), kept, err
}

// HoldDeclare holds back a new quorum queue while some of a managed
// broker's nodes are not ready: a quorum queue takes its members from the
// nodes that are up when it is declared, and RabbitMQ 3.10 cannot add one
// later but by hand (rabbitmq-queues grow), so a broker still forming
// would keep it on fewer nodes for good.
func (c *rabbitConn) HoldDeclare(s *driver.State) (string, string) {
	if s.PodsWaiting == "" {
		return "", ""
	}
	if q := newQuorumQueue(s.App); q != "" {
		return v1alpha1.ReasonWaitingForBrokerPods,
			fmt.Sprintf("%s: queue %q is new, and a quorum queue waits for every node so it has a member on each", s.PodsWaiting, q)
	}
	return "", ""
}

// MemoInput is the endpoint and the credentials.
func (c *rabbitConn) MemoInput() any {
	return struct {
		Endpoint    broker.Endpoint
		Credentials broker.Credentials
	}{c.endpoint, c.creds}
}

// Declare declares the topology as the administrator.
func (c *rabbitConn) Declare(ctx context.Context, t broker.Topology) ([]broker.Change, error) {
	return c.admin.Declare(ctx, c.endpoint, t, c.creds)
}

// Verify checks the users' permissions in one read.
func (c *rabbitConn) Verify(ctx context.Context, t broker.Topology) error {
	return c.admin.Verify(ctx, c.endpoint, t)
}

// QueueStats takes the app's queues from one listing of every queue on
// the broker, read as the administrator and shared with the other apps on
// it (brokerQueues), keyed by the management API and user: a shared
// external broker costs one call per interval whatever its number of apps,
// also while apps are being created (a listing for each new app's first
// poll made convergence cost O(apps^2): 1,000 apps listed up to 2,000
// queues about 1,000 times).
func (c *rabbitConn) QueueStats(ctx context.Context, t broker.Topology) ([]broker.QueueStat, error) {
	key := c.endpoint.ManagementURL + " " + c.endpoint.Username
	queues, err := c.queues.get(ctx, key, c.now, c.statsInterval, func(ctx context.Context) (broker.Queues, error) {
		return c.admin.ListQueues(ctx, c.endpoint)
	})
	if err != nil {
		return nil, err
	}
	return queues.Stats(t), nil
}

// Remove deletes the app's users, queues and vhost.
func (c *rabbitConn) Remove(ctx context.Context, t broker.Topology) (broker.DeleteResult, error) {
	return c.admin.Delete(ctx, c.endpoint, t)
}

// newQuorumQueue names a queue of app that would be declared as a quorum
// queue for the first time (status.queues does not list it yet), or "".
func newQuorumQueue(app *v1alpha1.MicroserviceApp) string {
	for _, q := range app.Spec.Queues {
		if driver.QueueType(q, app.Status.Queues) != v1alpha1.QueueQuorum {
			continue
		}
		// status.queues lists every queue of the spec from the first
		// status write on; only a declared one has its type recorded.
		if !slices.ContainsFunc(app.Status.Queues, func(o v1alpha1.QueueStatus) bool { return o.Name == q.Name && o.Type != "" }) {
			return q.Name
		}
	}
	return ""
}

// OpenForCleanup is the administrator's endpoint for the clean-up, or why
// there is none to use; an error is a failure to read the API, retried.
func (d *Driver) OpenForCleanup(ctx context.Context, h driver.Host, app *v1alpha1.MicroserviceApp) (driver.Conn, string, error) {
	if app.Spec.Broker.External != nil {
		c := d.external(h, app)
		admin, reason, err := externalAdmin(ctx, h, app)
		switch {
		case reason != "":
			return nil, err.Error(), nil
		case err != nil:
			return nil, "", err
		}
		admin.AMQPHost, admin.AMQPPort = c.host, int(c.port)
		c.endpoint = admin
		return c, "", nil
	}

	b := resource.ManagedBroker(app, h.Config().ClusterDomain, h.Config().OperatorNamespace)
	names := metadata.BrokerNamesFor(app.Name)
	if skip, err := driver.ManagedBrokerGone(ctx, h, app.Namespace, names.StatefulSet); skip != "" || err != nil {
		return nil, skip, err
	}
	secret := &corev1.Secret{}
	found, err := h.GetSecret(ctx, client.ObjectKey{Namespace: app.Namespace, Name: names.AdminSecret}, secret)
	switch {
	case err != nil:
		return nil, "", err
	case !found:
		return nil, "the broker's admin Secret is missing", nil
	}
	creds, err := rabbitmq.CredentialsFromSecret(secret)
	if err != nil {
		return nil, err.Error(), nil
	}
	c := d.newConn(h, app.Name)
	c.endpoint = rabbitmq.Endpoint(b, creds)
	return c, "", nil
}

// Stop prepares a deleted app's managed broker to stop without the preStop
// checks: when every node goes, no quorum queue can keep a majority and no
// node can take over another's leaderships, so each pod would wait out the
// quorum wait and the drain for nothing (up to 420 s each). It marks the
// running pods with the time; their preStop hook reads the mark through the
// downward API. The kubelet refreshes that file when the pod changes
// (measured on the local node: visible in the container 1.1 s after the
// patch) but no longer once the pod terminates, so the app, whose deletion
// lets garbage collection delete the StatefulSet and its pods, waits until
// every mark is MarkPropagation old: the returned wait, zero once
// they all are. Pods already terminating (the whole namespace deleted at
// once) cannot be helped: the kubelet does not shorten a running preStop
// hook for a second deletion with a shorter grace period (measured); they
// take their grace period, which is why the app should be deleted before
// its namespace.
func (*Driver) Stop(ctx context.Context, h driver.Host, app *v1alpha1.MicroserviceApp) (time.Duration, error) {
	pods := &metav1.PartialObjectMetadataList{}
	pods.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("PodList"))
	if err := h.APIReader().List(ctx, pods, client.InNamespace(app.Namespace),
		client.MatchingLabels(metadata.BrokerSelectorLabels(app.Name))); err != nil {
		return 0, fmt.Errorf("list the broker's pods: %w", err)
	}
	now := time.Now()
	var wait time.Duration
	for i := range pods.Items {
		pod := &pods.Items[i]
		if !pod.DeletionTimestamp.IsZero() {
			continue
		}
		if mark, ok := pod.Annotations[rabbitmq.AnnotationSkipPreStopChecks]; ok {
			if at, err := time.Parse(time.RFC3339, mark); err == nil {
				wait = max(wait, MarkPropagation-now.Sub(at))
			}
			continue
		}
		patch := client.RawPatch(types.MergePatchType, fmt.Appendf(nil,
			`{"metadata":{"annotations":{%q:%q}}}`, rabbitmq.AnnotationSkipPreStopChecks, now.UTC().Format(time.RFC3339)))
		if err := h.Client().Patch(ctx, pod, patch); err != nil && !apierrors.IsNotFound(err) {
			return 0, fmt.Errorf("mark broker pod %s to skip its preStop checks: %w", pod.Name, err)
		}
		wait = MarkPropagation
	}
	return max(wait, 0), nil
}

// MarkPropagation is how long a deleted app waits after marking its
// broker's pods before it lets them go: several times the time the kubelet
// took to show the mark in the container.
const MarkPropagation = 5 * time.Second
