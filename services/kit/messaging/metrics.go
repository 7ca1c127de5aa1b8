package messaging

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/courier-dev/courier/services/kit/contract"
)

// Metrics holds the message metrics of the contract. A nil *Metrics records
// nothing, so drivers never check for it.
type Metrics struct {
	published *prometheus.CounterVec
	consumed  *prometheus.CounterVec
	duration  *prometheus.HistogramVec
}

// NewMetrics registers contract.MetricMessagesPublished,
// contract.MetricMessagesConsumed and contract.MetricMessageDuration, all
// labelled by logical queue and outcome, on reg. It panics if they are
// already registered there, like promauto.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	f := promauto.With(reg)
	return &Metrics{
		published: f.NewCounterVec(prometheus.CounterOpts{
			Name: contract.MetricMessagesPublished,
			Help: "Messages published, by logical queue and outcome (success: confirmed by the broker; error: gave up).",
		}, []string{"queue", "outcome"}),
		consumed: f.NewCounterVec(prometheus.CounterOpts{
			Name: contract.MetricMessagesConsumed,
			Help: "Handler attempts, by logical queue and outcome (success, retry, dead_letter).",
		}, []string{"queue", "outcome"}),
		duration: f.NewHistogramVec(prometheus.HistogramOpts{
			Name:    contract.MetricMessageDuration,
			Help:    "Time spent in the message handler, by logical queue and outcome.",
			Buckets: prometheus.DefBuckets,
		}, []string{"queue", "outcome"}),
	}
}

// initConsumer creates the consumer series of queue at zero, so that the
// first dead letter is an increase an alert can see rather than a series
// appearing out of nowhere.
func (m *Metrics) initConsumer(queue string) {
	if m == nil {
		return
	}
	for _, o := range []string{contract.OutcomeSuccess, contract.OutcomeRetry, contract.OutcomeDeadLetter} {
		m.consumed.WithLabelValues(queue, o)
	}
}

// publishCounters are the publish series of one queue. The publish path
// looks them up once per queue (see queueInfo): WithLabelValues hashes the
// label values and takes a lock on every call, which a message need not
// pay for.
type publishCounters struct {
	success, failure prometheus.Counter // nil without Metrics
}

// publishCounters creates queue's publish series (both at zero, so an
// alert sees the first error as an increase).
func (m *Metrics) publishCounters(queue string) publishCounters {
	if m == nil {
		return publishCounters{}
	}
	return publishCounters{
		success: m.published.WithLabelValues(queue, contract.OutcomeSuccess),
		failure: m.published.WithLabelValues(queue, contract.OutcomeError),
	}
}

// add counts confirmed and failed messages.
func (c publishCounters) add(confirmed, failed int) {
	if c.success == nil {
		return
	}
	if confirmed > 0 {
		c.success.Add(float64(confirmed))
	}
	if failed > 0 {
		c.failure.Add(float64(failed))
	}
}

func (m *Metrics) observeConsume(queue, outcome string, took time.Duration) {
	if m == nil {
		return
	}
	m.consumed.WithLabelValues(queue, outcome).Inc()
	m.duration.WithLabelValues(queue, outcome).Observe(took.Seconds())
}

// countConsume counts an outcome that involved no handler run, such as a
// message dead-lettered on arrival because it had already used up its
// deliveries.
func (m *Metrics) countConsume(queue, outcome string) {
	if m == nil {
		return
	}
	m.consumed.WithLabelValues(queue, outcome).Inc()
}
