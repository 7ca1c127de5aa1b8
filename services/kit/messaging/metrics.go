package messaging

import (
	"sync"
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

// consumeSeries are the consume series of one queue, looked up once per
// Consume call rather than per message: WithLabelValues hashes the label
// values and takes the vector's lock on every call.
type consumeSeries struct {
	outcomes [3]consumeOutcome // by consumeOutcomes' order; zero without Metrics
}

type consumeOutcome struct {
	name     string
	consumed prometheus.Counter
	// duration is looked up on first use: a histogram series appears on
	// /metrics once an outcome has a handling time, as before.
	duration func() prometheus.Observer
}

var consumeOutcomes = [3]string{contract.OutcomeSuccess, contract.OutcomeRetry, contract.OutcomeDeadLetter}

// consumeSeries creates the consumer counters of queue at zero, so that the
// first dead letter is an increase an alert can see rather than a series
// appearing out of nowhere, and returns queue's consume series.
func (m *Metrics) consumeSeries(queue string) *consumeSeries {
	s := &consumeSeries{}
	for i, o := range consumeOutcomes {
		s.outcomes[i].name = o
		if m != nil {
			s.outcomes[i].consumed = m.consumed.WithLabelValues(queue, o)
			s.outcomes[i].duration = sync.OnceValue(func() prometheus.Observer { return m.duration.WithLabelValues(queue, o) })
		}
	}
	return s
}

func (s *consumeSeries) outcome(name string) *consumeOutcome {
	for i := range s.outcomes {
		if s.outcomes[i].name == name {
			return &s.outcomes[i]
		}
	}
	panic("messaging: unknown consume outcome " + name)
}

// observe counts a handler run with outcome and its handling time.
func (s *consumeSeries) observe(outcome string, took time.Duration) {
	o := s.outcome(outcome)
	if o.consumed == nil {
		return
	}
	o.consumed.Inc()
	o.duration().Observe(took.Seconds())
}

// count counts an outcome that involved no handler run, such as a
// message dead-lettered on arrival because it had already used up its
// deliveries.
func (s *consumeSeries) count(outcome string) {
	if o := s.outcome(outcome); o.consumed != nil {
		o.consumed.Inc()
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
