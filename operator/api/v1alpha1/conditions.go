package v1alpha1

// Condition types of a MicroserviceApp. Ready summarises the others, one per
// concern, so `kubectl wait --for=condition=Ready` works and a false Ready
// says which concern holds the app back.
const (
	// ConditionReady is true when every other condition is true.
	ConditionReady = "Ready"
	// ConditionResourcesApplied is true when the operator wrote every object
	// the app needs (Deployments, Services, disruption budgets) and removed
	// those it no longer needs.
	ConditionResourcesApplied = "ResourcesApplied"
	// ConditionServicesAvailable is true when every service's Deployment has
	// rolled out its current spec and all desired pods are available.
	ConditionServicesAvailable = "ServicesAvailable"
)

// Reasons of the conditions above. A false Ready carries the reason of the
// first false condition it summarises.
const (
	// ReasonReady: every condition Ready summarises is true.
	ReasonReady = "Ready"
	// ReasonReconciling: the operator has not yet finished a reconcile of the
	// current spec.
	ReasonReconciling = "Reconciling"
	// ReasonApplied: every object is written.
	ReasonApplied = "Applied"
	// ReasonApplyFailed: reading, writing or deleting an object failed; the
	// message says which and why.
	ReasonApplyFailed = "ApplyFailed"
	// ReasonAvailable: every service is rolled out and available.
	ReasonAvailable = "Available"
	// ReasonRollingOut: at least one Deployment has not finished rolling out
	// or has pods that are not available yet.
	ReasonRollingOut = "RollingOut"
	// ReasonRolloutStalled: at least one Deployment exceeded its progress
	// deadline.
	ReasonRolloutStalled = "RolloutStalled"
)
