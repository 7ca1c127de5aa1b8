package controller

import (
	"context"
	"maps"
	"slices"
	"time"

	"github.com/courier-dev/courier/operator/api/v1alpha1"
	"github.com/courier-dev/courier/operator/internal/broker"
	"github.com/courier-dev/courier/operator/internal/resource/kind"
)

// brokerDrivers are the broker kinds the operator runs, by
// spec.broker.kind. A new kind is a brokerDriver and one line here (and
// its value in the API's BrokerKind enum).
var brokerDrivers = map[v1alpha1.BrokerKind]brokerDriver{
	v1alpha1.BrokerRabbitMQ: rabbitMQDriver{},
	v1alpha1.BrokerNATS:     natsDriver{},
}

// brokerDriver is the operator's work on one kind of broker: the part of
// reconcileBroker, cleanUpBroker and stopManagedBroker that differs by
// spec.broker.kind. The reconciler does the rest the same way for every
// kind: the memo, the conditions, status.queues, requeues, events.
type brokerDriver interface {
	// open reaches the app's broker for one reconcile. For a managed broker
	// it applies the broker's objects (pure builders, secrets generated
	// here once and kept in the admin Secret) and reports how many of its
	// pods are ready; for an external one it reads the Secret
	// spec.broker.external.secretRef names. Why the broker cannot be used
	// yet goes into s.broker (blockedReason, podsWaiting), and open still
	// returns a conn that can wire the services. applyErrs are objects that
	// failed to apply; err is a failure to read the API server, which
	// stops the reconcile.
	open(ctx context.Context, r *MicroserviceAppReconciler, s *scope) (c brokerConn, applyErrs []error, err error)
	// openForCleanup reaches a deleting app's broker, or says why it
	// cannot (skip: the broker is gone, scaled to zero, its Secret
	// missing); err is a failure to read the API server, retried.
	openForCleanup(ctx context.Context, r *MicroserviceAppReconciler, app *v1alpha1.MicroserviceApp) (c brokerConn, skip string, err error)
	// topology maps the app's spec to the broker's input, and returns the
	// queue types it chose for status.queues (nil for a kind without
	// queue types).
	topology(app *v1alpha1.MicroserviceApp, observed []v1alpha1.QueueStatus) (broker.Topology, map[string]v1alpha1.QueueType)
	// stop stops a deleted app's managed broker, when it needs more than
	// the garbage collector.
	stop(ctx context.Context, r *MicroserviceAppReconciler, app *v1alpha1.MicroserviceApp) (time.Duration, error)
	// kinds are the kinds of object the managed broker is made of.
	kinds() []kind.Object
}

// brokerConn is one reconcile's (or one clean-up's) view of the app's
// broker, from brokerDriver.open.
type brokerConn interface {
	// wire keeps each service's credentials from its connection Secret,
	// or makes new ones where the Secret or its credentials are missing
	// (that is the rotation: delete the Secret), and records every
	// service's wiring in s.wiring and the Secrets it kept in
	// s.keptSecrets. It applies the kind's own app-wide Secrets (the
	// monitoring user, the app's account key). err is a failure to read
	// the API server.
	wire(ctx context.Context, r *MicroserviceAppReconciler, s *scope) (applyErrs []error, err error)
	// holdDeclare says why the topology must wait although the broker
	// answers (BrokerReady's reason and message); "" when it need not.
	holdDeclare(s *scope) (reason, message string)
	// memoInput is what Declare's result depends on besides the topology:
	// the endpoint and every credential, so that a change declares again
	// before the resync (see brokerMemo).
	memoInput() any
	// declare makes the broker hold the topology, users and permissions,
	// idempotently, repairing what drifted; it returns what it changed.
	declare(ctx context.Context, t broker.Topology) ([]broker.Change, error)
	// verify checks cheaply that the broker still holds the users and
	// permissions declare made: broker.ErrDrift when not.
	verify(ctx context.Context, t broker.Topology) error
	// queueStats reads every queue's depth, consumers and dead letters,
	// from a read made at or after since (when this reconcile's declare
	// changed the broker; zero otherwise) and within the queue statistics
	// interval: a kind whose broker lists every app's queues in one call
	// shares that call among its apps (brokerQueues).
	queueStats(ctx context.Context, t broker.Topology, since time.Time) ([]broker.QueueStat, error)
	// remove deletes the app's users and, per deletionPolicy, its queues:
	// broker.ErrUnreachable or broker.ErrOwnedElsewhere when it cannot,
	// which the finalizer takes as "nothing left to do".
	remove(ctx context.Context, t broker.Topology) (broker.DeleteResult, error)
}

// driverFor is the driver of the app's broker kind. The API admits only
// registered kinds; one stored before a kind was dropped falls back to
// RabbitMQ, the kind of the seed.
func driverFor(app *v1alpha1.MicroserviceApp) brokerDriver {
	if d, ok := brokerDrivers[app.Spec.Broker.Kind]; ok {
		return d
	}
	return brokerDrivers[v1alpha1.BrokerRabbitMQ]
}

// brokerKinds are the kinds of object of every driver's managed broker,
// RabbitMQ's first (the seed's order), then the others by name.
func brokerKinds() []kind.Object {
	out := brokerDrivers[v1alpha1.BrokerRabbitMQ].kinds()
	for _, k := range slices.Sorted(maps.Keys(brokerDrivers)) {
		if k != v1alpha1.BrokerRabbitMQ {
			out = append(out, brokerDrivers[k].kinds()...)
		}
	}
	return out
}
