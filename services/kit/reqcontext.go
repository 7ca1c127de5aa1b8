package kit

import (
	"context"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/courier-dev/courier/services/kit/logging"
	"github.com/courier-dev/courier/services/kit/tracing"
)

// requestState is what the kit keeps for one API request: its server span,
// its log ids, the X-Request-ID header value, and its deadline, allocated
// with the request's copy (requestAlloc). It is also the request's context.Context (the parent of
// the span's context), so handlers see the deadline through Deadline, Done
// and Err and their log lines find the ids through Value.
//
// Why a hand-written context instead of context.WithTimeout: WithTimeout
// under net/http's cancellable request context costs about 400 ns and four
// allocations per request (a timerCtx, a runtime timer armed and stopped,
// the parent's children map), more than the whole bare handler the kit is
// measured against (bench/http). Most requests never wait on their
// context, so the timer is armed lazily, on the first Done (which is what
// database/sql, net/http's client, the messaging drivers and
// context.WithCancel on this context all call) or on a Value lookup once
// the deadline has passed or the request has finished, so that
// context.Cause, which finds the cancellation through Value, sees it. Until
// then Deadline reports the deadline, and Err compares the clock with it,
// which is what Done would say if it were armed. The contract's "every
// request has a deadline" holds either way: Deadline is set from the first
// instant and everything that can block on it arms it.
type requestState struct {
	parent   context.Context
	deadline time.Time

	span     tracing.ServerSpan
	ids      logging.IDs
	idHeader [1]string

	mu    sync.Mutex // serialises arm
	armed atomic.Pointer[armedContext]
	final atomic.Int32 // requestRunning until finish
}

// armedContext is the standard deadline context requestState delegates to
// once armed.
type armedContext struct {
	ctx    context.Context
	cancel context.CancelFunc
}

// States of requestState.final.
const (
	requestRunning int32 = iota
	requestCanceled
	requestDeadlineExceeded
)

// newRequestState returns the state of a request arriving at start whose
// context (after trace extraction) is parent. The deadline is start+timeout
// or parent's, whichever is earlier, as with context.WithDeadline.
func newRequestState(parent context.Context, start time.Time, timeout time.Duration) *requestState {
	st := &requestState{}
	st.init(parent, start, timeout)
	return st
}

func (st *requestState) init(parent context.Context, start time.Time, timeout time.Duration) {
	st.parent, st.deadline = parent, start.Add(timeout)
	if d, ok := parent.Deadline(); ok && d.Before(st.deadline) {
		st.deadline = d
	}
}

// requestAlloc is a request's state and the copy of its *http.Request that
// carries the new context, allocated together: one allocation instead of
// two on every request.
type requestAlloc struct {
	state requestState
	req   http.Request
}

// withContext sets a.req to a shallow copy of req with context ctx, as
// req.WithContext does, but in a's memory. WithContext's own copy is
// dereferenced at once, so it stays on the stack.
func (a *requestAlloc) withContext(req *http.Request, ctx context.Context) *http.Request {
	a.req = *req.WithContext(ctx)
	return &a.req
}

// Deadline returns the request's deadline.
func (st *requestState) Deadline() (time.Time, bool) { return st.deadline, true }

// Done arms the deadline, if it is not yet, and returns its channel.
func (st *requestState) Done() <-chan struct{} {
	if a := st.armed.Load(); a != nil {
		return a.ctx.Done()
	}
	return st.arm().Done()
}

// Err reports what Done's channel would say, without arming the deadline.
func (st *requestState) Err() error {
	switch st.final.Load() {
	case requestCanceled:
		return context.Canceled
	case requestDeadlineExceeded:
		return context.DeadlineExceeded
	}
	return st.errAt(time.Now())
}

// errAt is Err for a running request at now.
func (st *requestState) errAt(now time.Time) error {
	if a := st.armed.Load(); a != nil {
		return a.ctx.Err()
	}
	if err := st.parent.Err(); err != nil {
		return err
	}
	if !now.Before(st.deadline) {
		return context.DeadlineExceeded
	}
	return nil
}

// Value answers the log ids itself and delegates everything else.
func (st *requestState) Value(key any) any {
	if key == logging.IDsContextKey {
		return &st.ids
	}
	if a := st.armed.Load(); a != nil {
		return a.ctx.Value(key)
	}
	if st.final.Load() != requestRunning || !time.Now().Before(st.deadline) {
		// Ended: answer through an armed context, whose cancellation
		// context.Cause then finds, instead of only the parent's.
		return st.arm().Value(key)
	}
	return st.parent.Value(key)
}

// String names the context for fmt, as the standard contexts do.
func (st *requestState) String() string { return "kit.requestContext" }

// arm creates the standard context requestState delegates to from now on.
// Once the request has finished, that context is ended at once: finish
// cancels what it finds armed, and arm cancels what it armed after finish
// (atomics are sequentially consistent, so one of the two sees the other).
func (st *requestState) arm() context.Context {
	st.mu.Lock()
	defer st.mu.Unlock()
	if a := st.armed.Load(); a != nil {
		return a.ctx
	}
	a := &armedContext{}
	a.ctx, a.cancel = context.WithDeadline(st.parent, st.deadline)
	st.armed.Store(a)
	if st.final.Load() != requestRunning {
		a.cancel()
	}
	return a.ctx
}

// finish ends the request's context at now, as the cancel function of
// context.WithTimeout does when the handler returns: from now on Err is
// context.Canceled, or context.DeadlineExceeded if the deadline (or the
// parent) had ended it first, and an armed timer is stopped. It takes no
// lock, so the common, never-armed request pays two atomic operations.
func (st *requestState) finish(now time.Time) {
	final := requestCanceled
	if err := st.errAt(now); err == context.DeadlineExceeded { //nolint:errorlint // the context package returns the sentinel itself
		final = requestDeadlineExceeded
	}
	if !st.final.CompareAndSwap(requestRunning, final) {
		return
	}
	if a := st.armed.Load(); a != nil {
		a.cancel()
	}
}

// finishOnPanic finishes a request whose handler chain is unwinding from a
// panic the recovery middleware let through (http.ErrAbortHandler).
func (st *requestState) finishOnPanic() {
	if st.final.Load() == requestRunning {
		st.finish(time.Now())
	}
}
