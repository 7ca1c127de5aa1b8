package monitoring

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"

	"github.com/courier-dev/courier/test/poll"
)

// scrapeTarget is one static scrape target and the labels a Kubernetes
// scrape would give its series (namespace, service), which the dashboard
// and the alert rules select and group by.
type scrapeTarget struct {
	addr   string
	labels map[string]string
}

// prometheus is a running Debian prometheus server and a client of its
// HTTP API.
type prometheus struct {
	API promv1.API
	URL string
}

// startPrometheus runs a real Prometheus on a free loopback port that
// scrapes targets every second and evaluates ruleFiles every second, with a
// fresh data directory. It is stopped when the test ends; its log is shown
// if the test failed.
func startPrometheus(t *testing.T, ruleFiles []string, targets []scrapeTarget) *prometheus {
	t.Helper()
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatalf("prometheus not found (apt-get install prometheus): %v", err)
	}

	// JSON is YAML, and encoding/json keeps the config's quoting right.
	type staticConfig struct {
		Targets []string          `json:"targets"`
		Labels  map[string]string `json:"labels"`
	}
	var static []staticConfig
	for _, tg := range targets {
		static = append(static, staticConfig{Targets: []string{tg.addr}, Labels: tg.labels})
	}
	cfg, err := json.MarshalIndent(map[string]any{
		"global": map[string]string{
			// Short, so a test waits for a second or two of scrapes and
			// rule evaluations, not the defaults' minute.
			"scrape_interval":     "1s",
			"scrape_timeout":      "1s",
			"evaluation_interval": "1s",
		},
		"rule_files":     ruleFiles,
		"scrape_configs": []any{map[string]any{"job_name": "courier", "static_configs": static}},
	}, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "prometheus.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = logFile.Close() }() // the child keeps its own descriptor

	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))
	cmd := exec.Command(bin,
		"--config.file="+cfgPath,
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr,
	)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// Die with the test binary even if it is killed without cleaning up.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start prometheus: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("prometheus did not exit cleanly on SIGTERM: %v", err)
			}
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			err := <-done
			t.Errorf("prometheus did not exit within 10s of SIGTERM and was killed (%v)", err)
		}
		if t.Failed() {
			out, _ := os.ReadFile(logPath)
			t.Logf("prometheus config:\n%s\nprometheus log:\n%s", cfg, out)
		}
	})

	url := "http://" + addr
	poll.Until(t, "prometheus to answer /-/ready", func() bool {
		select {
		case err := <-done:
			done <- err // for the cleanup
			out, _ := os.ReadFile(logPath)
			t.Fatalf("prometheus exited at start (%v):\n%s", err, out)
		default:
		}
		resp, err := http.Get(url + "/-/ready")
		if err != nil {
			return false
		}
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	client, err := api.NewClient(api.Config{Address: url})
	if err != nil {
		t.Fatal(err)
	}
	return &prometheus{API: promv1.NewAPI(client), URL: url}
}

// waitTargetsUp waits until Prometheus has scraped every target
// successfully, so a later empty query cannot be a scrape failure.
func (p *prometheus) waitTargetsUp(ctx context.Context, t *testing.T, want int) {
	t.Helper()
	last := "no answer"
	defer func() {
		if t.Failed() {
			t.Logf("targets: %s", last)
		}
	}()
	poll.Within(t, 20*time.Second, fmt.Sprintf("prometheus to scrape all %d targets", want), func() bool {
		res, err := p.API.Targets(ctx)
		if err != nil {
			last = err.Error()
			return false
		}
		up := 0
		last = ""
		for _, tg := range res.Active {
			last += fmt.Sprintf("\n  %s %s %s", tg.ScrapeURL, tg.Health, tg.LastError)
			if tg.Health == promv1.HealthGood {
				up++
			}
		}
		return up == want && len(res.Active) == want
	})
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("pick a free port: %v", err)
	}
	defer func() { _ = l.Close() }()
	return l.Addr().(*net.TCPAddr).Port
}
