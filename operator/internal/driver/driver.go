// Package driver is the seam between the reconciler and the broker kinds:
// the Driver and Conn interfaces one package per spec.broker.kind
// implements (driver/rabbitmqdriver, driver/natsdriver), the Host
// interface through which a driver uses the reconciler (its client, its
// apply, its Secret reads, its configuration), and what every kind shares:
// the managed broker's apply order, its readiness, the spec-to-topology
// mapping. A new kind is a package implementing Driver and one line in the
// controller's registry.
package driver

import (
	"context"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/courier-dev/courier/operator/api/v1alpha1"
	"github.com/courier-dev/courier/operator/internal/broker"
	"github.com/courier-dev/courier/operator/internal/resource"
	"github.com/courier-dev/courier/operator/internal/resource/kind"
)

// Driver is the operator's work on one kind of broker: the part of the
// broker reconcile, clean-up and stop that differs by spec.broker.kind.
// The reconciler does the rest the same way for every kind: the memo, the
// conditions, status.queues, requeues, events.
type Driver interface {
	// Open reaches the app's broker for one reconcile. For a managed broker
	// it applies the broker's objects (pure builders, secrets generated
	// here once and kept in the admin Secret) and reports how many of its
	// pods are ready; for an external one it reads the Secret
	// spec.broker.external.secretRef names. Why the broker cannot be used
	// yet goes into s (BlockedReason, PodsWaiting), and Open still returns
	// a Conn that can wire the services. applyErrs are objects that failed
	// to apply; err is a failure to read the API server, which stops the
	// reconcile.
	Open(ctx context.Context, h Host, s *State) (c Conn, applyErrs []error, err error)
	// OpenForCleanup reaches a deleting app's broker, or says why it
	// cannot (skip: the broker is gone, scaled to zero, its Secret
	// missing); err is a failure to read the API server, retried.
	OpenForCleanup(ctx context.Context, h Host, app *v1alpha1.MicroserviceApp) (c Conn, skip string, err error)
	// Topology maps the app's spec to the broker's input, and returns the
	// queue types it chose for status.queues (nil for a kind without
	// queue types).
	Topology(app *v1alpha1.MicroserviceApp, observed []v1alpha1.QueueStatus) (broker.Topology, map[string]v1alpha1.QueueType)
	// Stop stops a deleted app's managed broker, when it needs more than
	// the garbage collector, and says how long the app must wait.
	Stop(ctx context.Context, h Host, app *v1alpha1.MicroserviceApp) (time.Duration, error)
	// Kinds are the kinds of object the managed broker is made of.
	Kinds() []kind.Object
}

// Conn is one reconcile's (or one clean-up's) view of the app's broker,
// from Driver.Open.
type Conn interface {
	// Wire keeps each service's credentials from its connection Secret,
	// or makes new ones where the Secret or its credentials are missing
	// (that is the rotation: delete the Secret), and records every
	// service's wiring in s.Wiring and the Secrets it kept in
	// s.KeptSecrets. It applies the kind's own app-wide Secrets (the
	// monitoring user, the app's account key). err is a failure to read
	// the API server.
	Wire(ctx context.Context, h Host, s *State) (applyErrs []error, err error)
	// HoldDeclare says why the topology must wait although the broker
	// answers (BrokerReady's reason and message); "" when it need not.
	HoldDeclare(s *State) (reason, message string)
	// MemoInput is what Declare's result depends on besides the topology:
	// the endpoint and every credential, so that a change declares again
	// before the resync.
	MemoInput() any
	// Declare makes the broker hold the topology, users and permissions,
	// idempotently, repairing what drifted; it returns what it changed.
	Declare(ctx context.Context, t broker.Topology) ([]broker.Change, error)
	// Verify checks cheaply that the broker still holds the users and
	// permissions Declare made: broker.ErrDrift when not.
	Verify(ctx context.Context, t broker.Topology) error
	// QueueStats reads every queue's depth, consumers and dead letters
	// from a read made within the queue statistics interval: a kind whose
	// broker lists every app's queues in one call shares that call among
	// its apps, and a queue declared after that read shows in the next
	// one (its stat has Exists false until then).
	QueueStats(ctx context.Context, t broker.Topology) ([]broker.QueueStat, error)
	// Remove deletes the app's users and, per deletionPolicy, its queues:
	// broker.ErrUnreachable or broker.ErrOwnedElsewhere when it cannot,
	// which the finalizer takes as "nothing left to do".
	Remove(ctx context.Context, t broker.Topology) (broker.DeleteResult, error)
}

// State is what a driver reads and records in one reconcile of one app.
type State struct {
	// App is the app being reconciled; drivers do not modify it.
	App *v1alpha1.MicroserviceApp
	// BlockedReason and BlockedMessage say why the operator cannot talk to
	// the broker at all (BrokerReady's reason); empty when it can.
	BlockedReason, BlockedMessage string
	// PodsWaiting says how many of a managed broker's nodes are not ready
	// yet while at least one is.
	PodsWaiting string
	// Wiring is the broker wiring of every service that publishes or
	// consumes, by service name.
	Wiring map[string]*resource.Broker
	// KeptSecrets names the connection Secrets whose existing credentials
	// the reconcile kept.
	KeptSecrets map[string]bool
}

// Host is what a driver uses of the reconciler.
type Host interface {
	// Client reads from the operator's cache, which holds only the objects
	// the operator labels, and writes to the API server.
	Client() client.Client
	// APIReader reads from the API server directly.
	APIReader() client.Reader
	// Apply brings one owned object of the app to its desired state
	// (server-side apply, written only when it differs) and returns it as
	// the API server holds it; it counts the object as wanted, so pruning
	// keeps it. Only Open and Wire may call it.
	Apply(ctx context.Context, k kind.Object, desired runtime.ApplyConfiguration) (client.Object, error)
	// Want counts an object as wanted without applying it.
	Want(kind, name string)
	// GetSecret reads a Secret the operator labels: found false when it
	// does not exist.
	GetSecret(ctx context.Context, key client.ObjectKey, secret *corev1.Secret) (found bool, err error)
	// KeptSecretValue is the value in key of the Secret name, kept (true),
	// or generate's new one when the Secret or the key is missing.
	KeptSecretValue(ctx context.Context, namespace, name, key string, generate func() ([]byte, error)) ([]byte, bool, error)
	// ExternalSecret reads the Secret spec.broker.external.secretRef
	// names: a missing one comes with ReasonExternalSecretMissing; an
	// error without a reason is a failure to read it.
	ExternalSecret(ctx context.Context, app *v1alpha1.MicroserviceApp) (*corev1.Secret, string, error)
	// Config is the operator's configuration the drivers need.
	Config() Config
}

// Config is the operator's configuration the drivers need.
type Config struct {
	// ClusterDomain is the cluster's DNS domain; empty means cluster.local.
	ClusterDomain string
	// OperatorNamespace is the namespace the operator runs in; empty
	// outside the cluster.
	OperatorNamespace string
	// QueueStatsInterval is how often queue depths are polled.
	QueueStatsInterval time.Duration
	// Now is the reconciler's clock.
	Now func() time.Time
}
