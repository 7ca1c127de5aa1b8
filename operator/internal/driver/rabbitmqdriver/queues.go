package rabbitmqdriver

import (
	"context"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/courier-dev/courier/operator/internal/broker"
)

// brokerQueues shares one listing of a broker's queues among the apps on
// it: queue statistics cost one broker call per broker per interval, not
// one per app. Each app's reconcile asks for the listing when its own
// statistics are due (the controller's memo) and takes what it needs from it
// (broker.Queues.Stats); a listing younger than the interval serves every
// app of the broker, and apps that ask at the same moment share one call.
type brokerQueues struct {
	group singleflight.Group
	mu    sync.Mutex
	lists map[string]queueListing
}

// queueListing is one broker's queues and when the call that read them
// started.
type queueListing struct {
	queues broker.Queues
	at     time.Time
}

// listingsKept is how many intervals a listing no app asked for again is
// kept before it is dropped (the broker's apps are gone or moved).
const listingsKept = 10

// get returns the queues of the broker key, read at most maxAge ago,
// calling list for a new listing otherwise. A failed call is not kept: the
// next app to ask calls again.
func (b *brokerQueues) get(ctx context.Context, key string, clock func() time.Time, maxAge time.Duration,
	list func(context.Context) (broker.Queues, error)) (broker.Queues, error) {
	now := clock()
	if q, ok := b.fresh(key, now, maxAge); ok {
		return q, nil
	}
	v, err, _ := b.group.Do(key, func() (any, error) {
		// Another caller's call may have ended since this one looked.
		if q, ok := b.fresh(key, now, maxAge); ok {
			return q, nil
		}
		at := clock()
		q, err := list(ctx)
		if err != nil {
			return nil, err
		}
		b.mu.Lock()
		defer b.mu.Unlock()
		if b.lists == nil {
			b.lists = map[string]queueListing{}
		}
		for k, l := range b.lists {
			if at.Sub(l.at) > listingsKept*maxAge {
				delete(b.lists, k)
			}
		}
		b.lists[key] = queueListing{queues: q, at: at}
		return q, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(broker.Queues), nil
}

func (b *brokerQueues) fresh(key string, now time.Time, maxAge time.Duration) (broker.Queues, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	l, ok := b.lists[key]
	if !ok || now.Sub(l.at) >= maxAge {
		return nil, false
	}
	return l.queues, true
}
