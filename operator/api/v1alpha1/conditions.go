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
	// ConditionBrokerReady is true when the app's broker answers the
	// operator: every node of a managed broker is ready, or the external
	// broker's management API accepts the administrator. True (NoBroker)
	// when the app has no broker.
	ConditionBrokerReady = "BrokerReady"
	// ConditionTopologyReady is true when the broker holds what the spec
	// derives: on RabbitMQ the app's vhost, exchanges, queues, dead-letter
	// queues, policies, users and permissions; on NATS its account, stream,
	// durable consumers and users. True (NoBroker) when the app has no broker.
	ConditionTopologyReady = "TopologyReady"
	// ConditionCredentialsReady is true when every service that publishes
	// or consumes has its connection Secret and the broker has its user with
	// that Secret's password. True (NoBroker) when the app has no broker.
	ConditionCredentialsReady = "CredentialsReady"

	// ConditionReconciling is true while the app is making progress toward
	// its spec without anyone acting: the operator has not finished a
	// reconcile of the current generation, a rollout is in progress, the
	// broker is forming or the topology waits for it. It follows the kstatus
	// convention (sigs.k8s.io/cli-utils/pkg/kstatus) that Flux, Argo CD and
	// kpt read; it carries the reason and message of the condition that is
	// not yet true. False when the app is Ready or Stalled.
	ConditionReconciling = "Reconciling"
	// ConditionStalled is true when the app cannot become Ready until
	// someone changes something: a name conflict, a broker Secret that is
	// missing or invalid, credentials the broker refuses, a topology change
	// the broker refuses, a rollout past its progress deadline or a managed
	// broker scaled to zero. kstatus reads it as Failed. It carries the
	// reason and message of the condition that is stuck. False otherwise.
	ConditionStalled = "Stalled"
)

// Reasons of the conditions above. A false Ready carries the reason of the
// first false condition it summarises.
const (
	// ReasonReady: every condition Ready summarises is true.
	ReasonReady = "Ready"
	// ReasonReconciling: the operator has not yet finished a reconcile of the
	// current spec.
	ReasonReconciling = "Reconciling"
	// ReasonStalled (Reconciling): the app waits for a change; Stalled says
	// which.
	ReasonStalled = "Stalled"
	// ReasonBrokerStopped (Stalled): the managed broker is scaled to zero
	// (spec.broker.managed.replicas), so nothing that needs it can become
	// ready until it is scaled up again.
	ReasonBrokerStopped = "BrokerStopped"
	// ReasonApplied: every object is written.
	ReasonApplied = "Applied"
	// ReasonApplyFailed: reading, writing or deleting an object failed; the
	// message says which and why.
	ReasonApplyFailed = "ApplyFailed"
	// ReasonNameConflict (ResourcesApplied): an object the app needs exists
	// under its name but is not controlled by this app (another app's, or
	// made by hand). The operator leaves it untouched; the message names it
	// and its owner. Rename the app or the service, or delete the object,
	// and the app converges.
	ReasonNameConflict = "NameConflict"
	// ReasonCleanupFailed (Ready, on an app being deleted): removing the
	// app's users and topology from its broker failed with an answer the
	// operator cannot take for "the broker is gone" (a refused password, a
	// server error). The deletion waits and retries with backoff; the
	// message says why. An administrator who accepts leaving the app's
	// state on the broker sets the annotation AnnotationSkipBrokerCleanup.
	ReasonCleanupFailed = "CleanupFailed"
	// ReasonAvailable: every service is rolled out and available.
	ReasonAvailable = "Available"
	// ReasonRollingOut: at least one Deployment has not finished rolling out
	// or has pods that are not available yet.
	ReasonRollingOut = "RollingOut"
	// ReasonRolloutStalled: at least one Deployment exceeded its progress
	// deadline.
	ReasonRolloutStalled = "RolloutStalled"

	// ReasonNoBroker: the app declares no broker, so the broker conditions
	// hold trivially.
	ReasonNoBroker = "NoBroker"

	// ReasonBrokerAvailable (BrokerReady): the broker answers.
	ReasonBrokerAvailable = "BrokerAvailable"
	// ReasonWaitingForBrokerPods (BrokerReady): the managed broker's
	// StatefulSet has fewer ready nodes than replicas (or is scaled to zero);
	// the message counts them.
	ReasonWaitingForBrokerPods = "WaitingForBrokerPods"
	// ReasonBrokerUnreachable (BrokerReady): the broker's management API
	// does not answer; the message has the error.
	ReasonBrokerUnreachable = "BrokerUnreachable"
	// ReasonBrokerUnauthorized (BrokerReady): the broker refused the
	// administrator credentials (or, polling queue depths, the monitoring
	// user's).
	ReasonBrokerUnauthorized = "BrokerUnauthorized"
	// ReasonExternalSecretMissing (BrokerReady): the Secret
	// spec.broker.external.secretRef names does not exist.
	ReasonExternalSecretMissing = "ExternalSecretMissing"
	// ReasonAdminSecretMissing (BrokerReady): the managed broker's admin
	// Secret is gone while its StatefulSet exists. The nodes keep the
	// credentials and Erlang cookie they were initialised with, so the
	// operator does not make new ones: restore the Secret, or delete the
	// StatefulSet (its volumes go with it) to start the broker over.
	ReasonAdminSecretMissing = "AdminSecretMissing"
	// ReasonBrokerSecretInvalid (BrokerReady): the external broker's Secret
	// or the managed broker's admin Secret lacks a key or holds a bad value;
	// the message says which.
	ReasonBrokerSecretInvalid = "BrokerSecretInvalid"

	// ReasonDeclared (TopologyReady): the broker matches the spec.
	ReasonDeclared = "Declared"
	// ReasonWaitingForBroker (TopologyReady, CredentialsReady): nothing can
	// be declared until BrokerReady's cause is resolved.
	ReasonWaitingForBroker = "WaitingForBroker"
	// ReasonDeclareFailed (TopologyReady): the broker answered but refused a
	// change, such as a queue that exists with another type; the message
	// has the error.
	ReasonDeclareFailed = "DeclareFailed"
	// ReasonBrokerNameConflict (TopologyReady): the app's vhost on the
	// broker belongs to another app of the same name, in another
	// namespace (its description names the owner). The operator touches
	// neither its vhost nor its users; rename one app, or give them
	// different brokers.
	ReasonBrokerNameConflict = "BrokerNameConflict"

	// ReasonCredentialsIssued (CredentialsReady): every service that uses a
	// queue has its Secret and broker user.
	ReasonCredentialsIssued = "CredentialsIssued"
	// ReasonWaitingForTopology (CredentialsReady): the Secrets are written
	// but the broker has not been told their passwords, because declaring
	// the topology failed.
	ReasonWaitingForTopology = "WaitingForTopology"
	// ReasonSecretsNotWritten (CredentialsReady): a connection Secret could
	// not be written; ResourcesApplied has the error.
	ReasonSecretsNotWritten = "SecretsNotWritten"
)

// AnnotationSkipBrokerCleanup, set to "true" on an app, makes its deletion
// leave the app's users, queues and vhost (RabbitMQ) or account (NATS) on the broker instead of removing
// them: the way out of a deletion stuck on a broker that refuses the
// operator (Ready=False, reason CleanupFailed). A BrokerCleanupSkipped
// warning records it.
const AnnotationSkipBrokerCleanup = "apps.courier.dev/skip-broker-cleanup"
