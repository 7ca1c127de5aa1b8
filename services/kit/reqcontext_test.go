package kit

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/courier-dev/courier/services/kit/logging"
)

// waitDone fails the test unless ctx is done within a generous bound.
func waitDone(t *testing.T, ctx context.Context) {
	t.Helper()
	select {
	case <-ctx.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("context not done")
	}
}

func TestRequestStateDeadline(t *testing.T) {
	st := newRequestState(context.Background(), time.Now(), 30*time.Millisecond)
	if d, ok := st.Deadline(); !ok || time.Until(d) > 30*time.Millisecond {
		t.Fatalf("Deadline = %v, %v; want within 30ms", d, ok)
	}
	if err := st.Err(); err != nil {
		t.Fatalf("Err before the deadline = %v", err)
	}
	if st.armed.Load() != nil {
		t.Fatal("Deadline or Err armed the timer")
	}
	// A child and an AfterFunc see the deadline like any context's.
	child, cancel := context.WithCancel(st)
	defer cancel()
	fired := make(chan struct{})
	context.AfterFunc(st, func() { close(fired) })
	waitDone(t, child)
	<-fired
	if !errors.Is(st.Err(), context.DeadlineExceeded) || !errors.Is(context.Cause(st), context.DeadlineExceeded) {
		t.Errorf("Err, Cause = %v, %v; want deadline exceeded", st.Err(), context.Cause(st))
	}
	if !errors.Is(child.Err(), context.DeadlineExceeded) || !errors.Is(context.Cause(child), context.DeadlineExceeded) {
		t.Errorf("child Err, Cause = %v, %v", child.Err(), context.Cause(child))
	}
}

func TestRequestStatePastDeadlineWithoutDone(t *testing.T) {
	st := newRequestState(context.Background(), time.Now().Add(-time.Second), 10*time.Millisecond)
	if !errors.Is(st.Err(), context.DeadlineExceeded) {
		t.Errorf("Err = %v, want deadline exceeded without anyone waiting on Done", st.Err())
	}
	// Cause looks the cancellation up through Value; it must find this
	// context's, not report the (live) parent's nil.
	if !errors.Is(context.Cause(st), context.DeadlineExceeded) {
		t.Errorf("Cause = %v, want deadline exceeded", context.Cause(st))
	}
	waitDone(t, st)
}

func TestRequestStateParentCanceled(t *testing.T) {
	parent, cancel := context.WithCancelCause(context.Background())
	st := newRequestState(parent, time.Now(), time.Hour)
	cancel(errors.New("client went away"))
	if !errors.Is(st.Err(), context.Canceled) {
		t.Errorf("Err = %v, want canceled", st.Err())
	}
	waitDone(t, st)
	if got := context.Cause(st); got == nil || got.Error() != "client went away" {
		t.Errorf("Cause = %v, want the parent's", got)
	}
}

func TestRequestStateEarlierParentDeadline(t *testing.T) {
	parent, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pd, _ := parent.Deadline()
	st := newRequestState(parent, time.Now(), time.Hour)
	if d, _ := st.Deadline(); !d.Equal(pd) {
		t.Errorf("Deadline = %v, want the parent's earlier %v", d, pd)
	}
}

func TestRequestStateFinish(t *testing.T) {
	t.Run("armed before", func(t *testing.T) {
		st := newRequestState(context.Background(), time.Now(), time.Hour)
		child, cancel := context.WithCancel(st) // arms
		defer cancel()
		st.finish(time.Now())
		waitDone(t, child)
		if !errors.Is(st.Err(), context.Canceled) || !errors.Is(context.Cause(st), context.Canceled) {
			t.Errorf("Err, Cause = %v, %v; want canceled", st.Err(), context.Cause(st))
		}
	})
	t.Run("armed after", func(t *testing.T) {
		st := newRequestState(context.Background(), time.Now(), time.Hour)
		st.finish(time.Now())
		if !errors.Is(st.Err(), context.Canceled) {
			t.Errorf("Err = %v, want canceled", st.Err())
		}
		// A goroutine the handler left behind still sees it ended.
		waitDone(t, st)
		if !errors.Is(context.Cause(st), context.Canceled) {
			t.Errorf("Cause = %v, want canceled", context.Cause(st))
		}
	})
	t.Run("after the deadline", func(t *testing.T) {
		st := newRequestState(context.Background(), time.Now().Add(-time.Second), time.Millisecond)
		st.finish(time.Now())
		if !errors.Is(st.Err(), context.DeadlineExceeded) {
			t.Errorf("Err = %v, want deadline exceeded", st.Err())
		}
		waitDone(t, st)
	})
	t.Run("twice", func(t *testing.T) {
		st := newRequestState(context.Background(), time.Now(), time.Hour)
		st.finish(time.Now())
		st.finish(time.Now().Add(2 * time.Hour))
		if !errors.Is(st.Err(), context.Canceled) {
			t.Errorf("Err = %v, want the first finish's canceled", st.Err())
		}
	})
}

type otherKey struct{}

func TestRequestStateValue(t *testing.T) {
	parent := context.WithValue(context.Background(), otherKey{}, "v")
	st := newRequestState(parent, time.Now(), time.Hour)
	st.ids.RequestID = "req-1"
	if got := logging.RequestID(st); got != "req-1" {
		t.Errorf("RequestID = %q", got)
	}
	if got := st.Value(otherKey{}); got != "v" {
		t.Errorf("Value(other) = %v, want the parent's", got)
	}
	if st.armed.Load() != nil {
		t.Error("a Value lookup before the deadline armed the timer")
	}
}

// TestRequestStateConcurrent races arming, Err, Value and finish; run with
// -race. Every waiter must be released by finish.
func TestRequestStateConcurrent(t *testing.T) {
	for range 200 {
		st := newRequestState(context.Background(), time.Now(), time.Hour)
		var wg sync.WaitGroup
		for i := range 4 {
			wg.Go(func() {
				switch i {
				case 0:
					<-st.Done()
				case 1:
					child, cancel := context.WithCancel(st)
					<-child.Done()
					cancel()
				case 2:
					_ = st.Err()
					_ = st.Value(otherKey{})
				case 3:
					_ = context.Cause(st)
				}
			})
		}
		st.finish(time.Now())
		wg.Wait()
		waitDone(t, st)
	}
}
