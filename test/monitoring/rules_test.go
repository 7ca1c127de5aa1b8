// Package monitoring tests the alerting rules and the Grafana dashboard that
// ship in config/prometheus with Prometheus' own tools: the rules' unit tests
// with promtool, and every dashboard query and alert expression against a
// real Prometheus scraping the local stack (live_test.go).
package monitoring

import (
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/courier-dev/courier/services/kit/contract"
)

const rulesDir = "../../config/prometheus/rules"

// promtool is Debian's prometheus package's rule checker; .ci/run installs it.
func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatalf("promtool not found (apt-get install prometheus): %v", err)
	}
	return p
}

func TestAlertRulesPassTheirUnitTests(t *testing.T) {
	bin := promtool(t)
	for _, args := range [][]string{
		{"check", "rules", "courier-alerts.yaml"},
		{"test", "rules", "courier-alerts_test.yaml"},
	} {
		cmd := exec.Command(bin, args...)
		cmd.Dir = rulesDir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// TestDashboardUsesContractMetrics keeps the dashboard honest: every metric it
// queries is one the contract says services export (or the operator's queue
// gauges), so a renamed metric cannot leave a silently empty panel.
func TestDashboardUsesContractMetrics(t *testing.T) {
	dash := loadDashboard(t)
	known := []string{
		contract.MetricHTTPRequests, contract.MetricHTTPDuration + "_bucket",
		contract.MetricMessagesPublished, contract.MetricMessagesConsumed,
		contract.MetricMessageDuration + "_bucket", contract.MetricBuildInfo,
		"courier_queue_messages", "courier_queue_consumers", "courier_queue_dead_letters",
	}
	metric := regexp.MustCompile(`[a-z_]+(_total|_bucket|_info|_messages|_consumers|_letters)\b`)
	for _, p := range dash.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			names := metric.FindAllString(tg.Expr, -1)
			if len(names) == 0 {
				t.Errorf("panel %q: no known metric in %q", p.Title, tg.Expr)
			}
			for _, n := range names {
				if !slices.Contains(known, n) {
					t.Errorf("panel %q queries %s, which nothing exports", p.Title, n)
				}
			}
		}
	}
}
