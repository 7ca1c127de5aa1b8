//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/courier-dev/courier/services/kit/contract"
)

// metrics are the families one pod exposes on its admin port.
type metrics map[string]*dto.MetricFamily

// scrape reads base's /metrics in the Prometheus text format, the one
// Prometheus falls back to and every client library serves.
func scrape(ctx context.Context, base string) (metrics, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+contract.MetricsPath, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", string(expfmt.NewFormat(expfmt.TypeTextPlain)))
	resp, err := httpClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", base, err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return nil, fmt.Errorf("scrape %s: %s %s", base, resp.Status, body)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("parse metrics of %s: %w", base, err)
	}
	return families, nil
}

// counter sums the counter name's series whose labels include match; ok is
// false when no series matches.
func (m metrics) counter(name string, match map[string]string) (sum float64, ok bool) {
	f := m[name]
	if f == nil {
		return 0, false
	}
	for _, s := range f.GetMetric() {
		if matches(s, match) {
			sum += s.GetCounter().GetValue()
			ok = true
		}
	}
	return sum, ok
}

// labelValues returns every value the label takes on name's series.
func (m metrics) labelValues(name, label string) map[string]bool {
	values := map[string]bool{}
	for _, s := range m[name].GetMetric() {
		for _, l := range s.GetLabel() {
			if l.GetName() == label {
				values[l.GetValue()] = true
			}
		}
	}
	return values
}

func matches(s *dto.Metric, match map[string]string) bool {
	have := make(map[string]string, len(s.GetLabel()))
	for _, l := range s.GetLabel() {
		have[l.GetName()] = l.GetValue()
	}
	for k, v := range match {
		if have[k] != v {
			return false
		}
	}
	return true
}

// adminForwards opens one port-forward to the admin port of every ready pod
// of one service of the app, for scraping each pod: a Service would balance
// the scrapes across pods and mix their counters.
func (c *cluster) adminForwards(t *testing.T, ctx context.Context, cfg config, service string) map[string]string {
	t.Helper()
	pods, err := c.readyPods(ctx, cfg.namespace, client.MatchingLabels(serviceSelector(cfg.app, service)))
	if err != nil {
		t.Fatalf("list pods of %s: %v", service, err)
	}
	if len(pods) == 0 {
		t.Fatalf("%s: %v:\n%s", service, errNoPods, c.describePods(ctx, cfg.namespace, client.MatchingLabels(serviceSelector(cfg.app, service))))
	}
	urls := map[string]string{}
	for i := range pods {
		urls[pods[i].Name] = c.forwardPod(t, &pods[i], adminPort(t, &pods[i]))
	}
	return urls
}

// adminPort is the number of pod's container port named "admin", where
// the contract serves /metrics.
func adminPort(t *testing.T, pod *corev1.Pod) int32 {
	t.Helper()
	port := containerPort(pod, contract.AdminPortName)
	if port == 0 {
		t.Fatalf("pod %s has no container port named %q", pod.Name, contract.AdminPortName)
	}
	return port
}

// sumCounter scrapes every pod in urls (pod name to base URL) and sums the
// counter's matching series over them.
func sumCounter(ctx context.Context, urls map[string]string, name string, match map[string]string) (float64, error) {
	var total float64
	for _, pod := range slices.Sorted(maps.Keys(urls)) {
		m, err := scrape(ctx, urls[pod])
		if err != nil {
			return 0, fmt.Errorf("pod %s: %w", pod, err)
		}
		v, _ := m.counter(name, match)
		total += v
	}
	return total, nil
}

// serviceSelector selects the pods of one service of app; it is the
// Deployment's selector.
func serviceSelector(app, service string) map[string]string {
	return map[string]string{labelName: service, labelInstance: app}
}
