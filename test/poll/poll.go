// Package poll waits in tests for a condition to hold, with a deadline: the
// one polling loop every test package shares instead of a sleep that hopes
// the condition holds by then.
package poll

import (
	"testing"
	"time"
)

// Timeout is how long Until waits.
const Timeout = 10 * time.Second

// interval is short next to every condition the tests wait for (a broker
// delivery, a reconcile, a readiness flip) and long next to evaluating one.
const interval = 10 * time.Millisecond

// Until polls cond until it holds, failing the test after Timeout.
func Until(t testing.TB, what string, cond func() bool) {
	t.Helper()
	Within(t, Timeout, what, cond)
}

// Within polls cond until it holds, failing the test after timeout.
func Within(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(interval)
	}
}
