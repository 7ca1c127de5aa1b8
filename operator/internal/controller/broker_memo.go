package controller

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/courier-dev/courier/operator/internal/broker"
)

// inputHash identifies everything Declare's result depends on (the
// driver's memoInput: the broker's address and every credential; and the
// topology), so a change to any of it (a password, a queue, the broker's
// address) declares again before the resync interval is up.
func inputHash(conn any, t broker.Topology) string {
	raw, err := json.Marshal(struct {
		Conn     any
		Topology broker.Topology
	}{conn, t})
	if err != nil {
		panic(fmt.Sprintf("marshal the broker input: %v", err)) // plain structs always marshal
	}
	sum := sha256.Sum256(raw)
	return hex.EncodeToString(sum[:])
}

// brokerMemo remembers, per app, when the reconciler last made the broker
// match which input and last polled the queue depths. Reconciles come for
// many reasons (a Deployment's status, a status write of its own); the memo
// lets them skip the broker round trips unless the input changed, a resync
// is due (drift on the broker side is repaired then) or the depths are due.
// It lives in memory only: after a restart the first reconcile declares.
type brokerMemo struct {
	mu   sync.Mutex
	apps map[client.ObjectKey]memoEntry
}

type memoEntry struct {
	// uid tells a recreated app of the same name from the one remembered.
	uid        types.UID
	input      string
	declaredAt time.Time
	polledAt   time.Time
}

func (m *brokerMemo) fresh(key client.ObjectKey, uid types.UID, input string, now time.Time, resync time.Duration) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.apps[key]
	return ok && e.uid == uid && e.input == input && now.Sub(e.declaredAt) < resync
}

func (m *brokerMemo) declared(key client.ObjectKey, uid types.UID, input string, now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.apps == nil {
		m.apps = map[client.ObjectKey]memoEntry{}
	}
	e := m.apps[key]
	if e.uid != uid || e.input != input {
		// New input: poll the depths of what was just declared at once.
		e = memoEntry{uid: uid}
	}
	e.input, e.declaredAt = input, now
	m.apps[key] = e
}

func (m *brokerMemo) statsDue(key client.ObjectKey, now time.Time, interval time.Duration) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.apps[key]
	return !ok || now.Sub(e.polledAt) >= interval
}

func (m *brokerMemo) polled(key client.ObjectKey, now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e, ok := m.apps[key]; ok {
		e.polledAt = now
		m.apps[key] = e
	}
}

func (m *brokerMemo) forget(key client.ObjectKey) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.apps, key)
}
