package kit

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/courier-dev/courier/services/kit/contract"
)

// CheckFunc reports whether one dependency is usable. It runs in the
// background under a short timeout, never per probe.
type CheckFunc func(ctx context.Context) error

type namedCheck struct {
	name  string
	check CheckFunc
	// informational checks are reported but do not gate readiness.
	informational bool
}

// The status values of /readyz: ok and degraded answer 200, unavailable 503.
const (
	statusOK          = "ok"
	statusDegraded    = "degraded"
	statusUnavailable = "unavailable"
)

// readyStatus is the JSON body of /readyz.
type readyStatus struct {
	Status string            `json:"status"`
	Checks map[string]string `json:"checks,omitempty"`
}

// readinessState is one rendered result of all checks; /readyz serves it as is.
type readinessState struct {
	ok   bool
	body []byte
}

// readiness caches the result of the registered checks. A probe reads the
// cache, so a kubelet probing every second causes no traffic to the broker
// or the database; the cache is refreshed every interval in the background.
type readiness struct {
	log      *slog.Logger
	interval time.Duration
	timeout  time.Duration

	mu     sync.Mutex
	checks []namedCheck

	state        atomic.Pointer[readinessState]
	shuttingDown atomic.Bool
	// poke asks the loop for a refresh now, when a dependency is known to
	// have changed (the broker connected), instead of at the next tick.
	poke chan struct{}
}

// refreshSoon asks the background loop to refresh without waiting for the
// next tick.
func (r *readiness) refreshSoon() {
	select {
	case r.poke <- struct{}{}:
	default: // one is already pending
	}
}

func (r *readiness) add(name string, check CheckFunc, informational bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.checks = append(r.checks, namedCheck{name: name, check: check, informational: informational})
}

// refresh runs every check concurrently, each under the timeout, and stores
// the result.
func (r *readiness) refresh(ctx context.Context) {
	r.mu.Lock()
	checks := append([]namedCheck(nil), r.checks...)
	r.mu.Unlock()

	results := make([]error, len(checks))
	var wg sync.WaitGroup
	for i, c := range checks {
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, r.timeout)
			defer cancel()
			results[i] = safeCheck(cctx, c.check)
		})
	}
	wg.Wait()

	st := readyStatus{Status: statusOK, Checks: make(map[string]string, len(checks))}
	for i, c := range checks {
		switch {
		case results[i] == nil:
			st.Checks[c.name] = "ok"
		case c.informational:
			// Still ready: say what is missing without turning traffic away.
			st.Checks[c.name] = results[i].Error()
			if st.Status == statusOK {
				st.Status = statusDegraded
			}
		default:
			st.Status = statusUnavailable
			st.Checks[c.name] = results[i].Error()
		}
	}
	body, _ := json.Marshal(st) // a map of strings always marshals
	next := &readinessState{ok: st.Status != statusUnavailable, body: body}
	if prev := r.state.Swap(next); prev == nil || prev.ok != next.ok {
		r.log.LogAttrs(ctx, levelFor(next.ok), "readiness changed",
			slog.Bool("ready", next.ok), slog.Any("checks", st.Checks))
	}
}

func levelFor(ok bool) slog.Level {
	if ok {
		return slog.LevelInfo
	}
	return slog.LevelWarn
}

// safeCheck runs check and turns a panic into an error, so one buggy check
// cannot take the process down through the background loop.
func safeCheck(ctx context.Context, check CheckFunc) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("check panicked: %v", r)
		}
	}()
	return check(ctx)
}

// loop refreshes until ctx ends.
func (r *readiness) loop(ctx context.Context) {
	t := time.NewTicker(r.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			r.refresh(ctx)
		case <-r.poke:
			r.refresh(ctx)
		}
	}
}

var (
	bodyShuttingDown = mustJSON(readyStatus{Status: "shutting down"})
	bodyStarting     = mustJSON(readyStatus{Status: "starting"})
)

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

func (r *readiness) serveHTTP(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	var (
		code = http.StatusServiceUnavailable
		body []byte
	)
	switch st := r.state.Load(); {
	case r.shuttingDown.Load():
		body = bodyShuttingDown
	case st == nil:
		body = bodyStarting
	default:
		body = st.body
		if st.ok {
			code = http.StatusOK
		}
	}
	w.WriteHeader(code)
	_, _ = w.Write(body)
}

// adminHandler serves the contract's admin endpoints. It is a plain
// ServeMux: none of the API middleware belongs on probes and scrapes.
func adminHandler(ready *readiness, reg *prometheus.Registry) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+contract.LivezPath, func(w http.ResponseWriter, _ *http.Request) {
		// Liveness never looks at dependencies: a broker outage must not
		// make the kubelet restart every pod.
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_, _ = w.Write([]byte(`{"status":"ok"}`))
	})
	mux.HandleFunc("GET "+contract.ReadyzPath, ready.serveHTTP)
	mux.Handle("GET "+contract.MetricsPath, promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc(contract.PprofPath, pprof.Index)
	mux.HandleFunc(contract.PprofPath+"cmdline", pprof.Cmdline)
	mux.HandleFunc(contract.PprofPath+"profile", pprof.Profile)
	mux.HandleFunc(contract.PprofPath+"symbol", pprof.Symbol)
	mux.HandleFunc(contract.PprofPath+"trace", pprof.Trace)
	return mux
}
