// Package contract is the single source of truth for what the Courier
// operator promises a service and what a service promises the operator:
// ports, probe and metrics paths, environment variable names, physical broker
// names and metric names. The operator and the service kit both import it, so
// the two can never drift. It has no dependencies beyond the standard library.
//
// docs/contract.md describes the same contract for people writing their own
// services in other languages.
package contract

import (
	"strings"
)

// Ports and their names. The admin port carries probes and metrics and is
// kept off the public port.
const (
	// HTTPPort is the default port of a service's public API.
	HTTPPort int32 = 8080
	// AdminPort is the default port of /livez, /readyz, /metrics and pprof.
	AdminPort int32 = 9090
	// HTTPPortName names the API port on containers and Services.
	HTTPPortName = "http"
	// AdminPortName names the admin port, so a ServiceMonitor can select it.
	AdminPortName = "admin"
)

// Paths served on the admin port.
const (
	// LivezPath answers 200 while the process is alive; it never checks
	// dependencies.
	LivezPath = "/livez"
	// ReadyzPath answers 200 while the service can take traffic: broker
	// connected, database open. It is served from a cached check and turns
	// false first thing on SIGTERM.
	ReadyzPath = "/readyz"
	// MetricsPath serves Prometheus metrics from the service's private registry.
	MetricsPath = "/metrics"
	// PprofPath is the prefix of the Go profiler endpoints.
	PprofPath = "/debug/pprof/"
)

// Environment variables the operator sets on every service container.
const (
	// EnvAppName holds the MicroserviceApp's name.
	EnvAppName = "COURIER_APP"
	// EnvServiceName holds the service's name within the app.
	EnvServiceName = "COURIER_SERVICE"
	// EnvPodName holds the pod's name (downward API).
	EnvPodName = "POD_NAME"
	// EnvPodNamespace holds the pod's namespace (downward API).
	EnvPodNamespace = "POD_NAMESPACE"
	// EnvHTTPPort holds the port the public API listens on.
	EnvHTTPPort = "HTTP_PORT"
	// EnvAdminPort holds the port the admin listener binds.
	EnvAdminPort = "ADMIN_PORT"
	// EnvBrokerKind is "rabbitmq" or "nats"; empty when the app has no broker.
	EnvBrokerKind = "BROKER_KIND"
	// EnvBrokerURL is the service's own broker URL, credentials included,
	// taken from the service's connection Secret.
	EnvBrokerURL = "BROKER_URL"
	// EnvBrokerCredentialsFile is the path of the service's broker
	// credentials file, mounted from its connection Secret; set for NATS
	// (a user JWT and its nkey seed), unset for RabbitMQ, whose URL
	// carries the credentials.
	EnvBrokerCredentialsFile = "BROKER_CREDENTIALS_FILE"
	// EnvBrokerConnectionHash is the hash of the connection Secret; the
	// operator also writes it to the pod template so a rotation rolls pods.
	EnvBrokerConnectionHash = "BROKER_CONNECTION_HASH"
	// EnvDataDir is the directory of the service's persistent volume
	// (spec.services[].storage.mountPath), writable by the container's
	// user; unset when the service has no storage. What a service keeps
	// there outlives its pod; anywhere else it is lost with the pod.
	EnvDataDir = "COURIER_DATA_DIR"
)

// Environment variables the service kit reads with defaults. The operator may
// set them to tune a service; a local run may leave them unset.
const (
	// EnvRequestTimeout bounds one API request (a Go duration, default 10s).
	EnvRequestTimeout = "REQUEST_TIMEOUT"
	// EnvBodyLimit caps a request body in bytes (default 1 MiB); more is 413.
	EnvBodyLimit = "BODY_LIMIT_BYTES"
	// EnvShutdownGrace bounds the whole graceful shutdown (default 25s); keep
	// it below the pod's terminationGracePeriodSeconds.
	EnvShutdownGrace = "SHUTDOWN_GRACE"
	// EnvShutdownDelay is how long /readyz reports false before the API
	// listener stops accepting (default 0), so endpoints drop the pod first.
	EnvShutdownDelay = "SHUTDOWN_DELAY"
	// EnvLogLevel is debug, info, warn or error (default info).
	EnvLogLevel = "LOG_LEVEL"
	// EnvDevDeclareTopology, when true, lets a service declare its own queues.
	// Development and tests only: in a cluster the operator owns topology and
	// services have no configure permission.
	EnvDevDeclareTopology = "COURIER_DEV_DECLARE_TOPOLOGY"
)

// InboxPrefix is the prefix of the subjects a service's NATS replies arrive
// on, "_INBOX_<service>": the operator lets each service subscribe to its
// own prefix only, so no service reads another's replies.
func InboxPrefix(service string) string { return "_INBOX_" + service }

// Broker kinds, the values of EnvBrokerKind.
const (
	// BrokerRabbitMQ selects the RabbitMQ (AMQP 0-9-1) driver.
	BrokerRabbitMQ = "rabbitmq"
	// BrokerNATS selects the NATS JetStream driver.
	BrokerNATS = "nats"
)

// Annotations and labels on the pod template.
const (
	// AnnotationConnectionHash carries the hash of the service's broker
	// connection Secret on the pod template; a new hash rolls the pods.
	AnnotationConnectionHash = "courier.dev/broker-connection-hash"
)

// envToken upper-cases a DNS-style name and turns every character that is not
// a letter or digit into an underscore: "email-jobs" -> "EMAIL_JOBS".
func envToken(name string) string {
	var b strings.Builder
	b.Grow(len(name))
	for _, r := range name {
		switch {
		case r >= 'a' && r <= 'z':
			b.WriteRune(r - 'a' + 'A')
		case r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	return b.String()
}

// QueueEnv names the variable that maps a logical queue name to its physical
// name: "emails" -> "QUEUE_EMAILS".
func QueueEnv(queue string) string { return "QUEUE_" + envToken(queue) }

// QueueMaxDeliveriesEnv names the variable holding a consumed queue's
// delivery limit (spec.queues[].maxDeliveries): the number of attempts before
// a message is dead-lettered. The kit's consumers use it unless the service
// sets its own limit: "emails" -> "QUEUE_EMAILS_MAX_DELIVERIES".
func QueueMaxDeliveriesEnv(queue string) string {
	return "QUEUE_" + envToken(queue) + "_MAX_DELIVERIES"
}

// ServiceURLEnv names the variable holding the base URL of a service the
// container calls: "users" -> "SERVICE_USERS_URL".
func ServiceURLEnv(service string) string { return "SERVICE_" + envToken(service) + "_URL" }

// QueueName is the physical name of a logical queue. On RabbitMQ every app has
// its own vhost, so the physical queue is "<app>.<queue>", which also keeps
// names unique on a shared external broker and readable in its UI.
func QueueName(app, queue string) string { return app + "." + queue }

// ExchangeName is the dedicated direct exchange in front of a physical queue.
// One exchange per queue is what makes "may publish only to emails"
// enforceable with RabbitMQ's write permission. It must not equal the queue's
// name: RabbitMQ permissions match names of exchanges and queues alike, so a
// service that may write exchange A and read B could otherwise bind queue A to
// exchange B and copy B's messages.
func ExchangeName(physicalQueue string) string { return physicalQueue + ".exchange" }

// RoutingKey is the routing key used to publish to a physical queue's
// exchange; the queue is bound with the same key.
func RoutingKey(physicalQueue string) string { return physicalQueue }

// DeadLetterExchangeName is the exchange dead-lettered messages of a queue go to.
func DeadLetterExchangeName(physicalQueue string) string { return physicalQueue + ".dlx" }

// DeadLetterQueueName is the queue that keeps a queue's dead letters.
func DeadLetterQueueName(physicalQueue string) string { return physicalQueue + ".dlq" }

// StreamName is the JetStream stream that holds every queue of an app.
func StreamName(app string) string { return "COURIER_" + envToken(app) }

// Subject is the JetStream subject of a physical queue.
func Subject(physicalQueue string) string { return physicalQueue }

// DeadLetterSubject is the subject a NATS consumer republishes a message to
// once it has been delivered MaxDeliver times.
func DeadLetterSubject(physicalQueue string) string { return physicalQueue + ".dead" }

// ConsumerName is the durable JetStream consumer of a queue: all replicas of a
// consuming service share it, so each message reaches one of them.
func ConsumerName(physicalQueue string) string {
	return strings.ReplaceAll(physicalQueue, ".", "_")
}

// Message header names shared by publishers and consumers.
const (
	// HeaderMessageID is the unique id of a message; JetStream de-duplicates
	// on it, and consumers use it for idempotency.
	HeaderMessageID = "Nats-Msg-Id"
	// HeaderTraceParent carries the W3C trace context of the publisher.
	HeaderTraceParent = "traceparent"
	// HeaderTraceState carries the W3C trace state of the publisher.
	HeaderTraceState = "tracestate"
)

// Metric names every service exports from its private registry.
const (
	// MetricHTTPRequests counts requests by method, route template and code.
	MetricHTTPRequests = "http_requests_total"
	// MetricHTTPDuration is a histogram of request latency by method, route
	// template and code.
	MetricHTTPDuration = "http_request_duration_seconds"
	// MetricMessagesPublished counts published messages by queue and outcome.
	MetricMessagesPublished = "messages_published_total"
	// MetricMessagesConsumed counts handled messages by queue and outcome.
	MetricMessagesConsumed = "messages_consumed_total"
	// MetricMessageDuration is a histogram of handling time by queue and outcome.
	MetricMessageDuration = "message_handling_duration_seconds"
	// MetricBuildInfo is a gauge of 1 labelled with version, revision and Go version.
	MetricBuildInfo = "build_info"
)

// Message outcomes, the values of the "outcome" label.
const (
	// OutcomeSuccess: published and confirmed, or handled and acked.
	OutcomeSuccess = "success"
	// OutcomeRetry: handling failed and the message will be redelivered.
	OutcomeRetry = "retry"
	// OutcomeDeadLetter: handling failed for the last time; dead-lettered.
	OutcomeDeadLetter = "dead_letter"
	// OutcomeError: publishing failed after all retries.
	OutcomeError = "error"
)
