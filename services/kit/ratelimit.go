package kit

import (
	"math"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
	"golang.org/x/time/rate"
)

// Limiter is a set of token buckets (golang.org/x/time/rate), one per key:
// a client address, an account, an e-mail address. Keys idle for longer
// than a full bucket takes to refill are forgotten, so an attacker cycling
// through keys costs memory only for as long as the keys could matter.
// One Limiter is safe for concurrent use.
type Limiter struct {
	every rate.Limit
	burst int
	idle  time.Duration
	now   func() time.Time

	mu      sync.Mutex
	buckets map[string]*bucket
	swept   time.Time
}

type bucket struct {
	lim  *rate.Limiter
	seen time.Time
}

// NewLimiter allows burst events at once per key, refilled at one per
// interval: NewLimiter(time.Minute, 10) allows ten sign-ins in a burst and
// one a minute after that.
func NewLimiter(interval time.Duration, burst int) *Limiter {
	return &Limiter{
		every:   rate.Every(interval),
		burst:   burst,
		idle:    interval * time.Duration(max(burst, 1)),
		now:     time.Now,
		buckets: map[string]*bucket{},
	}
}

// Allow takes one event from key's bucket. When the bucket is empty it
// takes nothing and returns false and how long until the next event is
// allowed.
func (l *Limiter) Allow(key string) (bool, time.Duration) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.swept) > l.idle {
		for k, b := range l.buckets {
			if now.Sub(b.seen) > l.idle {
				delete(l.buckets, k)
			}
		}
		l.swept = now
	}
	b, ok := l.buckets[key]
	if !ok {
		b = &bucket{lim: rate.NewLimiter(l.every, l.burst)}
		l.buckets[key] = b
	}
	b.seen = now
	r := b.lim.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}

// RateLimit is middleware that answers 429 Too Many Requests, with
// Retry-After in whole seconds, once key's bucket in l is empty. key reads
// the request (c.ClientIP() for a per-client limit); an empty key is not
// limited.
func RateLimit(l *Limiter, key func(c *gin.Context) string) gin.HandlerFunc {
	return func(c *gin.Context) {
		if k := key(c); k != "" && !AllowOrRefuse(c, l, k) {
			return
		}
		c.Next()
	}
}

// AllowOrRefuse takes one event from key's bucket in l; when it is empty it
// writes the 429 with Retry-After and returns false, and the handler just
// returns. Handlers use it for per-account limits, whose key (an e-mail
// address, a user id) is known only once the request is read.
func AllowOrRefuse(c *gin.Context, l *Limiter, key string) bool {
	ok, wait := l.Allow(key)
	if ok {
		return true
	}
	c.Header("Retry-After", strconv.Itoa(int(math.Ceil(wait.Seconds()))))
	WriteError(c, http.StatusTooManyRequests, "too many requests, retry later")
	return false
}
