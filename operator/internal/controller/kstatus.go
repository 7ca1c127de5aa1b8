package controller

import (
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/courier-dev/courier/operator/api/v1alpha1"
)

// stalledReasons are the reasons of conditions in readyDependsOn that no
// retry will turn true: each waits for a person to change the app, a Secret,
// the broker or a foreign object. Every other reason of a false condition
// is progress the operator or Kubernetes makes on its own.
var stalledReasons = map[string]bool{
	v1alpha1.ReasonNameConflict:          true,
	v1alpha1.ReasonExternalSecretMissing: true,
	v1alpha1.ReasonAdminSecretMissing:    true,
	v1alpha1.ReasonBrokerSecretInvalid:   true,
	v1alpha1.ReasonBrokerUnauthorized:    true,
	v1alpha1.ReasonDeclareFailed:         true,
	v1alpha1.ReasonRolloutStalled:        true,
}

// setKstatus records Reconciling and Stalled, the conditions kstatus
// (sigs.k8s.io/cli-utils/pkg/kstatus/status) reads, from the conditions
// setReady summarises; it runs after setReady. At most one of them is true:
//
//   - Stalled=True when a condition Ready depends on is false for a reason
//     in stalledReasons, or the managed broker is scaled to zero: kstatus
//     reads Failed.
//   - otherwise Reconciling=True while Ready is not true: kstatus reads
//     InProgress, with Ready's reason and message.
//   - both false when Ready is true: kstatus reads Current.
//
// Stalled outranks Reconciling: an app with one service stuck and another
// still rolling out cannot become Ready without a person.
func setKstatus(app *v1alpha1.MicroserviceApp) {
	condition := func(typ string, status metav1.ConditionStatus, reason, message string) {
		meta.SetStatusCondition(&app.Status.Conditions, metav1.Condition{
			Type: typ, Status: status, Reason: reason, Message: message, ObservedGeneration: app.Generation,
		})
	}
	if reason, message, stalled := stalledCause(app); stalled {
		condition(v1alpha1.ConditionStalled, metav1.ConditionTrue, reason, message)
		condition(v1alpha1.ConditionReconciling, metav1.ConditionFalse, v1alpha1.ReasonStalled,
			"the app waits for a change; see Stalled")
		return
	}
	ready := meta.FindStatusCondition(app.Status.Conditions, v1alpha1.ConditionReady)
	if ready != nil && ready.Status == metav1.ConditionTrue {
		condition(v1alpha1.ConditionReconciling, metav1.ConditionFalse, v1alpha1.ReasonReady, ready.Message)
		condition(v1alpha1.ConditionStalled, metav1.ConditionFalse, v1alpha1.ReasonReady, ready.Message)
		return
	}
	reason, message := v1alpha1.ReasonReconciling, "Ready not yet determined"
	if ready != nil {
		reason, message = ready.Reason, ready.Message
	}
	condition(v1alpha1.ConditionReconciling, metav1.ConditionTrue, reason, message)
	condition(v1alpha1.ConditionStalled, metav1.ConditionFalse, v1alpha1.ReasonReconciling,
		"the app is making progress; see Reconciling")
}

// stalledCause returns the reason and message of the first condition, in
// readyDependsOn's order, that waits for a change.
func stalledCause(app *v1alpha1.MicroserviceApp) (reason, message string, stalled bool) {
	for _, t := range readyDependsOn {
		c := meta.FindStatusCondition(app.Status.Conditions, t)
		if c != nil && c.Status == metav1.ConditionFalse && stalledReasons[c.Reason] {
			return c.Reason, t + ": " + c.Message, true
		}
	}
	if b := app.Spec.Broker; b != nil && b.Managed != nil && ptr.Deref(b.Managed.Replicas, 1) == 0 {
		return v1alpha1.ReasonBrokerStopped,
			"the managed broker is scaled to zero (spec.broker.managed.replicas); scale it up to run the app", true
	}
	return "", "", false
}
