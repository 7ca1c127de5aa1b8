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
	svc.Engine().GET("/users/:id", func(c *gin.Context) {
		if c.Param("id") != "1" {
			kit.WriteError(c, http.StatusNotFound, "no such user")
			return
		}
		c.JSON(http.StatusOK, gin.H{"id": 1})
	})
	r := start(t, svc)

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
	svc.AddReadinessCheck("database", func(context.Context) error {
		if err := failure.Load(); err != nil {
			return *err
		}
		return nil
	})
	svc.AddReadinessCheck("cache", func(context.Context) error { return nil })
	r := start(t, svc)

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
	svc.AddReadinessCheck("database", func(context.Context) error {
		calls.Add(1)
		return nil
	})
	r := start(t, svc)
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
	svc.AddReadinessCheck("database", func(ctx context.Context) error {
		<-ctx.Done() // a dependency that never answers
		return ctx.Err()
	})
	r := start(t, svc)
	poll.Until(t, "not ready on timeout", func() bool {
		code, body := get(t, r.adminURL("/readyz"))
		return code == 503 && strings.Contains(body, `"database":"context deadline exceeded"`)
	})
}

func TestShutdownTurnsReadinessFalseBeforeListenerCloses(t *testing.T) {
	svc, logs := newService(t, map[string]string{"SHUTDOWN_DELAY": "3s"})
	svc.Engine().GET("/ping", func(c *gin.Context) { c.String(http.StatusOK, "pong") })
	r := start(t, svc)
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
	entered, release := make(chan struct{}), make(chan struct{})
	svc.Engine().GET("/slow", func(c *gin.Context) {
		close(entered)
		<-release
		c.String(http.StatusOK, "finished")
	})
	r := start(t, svc)

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
	entered, release := make(chan struct{}), make(chan struct{})
	t.Cleanup(func() { close(release) })
	svc.Engine().GET("/stuck", func(*gin.Context) {
		close(entered)
		<-release
	})
	r := start(t, svc)
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

func TestGoRecoversPanicsAndShutdownWaits(t *testing.T) {
	svc, logs := newService(t, nil)
	svc.Go(func(context.Context) error { panic("worker exploded") })
	svc.Go(func(context.Context) error { return errors.New("sync failed") })

	var stoppedCleanly atomic.Bool
	svc.Go(func(ctx context.Context) error {
		<-ctx.Done()
		stoppedCleanly.Store(true)
		return ctx.Err()
	})
	// A goroutine started by a handler gets the service's lifetime, not the
	// request's.
	started := make(chan error, 1)
	svc.Engine().POST("/jobs", func(c *gin.Context) {
		svc.Go(func(ctx context.Context) error {
			started <- ctx.Err()
			return nil
		})
		c.Status(http.StatusAccepted)
	})
	r := start(t, svc)

	poll.Until(t, "panic logged", func() bool { return len(logs.find(t, "panic in goroutine")) == 1 })
	p := logs.one(t, "panic in goroutine")
	if p["panic"] != "worker exploded" || !strings.Contains(p["stack"].(string), "TestGoRecoversPanicsAndShutdownWaits") {
		t.Errorf("panic line = %v", p)
	}
	poll.Until(t, "error logged", func() bool {
		for _, l := range logs.find(t, "goroutine failed") {
			if l["error"] == "sync failed" {
				return true
			}
		}
		return false
	})

	resp, err := client.Post(r.apiURL("/jobs"), "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if err := <-started; err != nil {
		t.Errorf("goroutine from a handler started with a done context: %v", err)
	}
	if code, _ := get(t, r.adminURL("/livez")); code != http.StatusOK {
		t.Errorf("/livez after a goroutine panic = %d", code)
	}

	if err := r.stop(t); err != nil {
		t.Errorf("Run = %v", err)
	}
	if !stoppedCleanly.Load() {
		t.Error("Run returned before the goroutine saw its context end")
	}
	if n := len(logs.find(t, "goroutine failed")); n != 2 {
		// The panic and the error; the cancelled one is not a failure.
		t.Errorf("%d goroutine failures logged, want 2", n)
	}
}

func TestRunRefusesConsumersWithoutBroker(t *testing.T) {
	svc, _ := newService(t, nil)
	svc.Consume("emails", func(context.Context, messaging.Message) error { return nil }, messaging.ConsumeOptions{})
	err := svc.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "BROKER_KIND") {
		t.Errorf("Run = %v, want an error naming BROKER_KIND", err)
	}
}
