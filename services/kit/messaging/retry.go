package messaging

import (
	"math/rand/v2"
	"time"

	"github.com/cenkalti/backoff/v5"
)

// newReconnectBackoff is the policy for dialing and re-subscribing: quick
// first retries so a broker that restarts in seconds is back in seconds,
// capped so a long outage is not hammered.
func newReconnectBackoff() *backoff.ExponentialBackOff {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = 100 * time.Millisecond
	b.Multiplier = 2
	b.MaxInterval = 5 * time.Second
	return b
}

// newPublishBackoff is the policy between attempts of one Publish.
func newPublishBackoff() *backoff.ExponentialBackOff {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = 50 * time.Millisecond
	b.Multiplier = 2
	b.MaxInterval = 2 * time.Second
	return b
}

// retryDelay is the wait before attempt+1 of a message whose attempt failed:
// RetryBackoff doubled per attempt, capped at MaxRetryBackoff, ±20% jitter.
// It is a pure function of the attempt number rather than a
// backoff.ExponentialBackOff because on JetStream the attempt number comes
// from the broker (a redelivery may reach another replica), so there is no
// per-message state to advance.
func retryDelay(o ConsumeOptions, attempt int) time.Duration {
	d := o.RetryBackoff
	for i := 1; i < attempt && d < o.MaxRetryBackoff; i++ {
		d *= 2
	}
	d = min(d, o.MaxRetryBackoff)
	jitter := 0.8 + 0.4*rand.Float64()
	return time.Duration(float64(d) * jitter)
}
