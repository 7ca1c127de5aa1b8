package poll

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"
)

func TestWithinReturnsOnceTheConditionHolds(t *testing.T) {
	var n atomic.Int32
	Within(t, time.Second, "the third call", func() bool { return n.Add(1) == 3 })
	if got := n.Load(); got != 3 {
		t.Errorf("cond called %d times, want 3", got)
	}
}

// failer records Fatalf instead of ending the test, so the deadline path can
// be checked.
type failer struct {
	testing.TB
	msg string
}

func (f *failer) Helper() {}
func (f *failer) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	panic(f)
}

func TestWithinFailsAtTheDeadline(t *testing.T) {
	f := &failer{TB: t}
	start := time.Now()
	func() {
		defer func() {
			if r := recover(); r != f {
				panic(r)
			}
		}()
		Within(f, 50*time.Millisecond, "never", func() bool { return false })
	}()
	if f.msg != "timed out after 50ms waiting for never" {
		t.Errorf("failure %q", f.msg)
	}
	if waited := time.Since(start); waited < 50*time.Millisecond {
		t.Errorf("gave up after %s, before the deadline", waited)
	}
}
