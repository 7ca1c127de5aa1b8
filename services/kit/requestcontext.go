package kit

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/courier-dev/courier/services/kit/logging"
)

// requestContext is the context a handler gets for one API request: its
// parent's values (the server span) and cancellation, the request id for
// the log lines (answered from its own field under logging.IDsContextKey),
// and the request's deadline, Config.RequestTimeout after it arrived.
//
// Why not context.WithTimeout(logging.WithRequestID(ctx, id), timeout),
// which says the same: measured with bench/http on 2026-12-07, that pair
// was the largest share of the kit's own work per request: a CPU profile of
// the loopback server put about 6% of its CPU in WithTimeout alone (the
// timerCtx, a runtime timer armed and stopped, and a children map
// allocated in net/http's per-request cancelCtx by propagateCancel), and
// in process (BenchmarkInProcess/kit) the two cost about 0.75 us of the
// kit's 3.3 us and six of its allocations (BenchmarkRequestContext
// prices the pair against this context). The kit is held to 0.95x bare
// net/http over loopback, where a request costs the server about 20 us and
// wrk shares its two cores, which leaves the whole kit about a microsecond
// per request. Most requests never wait on their
// context, so this one arms the standard deadline context lazily, on the
// first Done (which is what database/sql, net/http's client, the messaging
// drivers and context.WithCancel on this context call), and answers
// Deadline and Err from the clock until then, which is what an armed
// context would say. The contract's "every request has a deadline" holds
// either way: Deadline reports it from the first instant, and everything
// that can block on it arms it. Once armed (or once the deadline has
// passed or the request has finished, so that context.Cause, which finds
// the cancellation through Value, agrees with Err) every call goes to the
// standard context.
type requestContext struct {
	parent   context.Context
	deadline time.Time
	ids      logging.IDs

	mu    sync.Mutex // serialises arm
	armed atomic.Pointer[armedDeadline]
	// final is requestRunning until finish, then the error Err reports
	// from then on.
	final atomic.Int32
}

// States of requestContext.final.
const (
	requestRunning int32 = iota
	requestCanceled
	requestDeadlineExceeded
)

// armedDeadline is the standard context a requestContext defers to once
// armed.
type armedDeadline struct {
	ctx    context.Context
	cancel context.CancelFunc
}

// init makes c the context of a request with id that arrived at start
// under parent: its deadline is start+timeout, or parent's if that is
// earlier, as with context.WithDeadline. Call finish when the handler
// returns, as one calls WithTimeout's cancel.
func (c *requestContext) init(parent context.Context, id string, start time.Time, timeout time.Duration) {
	c.parent, c.deadline, c.ids = parent, start.Add(timeout), logging.IDs{RequestID: id}
	if d, ok := parent.Deadline(); ok && d.Before(c.deadline) {
		c.deadline = d
	}
}

// Deadline returns the request's deadline.
func (c *requestContext) Deadline() (time.Time, bool) { return c.deadline, true }

// Done arms the deadline if it is not yet armed and returns its channel.
func (c *requestContext) Done() <-chan struct{} { return c.arm().Done() }

// Err is what the armed context's Err would say, without arming it.
func (c *requestContext) Err() error {
	if a := c.armed.Load(); a != nil {
		return a.ctx.Err()
	}
	switch c.final.Load() {
	case requestCanceled:
		return context.Canceled
	case requestDeadlineExceeded:
		return context.DeadlineExceeded
	}
	return c.runningErr()
}

// runningErr is Err for a running request that has not armed.
func (c *requestContext) runningErr() error {
	if err := c.parent.Err(); err != nil {
		return err
	}
	if c.expired() {
		return context.DeadlineExceeded
	}
	return nil
}

// expired reports whether the deadline has passed. time.Until reads only
// the monotonic clock (the deadline carries a monotonic reading), one
// clock read where time.Now makes two.
func (c *requestContext) expired() bool { return time.Until(c.deadline) <= 0 }

// Value answers the log ids itself and asks the parent for the rest while
// the request runs within its deadline; after that it asks the armed
// context, so that context.Cause finds the deadline or the finish.
func (c *requestContext) Value(key any) any {
	if key == logging.IDsContextKey {
		return &c.ids
	}
	if a := c.armed.Load(); a != nil {
		return a.ctx.Value(key)
	}
	if c.final.Load() != requestRunning || c.expired() {
		return c.arm().Value(key)
	}
	return c.parent.Value(key)
}

// String names the context for fmt, as the standard contexts do.
func (c *requestContext) String() string { return "kit.requestContext" }

// arm returns the standard deadline context, creating it on the first
// call. After finish it is created already cancelled: finish cancels what
// it finds armed and arm cancels what it arms after finish (both atomics
// are sequentially consistent, so at least one sees the other).
func (c *requestContext) arm() context.Context {
	if a := c.armed.Load(); a != nil {
		return a.ctx
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if a := c.armed.Load(); a != nil {
		return a.ctx
	}
	a := &armedDeadline{}
	a.ctx, a.cancel = context.WithDeadline(c.parent, c.deadline)
	c.armed.Store(a)
	if c.final.Load() != requestRunning {
		a.cancel()
	}
	return a.ctx
}

// finish ends the request's context, as WithTimeout's cancel does when the
// handler returns: from now on Err is context.Canceled, or
// context.DeadlineExceeded if the deadline had passed first, and an armed
// timer is stopped. A request that never armed pays two atomic operations
// and a clock read.
func (c *requestContext) finish() {
	final := requestCanceled
	if err := c.runningErr(); err == context.DeadlineExceeded { //nolint:errorlint // the context package returns the sentinel itself
		final = requestDeadlineExceeded
	}
	c.final.CompareAndSwap(requestRunning, final)
	if a := c.armed.Load(); a != nil {
		a.cancel()
	}
}
