package controller

import (
	"context"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/courier-dev/courier/operator/internal/broker"
	"github.com/courier-dev/courier/operator/internal/driver"
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

// reconcileBroker does the app's broker work through the driver of its
// kind (driver.Driver), in this order: the managed broker's objects (or the
// external broker's Secret), the services' connection wiring with
// credentials kept from their Secrets, then, once the broker can answer,
// the topology and the queue depths. It records what it found in s.broker
// and returns the errors of writing objects; the broker's own failures
// become conditions, not errors.
//
// Failing to read the API server (a Secret, the StatefulSet) is returned as
// err, and the reconcile must stop: without every kept credential the
// services' wiring is incomplete, and applying or pruning on it would roll
// pods off the broker or delete their Secrets.
func (r *MicroserviceAppReconciler) reconcileBroker(ctx context.Context, s *scope) (applyErrs []error, err error) {
	s.broker = &brokerOutcome{}
	d := r.driverFor(s.app)
	h := driverHost{r: r, s: s}
	st := &driver.State{App: s.app, Wiring: s.wiring, KeptSecrets: s.keptSecrets}
	conn, applyErrs, err := d.Open(ctx, h, st)
	if err == nil {
		var wireErrs []error
		wireErrs, err = conn.Wire(ctx, h, st)
		applyErrs = append(applyErrs, wireErrs...)
	}
	s.broker.blockedReason, s.broker.blockedMessage, s.broker.podsWaiting = st.BlockedReason, st.BlockedMessage, st.PodsWaiting
	if err != nil {
		s.broker.aborted = true
		return applyErrs, err
	}
	if s.broker.blockedReason == "" {
		s.broker.blockedReason, s.broker.blockedMessage = conn.HoldDeclare(st)
	}
	if s.broker.blockedReason == "" {
		r.declare(ctx, s, d, conn)
	}
	return applyErrs, nil
}

// declare makes the broker match the app's topology, unless it was made to
// match the same input within the resync interval, and then polls the queue
// depths when they are due.
func (r *MicroserviceAppReconciler) declare(ctx context.Context, s *scope, d driver.Driver, conn driver.Conn) {
	log := logf.FromContext(ctx)
	key := client.ObjectKeyFromObject(s.app)
	topology, types := d.Topology(s.app, s.original.Status.Queues)
	input := inputHash(conn.MemoInput(), topology)
	now := r.now()

	fresh := r.memo.fresh(key, s.app.UID, input, now, r.resyncInterval())
	if fresh {
		// What the conditions claim is checked on every reconcile, not
		// only at the resync: a user deleted on the broker is repaired and
		// reported as soon as anything brings the app back (a service's
		// pods failing to log in change its Deployment's status).
		if err := conn.Verify(ctx, topology); err != nil {
			log.Info("the broker drifted since the last declare; declaring again", "error", err.Error())
			r.memo.forget(key)
			fresh = false
		}
	}
	if fresh {
		s.broker.declared = true
	} else {
		changes, err := conn.Declare(ctx, topology)
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
	stats, err := conn.QueueStats(ctx, topology)
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
