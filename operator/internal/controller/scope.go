package controller

import (
	"time"

	appsv1 "k8s.io/api/apps/v1"

	"github.com/courier-dev/courier/operator/api/v1alpha1"
	"github.com/courier-dev/courier/operator/internal/broker"
	"github.com/courier-dev/courier/operator/internal/resource"
)

// scope carries the state of one reconcile of one app, from the apply steps
// to the deferred status update.
type scope struct {
	// app is the app being reconciled; its status is rewritten in place.
	app *v1alpha1.MicroserviceApp
	// original is app as read, the base of the status patch and of the
	// "did anything change" comparison.
	original *v1alpha1.MicroserviceApp
	// wanted holds a key (see wantedKey) per object the spec asks for,
	// whether or not applying it succeeded, so pruning never deletes them.
	wanted map[string]bool
	// deployments are the services' Deployments as the API server last
	// returned them, by service name; status is computed from them.
	deployments map[string]*appsv1.Deployment
	// wiring is the broker wiring of every service that publishes or
	// consumes, by service name.
	wiring map[string]*resource.Broker
	// keptSecrets names the connection Secrets whose existing password the
	// reconcile kept.
	keptSecrets map[string]bool
	// broker is what the reconcile found out about the app's broker; nil
	// when the app has none.
	broker *brokerOutcome
	// requeueAfter asks for the next reconcile without an event: the next
	// queue depth poll, broker resync or retry.
	requeueAfter time.Duration
	// changes are the objects the reconcile created, updated and deleted,
	// recorded as events once it is done.
	changes changes
	// statusConflict is true when the status patch was refused because
	// the app changed since it was read.
	statusConflict bool
}

// brokerOutcome is what one reconcile found out about the app's broker, the
// input of the broker conditions and of status.queues.
type brokerOutcome struct {
	// aborted is true when the reconcile stopped before the broker work
	// was done (it could not read the API server); the broker conditions
	// then keep what the last reconcile found.
	aborted bool
	// blockedReason and blockedMessage say why the operator cannot talk to
	// the broker at all (BrokerReady's reason); empty when it can.
	blockedReason, blockedMessage string
	// podsWaiting says how many of a managed broker's nodes are not ready
	// yet while at least one is, so the broker answers but is not fully up.
	podsWaiting string
	// declared is true when the broker matches the topology: declared in
	// this reconcile, or recently enough (see brokerMemo).
	declared bool
	// declareErr is the error of this reconcile's Declare.
	declareErr error
	// statsErr is the error of this reconcile's queue depth poll.
	statsErr error
	// secretsFailed is true when a connection Secret could not be written.
	secretsFailed bool
	// types are the queue types declared, by logical queue; nil unless
	// declared.
	types map[string]v1alpha1.QueueType
	// stats are the queue depths polled in this reconcile; nil when the
	// reconcile did not poll (status keeps the last ones).
	stats []broker.QueueStat
}

func newScope(app *v1alpha1.MicroserviceApp) *scope {
	return &scope{
		app:         app,
		original:    app.DeepCopy(),
		wanted:      map[string]bool{},
		deployments: map[string]*appsv1.Deployment{},
		wiring:      map[string]*resource.Broker{},
		keptSecrets: map[string]bool{},
	}
}

func wantedKey(kind, name string) string { return kind + "/" + name }
