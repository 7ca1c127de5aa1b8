package kit_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"reflect"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/courier-dev/courier/test/poll"

	"github.com/gin-gonic/gin"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/courier-dev/courier/services/kit"
	"github.com/courier-dev/courier/services/kit/messaging"
)

// scrape fetches /metrics and parses it.
func scrape(t *testing.T, r *running) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := client.Get(r.adminURL("/metrics"))
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer func() { _ = resp.Body.Close() }()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return families
}

func labels(m *dto.Metric) map[string]string {
	out := map[string]string{}
	for _, l := range m.GetLabel() {
		out[l.GetName()] = l.GetValue()
	}
	return out
}

func TestRunServesMetricsAndAdminEndpoints(t *testing.T) {
	svc, _ := newService(t, nil)
	router := kit.NewRouter()
	router.GET("/users/:id", func(c *gin.Context) {
		if c.Param("id") != "1" {
			kit.WriteError(c, http.StatusNotFound, "no such user")
			return
		}
		c.JSON(http.StatusOK, gin.H{"id": 1})
	})
	r := start(t, svc, kit.App{Handler: router})

	for _, p := range []string{"/users/1", "/users/1", "/users/2", "/nope"} {
		get(t, r.apiURL(p))
	}
	// Any token is a valid method; it must not become a new series.
	for _, method := range []string{"BREW", "WHEN"} {
		req, err := http.NewRequest(method, r.apiURL("/users/1"), nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", method, err)
		}
		_ = resp.Body.Close()
	}
	families := scrape(t, r)
	counts := map[string]float64{}
	for _, m := range families["http_requests_total"].GetMetric() {
		l := labels(m)
		counts[l["method"]+" "+l["route"]+" "+l["code"]] = m.GetCounter().GetValue()
	}
	wantCounts := map[string]float64{
		"GET /users/:id 200":   2,
		"GET /users/:id 404":   1,
		"GET unmatched 404":    1,
		"_OTHER unmatched 405": 2,
	}
	if !reflect.DeepEqual(counts, wantCounts) {
		t.Errorf("http_requests_total = %v, want %v", counts, wantCounts)
	}

	var observed uint64
	for _, m := range families["http_request_duration_seconds"].GetMetric() {
		observed += m.GetHistogram().GetSampleCount()
	}
	if observed != 6 {
		t.Errorf("http_request_duration_seconds observed %d requests, want 6", observed)
	}
	bi := families["build_info"].GetMetric()
	if len(bi) != 1 || bi[0].GetGauge().GetValue() != 1 {
		t.Fatalf("build_info = %v", bi)
	}
	if l := labels(bi[0]); l["version"] != "v1.2.3" || l["revision"] != "abc123" || l["goversion"] != runtime.Version() {
		t.Errorf("build_info labels = %v", l)
	}
	for _, name := range []string{"go_goroutines", "go_memstats_alloc_bytes", "process_cpu_seconds_total", "process_resident_memory_bytes"} {
		if families[name] == nil {
			t.Errorf("/metrics lacks %s", name)
		}
	}

	if code, body := get(t, r.adminURL("/debug/pprof/")); code != http.StatusOK || !strings.Contains(body, "goroutine") {
		t.Errorf("/debug/pprof/ = %d", code)
	}
	// The admin endpoints stay off the public port.
	if code, _ := get(t, r.apiURL("/metrics")); code != http.StatusNotFound {
		t.Errorf("API /metrics = %d, want 404", code)
	}
	if err := r.stop(t); err != nil {
		t.Errorf("Run = %v, want nil after a clean shutdown", err)
	}
}

func TestReadyzReflectsChecksAndLivezDoesNot(t *testing.T) {
	svc, _ := newService(t, nil, kit.WithReadiness(10*time.Millisecond, 100*time.Millisecond))
	var failure atomic.Pointer[error]
	r := start(t, svc, kit.App{Checks: map[string]kit.CheckFunc{
		"database": func(context.Context) error {
			if err := failure.Load(); err != nil {
				return *err
			}
			return nil
		},
		"cache": func(context.Context) error { return nil },
	}})

	readyz := func(wantCode int, wantBody string) func() bool {
		return func() bool {
			code, body := get(t, r.adminURL("/readyz"))
			return code == wantCode && body == wantBody
		}
	}
	poll.Until(t, "ready", readyz(200, `{"status":"ok","checks":{"cache":"ok","database":"ok"}}`))

	diskGone := errors.New("disk gone")
	failure.Store(&diskGone)
	poll.Until(t, "not ready", readyz(503, `{"status":"unavailable","checks":{"cache":"ok","database":"disk gone"}}`))
	if code, _ := get(t, r.adminURL("/livez")); code != http.StatusOK {
		t.Errorf("/livez = %d while a dependency is down, want 200", code)
	}

	failure.Store(nil)
	poll.Until(t, "ready again", readyz(200, `{"status":"ok","checks":{"cache":"ok","database":"ok"}}`))
}

func TestReadyzServesCachedResult(t *testing.T) {
	svc, _ := newService(t, nil, kit.WithReadiness(time.Hour, time.Second))
	var calls atomic.Int64
	r := start(t, svc, kit.App{Checks: map[string]kit.CheckFunc{"database": func(context.Context) error {
		calls.Add(1)
		return nil
	}}})
	poll.Until(t, "ready", func() bool { code, _ := get(t, r.adminURL("/readyz")); return code == 200 })
	before := calls.Load()
	for range 50 {
		if code, _ := get(t, r.adminURL("/readyz")); code != http.StatusOK {
			t.Fatalf("/readyz = %d", code)
		}
	}
	if after := calls.Load(); after != before || before != 1 {
		t.Errorf("check ran %d times before and %d after 50 probes; want 1 and 1", before, after)
	}
}

func TestReadyzCheckTimesOut(t *testing.T) {
	svc, _ := newService(t, nil, kit.WithReadiness(time.Hour, 50*time.Millisecond))
	r := start(t, svc, kit.App{Checks: map[string]kit.CheckFunc{"database": func(ctx context.Context) error {
		<-ctx.Done() // a dependency that never answers
		return ctx.Err()
	}}})
	poll.Until(t, "not ready on timeout", func() bool {
		code, body := get(t, r.adminURL("/readyz"))
		return code == 503 && strings.Contains(body, `"database":"context deadline exceeded"`)
	})
}

func TestShutdownTurnsReadinessFalseBeforeListenerCloses(t *testing.T) {
	svc, logs := newService(t, map[string]string{"SHUTDOWN_DELAY": "3s"})
	router := kit.NewRouter()
	router.GET("/ping", func(c *gin.Context) { c.String(http.StatusOK, "pong") })
	r := start(t, svc, kit.App{Handler: router})
	poll.Until(t, "ready", func() bool { code, _ := get(t, r.adminURL("/readyz")); return code == 200 })

	r.cancel()
	poll.Until(t, "readiness false", func() bool {
		code, body := get(t, r.adminURL("/readyz"))
		return code == 503 && body == `{"status":"shutting down"}`
	})
	// Readiness is false, and the API still takes new requests: endpoints
	// controllers get time to drop the pod before connections are refused.
	if code, body := get(t, r.apiURL("/ping")); code != http.StatusOK || body != "pong" {
		t.Errorf("API during the shutdown delay = %d %q, want 200 pong", code, body)
	}
	select {
	case err := <-r.done:
		t.Fatalf("Run returned %v during the shutdown delay", err)
	default:
	}
	if err := r.wait(t); err != nil {
		t.Errorf("Run = %v", err)
	}
	if _, err := net.Dial("tcp", svc.HTTPAddr().String()); err == nil {
		t.Error("API listener still accepts after Run returned")
	}
	logs.one(t, "shut down")
}

func TestShutdownFinishesInFlightRequest(t *testing.T) {
	svc, _ := newService(t, nil)
	router := kit.NewRouter()
	entered, release := make(chan struct{}), make(chan struct{})
	router.GET("/slow", func(c *gin.Context) {
		close(entered)
		<-release
		c.String(http.StatusOK, "finished")
	})
	r := start(t, svc, kit.App{Handler: router})

	type result struct {
		code int
		body string
		err  error
	}
	res := make(chan result, 1)
	go func() {
		resp, err := client.Get(r.apiURL("/slow"))
		if err != nil {
			res <- result{err: err}
			return
		}
		defer func() { _ = resp.Body.Close() }()
		b, err := io.ReadAll(resp.Body)
		res <- result{code: resp.StatusCode, body: string(b), err: err}
	}()
	<-entered

	r.cancel()
	poll.Until(t, "readiness false", func() bool { code, _ := get(t, r.adminURL("/readyz")); return code == 503 })
	poll.Until(t, "API listener closed", func() bool {
		c, err := net.Dial("tcp", svc.HTTPAddr().String())
		if err == nil {
			_ = c.Close()
		}
		return err != nil
	})
	select {
	case err := <-r.done:
		t.Fatalf("Run returned %v with a request in flight", err)
	default:
	}

	close(release)
	got := <-res
	if got.err != nil || got.code != http.StatusOK || got.body != "finished" {
		t.Errorf("in-flight request = %d %q %v, want 200 finished", got.code, got.body, got.err)
	}
	if err := r.wait(t); err != nil {
		t.Errorf("Run = %v", err)
	}
}

func TestShutdownGiveUpAfterGrace(t *testing.T) {
	svc, _ := newService(t, map[string]string{"SHUTDOWN_GRACE": "300ms"})
	router := kit.NewRouter()
	entered, release := make(chan struct{}), make(chan struct{})
	t.Cleanup(func() { close(release) })
	router.GET("/stuck", func(*gin.Context) {
		close(entered)
		<-release
	})
	r := start(t, svc, kit.App{Handler: router})
	go func() {
		if resp, err := client.Get(r.apiURL("/stuck")); err == nil {
			_ = resp.Body.Close()
		}
	}()
	<-entered
	began := time.Now()
	err := r.stop(t)
	if err == nil || !strings.Contains(err.Error(), "grace 300ms") {
		t.Fatalf("Run = %v, want an error about the 300ms grace period", err)
	}
	if took := time.Since(began); took > 3*time.Second {
		t.Errorf("Run returned after %s, want about the 300ms grace", took)
	}
}

func TestWorkersRecoverPanicsAndShutdownWaits(t *testing.T) {
	svc, logs := newService(t, nil)
	var stoppedCleanly atomic.Bool
	r := start(t, svc, kit.App{Workers: []func(context.Context) error{
		func(context.Context) error { panic("worker exploded") },
		func(context.Context) error { return errors.New("sync failed") },
		func(ctx context.Context) error {
			<-ctx.Done()
			stoppedCleanly.Store(true)
			return ctx.Err()
		},
	}})

	poll.Until(t, "panic logged", func() bool { return len(logs.find(t, "panic in goroutine")) == 1 })
	p := logs.one(t, "panic in goroutine")
	if p["panic"] != "worker exploded" || !strings.Contains(p["stack"].(string), "TestWorkersRecoverPanicsAndShutdownWaits") {
		t.Errorf("panic line = %v", p)
	}
	poll.Until(t, "error logged", func() bool {
		for _, l := range logs.find(t, "worker failed") {
			if l["error"] == "sync failed" {
				return true
			}
		}
		return false
	})
	if code, _ := get(t, r.adminURL("/livez")); code != http.StatusOK {
		t.Errorf("/livez after a worker panic = %d", code)
	}

	if err := r.stop(t); err != nil {
		t.Errorf("Run = %v", err)
	}
	if !stoppedCleanly.Load() {
		t.Error("Run returned before the worker saw its context end")
	}
	if n := len(logs.find(t, "worker failed")); n != 2 {
		// The panic and the error; the cancelled one is not a failure.
		t.Errorf("%d worker failures logged, want 2", n)
	}
}

func TestRunRefusesConsumersWithoutBroker(t *testing.T) {
	svc, _ := newService(t, nil)
	err := svc.Run(context.Background(), kit.App{Consumers: []kit.Consumer{{
		Queue: "emails", Handler: func(context.Context, messaging.Message) error { return nil },
	}}})
	if err == nil || !strings.Contains(err.Error(), "BROKER_KIND") || !strings.Contains(err.Error(), "App.Consumers") {
		t.Errorf("Run = %v, want an error naming App.Consumers and BROKER_KIND", err)
	}
}

// An App that cannot work is refused with the field at fault.
func TestRunRefusesAnInvalidApp(t *testing.T) {
	for _, tc := range []struct {
		name string
		app  kit.App
		want string
	}{
		{"nameless check", kit.App{Checks: map[string]kit.CheckFunc{"": func(context.Context) error { return nil }}}, "App.Checks"},
		{"nil check", kit.App{Checks: map[string]kit.CheckFunc{"database": nil}}, `App.Checks["database"]`},
		{"nil worker", kit.App{Workers: []func(context.Context) error{nil}}, "App.Workers[0]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			svc, _ := newService(t, nil)
			if err := svc.Run(context.Background(), tc.app); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Run = %v, want an error naming %s", err, tc.want)
			}
		})
	}
}
