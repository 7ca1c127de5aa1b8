package controller

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/courier-dev/courier/operator/api/v1alpha1"
	"github.com/courier-dev/courier/operator/internal/broker"
)

// readyDependsOn lists, in the order a false Ready reports them, the
// conditions Ready summarises. A new concern adds its condition here.
var readyDependsOn = []string{
	v1alpha1.ConditionResourcesApplied,
	v1alpha1.ConditionBrokerReady,
	v1alpha1.ConditionTopologyReady,
	v1alpha1.ConditionCredentialsReady,
	v1alpha1.ConditionServicesAvailable,
}

// progressDeadlineExceeded is the reason the deployment controller gives its
// Progressing condition when a rollout stalls (k8s.io/kubernetes keeps the
// constant in an internal package).
const progressDeadlineExceeded = "ProgressDeadlineExceeded"

// patchStatus computes the app's status from what the reconcile observed and
// writes it when, and only when, it differs from the status read at the
// start. observedGeneration moves only when the reconcile succeeded or was
// held back by name conflicts alone, so "observedGeneration == generation
// and Ready" means the current spec is running.
func (r *MicroserviceAppReconciler) patchStatus(ctx context.Context, s *scope, reconcileErr error) error {
	app := s.app
	rollouts := observeRollouts(app, s.deployments)
	app.Status.Services = serviceStatuses(rollouts)
	app.Status.ReadyServices = readyServices(rollouts)
	setResourcesApplied(app, reconcileErr)
	setBrokerConditions(app, s.broker)
	setQueueStatus(app, s.broker)
	setServicesAvailable(app, rollouts)
	setReady(app)
	setKstatus(app)
	// A reconcile held back only by name conflicts did all it can for this
	// generation and reports Stalled; kstatus reads Stalled only once
	// observedGeneration has caught up.
	if _, others := nameConflicts(reconcileErr); len(others) == 0 {
		app.Status.ObservedGeneration = app.Generation
	}

	if equality.Semantic.DeepEqual(s.original.Status, app.Status) {
		return nil
	}
	// The patch carries the resourceVersion it was computed from. A
	// reconcile that read the app from a cache not yet holding the status
	// the previous one wrote would otherwise write its conditions anew
	// (new transition times, for the same cause); the API server refuses it
	// instead, and the reconcile asks to run again shortly
	// (statusConflictRetry): the newer version is on its way to the cache,
	// but its event may bring nothing back, since the controller ignores
	// changes of status alone (specOrMetadataChanged).
	if err := r.Status().Patch(ctx, app, client.MergeFromWithOptions(s.original, client.MergeFromWithOptimisticLock{})); err != nil {
		switch {
		case apierrors.IsNotFound(err):
			return nil // deleted meanwhile; nothing left to report on
		case apierrors.IsConflict(err):
			logf.FromContext(ctx).V(1).Info("status not written: the app changed since it was read")
			s.statusConflict = true
			return nil
		}
		return fmt.Errorf("update status: %w", err)
	}
	return nil
}

// rollout is what one service's Deployment says about its rollout.
type rollout struct {
	service   string
	image     string
	desired   int32
	ready     int32
	available bool
	stalled   bool
	// waiting says what the rollout waits for, when it is not available.
	waiting string
}

// observeRollouts evaluates each service's Deployment, in spec order.
func observeRollouts(app *v1alpha1.MicroserviceApp, deployments map[string]*appsv1.Deployment) []rollout {
	out := make([]rollout, 0, len(app.Spec.Services))
	for i := range app.Spec.Services {
		svc := &app.Spec.Services[i]
		out = append(out, rolloutOf(svc, deployments[svc.Name]))
	}
	return out
}

// rolloutOf follows `kubectl rollout status`: a Deployment is available when
// its controller has seen the current spec, every desired pod runs the
// current template, no old pod is left and every updated pod is available.
// It keeps following the Deployment afterwards, so pods going unavailable
// make the service unavailable again.
func rolloutOf(svc *v1alpha1.Service, d *appsv1.Deployment) rollout {
	ro := rollout{service: svc.Name, desired: ptr.Deref(svc.Replicas, 1)}
	if d == nil {
		ro.waiting = "no Deployment yet"
		return ro
	}
	ro.desired = ptr.Deref(d.Spec.Replicas, 1)
	ro.ready = d.Status.ReadyReplicas
	for _, c := range d.Spec.Template.Spec.Containers {
		if c.Name == svc.Name {
			ro.image = c.Image
		}
	}

	st := d.Status
	switch {
	case d.Generation > st.ObservedGeneration:
		ro.waiting = "rollout not started"
	case progressing(d).Reason == progressDeadlineExceeded:
		ro.stalled = true
		ro.waiting = "rollout exceeded its progress deadline"
	case st.UpdatedReplicas < ro.desired:
		ro.waiting = fmt.Sprintf("%d of %d pods updated", st.UpdatedReplicas, ro.desired)
	case st.Replicas > st.UpdatedReplicas:
		ro.waiting = fmt.Sprintf("%d old pods terminating", st.Replicas-st.UpdatedReplicas)
	case st.AvailableReplicas < st.UpdatedReplicas:
		ro.waiting = fmt.Sprintf("%d of %d pods available", st.AvailableReplicas, st.UpdatedReplicas)
	default:
		ro.available = true
	}
	return ro
}

func progressing(d *appsv1.Deployment) appsv1.DeploymentCondition {
	for _, c := range d.Status.Conditions {
		if c.Type == appsv1.DeploymentProgressing {
			return c
		}
	}
	return appsv1.DeploymentCondition{}
}

func serviceStatuses(rollouts []rollout) []v1alpha1.ServiceStatus {
	out := make([]v1alpha1.ServiceStatus, 0, len(rollouts))
	for _, ro := range rollouts {
		out = append(out, v1alpha1.ServiceStatus{
			Name:            ro.service,
			Image:           ro.image,
			DesiredReplicas: ro.desired,
			ReadyReplicas:   ro.ready,
			Available:       ro.available,
		})
	}
	return out
}

func readyServices(rollouts []rollout) string {
	available := 0
	for _, ro := range rollouts {
		if ro.available {
			available++
		}
	}
	return fmt.Sprintf("%d/%d", available, len(rollouts))
}

// setResourcesApplied records whether every object was written, and when
// not, why: NameConflict when an object the app needs belongs to someone
// else, ApplyFailed otherwise.
func setResourcesApplied(app *v1alpha1.MicroserviceApp, err error) {
	c := metav1.Condition{
		Type:               v1alpha1.ConditionResourcesApplied,
		Status:             metav1.ConditionTrue,
		Reason:             v1alpha1.ReasonApplied,
		Message:            "every object is up to date",
		ObservedGeneration: app.Generation,
	}
	if err != nil {
		c.Status = metav1.ConditionFalse
		c.Reason = v1alpha1.ReasonApplyFailed
		c.Message = err.Error()
		// A conflict needs a person to act, so it names the reason even
		// next to other failures.
		if conflicts, _ := nameConflicts(err); len(conflicts) > 0 {
			c.Reason = v1alpha1.ReasonNameConflict
		}
	}
	meta.SetStatusCondition(&app.Status.Conditions, c)
}

// setBrokerConditions records BrokerReady, TopologyReady and
// CredentialsReady from what the reconcile found out about the broker; b is
// nil when the app has none.
func setBrokerConditions(app *v1alpha1.MicroserviceApp, b *brokerOutcome) {
	condition := func(typ string, status metav1.ConditionStatus, reason, message string) {
		meta.SetStatusCondition(&app.Status.Conditions, metav1.Condition{
			Type: typ, Status: status, Reason: reason, Message: message, ObservedGeneration: app.Generation,
		})
	}
	if b == nil {
		for _, typ := range []string{v1alpha1.ConditionBrokerReady, v1alpha1.ConditionTopologyReady, v1alpha1.ConditionCredentialsReady} {
			condition(typ, metav1.ConditionTrue, v1alpha1.ReasonNoBroker, "the app declares no broker")
		}
		return
	}
	if b.aborted {
		return // ResourcesApplied says why; nothing new is known
	}

	// BrokerReady: can the operator talk to the broker, and is all of it up?
	brokerStatus, brokerReason, brokerMessage := metav1.ConditionTrue, v1alpha1.ReasonBrokerAvailable, "the broker answers"
	reached := true
	switch err := cmp.Or(b.declareErr, b.statsErr); {
	case b.blockedReason != "":
		brokerStatus, brokerReason, brokerMessage, reached = metav1.ConditionFalse, b.blockedReason, b.blockedMessage, false
	case errors.Is(err, broker.ErrUnreachable):
		brokerStatus, brokerReason, brokerMessage, reached = metav1.ConditionFalse, v1alpha1.ReasonBrokerUnreachable, err.Error(), false
	case errors.Is(err, broker.ErrUnauthorized):
		brokerStatus, brokerReason, brokerMessage, reached = metav1.ConditionFalse, v1alpha1.ReasonBrokerUnauthorized, err.Error(), false
	case b.podsWaiting != "":
		brokerStatus, brokerReason, brokerMessage = metav1.ConditionFalse, v1alpha1.ReasonWaitingForBrokerPods, b.podsWaiting
	}
	condition(v1alpha1.ConditionBrokerReady, brokerStatus, brokerReason, brokerMessage)

	// TopologyReady: does the broker hold what the spec asks for?
	switch {
	case b.declared:
		condition(v1alpha1.ConditionTopologyReady, metav1.ConditionTrue, v1alpha1.ReasonDeclared,
			"the broker holds the app's queues, users and permissions (a RabbitMQ vhost, a NATS account)")
	case !reached:
		condition(v1alpha1.ConditionTopologyReady, metav1.ConditionFalse, v1alpha1.ReasonWaitingForBroker,
			"waiting for the broker ("+brokerReason+")")
	case errors.Is(b.declareErr, broker.ErrOwnedElsewhere):
		condition(v1alpha1.ConditionTopologyReady, metav1.ConditionFalse, v1alpha1.ReasonBrokerNameConflict, b.declareErr.Error())
	case b.declareErr != nil:
		condition(v1alpha1.ConditionTopologyReady, metav1.ConditionFalse, v1alpha1.ReasonDeclareFailed, b.declareErr.Error())
	}

	// CredentialsReady: does every service have a Secret the broker accepts?
	switch {
	case b.secretsFailed:
		condition(v1alpha1.ConditionCredentialsReady, metav1.ConditionFalse, v1alpha1.ReasonSecretsNotWritten,
			"a connection Secret could not be written; see ResourcesApplied")
	case b.declared:
		condition(v1alpha1.ConditionCredentialsReady, metav1.ConditionTrue, v1alpha1.ReasonCredentialsIssued,
			"every service that uses a queue has its Secret and broker user")
	case !reached:
		condition(v1alpha1.ConditionCredentialsReady, metav1.ConditionFalse, v1alpha1.ReasonWaitingForBroker,
			"waiting for the broker ("+brokerReason+")")
	default:
		condition(v1alpha1.ConditionCredentialsReady, metav1.ConditionFalse, v1alpha1.ReasonWaitingForTopology,
			"the Secrets are written; the broker gets their passwords once the topology is declared")
	}
}

// setQueueStatus records each queue's declared type and its last polled
// depths. A reconcile that neither declared nor polled keeps what status
// had, so that only a change writes status.
func setQueueStatus(app *v1alpha1.MicroserviceApp, b *brokerOutcome) {
	if b == nil || len(app.Spec.Queues) == 0 {
		app.Status.Queues, app.Status.QueuedMessages, app.Status.DeadLetters = nil, nil, nil
		return
	}
	previous := make(map[string]v1alpha1.QueueStatus, len(app.Status.Queues))
	for _, q := range app.Status.Queues {
		previous[q.Name] = q
	}
	polled := make(map[string]broker.QueueStat, len(b.stats))
	for _, st := range b.stats {
		polled[st.Queue] = st
	}
	names := make([]string, 0, len(app.Spec.Queues))
	for _, q := range app.Spec.Queues {
		names = append(names, q.Name)
	}
	slices.Sort(names)

	out := make([]v1alpha1.QueueStatus, 0, len(names))
	var messages, deadLetters int64
	for _, name := range names {
		q := previous[name]
		q.Name = name
		if t, ok := b.types[name]; ok {
			q.Type = t
		}
		if st, ok := polled[name]; ok {
			q.Messages, q.Consumers, q.DeadLetters = int64(st.Messages), int32(st.Consumers), int64(st.DeadLetters)
		}
		messages += q.Messages
		deadLetters += q.DeadLetters
		out = append(out, q)
	}
	app.Status.Queues = out
	app.Status.QueuedMessages, app.Status.DeadLetters = &messages, &deadLetters
}

// setServicesAvailable records whether every service has rolled out and
// which ones are still waiting, and for what.
func setServicesAvailable(app *v1alpha1.MicroserviceApp, rollouts []rollout) {
	c := metav1.Condition{
		Type:               v1alpha1.ConditionServicesAvailable,
		Status:             metav1.ConditionTrue,
		Reason:             v1alpha1.ReasonAvailable,
		Message:            fmt.Sprintf("%d of %d services available", len(rollouts), len(rollouts)),
		ObservedGeneration: app.Generation,
	}
	var waiting []string
	for _, ro := range rollouts {
		if ro.available {
			continue
		}
		waiting = append(waiting, ro.service+": "+ro.waiting)
		c.Status = metav1.ConditionFalse
		if ro.stalled {
			c.Reason = v1alpha1.ReasonRolloutStalled
		} else if c.Reason != v1alpha1.ReasonRolloutStalled {
			c.Reason = v1alpha1.ReasonRollingOut
		}
	}
	if len(waiting) > 0 {
		c.Message = "waiting for " + strings.Join(waiting, "; ")
	}
	meta.SetStatusCondition(&app.Status.Conditions, c)
}

// setReady summarises the conditions in readyDependsOn: true when all are,
// otherwise false with the reason and message of the first that is not.
func setReady(app *v1alpha1.MicroserviceApp) {
	c := metav1.Condition{
		Type:               v1alpha1.ConditionReady,
		Status:             metav1.ConditionTrue,
		Reason:             v1alpha1.ReasonReady,
		Message:            "every service is running its current spec",
		ObservedGeneration: app.Generation,
	}
	for _, t := range readyDependsOn {
		dep := meta.FindStatusCondition(app.Status.Conditions, t)
		if dep != nil && dep.Status == metav1.ConditionTrue {
			continue
		}
		if dep == nil {
			c.Status = metav1.ConditionUnknown
			c.Reason = v1alpha1.ReasonReconciling
			c.Message = t + " not yet determined"
		} else {
			c.Status = metav1.ConditionFalse
			c.Reason = dep.Reason
			c.Message = t + ": " + dep.Message
		}
		break
	}
	meta.SetStatusCondition(&app.Status.Conditions, c)
}
