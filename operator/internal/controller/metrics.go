package controller

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/courier-dev/courier/operator/api/v1alpha1"
	"github.com/courier-dev/courier/operator/internal/broker"
)

// Queue gauges, exported from the manager's /metrics next to
// controller-runtime's own. They carry the app's namespace as `namespace`, so
// the ServiceMonitor scraping the operator sets honorLabels: the alert rules
// and the dashboard in config/prometheus select on the app's namespace, not
// the operator's.
var (
	queueLabels   = []string{"namespace", "app", "queue"}
	queueMessages = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "courier_queue_messages",
		Help: "Messages waiting in an app's queue (ready and unacknowledged), as last polled from the broker.",
	}, queueLabels)
	queueConsumers = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "courier_queue_consumers",
		Help: "Consumers attached to an app's queue, as last polled from the broker.",
	}, queueLabels)
	queueDeadLetters = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "courier_queue_dead_letters",
		Help: "Messages in an app's queue's dead-letter queue, as last polled from the broker.",
	}, queueLabels)
)

func init() {
	metrics.Registry.MustRegister(queueMessages, queueConsumers, queueDeadLetters)
}

// recordQueueStats publishes the polled queue figures of app. Queues that no
// longer exist on the broker are dropped rather than reported as zero.
func recordQueueStats(app *v1alpha1.MicroserviceApp, stats []broker.QueueStat) {
	forgetQueueStats(app)
	for _, st := range stats {
		if !st.Exists {
			continue
		}
		l := prometheus.Labels{"namespace": app.Namespace, "app": app.Name, "queue": st.Queue}
		queueMessages.With(l).Set(float64(st.Messages))
		queueConsumers.With(l).Set(float64(st.Consumers))
		queueDeadLetters.With(l).Set(float64(st.DeadLetters))
	}
}

// forgetQueueStats removes every series of app, when it is deleted or its
// queues change.
func forgetQueueStats(app *v1alpha1.MicroserviceApp) {
	l := prometheus.Labels{"namespace": app.Namespace, "app": app.Name}
	for _, g := range []*prometheus.GaugeVec{queueMessages, queueConsumers, queueDeadLetters} {
		g.DeletePartialMatch(l)
	}
}
