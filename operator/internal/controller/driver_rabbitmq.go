package controller

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/courier-dev/courier/operator/api/v1alpha1"
	"github.com/courier-dev/courier/operator/internal/broker"
	"github.com/courier-dev/courier/operator/internal/metadata"
	"github.com/courier-dev/courier/operator/internal/resource"
	"github.com/courier-dev/courier/operator/internal/resource/kind"
	"github.com/courier-dev/courier/operator/internal/resource/rabbitmq"
)

// rabbitMQDriver runs RabbitMQ 3.x: one vhost per app, a user per service
// with least-privilege permissions, a monitoring user for queue depths
// (package broker); a managed broker is a StatefulSet (package
// resource/rabbitmq).
type rabbitMQDriver struct{}

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
	// queues and statsInterval are the reconciler's shared queue
	// listings and how old one may be.
	queues        *brokerQueues
	statsInterval time.Duration
	now           func() time.Time
}

// newRabbitConn is app's conn before the broker is reached.
func newRabbitConn(r *MicroserviceAppReconciler, app string) *rabbitConn {
	return &rabbitConn{admin: r.Admin, app: app, queues: &r.brokerQueues, statsInterval: r.queueStatsInterval(), now: r.now}
}

func (rabbitMQDriver) kinds() []kind.Object {
	out := make([]kind.Object, 0, len(rabbitmq.Builders))
	for _, b := range rabbitmq.Builders {
		out = append(out, b.Object)
	}
	return out
}

func (rabbitMQDriver) topology(app *v1alpha1.MicroserviceApp, observed []v1alpha1.QueueStatus) (broker.Topology, map[string]v1alpha1.QueueType) {
	return topologyOf(app, observed)
}

func (d rabbitMQDriver) open(ctx context.Context, r *MicroserviceAppReconciler, s *scope) (brokerConn, []error, error) {
	if s.app.Spec.Broker.Managed != nil {
		return d.openManaged(ctx, r, s)
	}
	c, err := d.openExternal(ctx, r, s)
	return c, nil, err
}

// openManaged applies the managed broker's objects and reports whether its
// nodes are ready; err is a failure to read the API server.
func (rabbitMQDriver) openManaged(ctx context.Context, r *MicroserviceAppReconciler, s *scope) (brokerConn, []error, error) {
	b := resource.ManagedBroker(s.app, r.ClusterDomain, r.OperatorNamespace)
	names := metadata.BrokerNamesFor(b.App)
	c := newRabbitConn(r, s.app.Name)
	c.host, c.port = b.AMQPHost(), rabbitmq.AMQPPort
	creds, reason, err := r.rabbitAdminCredentials(ctx, b)
	switch {
	case err != nil && reason == "":
		return nil, nil, err
	case err != nil:
		s.broker.blockedReason, s.broker.blockedMessage = reason, err.Error()
	}

	// The StatefulSet waits for its Secret: its nodes initialise their
	// database with the credentials and cookie they first find there.
	sts, errs := applyManagedBroker(ctx, r, s, rabbitmq.Builders, rabbitmq.Input{Broker: b, Credentials: creds},
		map[string]string{"Secret": names.AdminSecret, "StatefulSet": names.StatefulSet})
	if s.broker.blockedReason != "" {
		return c, errs, nil
	}
	c.endpoint = rabbitmq.Endpoint(b, creds)
	s.broker.blockedReason, s.broker.blockedMessage, s.broker.podsWaiting = podsReady(sts, b.Replicas)
	if s.broker.blockedReason == "" && s.broker.podsWaiting == "" && newQuorumQueue(s.app) != "" {
		// Every pod is ready; a new quorum queue also needs every node in
		// the cluster, which the broker itself knows (seen on the real
		// node: a queue declared on one member of three). A failure to ask
		// is left to the declare, which reports it.
		want := ptr.Deref(sts.Spec.Replicas, b.Replicas)
		if n, err := r.Admin.RunningNodes(ctx, c.endpoint); err == nil && int32(n) < want {
			s.broker.podsWaiting = fmt.Sprintf("%d of %d broker nodes have joined the cluster", n, want)
		}
	}
	return c, errs, nil
}

// podsReady reads a managed broker's readiness from its StatefulSet (nil
// when it is not written yet), wantReplicas being the spec's: a reason and
// message that block the broker work, or podsWaiting while at least one pod
// is ready but not all. A pod is ready once it has booted and joined the
// cluster; the broker answers as soon as one is.
func podsReady(sts *appsv1.StatefulSet, wantReplicas int32) (reason, message, podsWaiting string) {
	want, ready := wantReplicas, int32(0)
	if sts != nil {
		want, ready = ptr.Deref(sts.Spec.Replicas, wantReplicas), sts.Status.ReadyReplicas
	}
	switch {
	case sts == nil:
		return v1alpha1.ReasonWaitingForBrokerPods, "the broker's StatefulSet is not written yet", ""
	case want == 0:
		return v1alpha1.ReasonWaitingForBrokerPods, "the broker is scaled to zero (spec.broker.managed.replicas)", ""
	case ready == 0:
		return v1alpha1.ReasonWaitingForBrokerPods, fmt.Sprintf("0 of %d broker pods ready", want), ""
	case ready < want:
		return "", "", fmt.Sprintf("%d of %d broker pods ready", ready, want)
	}
	return "", "", ""
}

// adminSecretError marks the failure to write the admin Secret, after which
// the StatefulSet is not written either.
type adminSecretError struct{ error }

func (e adminSecretError) Unwrap() error { return e.error }

func isAdminSecretError(err error) bool {
	var e adminSecretError
	return errors.As(err, &e)
}

// rabbitAdminCredentials are the managed broker's credentials: those of its
// admin Secret, or new ones for a broker that does not exist yet. They are
// never made anew for a broker that exists: its nodes take the
// administrator and cookie only when they first initialise their database,
// so new ones would lock the operator out and split the cluster. A failure
// that blocks the broker comes with its BrokerReady reason; one without a
// reason is an error reading the API.
func (r *MicroserviceAppReconciler) rabbitAdminCredentials(ctx context.Context, b rabbitmq.Broker) (rabbitmq.Credentials, string, error) {
	names := metadata.BrokerNamesFor(b.App)
	secret := &corev1.Secret{}
	found, err := r.getSecret(ctx, client.ObjectKey{Namespace: b.Namespace, Name: names.AdminSecret}, secret)
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
	reason, err := r.adminSecretLost(ctx, b.Namespace, names.AdminSecret, names.StatefulSet)
	if reason != "" || err != nil {
		return rabbitmq.Credentials{}, reason, err
	}
	return generateAdminCredentials(), "", nil
}

// generateAdminCredentials returns a managed broker's new random
// credentials from crypto/rand; here, not in the builders, which stay
// pure. Call it only when the admin Secret does not exist yet (see
// rabbitAdminCredentials): new values would lock the operator out, since
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

// adminSecretLost is called when a managed broker's admin Secret is
// missing: it says whether the broker exists all the same, whose servers
// keep what they were first started with, so new admin secrets would lock
// the operator out (ReasonAdminSecretMissing and an error saying how to get
// past it). An error without a reason is a failure to read the API.
func (r *MicroserviceAppReconciler) adminSecretLost(ctx context.Context, namespace, secret, statefulSet string) (string, error) {
	// The cache may lag behind a StatefulSet written a moment ago; this
	// path is rare enough to ask the API server.
	key := client.ObjectKey{Namespace: namespace, Name: statefulSet}
	err := r.Get(ctx, key, &appsv1.StatefulSet{})
	if apierrors.IsNotFound(err) {
		err = r.apiReader().Get(ctx, key, &appsv1.StatefulSet{})
	}
	switch {
	case apierrors.IsNotFound(err):
		return "", nil
	case err != nil:
		return "", fmt.Errorf("read StatefulSet %s: %w", statefulSet, err)
	}
	return v1alpha1.ReasonAdminSecretMissing, fmt.Errorf(
		"the admin Secret %s is missing but the broker exists; its nodes keep the credentials they were initialised with: "+
			"restore the Secret, or delete the StatefulSet %s (its volumes go with it) to start the broker over",
		secret, statefulSet)
}

// openExternal reads the external broker's Secret. A missing or malformed
// Secret blocks the broker work; only failing to read it is an error.
func (rabbitMQDriver) openExternal(ctx context.Context, r *MicroserviceAppReconciler, s *scope) (brokerConn, error) {
	c := rabbitExternal(r, s.app)
	admin, reason, err := r.rabbitExternalAdmin(ctx, s.app)
	switch {
	case reason != "":
		s.broker.blockedReason, s.broker.blockedMessage = reason, err.Error()
		return c, nil
	case err != nil:
		return nil, err
	}
	admin.AMQPHost, admin.AMQPPort = c.host, int(c.port)
	c.endpoint = admin
	return c, nil
}

// rabbitExternal is the conn of an external broker before its Secret is
// read: the AMQP address the spec gives.
func rabbitExternal(r *MicroserviceAppReconciler, app *v1alpha1.MicroserviceApp) *rabbitConn {
	ext := app.Spec.Broker.External
	c := newRabbitConn(r, app.Name)
	c.host, c.port = ext.Host, ext.Port
	if c.port == 0 {
		c.port = rabbitmq.AMQPPort // the kind's default port
	}
	return c
}

// rabbitExternalAdmin reads the administrator's endpoint from the external
// broker's Secret, straight from the API server: the operator's cache holds
// only the Secrets it labels. A Secret that is missing or malformed comes
// with its BrokerReady reason and an error saying what is wrong; an error
// without a reason is a failure to read it.
func (r *MicroserviceAppReconciler) rabbitExternalAdmin(ctx context.Context, app *v1alpha1.MicroserviceApp) (broker.Endpoint, string, error) {
	secret, reason, err := r.externalSecret(ctx, app)
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

// externalSecret reads the Secret spec.broker.external.secretRef names
// (readExternalSecret). A missing one comes with
// ReasonExternalSecretMissing; an error without a reason is a failure to
// read it.
func (r *MicroserviceAppReconciler) externalSecret(ctx context.Context, app *v1alpha1.MicroserviceApp) (*corev1.Secret, string, error) {
	name := app.Spec.Broker.External.SecretRef.Name
	secret, err := r.readExternalSecret(ctx, client.ObjectKey{Namespace: app.Namespace, Name: name})
	if err != nil {
		if apierrors.IsNotFound(err) {
			return nil, v1alpha1.ReasonExternalSecretMissing,
				fmt.Errorf("the Secret %s named by spec.broker.external.secretRef does not exist", name)
		}
		return nil, "", fmt.Errorf("read Secret %s: %w", name, err)
	}
	return secret, "", nil
}

// wire keeps the monitoring user's and every service's password, makes
// the missing ones and applies the monitoring Secret.
func (c *rabbitConn) wire(ctx context.Context, r *MicroserviceAppReconciler, s *scope) ([]error, error) {
	monitoring, _, err := r.keptPassword(ctx, s.app.Namespace, metadata.MonitoringSecretName(s.app.Name), resource.MonitoringPasswordKey)
	if err != nil {
		return nil, err
	}
	c.creds = broker.Credentials{Services: map[string]string{}, Monitoring: monitoring}
	for i := range s.app.Spec.Services {
		svc := &s.app.Spec.Services[i]
		if !resource.UsesBroker(s.app, svc) {
			continue
		}
		name := metadata.ConnectionSecretName(s.app.Name, svc.Name)
		p, kept, err := r.keptPassword(ctx, s.app.Namespace, name, rabbitmq.ConnectionPasswordKey)
		if err != nil {
			return nil, err
		}
		if kept {
			s.keptSecrets[name] = true
		}
		c.creds.Services[svc.Name] = p
		s.wiring[svc.Name] = &resource.Broker{
			// The API's kinds are the contract's (TestBrokerKindsFollowContract).
			Kind:   string(s.app.Spec.Broker.Kind),
			Data:   rabbitmq.ConnectionData(resource.Connection(s.app, svc.Name, c.host, c.port, p)),
			URLKey: rabbitmq.ConnectionURLKey,
		}
	}
	if _, err := r.applyChild(ctx, s, kind.Secret, resource.MonitoringSecret(s.app, monitoring)); err != nil {
		return []error{err}, nil
	}
	return nil, nil
}

// keptPassword is the password in key of the Secret name, kept, or a new
// one (see keptSecretValue).
func (r *MicroserviceAppReconciler) keptPassword(ctx context.Context, namespace, name, key string) (string, bool, error) {
	v, kept, err := r.keptSecretValue(ctx, namespace, name, key, func() ([]byte, error) {
		return []byte(broker.GeneratePassword()), nil
	})
	return string(v), kept, err
}

// holdDeclare holds back a new quorum queue while some of a managed
// broker's nodes are not ready: a quorum queue takes its members from the
// nodes that are up when it is declared, and RabbitMQ 3.10 cannot add one
// later but by hand (rabbitmq-queues grow), so a broker still forming
// would keep it on fewer nodes for good.
func (c *rabbitConn) holdDeclare(s *scope) (string, string) {
	if s.broker.podsWaiting == "" {
		return "", ""
	}
	if q := newQuorumQueue(s.app); q != "" {
		return v1alpha1.ReasonWaitingForBrokerPods,
			fmt.Sprintf("%s: queue %q is new, and a quorum queue waits for every node so it has a member on each", s.broker.podsWaiting, q)
	}
	return "", ""
}

func (c *rabbitConn) memoInput() any {
	return struct {
		Endpoint    broker.Endpoint
		Credentials broker.Credentials
	}{c.endpoint, c.creds}
}

func (c *rabbitConn) declare(ctx context.Context, t broker.Topology) ([]broker.Change, error) {
	return c.admin.Declare(ctx, c.endpoint, t, c.creds)
}

func (c *rabbitConn) verify(ctx context.Context, t broker.Topology) error {
	return c.admin.Verify(ctx, c.endpoint, t)
}

// queueStats takes the app's queues from one listing of every queue on
// the broker, read as the administrator and shared with the other apps on
// it (brokerQueues), keyed by the management API and user: a shared
// external broker costs one call per interval whatever its number of apps.
func (c *rabbitConn) queueStats(ctx context.Context, t broker.Topology, since time.Time) ([]broker.QueueStat, error) {
	key := c.endpoint.ManagementURL + " " + c.endpoint.Username
	queues, err := c.queues.get(ctx, key, c.now, since, c.statsInterval, func(ctx context.Context) (broker.Queues, error) {
		return c.admin.ListQueues(ctx, c.endpoint)
	})
	if err != nil {
		return nil, err
	}
	return queues.Stats(t), nil
}

func (c *rabbitConn) remove(ctx context.Context, t broker.Topology) (broker.DeleteResult, error) {
	return c.admin.Delete(ctx, c.endpoint, t)
}

// newQuorumQueue names a queue of app that would be declared as a quorum
// queue for the first time (status.queues does not list it yet), or "".
func newQuorumQueue(app *v1alpha1.MicroserviceApp) string {
	for _, q := range app.Spec.Queues {
		if queueType(q, app.Status.Queues) != v1alpha1.QueueQuorum {
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

// openForCleanup is the administrator's endpoint for the clean-up, or why
// there is none to use; an error is a failure to read the API, retried.
func (d rabbitMQDriver) openForCleanup(ctx context.Context, r *MicroserviceAppReconciler, app *v1alpha1.MicroserviceApp) (brokerConn, string, error) {
	if app.Spec.Broker.External != nil {
		c := rabbitExternal(r, app)
		admin, reason, err := r.rabbitExternalAdmin(ctx, app)
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

	b := resource.ManagedBroker(app, r.ClusterDomain, r.OperatorNamespace)
	names := metadata.BrokerNamesFor(app.Name)
	if skip, err := r.managedBrokerGone(ctx, app.Namespace, names.StatefulSet); skip != "" || err != nil {
		return nil, skip, err
	}
	secret := &corev1.Secret{}
	found, err := r.getSecret(ctx, client.ObjectKey{Namespace: app.Namespace, Name: names.AdminSecret}, secret)
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
	c := newRabbitConn(r, app.Name)
	c.endpoint = rabbitmq.Endpoint(b, creds)
	return c, "", nil
}

// managedBrokerGone says why a deleting app's managed broker, the
// StatefulSet name, cannot be cleaned up ("" when it can); an error is a
// failure to read the API.
func (r *MicroserviceAppReconciler) managedBrokerGone(ctx context.Context, namespace, name string) (string, error) {
	sts := &appsv1.StatefulSet{}
	switch err := r.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, sts); {
	case apierrors.IsNotFound(err):
		return "the broker's StatefulSet is gone", nil
	case err != nil:
		return "", fmt.Errorf("read the broker's StatefulSet: %w", err)
	case ptr.Deref(sts.Spec.Replicas, 1) == 0:
		return "the broker is scaled to zero", nil
	case sts.Status.ReadyReplicas == 0:
		return "no broker pod is ready", nil
	}
	return "", nil
}

// stop prepares a deleted app's managed broker to stop without the preStop
// checks: when every node goes, no quorum queue can keep a majority and no
// node can take over another's leaderships, so each pod would wait out the
// quorum wait and the drain for nothing (up to 420 s each). It marks the
// running pods with the time; their preStop hook reads the mark through the
// downward API. The kubelet refreshes that file when the pod changes
// (measured on the local node: visible in the container 1.1 s after the
// patch) but no longer once the pod terminates, so the app, whose deletion
// lets garbage collection delete the StatefulSet and its pods, waits until
// every mark is brokerMarkPropagation old: the returned wait, zero once
// they all are. Pods already terminating (the whole namespace deleted at
// once) cannot be helped: the kubelet does not shorten a running preStop
// hook for a second deletion with a shorter grace period (measured); they
// take their grace period, which is why the app should be deleted before
// its namespace.
func (rabbitMQDriver) stop(ctx context.Context, r *MicroserviceAppReconciler, app *v1alpha1.MicroserviceApp) (time.Duration, error) {
	pods := &metav1.PartialObjectMetadataList{}
	pods.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("PodList"))
	if err := r.apiReader().List(ctx, pods, client.InNamespace(app.Namespace),
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
				wait = max(wait, brokerMarkPropagation-now.Sub(at))
			}
			continue
		}
		patch := client.RawPatch(types.MergePatchType, fmt.Appendf(nil,
			`{"metadata":{"annotations":{%q:%q}}}`, rabbitmq.AnnotationSkipPreStopChecks, now.UTC().Format(time.RFC3339)))
		if err := r.Patch(ctx, pod, patch); err != nil && !apierrors.IsNotFound(err) {
			return 0, fmt.Errorf("mark broker pod %s to skip its preStop checks: %w", pod.Name, err)
		}
		wait = brokerMarkPropagation
	}
	return max(wait, 0), nil
}

// brokerMarkPropagation is how long a deleted app waits after marking its
// broker's pods before it lets them go: several times the time the kubelet
// took to show the mark in the container.
const brokerMarkPropagation = 5 * time.Second

// topologyOf maps the app's spec to the broker's input. Queue types follow
// queueType; the chosen types are returned for status.queues.
func topologyOf(app *v1alpha1.MicroserviceApp, observed []v1alpha1.QueueStatus) (broker.Topology, map[string]v1alpha1.QueueType) {
	t := broker.Topology{App: resource.VHost(app), Owner: app.Namespace + "/" + app.Name}
	types := make(map[string]v1alpha1.QueueType, len(app.Spec.Queues))
	for _, q := range app.Spec.Queues {
		typ := queueType(q, observed)
		types[q.Name] = typ
		spec := broker.QueueSpec{
			Name:           q.Name,
			Type:           broker.QueueType(typ),
			MaxDeliveries:  ptr.Deref(q.MaxDeliveries, 0),
			MaxLength:      ptr.Deref(q.MaxLength, 0),
			DeletionPolicy: broker.DeletionPolicy(q.DeletionPolicy),
		}
		if q.MessageTTL != nil {
			spec.MessageTTL = q.MessageTTL.Duration
		}
		t.Queues = append(t.Queues, spec)
	}
	for _, svc := range app.Spec.Services {
		t.Services = append(t.Services, broker.ServicePerms{Name: svc.Name, Publishes: svc.Publishes, Consumes: svc.Consumes})
	}
	return t, types
}

// queueType is the queue's spec type or, unset, the type it was declared
// with before (status.queues), since a queue cannot change type; a queue
// declared for the first time is a quorum queue, on any broker: quorum
// queues count deliveries on the broker, so a message that crashes its
// consumer is dead-lettered after maxDeliveries attempts (classic queues in
// RabbitMQ 3.x have no such limit), and they run on a single node too.
// Remembering the type keeps queues an earlier version declared classic
// from being asked to become quorum queues, which RabbitMQ refuses.
func queueType(q v1alpha1.Queue, observed []v1alpha1.QueueStatus) v1alpha1.QueueType {
	if q.Type != "" {
		return q.Type
	}
	for _, o := range observed {
		if o.Name == q.Name && o.Type != "" {
			return o.Type
		}
	}
	return v1alpha1.QueueQuorum
}

// applyManagedBroker applies a managed broker's objects in the builders'
// order and returns its StatefulSet as the API server has it (nil when not
// written) and the objects that failed to apply. The kinds in
// waitForSecret, mapped to their object names, are the admin Secret and
// what reads it: they are written only while the reconcile has good admin
// credentials and the Secret applied, since new credentials would lock the
// operator out of a broker that holds the old ones, and the broker's pods
// take what they first find there. Held back, they stay wanted, so nothing
// prunes them.
func applyManagedBroker[In any](ctx context.Context, r *MicroserviceAppReconciler, s *scope,
	builders []kind.Builder[In], in In, waitForSecret map[string]string) (*appsv1.StatefulSet, []error) {
	var errs []error
	var sts *appsv1.StatefulSet
	for _, bl := range builders {
		desired := bl.Build(in)
		if desired == nil {
			continue
		}
		secretOK := s.broker.blockedReason == "" && !slices.ContainsFunc(errs, isAdminSecretError)
		if _, gated := waitForSecret[bl.Kind]; gated && !secretOK {
			for k, name := range waitForSecret {
				s.wanted[wantedKey(k, name)] = true
			}
			continue
		}
		obj, err := r.applyChild(ctx, s, bl.Object, desired)
		if err != nil {
			if bl.Kind == "Secret" {
				err = adminSecretError{err}
			}
			errs = append(errs, err)
			continue
		}
		if o, ok := obj.(*appsv1.StatefulSet); ok {
			sts = o
		}
	}
	return sts, errs
}
