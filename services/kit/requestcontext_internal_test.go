package kit

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/courier-dev/courier/services/kit/logging"
)

type parentKey struct{}

func newTestRequestContext(parent context.Context, timeout time.Duration) *requestContext {
	c := &requestContext{}
	c.init(parent, "req-1", time.Now(), timeout)
	return c
}

// TestRequestContextActsLikeWithTimeout checks each thing
// context.WithTimeout(logging.WithRequestID(parent, id), timeout) would
// say, before and after the timer is armed.
func TestRequestContextActsLikeWithTimeout(t *testing.T) {
	parent := context.WithValue(context.Background(), parentKey{}, "p")

	t.Run("running", func(t *testing.T) {
		c := newTestRequestContext(parent, time.Hour)
		defer c.finish()
		if dl, ok := c.Deadline(); !ok || time.Until(dl) <= 59*time.Minute {
			t.Errorf("Deadline = %v, %v; want about an hour from now", dl, ok)
		}
		if err := c.Err(); err != nil {
			t.Errorf("Err = %v, want nil", err)
		}
		if got := logging.RequestID(c); got != "req-1" {
			t.Errorf("request id = %q", got)
		}
		if got := c.Value(parentKey{}); got != "p" {
			t.Errorf("parent value = %v", got)
		}
		if c.armed.Load() != nil {
			t.Error("armed without anyone waiting on Done")
		}
	})

	t.Run("deadline passes unarmed", func(t *testing.T) {
		c := newTestRequestContext(parent, time.Millisecond)
		defer c.finish()
		dl, _ := c.Deadline()
		for time.Until(dl) > 0 {
			time.Sleep(time.Until(dl)) // waiting for the deadline is the condition itself
		}
		if err := c.Err(); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Err = %v, want deadline exceeded", err)
		}
		// context.Cause finds the cancellation through Value: it must
		// agree with Err.
		if cause := context.Cause(c); !errors.Is(cause, context.DeadlineExceeded) {
			t.Errorf("Cause = %v, want deadline exceeded", cause)
		}
		<-c.Done()
		if got := logging.RequestID(c); got != "req-1" {
			t.Errorf("request id after the deadline = %q", got)
		}
	})

	t.Run("done fires at the deadline", func(t *testing.T) {
		c := newTestRequestContext(parent, 20*time.Millisecond)
		defer c.finish()
		select {
		case <-c.Done():
		case <-time.After(5 * time.Second):
			t.Fatal("Done not closed after the deadline")
		}
		if !errors.Is(c.Err(), context.DeadlineExceeded) {
			t.Errorf("Err = %v", c.Err())
		}
	})

	t.Run("child context", func(t *testing.T) {
		c := newTestRequestContext(parent, 20*time.Millisecond)
		defer c.finish()
		child, cancel := context.WithCancel(c)
		defer cancel()
		select {
		case <-child.Done():
		case <-time.After(5 * time.Second):
			t.Fatal("child of the request context not ended by its deadline")
		}
		if !errors.Is(child.Err(), context.DeadlineExceeded) {
			t.Errorf("child Err = %v", child.Err())
		}
	})

	t.Run("finish unarmed", func(t *testing.T) {
		c := newTestRequestContext(parent, time.Hour)
		c.finish()
		if !errors.Is(c.Err(), context.Canceled) {
			t.Errorf("Err after finish = %v, want canceled", c.Err())
		}
		if !errors.Is(context.Cause(c), context.Canceled) {
			t.Errorf("Cause after finish = %v, want canceled", context.Cause(c))
		}
		select {
		case <-c.Done():
		default:
			t.Error("Done open after finish")
		}
	})

	t.Run("finish armed", func(t *testing.T) {
		c := newTestRequestContext(parent, time.Hour)
		done := c.Done()
		c.finish()
		select {
		case <-done:
		default:
			t.Error("Done open after finish")
		}
		if !errors.Is(c.Err(), context.Canceled) {
			t.Errorf("Err after finish = %v, want canceled", c.Err())
		}
	})

	t.Run("finish after the deadline", func(t *testing.T) {
		c := newTestRequestContext(parent, time.Millisecond)
		dl, _ := c.Deadline()
		for time.Until(dl) > 0 {
			time.Sleep(time.Until(dl))
		}
		c.finish()
		if !errors.Is(c.Err(), context.DeadlineExceeded) {
			t.Errorf("Err = %v, want deadline exceeded (it came first)", c.Err())
		}
	})

	t.Run("parent", func(t *testing.T) {
		p, cancel := context.WithTimeout(parent, time.Minute)
		c := newTestRequestContext(p, time.Hour)
		defer c.finish()
		if dl, _ := c.Deadline(); time.Until(dl) > time.Minute {
			t.Errorf("Deadline = %v, want the parent's earlier one", dl)
		}
		cancel()
		if !errors.Is(c.Err(), context.Canceled) {
			t.Errorf("Err after the parent's cancel = %v", c.Err())
		}
		select {
		case <-c.Done():
		case <-time.After(5 * time.Second):
			t.Fatal("Done not closed by the parent's cancel")
		}
	})
}

// BenchmarkRequestContext prices the request context against the
// standard pair it replaces, under a cancellable parent as net/http's:
//
//	go test -run '^$' -bench RequestContext -benchmem ./services/kit/
func BenchmarkRequestContext(b *testing.B) {
	parent, cancel := context.WithCancel(context.Background())
	defer cancel()
	b.Run("WithTimeout+WithRequestID", func(b *testing.B) {
		for b.Loop() {
			ctx, cancel := context.WithTimeout(logging.WithRequestID(parent, "req-1"), time.Minute)
			_ = logging.RequestID(ctx)
			cancel()
		}
	})
	b.Run("requestContext", func(b *testing.B) {
		for b.Loop() {
			c := &requestContext{}
			c.init(parent, "req-1", time.Now(), time.Minute)
			_ = logging.RequestID(c)
			c.finish()
		}
	})
}
