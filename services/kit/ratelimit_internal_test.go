package kit

import (
	"testing"
	"time"
)

func TestLimiterBurstRefillAndForget(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	l := NewLimiter(10*time.Second, 3)
	l.now = func() time.Time { return now }

	for i := range 3 {
		if ok, _ := l.Allow("a"); !ok {
			t.Fatalf("event %d of the burst refused", i+1)
		}
	}
	ok, wait := l.Allow("a")
	if ok || wait <= 0 || wait > 10*time.Second {
		t.Fatalf("4th event = %v, wait %s; want refused for up to 10s", ok, wait)
	}
	if ok, _ := l.Allow("b"); !ok {
		t.Fatal("another key shares a's bucket")
	}
	// A refused event takes nothing: after one interval exactly one more.
	now = now.Add(10 * time.Second)
	if ok, _ := l.Allow("a"); !ok {
		t.Fatal("refilled event refused")
	}
	if ok, _ := l.Allow("a"); ok {
		t.Fatal("a second event allowed after one interval")
	}
	// Keys idle for longer than a full refill are forgotten.
	now = now.Add(time.Hour)
	l.Allow("c")
	l.mu.Lock()
	n := len(l.buckets)
	l.mu.Unlock()
	if n != 1 {
		t.Errorf("%d buckets after an hour idle, want only c's", n)
	}
}
