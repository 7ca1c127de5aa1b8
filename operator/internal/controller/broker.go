package controller

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/courier-dev/courier/operator/internal/resource/kind"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/courier-dev/courier/operator/api/v1alpha1"
	"github.com/courier-dev/courier/operator/internal/broker"
	"github.com/courier-dev/courier/operator/internal/resource"
	"github.com/courier-dev/courier/operator/internal/resource/rabbitmq"
)

// Event reasons of the broker work.
const (
	eventBrokerUpdated         = "BrokerUpdated"
	eventBrokerCleanedUp       = "BrokerCleanedUp"
	eventBrokerCleanupSkipped  = "BrokerCleanupSkipped"
	eventBrokerCleanupFailed   = "BrokerCleanupFailed"
	eventQueuesRetained        = "QueuesRetained"
	maxChangesInEvent          = 10
	defaultResyncInterval      = 5 * time.Minute
	defaultQueueStatsInterval  = 30 * time.Second
	defaultBrokerRetryInterval = 15 * time.Second
)

// brokerEndpoint is where the operator reaches the app's broker.
type brokerEndpoint struct {
	// admin reaches the management API as the administrator.
	admin broker.Endpoint
	// host and port are the AMQP listener the services dial.
	host string
	port int32
}

// reconcileBroker does the app's broker work, in this order: the managed
// broker's objects (or the external broker's Secret), the services'
// connection wiring with passwords kept from their Secrets, the monitoring
// Secret, then, once the broker can answer, the topology and the queue
// depths. It records what it found in s.broker and returns the errors of
// writing objects; the broker's own failures become conditions, not errors.
//
// Failing to read the API server (a Secret, the StatefulSet) is returned as
// err, and the reconcile must stop: without every kept password the
// services' wiring is incomplete, and applying or pruning on it would roll
// pods off the broker or delete their Secrets.
func (r *MicroserviceAppReconciler) reconcileBroker(ctx context.Context, s *scope) (applyErrs []error, err error) {
	s.broker = &brokerOutcome{}
	var ep brokerEndpoint
	if s.app.Spec.Broker.Managed != nil {
		ep, applyErrs, err = r.reconcileManagedBroker(ctx, s)
	} else {
		ep, err = r.externalBroker(ctx, s)
	}
	if err != nil {
		s.broker.aborted = true
		return applyErrs, err
	}

	monitoring, _, err := r.keptPassword(ctx, s.app.Namespace, resource.MonitoringSecretName(s.app.Name), resource.MonitoringPasswordKey)
	if err != nil {
		s.broker.aborted = true
		return applyErrs, err
	}
	creds := broker.Credentials{Services: map[string]string{}, Monitoring: monitoring}
	for i := range s.app.Spec.Services {
		svc := &s.app.Spec.Services[i]
		if !resource.UsesBroker(s.app, svc) {
			continue
		}
		name := rabbitmq.ConnectionSecretName(s.app.Name, svc.Name)
		p, kept, err := r.keptPassword(ctx, s.app.Namespace, name, rabbitmq.ConnectionPasswordKey)
		if err != nil {
			s.broker.aborted = true
			return applyErrs, err
		}
		if kept {
			s.keptSecrets[name] = true
		}
		creds.Services[svc.Name] = p
		s.wiring[svc.Name] = &resource.Broker{
			// The API's kinds are the contract's (TestBrokerKindsFollowContract).
			Kind:       string(s.app.Spec.Broker.Kind),
			Connection: resource.Connection(s.app, svc.Name, ep.host, ep.port, p),
		}
	}
	if _, err := r.applyChild(ctx, s, kind.Secret, resource.MonitoringSecret(s.app, monitoring)); err != nil {
		applyErrs = append(applyErrs, err)
	}

	if s.broker.blockedReason == "" && s.broker.podsWaiting != "" {
		// A quorum queue takes its members from the nodes that are up when
		// it is declared, and RabbitMQ 3.10 cannot add one later but by
		// hand (rabbitmq-queues grow): a new one waits for every node, or
		// a broker still forming would keep it on fewer nodes for good.
		if q := newQuorumQueue(s.app); q != "" {
			s.broker.blockedReason = v1alpha1.ReasonWaitingForBrokerPods
			s.broker.blockedMessage = fmt.Sprintf("%s: queue %q is new, and a quorum queue waits for every node so it has a member on each", s.broker.podsWaiting, q)
		}
	}
	if s.broker.blockedReason == "" {
		r.declare(ctx, s, ep.admin, creds)
	}
	return applyErrs, nil
}

// newQuorumQueue names a queue of app that would be declared as a quorum
// queue for the first time (status.queues does not list it yet), or "".
func newQuorumQueue(app *v1alpha1.MicroserviceApp) string {
	for _, q := range app.Spec.Queues {
		if queueType(q, app.Status.Queues) != v1alpha1.QueueQuorum {
			continue
		}
		if !slices.ContainsFunc(app.Status.Queues, func(o v1alpha1.QueueStatus) bool { return o.Name == q.Name }) {
			return q.Name
		}
	}
	return ""
}

// reconcileManagedBroker applies the managed broker's objects and reports
// whether its nodes are ready; err is a failure to read the API server.
func (r *MicroserviceAppReconciler) reconcileManagedBroker(ctx context.Context, s *scope) (brokerEndpoint, []error, error) {
	b := resource.ManagedBroker(s.app, r.ClusterDomain, r.OperatorNamespace)
	names := rabbitmq.NamesFor(b.App)
	ep := brokerEndpoint{host: b.AMQPHost(), port: rabbitmq.AMQPPort}
	creds, reason, err := r.adminCredentials(ctx, b)
	switch {
	case err != nil && reason == "":
		return ep, nil, err
	case err != nil:
		s.broker.blockedReason, s.broker.blockedMessage = reason, err.Error()
	}

	var errs []error
	var sts *appsv1.StatefulSet
	in := rabbitmq.Input{Broker: b, Credentials: creds}
	for _, bl := range rabbitmq.Builders {
		desired := bl.Build(in)
		if desired == nil {
			continue
		}
		// Without good admin credentials, applying the admin Secret would
		// fail (it is immutable) or lock the operator out; and the
		// StatefulSet waits for its Secret, since its nodes initialise their
		// database with the credentials and cookie they first find there.
		secretOK := s.broker.blockedReason == "" && !slices.ContainsFunc(errs, isAdminSecretError)
		if (bl.Kind == "Secret" || bl.Kind == "StatefulSet") && !secretOK {
			s.wanted[wantedKey("Secret", names.AdminSecret)] = true
			s.wanted[wantedKey("StatefulSet", names.StatefulSet)] = true
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
	if s.broker.blockedReason != "" {
		return ep, errs, nil
	}
	ep.admin = rabbitmq.Endpoint(b, creds)

	// A node is ready once it has booted and joined the cluster; the
	// management API answers as soon as one is.
	want, ready := b.Replicas, int32(0)
	if sts != nil {
		want, ready = ptr.Deref(sts.Spec.Replicas, b.Replicas), sts.Status.ReadyReplicas
	}
	switch {
	case sts == nil:
		s.broker.blockedReason, s.broker.blockedMessage = v1alpha1.ReasonWaitingForBrokerPods, "the broker's StatefulSet is not written yet"
	case want == 0:
		s.broker.blockedReason, s.broker.blockedMessage = v1alpha1.ReasonWaitingForBrokerPods, "the broker is scaled to zero (spec.broker.managed.replicas)"
	case ready == 0:
		s.broker.blockedReason, s.broker.blockedMessage = v1alpha1.ReasonWaitingForBrokerPods, fmt.Sprintf("0 of %d broker pods ready", want)
	case ready < want:
		s.broker.podsWaiting = fmt.Sprintf("%d of %d broker pods ready", ready, want)
	}
	return ep, errs, nil
}

// adminSecretError marks the failure to write the admin Secret, after which
// the StatefulSet is not written either.
type adminSecretError struct{ error }

func (e adminSecretError) Unwrap() error { return e.error }

func isAdminSecretError(err error) bool {
	var e adminSecretError
	return errors.As(err, &e)
}

// adminCredentials are the managed broker's credentials: those of its admin
// Secret, or new ones for a broker that does not exist yet. They are never
// made anew for a broker that exists: its nodes take the administrator and
// cookie only when they first initialise their database, so new ones would
// lock the operator out and split the cluster. A failure that blocks the
// broker comes with its BrokerReady reason; one without a reason is an
// error reading the API.
func (r *MicroserviceAppReconciler) adminCredentials(ctx context.Context, b rabbitmq.Broker) (rabbitmq.Credentials, string, error) {
	names := rabbitmq.NamesFor(b.App)
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
	// The cache may lag behind a StatefulSet written a moment ago; this
	// path is rare enough to ask the API server.
	key := client.ObjectKey{Namespace: b.Namespace, Name: names.StatefulSet}
	err = r.Get(ctx, key, &appsv1.StatefulSet{})
	if apierrors.IsNotFound(err) {
		err = r.apiReader().Get(ctx, key, &appsv1.StatefulSet{})
	}
	switch {
	case apierrors.IsNotFound(err):
		return rabbitmq.GenerateCredentials(), "", nil
	case err != nil:
		return rabbitmq.Credentials{}, "", fmt.Errorf("read StatefulSet %s: %w", names.StatefulSet, err)
	}
	return rabbitmq.Credentials{}, v1alpha1.ReasonAdminSecretMissing, fmt.Errorf(
		"the admin Secret %s is missing but the broker exists; its nodes keep the credentials they were initialised with: "+
			"restore the Secret, or delete the StatefulSet %s (its volumes go with it) to start the broker over",
		names.AdminSecret, names.StatefulSet)
}

// externalBroker reads the external broker's Secret. A missing or
// malformed Secret blocks the broker work; only failing to read it is an
// error.
func (r *MicroserviceAppReconciler) externalBroker(ctx context.Context, s *scope) (brokerEndpoint, error) {
	ext := s.app.Spec.Broker.External
	ep := brokerEndpoint{host: ext.Host, port: ext.Port}
	if ep.port == 0 {
		ep.port = rabbitmq.AMQPPort // the API's default, for an object stored before it
	}
	admin, reason, err := r.externalAdmin(ctx, s.app)
	switch {
	case reason != "":
		s.broker.blockedReason, s.broker.blockedMessage = reason, err.Error()
		return ep, nil
	case err != nil:
		return ep, err
	}
	admin.AMQPHost, admin.AMQPPort = ep.host, int(ep.port)
	ep.admin = admin
	return ep, nil
}

// externalAdmin reads the administrator's endpoint from the external
// broker's Secret, straight from the API server: the operator's cache holds
// only the Secrets it labels. A Secret that is missing or malformed comes
// with its BrokerReady reason and an error saying what is wrong; an error
// without a reason is a failure to read it.
func (r *MicroserviceAppReconciler) externalAdmin(ctx context.Context, app *v1alpha1.MicroserviceApp) (broker.Endpoint, string, error) {
	name := app.Spec.Broker.External.SecretRef.Name
	secret := &corev1.Secret{}
	if err := r.apiReader().Get(ctx, client.ObjectKey{Namespace: app.Namespace, Name: name}, secret); err != nil {
		if apierrors.IsNotFound(err) {
			return broker.Endpoint{}, v1alpha1.ReasonExternalSecretMissing,
				fmt.Errorf("the Secret %s named by spec.broker.external.secretRef does not exist", name)
		}
		return broker.Endpoint{}, "", fmt.Errorf("read Secret %s: %w", name, err)
	}
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

// keptPassword returns the password in key of the Secret name, and true,
// or a new one when the Secret or the key is missing; that is also how a
// connection Secret is rotated: delete it (or its password), and the next
// reconcile generates a new password, sets it on the broker and rolls the
// pods.
func (r *MicroserviceAppReconciler) keptPassword(ctx context.Context, namespace, name, key string) (string, bool, error) {
	secret := &corev1.Secret{}
	found, err := r.getSecret(ctx, client.ObjectKey{Namespace: namespace, Name: name}, secret)
	if err != nil {
		return "", false, err
	}
	if p := secret.Data[key]; found && len(p) > 0 {
		return string(p), true, nil
	}
	return broker.GeneratePassword(), false, nil
}

// deletedMeanwhile reports whether a connection Secret whose password the
// reconcile kept has been deleted since. Applying it would re-create it with
// the old password and undo a rotation; the deletion brings the app back
// into reconcile, and that reconcile makes a new password.
func (r *MicroserviceAppReconciler) deletedMeanwhile(ctx context.Context, s *scope, key client.ObjectKey) bool {
	if !s.keptSecrets[key.Name] {
		return false
	}
	return apierrors.IsNotFound(r.Get(ctx, key, &corev1.Secret{}))
}

// getSecret reads a Secret the operator labels, from the cache and, when the
// cache has none, from the API server: right after the operator created it
// the cache may not have it yet, and taking that for "missing" would
// generate a second password or admin credentials.
func (r *MicroserviceAppReconciler) getSecret(ctx context.Context, key client.ObjectKey, secret *corev1.Secret) (bool, error) {
	err := r.Get(ctx, key, secret)
	if apierrors.IsNotFound(err) {
		err = r.apiReader().Get(ctx, key, secret)
	}
	switch {
	case apierrors.IsNotFound(err):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("read Secret %s: %w", key.Name, err)
	}
	return true, nil
}

// declare makes the broker match the app's topology, unless it was made to
// match the same input within the resync interval, and then polls the queue
// depths when they are due.
func (r *MicroserviceAppReconciler) declare(ctx context.Context, s *scope, admin broker.Endpoint, creds broker.Credentials) {
	log := logf.FromContext(ctx)
	key := client.ObjectKeyFromObject(s.app)
	topology, types := topologyOf(s.app, s.original.Status.Queues)
	input := inputHash(admin, topology, creds)
	now := time.Now()

	fresh := r.memo.fresh(key, s.app.UID, input, now, r.resyncInterval())
	if fresh {
		// What the conditions claim is checked on every reconcile, not
		// only at the resync: a user deleted on the broker is repaired and
		// reported as soon as anything brings the app back (a service's
		// pods failing to log in change its Deployment's status).
		if err := r.Admin.Verify(ctx, admin, topology); err != nil {
			log.Info("the broker drifted since the last declare; declaring again", "error", err.Error())
			r.memo.forget(key)
			fresh = false
		}
	}
	if fresh {
		s.broker.declared = true
	} else {
		changes, err := r.Admin.Declare(ctx, admin, topology, creds)
		if len(changes) > 0 {
			log.Info("broker updated", "changes", len(changes), "first", changes[0].String())
			r.Recorder.Eventf(s.app, nil, corev1.EventTypeNormal, eventBrokerUpdated, "Declare", "%s", summarise(changes))
		}
		if err != nil {
			log.Info("declaring the broker topology failed", "error", err.Error())
			s.broker.declareErr = err
			r.memo.forget(key)
			return
		}
		s.broker.declared = true
		r.memo.declared(key, s.app.UID, input, now)
	}
	s.broker.types = types

	if len(topology.Queues) == 0 || !r.memo.statsDue(key, now, r.queueStatsInterval()) {
		return
	}
	monitor := admin
	monitor.Username, monitor.Password = broker.MonitoringUserName(s.app.Name), creds.Monitoring
	stats, err := r.Admin.QueueStats(ctx, monitor, topology)
	if err != nil {
		// The next reconcile declares again: the monitoring user may have
		// been deleted by hand, or the broker may have gone away.
		log.Info("polling queue depths failed", "error", err.Error())
		s.broker.statsErr = err
		r.memo.forget(key)
		return
	}
	s.broker.stats = stats
	recordQueueStats(s.app, stats)
	r.memo.polled(key, now)
}

// summarise lists the changes Declare made, the first few by name.
func summarise(changes []broker.Change) string {
	names := make([]string, 0, min(len(changes), maxChangesInEvent))
	for _, c := range changes[:min(len(changes), maxChangesInEvent)] {
		names = append(names, c.String())
	}
	out := strings.Join(names, "; ")
	if n := len(changes) - len(names); n > 0 {
		out += fmt.Sprintf("; and %d more", n)
	}
	return out
}

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

// inputHash identifies everything Declare's result depends on, so a change
// to any of it (a password, a queue, the broker's address) declares again
// before the resync interval is up.
func inputHash(ep broker.Endpoint, t broker.Topology, creds broker.Credentials) string {
	raw, err := json.Marshal(struct {
		Endpoint    broker.Endpoint
		Topology    broker.Topology
		Credentials broker.Credentials
	}{ep, t, creds})
	if err != nil {
		panic(fmt.Sprintf("marshal the broker input: %v", err)) // plain structs always marshal
	}
	sum := sha256.Sum256(raw)
	return hex.EncodeToString(sum[:])
}

// brokerMemo remembers, per app, when the reconciler last made the broker
// match which input and last polled the queue depths. Reconciles come for
// many reasons (a Deployment's status, a status write of its own); the memo
// lets them skip the broker round trips unless the input changed, a resync
// is due (drift on the broker side is repaired then) or the depths are due.
// It lives in memory only: after a restart the first reconcile declares.
type brokerMemo struct {
	mu   sync.Mutex
	apps map[client.ObjectKey]memoEntry
}

type memoEntry struct {
	// uid tells a recreated app of the same name from the one remembered.
	uid        types.UID
	input      string
	declaredAt time.Time
	polledAt   time.Time
}

func (m *brokerMemo) fresh(key client.ObjectKey, uid types.UID, input string, now time.Time, resync time.Duration) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.apps[key]
	return ok && e.uid == uid && e.input == input && now.Sub(e.declaredAt) < resync
}

func (m *brokerMemo) declared(key client.ObjectKey, uid types.UID, input string, now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.apps == nil {
		m.apps = map[client.ObjectKey]memoEntry{}
	}
	e := m.apps[key]
	if e.uid != uid || e.input != input {
		// New input: poll the depths of what was just declared at once.
		e = memoEntry{uid: uid}
	}
	e.input, e.declaredAt = input, now
	m.apps[key] = e
}

func (m *brokerMemo) statsDue(key client.ObjectKey, now time.Time, interval time.Duration) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.apps[key]
	return !ok || now.Sub(e.polledAt) >= interval
}

func (m *brokerMemo) polled(key client.ObjectKey, now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e, ok := m.apps[key]; ok {
		e.polledAt = now
		m.apps[key] = e
	}
}

func (m *brokerMemo) forget(key client.ObjectKey) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.apps, key)
}

// brokerRequeue is when the broker wants the next reconcile: soon while it
// is not ready, at the next queue depth poll or resync otherwise.
func (r *MicroserviceAppReconciler) brokerRequeue(s *scope) time.Duration {
	b := s.broker
	if b.blockedReason != "" || b.declareErr != nil || b.statsErr != nil || b.podsWaiting != "" {
		return r.retryInterval()
	}
	if len(s.app.Spec.Queues) > 0 {
		return min(r.queueStatsInterval(), r.resyncInterval())
	}
	return r.resyncInterval()
}

// cleanUpBroker removes the app's users, queues (per deletionPolicy) and
// vhost from the broker before the app goes. A broker that is gone, scaled
// to zero, unreachable or whose Secret is missing cannot be cleaned up and
// must not keep the app (or its namespace) from being deleted: that is
// reported in an event and the deletion proceeds. Any other failure is
// retried.
func (r *MicroserviceAppReconciler) cleanUpBroker(ctx context.Context, app *v1alpha1.MicroserviceApp) error {
	if app.Annotations[v1alpha1.AnnotationSkipBrokerCleanup] == "true" {
		r.Recorder.Eventf(app, nil, corev1.EventTypeWarning, eventBrokerCleanupSkipped, "Delete",
			"left the app's users, queues and vhost on the broker: the annotation %s asks so", v1alpha1.AnnotationSkipBrokerCleanup)
		return nil
	}
	admin, skip, err := r.cleanupEndpoint(ctx, app)
	if err != nil {
		return fmt.Errorf("clean up the broker: %w", err)
	}
	if skip == "" {
		topology, _ := topologyOf(app, app.Status.Queues)
		res, err := r.Admin.Delete(ctx, admin, topology)
		switch {
		case errors.Is(err, broker.ErrUnreachable):
			skip = "the broker is unreachable: " + err.Error()
		case errors.Is(err, broker.ErrOwnedElsewhere):
			skip = err.Error()
		case err != nil:
			return fmt.Errorf("clean up the broker: %w", err)
		case len(res.Retained) > 0:
			r.Recorder.Eventf(app, nil, corev1.EventTypeNormal, eventQueuesRetained, "Delete",
				"kept the queues %s (and vhost %s) because they still hold messages (deletionPolicy retain)",
				strings.Join(res.Retained, ", "), resource.VHost(app))
		}
	}
	if skip != "" {
		logf.FromContext(ctx).Info("not cleaning up the broker", "reason", skip)
		r.Recorder.Eventf(app, nil, corev1.EventTypeWarning, eventBrokerCleanupSkipped, "Delete",
			"left the app's users, queues and vhost on the broker: %s", skip)
		return nil
	}
	r.Recorder.Eventf(app, nil, corev1.EventTypeNormal, eventBrokerCleanedUp, "Delete",
		"removed the app's users and, per deletionPolicy, its queues and vhost from the broker")
	return nil
}

// cleanupEndpoint is the administrator's endpoint for the clean-up, or why
// there is none to use; an error is a failure to read the API, retried.
func (r *MicroserviceAppReconciler) cleanupEndpoint(ctx context.Context, app *v1alpha1.MicroserviceApp) (broker.Endpoint, string, error) {
	if app.Spec.Broker.External != nil {
		admin, reason, err := r.externalAdmin(ctx, app)
		switch {
		case reason != "":
			return broker.Endpoint{}, err.Error(), nil
		case err != nil:
			return broker.Endpoint{}, "", err
		}
		ext := app.Spec.Broker.External
		admin.AMQPHost, admin.AMQPPort = ext.Host, int(ext.Port)
		if admin.AMQPPort == 0 {
			admin.AMQPPort = int(rabbitmq.AMQPPort)
		}
		return admin, "", nil
	}

	b := resource.ManagedBroker(app, r.ClusterDomain, r.OperatorNamespace)
	sts := &appsv1.StatefulSet{}
	switch err := r.Get(ctx, client.ObjectKey{Namespace: app.Namespace, Name: rabbitmq.NamesFor(app.Name).StatefulSet}, sts); {
	case apierrors.IsNotFound(err):
		return broker.Endpoint{}, "the broker's StatefulSet is gone", nil
	case err != nil:
		return broker.Endpoint{}, "", fmt.Errorf("read the broker's StatefulSet: %w", err)
	case ptr.Deref(sts.Spec.Replicas, 1) == 0:
		return broker.Endpoint{}, "the broker is scaled to zero", nil
	case sts.Status.ReadyReplicas == 0:
		return broker.Endpoint{}, "no broker pod is ready", nil
	}
	secret := &corev1.Secret{}
	found, err := r.getSecret(ctx, client.ObjectKey{Namespace: app.Namespace, Name: rabbitmq.NamesFor(app.Name).AdminSecret}, secret)
	switch {
	case err != nil:
		return broker.Endpoint{}, "", err
	case !found:
		return broker.Endpoint{}, "the broker's admin Secret is missing", nil
	}
	creds, err := rabbitmq.CredentialsFromSecret(secret)
	if err != nil {
		return broker.Endpoint{}, err.Error(), nil
	}
	return rabbitmq.Endpoint(b, creds), "", nil
}

// reportCleanupFailed says on a deleting app why its broker clean-up failed
// and how to get past it: a Warning event and Ready=False (CleanupFailed).
// The message is the error's, which the broker package keeps stable for
// the same cause, so retries do not rewrite it.
func (r *MicroserviceAppReconciler) reportCleanupFailed(ctx context.Context, app *v1alpha1.MicroserviceApp, cause error) {
	msg := fmt.Sprintf("%v; the deletion retries. To delete the app and leave its users, queues and vhost on the broker, "+
		"annotate it with %s=true", cause, v1alpha1.AnnotationSkipBrokerCleanup)
	r.Recorder.Eventf(app, nil, corev1.EventTypeWarning, eventBrokerCleanupFailed, "Delete", "%s", msg)
	original := app.DeepCopy()
	meta.SetStatusCondition(&app.Status.Conditions, metav1.Condition{
		Type: v1alpha1.ConditionReady, Status: metav1.ConditionFalse, Reason: v1alpha1.ReasonCleanupFailed,
		Message: msg, ObservedGeneration: app.Generation,
	})
	if equality.Semantic.DeepEqual(original.Status, app.Status) {
		return
	}
	if err := r.Status().Patch(ctx, app, client.MergeFrom(original)); err != nil && !apierrors.IsNotFound(err) {
		logf.FromContext(ctx).Error(err, "report the failed broker clean-up")
	}
}

// stopManagedBroker stops a deleted app's managed broker without the
// preStop checks: when every node goes, no quorum queue can keep a majority
// and no node can take over another's leaderships, so each pod would wait
// out the quorum wait and the drain for nothing (up to 420 s each). It
// marks the running pods (their preStop hook reads the annotation through
// the downward API, which the kubelet refreshes on the pod's update but no
// longer once it terminates, so the mark comes first), then deletes the
// StatefulSet (its pods follow). Pods already terminating, as when the
// whole namespace is deleted, are deleted again with a short grace period,
// which the kubelet honours by ending the hook: the broker's data goes with
// the app anyway.
func (r *MicroserviceAppReconciler) stopManagedBroker(ctx context.Context, app *v1alpha1.MicroserviceApp) error {
	if app.Spec.Broker.Managed == nil {
		return nil
	}
	pods := &metav1.PartialObjectMetadataList{}
	pods.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("PodList"))
	if err := r.apiReader().List(ctx, pods, client.InNamespace(app.Namespace),
		client.MatchingLabels(rabbitmq.SelectorLabels(app.Name))); err != nil {
		return fmt.Errorf("list the broker's pods: %w", err)
	}
	for i := range pods.Items {
		pod := &pods.Items[i]
		if !pod.DeletionTimestamp.IsZero() {
			continue
		}
		patch := client.RawPatch(types.MergePatchType, fmt.Appendf(nil,
			`{"metadata":{"annotations":{%q:"true"}}}`, rabbitmq.AnnotationSkipPreStopChecks))
		if err := r.Patch(ctx, pod, patch); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("mark broker pod %s to skip its preStop checks: %w", pod.Name, err)
		}
	}
	sts := &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Namespace: app.Namespace, Name: rabbitmq.NamesFor(app.Name).StatefulSet}}
	if err := r.Delete(ctx, sts, client.PropagationPolicy(metav1.DeletePropagationBackground)); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete the broker's StatefulSet: %w", err)
	}
	for i := range pods.Items {
		pod := &pods.Items[i]
		if pod.DeletionTimestamp.IsZero() || ptr.Deref(pod.DeletionGracePeriodSeconds, 0) <= brokerStopGraceSeconds {
			continue
		}
		if err := r.Delete(ctx, pod, client.GracePeriodSeconds(brokerStopGraceSeconds)); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("shorten the termination of broker pod %s: %w", pod.Name, err)
		}
	}
	return nil
}

// brokerStopGraceSeconds is how long a terminating broker pod of a deleted
// app is given to stop once its preStop checks are moot: enough for
// RabbitMQ to stop its applications.
const brokerStopGraceSeconds = 30
