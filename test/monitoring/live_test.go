package monitoring

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
	"sigs.k8s.io/yaml"

	"github.com/courier-dev/courier/hack/local/stack"
	"github.com/courier-dev/courier/test/blogapi"
	"github.com/courier-dev/courier/test/poll"
)

const alertRulesFile = "courier-alerts.yaml"

// operatorOnly is why the courier_queue_* queries are excluded below.
const operatorOnly = "courier_queue_* gauges are exported only by the operator's manager, " +
	"which polls the broker while reconciling a MicroserviceApp in a Kubernetes cluster; " +
	"the local stack runs the services without an operator, so nothing exports them"

// exclusion names a query that can never return a series against the local
// stack, the metric that makes it so, and why.
type exclusion struct {
	metric, reason string
}

// notLocal are the queries the live test cannot expect a series from, keyed
// as the test names them. Keep it minimal: each entry must name a query that
// exists and that selects its metric, which the test checks.
var notLocal = map[string]exclusion{
	`panel "Queue depth"`:                  {"courier_queue_messages", operatorOnly},
	`panel "Consumers per queue"`:          {"courier_queue_consumers", operatorOnly},
	`panel "Dead letters"`:                 {"courier_queue_dead_letters", operatorOnly},
	`alert CourierQueueGrowing`:            {"courier_queue_messages", operatorOnly},
	`alert CourierDeadLetterQueueNotEmpty`: {"courier_queue_dead_letters", operatorOnly},
}

// builtins are values for Grafana's built-in interval variables, as Grafana
// would pick them for a Prometheus data source with its default 15s scrape
// interval; every range they stand for covers this test's 1s scrapes many
// times over.
var builtins = map[string]string{
	"__rate_interval": "1m",
	"__interval":      "15s",
	"__range":         "5m",
}

// threshold matches a comparison of an expression with a number: "> 0.05",
// "> 100", "== bool 1".
var threshold = regexp.MustCompile(`\s*(?:==|!=|>=|<=|>|<)\s*(?:bool\s+)?[-+]?(?:[0-9]*\.)?[0-9]+(?:[eE][-+]?[0-9]+)?`)

// withoutThresholds is an alert expression with its comparisons against
// numbers removed: "A > 0.05" becomes "A", "A > 100 and B > 0" becomes
// "A and B". A comparison filters out every series that does not cross the
// threshold, so the full expression is rightly empty on a healthy system
// and "returns a series" would prove nothing. Stripping only the
// comparisons, rather than querying the inner selector alone, keeps
// everything else the alert computes (the rate windows, the aggregation by
// namespace and service, the ratio, histogram_quantile), so a series means
// the alert's own arithmetic finds data with the labels it groups by; the
// full expression is evaluated too, by Prometheus' rule manager, and must
// be healthy. A comparison binds more loosely than arithmetic and more
// tightly than and/or/unless, so removing it leaves its left-hand side.
func withoutThresholds(expr string) string {
	return strings.TrimSpace(threshold.ReplaceAllString(expr, ""))
}

// query is one PromQL expression the test expects a series from.
type query struct {
	name string // how the test and its log refer to it
	key  string // the key in notLocal: the panel or the alert
	expr string
}

// TestEveryQueryReturnsASeries runs the blog the way `make local` does
// (hack/local/stack: built from this tree, an embedded NATS JetStream, the
// SMTP sink), lets a real Prometheus scrape the four services' admin ports
// and evaluate the alert rules, drives traffic through the gateway, and
// checks that every query of the Grafana dashboard and every alert rule's
// expression (thresholds removed, see withoutThresholds) returns at least
// one series, except those listed in notLocal.
//
// What each query needs (measured once by querying every query after each
// step of this traffic in turn, with no traffic as the first step):
//   - Build, and the Messages consumed panel and the CourierMessagesDeadLettered
//     alert: nothing; build_info is set at start and the mailer's consumer
//     creates its success/retry/dead_letter series at zero when it starts.
//   - Requests per second, Request latency p50/p99, Slowest routes and
//     CourierServiceHighLatency: any request through the gateway.
//   - Messages published and CourierPublishFailing: a publish (the sign-up's
//     welcome job from users, the comment's notification job from posts);
//     the kit creates a queue's success and error series at its first publish.
//   - Message handling p99: a job handled by the mailer.
//   - Error ratio (5xx) and CourierServiceHighErrorRate: a 5xx answer; the
//     gateway's 502 for a request to the users service once it has stopped.
func TestEveryQueryReturnsASeries(t *testing.T) {
	buildCtx, cancelBuild := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancelBuild()
	root, err := stack.ModuleRoot(buildCtx)
	if err != nil {
		t.Fatal(err)
	}
	bin := t.TempDir()
	start := time.Now()
	if err := stack.Build(buildCtx, root, bin, raceEnabled); err != nil {
		t.Fatal(err)
	}
	t.Logf("built the four services (race detector %v) in %s", raceEnabled, time.Since(start).Round(time.Millisecond))

	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	start = time.Now()
	// Free ports rather than make local's fixed 8080/9090: other tests and
	// a developer's own `make local` may hold those.
	ports, err := stack.FreePorts()
	if err != nil {
		t.Fatal(err)
	}
	st, err := stack.Start(ctx, stack.Options{BinDir: bin, DataDir: t.TempDir(), Ports: ports})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stopCtx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := st.Stop(stopCtx); err != nil {
			t.Error(err)
		}
		if t.Failed() {
			for _, p := range st.Processes() {
				t.Logf("%s output:\n%s", p.Name, p.Logs())
			}
		}
	})

	// The labels a Kubernetes scrape adds (the pod's namespace, its
	// Service) are what the dashboard and the rules select on; the
	// services' own metrics carry neither.
	var targets []scrapeTarget
	for _, p := range st.Processes() {
		u, err := url.Parse(p.AdminURL)
		if err != nil {
			t.Fatal(err)
		}
		targets = append(targets, scrapeTarget{addr: u.Host, labels: map[string]string{"namespace": stack.Namespace, "service": p.Name}})
	}
	rules, err := filepath.Abs(filepath.Join(rulesDir, alertRulesFile))
	if err != nil {
		t.Fatal(err)
	}
	prom := startPrometheus(t, []string{rules}, targets)
	prom.waitTargetsUp(ctx, t, len(targets))
	t.Logf("stack and prometheus up, every target scraped, %s after build", time.Since(start).Round(time.Millisecond))

	driveTraffic(ctx, t, st)
	trafficDone := time.Now()

	queries := append(dashboardQueries(ctx, t, prom), alertQueries(ctx, t, prom)...)
	var live []query
	used := map[string]bool{}
	for _, q := range queries {
		if ex, ok := notLocal[q.key]; ok {
			used[q.key] = true
			if !strings.Contains(q.expr, ex.metric) {
				t.Errorf("%s is excluded for %s, which it does not query: %s", q.name, ex.metric, q.expr)
			}
			// It cannot return a series here, but it must still be
			// valid PromQL that Prometheus evaluates.
			if _, _, _, err := prom.API.Query(ctx, q.expr, time.Now()); err != nil {
				t.Errorf("%s: %s: %v", q.name, q.expr, err)
			}
			continue
		}
		live = append(live, q)
	}
	for key := range notLocal {
		if !used[key] {
			t.Errorf("notLocal lists %s, which is no query of the dashboard or the rules: remove it", key)
		}
	}

	// Every round queries what is still empty; a round at most every
	// 250ms, since new samples arrive once per second.
	pending := slices.Clone(live)
	last := map[string]string{}
	found := map[string]string{}
	var lastRound time.Time
	defer func() {
		if t.Failed() {
			for _, q := range pending {
				t.Errorf("%s returned no series; last answer: %s\n  %s", q.name, last[q.name], q.expr)
			}
		}
	}()
	poll.Within(t, 30*time.Second, "every dashboard query and alert expression to return a series", func() bool {
		if time.Since(lastRound) < 250*time.Millisecond {
			return false
		}
		lastRound = time.Now()
		pending = slices.DeleteFunc(pending, func(q query) bool {
			res, _, _, err := prom.API.Query(ctx, q.expr, time.Now())
			var apiErr *promv1.Error
			if errors.As(err, &apiErr) && apiErr.Type == promv1.ErrBadData {
				t.Fatalf("%s is not valid PromQL: %v\n  %s", q.name, err, q.expr)
			}
			if err != nil {
				last[q.name] = err.Error()
				return false
			}
			vec, ok := res.(model.Vector)
			if !ok {
				t.Fatalf("%s returns a %s, not a vector of series: %s", q.name, res.Type(), q.expr)
			}
			if len(vec) == 0 {
				last[q.name] = "an empty vector"
				return false
			}
			found[q.name] = fmt.Sprintf("%d series, %s after the traffic", len(vec), time.Since(trafficDone).Round(100*time.Millisecond))
			return true
		})
		return len(pending) == 0
	})
	for _, q := range live {
		t.Logf("%s: %s", q.name, found[q.name])
	}
	t.Logf("excluded (no series locally): %d queries; total run %s after build", len(queries)-len(live), time.Since(start).Round(time.Millisecond))
}

// driveTraffic exercises every metric the dashboard and the rules query:
// requests through the gateway to users and posts, e-mail jobs published by
// both and handled by the mailer, and one 5xx.
func driveTraffic(ctx context.Context, t *testing.T, st *stack.Stack) {
	t.Helper()
	api := &blogapi.Client{T: t, Ctx: ctx, Base: st.GatewayURL()}
	// A sign-up publishes a welcome job (users); a comment publishes a
	// notification job (posts); the mailer handles both.
	ada := api.Register("Ada Lovelace", "ada@example.com")
	token := api.SignIn("ada@example.com")
	post, _ := api.CreatePost(token, "Notes on the Analytical Engine", "It weaves algebraic patterns.")
	api.Comment(token, post, "Reading this back a year later: still true.")
	if _, err := st.Sink.WaitCount(ctx, 2); err != nil {
		t.Fatalf("waiting for the welcome and the comment e-mail: %v", err)
	}
	// A 5xx: with users stopped (cleanly, its jobs already handled), the
	// gateway answers 502 for a route to it, as it would in a cluster with
	// users down. The other three keep being scraped.
	if err := st.Service("users").Stop(ctx, 15*time.Second); err != nil {
		t.Fatal(err)
	}
	api.Expect(http.MethodGet, fmt.Sprintf("/api/users/%d", ada), "", nil, http.StatusBadGateway, nil)
}

// dashboardQueries are the PromQL expressions of every panel target, with
// the dashboard's variables set as a user of the local stack would set
// them. The variables' own label_values queries are run first, against the
// scraped data, as Grafana runs them.
func dashboardQueries(ctx context.Context, t *testing.T, prom *prometheus) []query {
	t.Helper()
	dash := loadDashboard(t)
	vars := maps.Clone(builtins)
	// What each variable's query must offer; a variable without
	// "All" is set to the value here.
	want := map[string][]string{
		"namespace": {stack.Namespace},
		"service":   stack.Services,
	}
	labelValues := regexp.MustCompile(`^label_values\((.+),\s*(\w+)\)$`)
	for _, v := range dash.Templating.List {
		if v.Type != "query" {
			continue // the data source picker
		}
		q, err := v.QueryString()
		if err != nil {
			t.Fatal(err)
		}
		m := labelValues.FindStringSubmatch(strings.TrimSpace(q))
		if m == nil {
			t.Fatalf("variable %s: query %q is not label_values(selector, label), the only form this test resolves", v.Name, q)
		}
		selector, unknown := expand(m[1], vars)
		if len(unknown) > 0 {
			t.Fatalf("variable %s: query %q uses %v, not defined before it", v.Name, q, unknown)
		}
		wanted, ok := want[v.Name]
		if !ok {
			t.Fatalf("variable %s: this test does not know which value the local stack gives it", v.Name)
		}
		var got model.LabelValues
		poll.Until(t, fmt.Sprintf("variable %s (%s) to offer %v", v.Name, q, wanted), func() bool {
			var err error
			got, _, _, err = prom.API.LabelValues(ctx, m[2], []string{selector}, time.Now().Add(-5*time.Minute), time.Now())
			if err != nil {
				t.Fatalf("variable %s: %v", v.Name, err)
			}
			for _, w := range wanted {
				if !slices.Contains(got, model.LabelValue(w)) {
					return false
				}
			}
			return true
		})
		switch {
		case v.IncludeAll && v.AllValue != "":
			vars[v.Name] = v.AllValue
		case v.IncludeAll:
			// Grafana's All without a custom value: a regex of the values.
			vars[v.Name] = "(" + strings.Join(wanted, "|") + ")"
		case len(wanted) == 1:
			vars[v.Name] = wanted[0]
		default:
			t.Fatalf("variable %s takes one value, but the test wants %v", v.Name, wanted)
		}
	}

	var out []query
	for _, p := range dash.Panels {
		for i, tg := range p.Targets {
			expr, unknown := expand(tg.Expr, vars)
			if len(unknown) > 0 {
				t.Errorf("panel %q: unknown variables %v in %s", p.Title, unknown, tg.Expr)
				continue
			}
			id := tg.RefID
			if id == "" {
				id = fmt.Sprint(i + 1)
			}
			key := fmt.Sprintf("panel %q", p.Title)
			out = append(out, query{name: fmt.Sprintf("%s query %s", key, id), key: key, expr: expr})
		}
	}
	return out
}

// alertQueries are the alert rules as the running Prometheus loaded them
// from the rules file, with their thresholds removed (withoutThresholds).
// It waits until the rule manager has evaluated each one, and requires the
// evaluation of the full expression to be healthy.
func alertQueries(ctx context.Context, t *testing.T, prom *prometheus) []query {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(rulesDir, alertRulesFile))
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Groups []struct {
			Rules []struct {
				Alert string `json:"alert"`
			} `json:"rules"`
		} `json:"groups"`
	}
	if err := yaml.Unmarshal(data, &file); err != nil {
		t.Fatal(err)
	}
	var inFile []string
	for _, g := range file.Groups {
		for _, r := range g.Rules {
			if r.Alert != "" {
				inFile = append(inFile, r.Alert)
			}
		}
	}
	if len(inFile) == 0 {
		t.Fatalf("%s holds no alert rule", alertRulesFile)
	}

	var loaded []promv1.AlertingRule
	why := "no answer"
	defer func() {
		if t.Failed() {
			t.Logf("rules: %s", why)
		}
	}()
	poll.Until(t, "prometheus to load and evaluate every alert rule", func() bool {
		res, err := prom.API.Rules(ctx, nil)
		if err != nil {
			why = err.Error()
			return false
		}
		loaded, why = loaded[:0], ""
		for _, g := range res.Groups {
			for _, r := range g.Rules {
				if a, ok := r.(promv1.AlertingRule); ok {
					if a.Health != promv1.RuleHealthGood {
						why = fmt.Sprintf("%s: health %s %s", a.Name, a.Health, a.LastError)
						return false
					}
					loaded = append(loaded, a)
				}
			}
		}
		why += fmt.Sprintf("%d of %d alert rules loaded", len(loaded), len(inFile))
		return len(loaded) == len(inFile)
	})
	var out []query
	for _, a := range loaded {
		if !slices.Contains(inFile, a.Name) {
			t.Errorf("prometheus loaded alert %s, which %s does not hold", a.Name, alertRulesFile)
		}
		key := "alert " + a.Name
		out = append(out, query{name: key, key: key, expr: withoutThresholds(a.Query)})
	}
	return out
}
