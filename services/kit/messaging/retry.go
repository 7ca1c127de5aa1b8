package messaging

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/url"
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

// dialWithRetry calls dial with backoff until it succeeds or ctx ends. The
// error then names the last dial failure too, not only the deadline:
// "connection refused" and "access refused" call for different fixes.
// Failures are retried whatever they are, credentials included, because the
// operator may still be creating the service's broker user when it starts.
func dialWithRetry[T any](ctx context.Context, log *slog.Logger, broker string, dial func() (T, error)) (T, error) {
	var last error
	v, err := backoff.Retry(ctx, func() (T, error) {
		v, err := dial()
		if err != nil {
			last = err
		}
		return v, err
	},
		backoff.WithBackOff(newReconnectBackoff()),
		backoff.WithMaxElapsedTime(0),
		backoff.WithNotify(func(err error, next time.Duration) {
			log.WarnContext(ctx, broker+" dial failed, retrying", "retry_in", next, "error", err)
		}))
	if err != nil && last != nil && !errors.Is(err, last) {
		err = fmt.Errorf("%w (last attempt: %w)", err, last)
	}
	return v, err
}

// redactURLError drops the URL from a *url.Error, which quotes the URL it
// failed on, credentials included, into logs.
func redactURLError(err error) error {
	var uerr *url.Error
	if errors.As(err, &uerr) {
		return uerr.Err
	}
	return err
}
