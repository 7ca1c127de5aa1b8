package messaging

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
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

// ErrConfig marks a failure that no retry can heal: a malformed broker URL,
// credentials the broker keeps refusing, a topology that contradicts what
// exists. Connect returns errors wrapping it (and the context's error when
// ctx ends); every other failure is retried for as long as ctx lives.
var ErrConfig = errors.New("broker configuration error")

// DefaultAuthRetryFor is how long refused credentials are retried before
// Connect gives up with ErrConfig, when Config.AuthRetryFor is zero.
const DefaultAuthRetryFor = 2 * time.Minute

// forever is an AuthRetryFor that never gives up.
const forever = time.Duration(math.MaxInt64)

// failure classifies one failed attempt to connect.
type failure int

const (
	// transient: the broker is down, slow, restarting or unreachable.
	transient failure = iota
	// refused: the broker refused the credentials. The operator may still
	// be creating the service's user, so this is retried for a while.
	refused
	// misconfigured: the attempt can never succeed as configured.
	misconfigured
)

// establish calls attempt with backoff until it succeeds, for as long as ctx
// lives: a broker that is down, slow or restarting is waited for, never a
// reason to give up. Only a configuration error stops it: at once when
// classify says misconfigured, or once the broker has refused the
// credentials without a break for authRetryFor. The error then wraps
// ErrConfig and names setting. When ctx ends, the error names the last
// failure too: "connection refused" and "access refused" call for
// different fixes.
func establish[T any](ctx context.Context, log *slog.Logger, what, setting string, authRetryFor time.Duration,
	classify func(error) failure, attempt func(context.Context) (T, error)) (T, error) {
	var (
		last         error
		refusedSince time.Time
	)
	v, err := backoff.Retry(ctx, func() (T, error) {
		v, err := attempt(ctx)
		if err == nil {
			return v, nil
		}
		last = err
		switch classify(err) {
		case misconfigured:
			return v, backoff.Permanent(fmt.Errorf("%w: %s: %w", ErrConfig, setting, err))
		case refused:
			if refusedSince.IsZero() {
				refusedSince = time.Now()
			}
			if time.Since(refusedSince) >= authRetryFor {
				return v, backoff.Permanent(fmt.Errorf("%w: the broker refused the credentials in %s for %s: %w",
					ErrConfig, setting, authRetryFor, err))
			}
		default:
			refusedSince = time.Time{}
		}
		return v, err
	},
		backoff.WithBackOff(newReconnectBackoff()),
		backoff.WithMaxElapsedTime(0),
		backoff.WithNotify(func(err error, next time.Duration) {
			log.WarnContext(ctx, what+" failed, retrying", "retry_in", next, "error", err)
		}))
	if err != nil && !errors.Is(err, ErrConfig) && last != nil && !errors.Is(err, last) {
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
