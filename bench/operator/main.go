// Command operator is the driver of the operator benchmarks (issue 12):
// convergence of N apps against the client's rate limit, apply-to-objects
// latency, memory per app against a peer operator written the kubebuilder
// scaffold's way (./peer), and API requests at rest. It runs the operators
// as real processes against real API servers (envtest's etcd and
// kube-apiserver, one per scenario) and one real RabbitMQ node, prints the
// raw measurements as it goes and writes a Markdown report. run.sh builds
// the binaries and runs it.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"github.com/google/pprof/profile"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/courier-dev/courier/operator/api/v1alpha1"
	"github.com/courier-dev/courier/test/brokertest"
)

type options struct {
	operatorBin, peerBin, crdDir, work, report string
	profiles                                   string
	sizes, queueSizes, peerSizes               []int
	qps                                        float64
	burst, workers, latencyRuns                int
	steadyWindow                               time.Duration
}

func main() {
	var o options
	var sizes, queueSizes, peerSizes string
	flag.StringVar(&o.operatorBin, "operator", "bin/courier-operator", "the operator binary")
	flag.StringVar(&o.peerBin, "peer", "", "the peer operator binary (bench/operator/peer)")
	flag.StringVar(&o.crdDir, "crds", "config/crd/bases", "the CRD directory")
	flag.StringVar(&o.work, "work", "", "a directory for logs, audit logs and kubeconfigs")
	flag.StringVar(&o.report, "report", "", "write the Markdown report here")
	flag.StringVar(&o.profiles, "profiles", "", "keep the heap profile of every memory reading in this directory")
	flag.StringVar(&sizes, "sizes", "100,500,1000", "app counts without queues (convergence and memory)")
	flag.StringVar(&queueSizes, "queue-sizes", "100,500,1000", "app counts with queues on one external RabbitMQ")
	flag.StringVar(&peerSizes, "peer-sizes", "100,500,1000", "app counts for the peer's memory")
	flag.Float64Var(&o.qps, "qps", 100, "the operator's --kube-api-qps")
	flag.IntVar(&o.burst, "burst", 100, "the operator's --kube-api-burst")
	flag.IntVar(&o.workers, "workers", 8, "the operator's --max-concurrent-reconciles")
	flag.IntVar(&o.latencyRuns, "latency-runs", 50, "apps applied one at a time to an idle operator")
	flag.DurationVar(&o.steadyWindow, "steady-window", 330*time.Second, "how long to count requests at rest (100 apps with queues)")
	flag.Parse()
	var err error
	for _, p := range []struct {
		s   string
		out *[]int
	}{{sizes, &o.sizes}, {queueSizes, &o.queueSizes}, {peerSizes, &o.peerSizes}} {
		if *p.out, err = parseSizes(p.s); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
	}
	log.SetLogger(logr.Discard())
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "bench/operator:", err)
		os.Exit(1)
	}
}

// parseSizes parses "100,500" into app counts; empty means none.
func parseSizes(s string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("app count %q: want a positive integer", f)
		}
		out = append(out, n)
	}
	return out, nil
}

// say prints one raw measurement line.
func say(format string, args ...any) {
	fmt.Printf(time.Now().Format("15:04:05 ")+format+"\n", args...)
}

const namespace = "bench"

// rabbit is the external broker every app with queues shares.
type rabbit struct {
	r *brokertest.RabbitMQ
}

// benchApp is the app of every scenario: the blog's four services; with
// queues, users and posts publish to emails and mailer consumes it, on the
// shared external RabbitMQ.
func benchApp(name string, rb *rabbit) *v1alpha1.MicroserviceApp {
	svc := func(n string, calls ...string) v1alpha1.Service {
		return v1alpha1.Service{Name: n, Image: "ghcr.io/courier-dev/" + n + ":latest", Calls: calls}
	}
	app := &v1alpha1.MicroserviceApp{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
		Spec: v1alpha1.MicroserviceAppSpec{Services: []v1alpha1.Service{
			svc("gateway", "users", "posts"), svc("users"), svc("posts", "users"), svc("mailer"),
		}},
	}
	app.Spec.Services[0].Replicas = ptr.To[int32](2)
	app.Spec.Services[0].EntryPoint = true
	if rb != nil {
		app.Spec.Broker = &v1alpha1.Broker{Kind: v1alpha1.BrokerRabbitMQ, External: &v1alpha1.ExternalBroker{
			SecretRef: v1alpha1.SecretReference{Name: "rabbitmq-admin"},
			Host:      rb.r.Host, Port: int32(rb.r.AMQPPort),
		}}
		app.Spec.Queues = []v1alpha1.Queue{{Name: "emails"}}
		app.Spec.Services[1].Publishes = []string{"emails"}
		app.Spec.Services[2].Publishes = []string{"emails"}
		app.Spec.Services[3].Consumes = []string{"emails"}
	}
	return app
}

// scenario is one fresh API server with one operator process and the
// observer.
type scenario struct {
	name string
	// profiles is where memory keeps heap profiles; empty keeps none.
	profiles string
	api      *apiServer
	obs      *observer
	proc     *process
	stop     context.CancelFunc
}

func (o options) start(ctx context.Context, name, bin string, rb *rabbit, args ...string) (*scenario, error) {
	dir := filepath.Join(o.work, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	api, err := startAPIServer(dir, o.crdDir)
	if err != nil {
		return nil, err
	}
	s := &scenario{name: name, api: api, profiles: o.profiles}
	var octx context.Context
	octx, s.stop = context.WithCancel(ctx)
	fail := func(err error) (*scenario, error) { s.close(); return nil, err }
	if err := api.c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}); err != nil {
		return fail(fmt.Errorf("create namespace: %w", err))
	}
	if rb != nil {
		err := api.c.Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: "rabbitmq-admin", Namespace: namespace},
			StringData: map[string]string{
				v1alpha1.ExternalManagementURLKey: rb.r.ManagementURL,
				v1alpha1.ExternalUsernameKey:      rb.r.AdminUser,
				v1alpha1.ExternalPasswordKey:      rb.r.AdminPassword,
			},
		})
		if err != nil {
			return fail(fmt.Errorf("create broker Secret: %w", err))
		}
	}
	if s.obs, err = startObserver(octx, api); err != nil {
		return fail(err)
	}
	if s.proc, err = startProcess(ctx, bin, filepath.Join(dir, filepath.Base(bin)+".log"), api, args...); err != nil {
		return fail(err)
	}
	return s, nil
}

func (s *scenario) close() {
	if s.proc != nil {
		s.proc.stop()
	}
	if s.stop != nil {
		s.stop()
	}
	if err := s.api.stop(); err != nil {
		say("%s: stop API server: %v", s.name, err)
	}
}

// createApps creates apps prefix-0000 ... from 16 goroutines, as fast as
// the API server takes them.
func (s *scenario) createApps(ctx context.Context, prefix string, n int, rb *rabbit) error {
	names := make(chan string)
	errs := make(chan error, 16)
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for name := range names {
				if err := s.api.c.Create(ctx, benchApp(name, rb)); err != nil {
					errs <- fmt.Errorf("create app %s: %w", name, err)
					return
				}
			}
		})
	}
	var err error
	for i := range n {
		select {
		case names <- fmt.Sprintf("%s-%04d", prefix, i):
			continue
		case err = <-errs:
		}
		break
	}
	close(names)
	wg.Wait()
	close(errs)
	return errors.Join(err, <-errs)
}

// memoryRounds is how many readings memory takes, each after a forced GC;
// it reports their median.
const memoryRounds = 5

// memory is the operator's memory at rest, after a forced GC: what its
// caches and other state hold, without the garbage of the work before.
type memory struct {
	rss       int64   // VmRSS, median of the rounds
	heapInuse float64 // go_memstats_heap_inuse_bytes, median of the rounds
	// rssRange and heapRange are the smallest and largest reading.
	rssRange  [2]int64
	heapRange [2]float64
	// eventsHeap is what the last round's heap profile finds in use
	// under client-go's events broadcaster (tools/events): the events it
	// keeps 6 to 12 minutes after they were sent, to fold repeats into
	// series. The profile samples (one per 512 KiB allocated, by default),
	// so this is an estimate.
	eventsHeap float64
}

// memory reads the operator's memory once its workqueue is empty: in each
// of memoryRounds rounds, a second apart, it asks the process for a heap
// profile with gc=1 (net/http/pprof runs runtime.GC first; ours and the
// peer serve the same endpoint, so both are read the same way), then reads
// go_memstats_heap_inuse_bytes from its metrics and VmRSS. With -profiles,
// the last round's heap profile is kept as <profiles>/<scenario>-<label>.pb.gz.
func (s *scenario) memory(ctx context.Context, label string) (memory, error) {
	err := waitFor(ctx, 5*time.Minute, s.name+": the operator's workqueue empty", func() bool {
		m, err := s.proc.scrape()
		return err == nil && m["workqueue_depth"] == 0
	})
	if err != nil {
		return memory{}, err
	}
	var rss []int64
	var heap []float64
	var events float64
	for i := range memoryRounds {
		if i > 0 {
			select {
			case <-time.After(time.Second): // the interval between readings, not a wait for a condition
			case <-ctx.Done():
				return memory{}, ctx.Err()
			}
		}
		profile, err := s.proc.heapProfile()
		if err != nil {
			return memory{}, err
		}
		if i == memoryRounds-1 {
			if events, err = inUseUnder(profile, eventsBroadcaster); err != nil {
				return memory{}, err
			}
		}
		if s.profiles != "" && i == memoryRounds-1 {
			if err := os.WriteFile(filepath.Join(s.profiles, s.name+"-"+label+".pb.gz"), profile, 0o644); err != nil {
				return memory{}, fmt.Errorf("keep heap profile: %w", err)
			}
		}
		m, err := s.proc.scrape()
		if err != nil {
			return memory{}, err
		}
		r, err := s.proc.rss()
		if err != nil {
			return memory{}, err
		}
		rss, heap = append(rss, r), append(heap, m["go_memstats_heap_inuse_bytes"])
	}
	slices.Sort(rss)
	slices.Sort(heap)
	return memory{
		rss: rss[len(rss)/2], heapInuse: heap[len(heap)/2],
		rssRange: [2]int64{rss[0], rss[len(rss)-1]}, heapRange: [2]float64{heap[0], heap[len(heap)-1]},
		eventsHeap: events,
	}, nil
}

// eventsBroadcaster is the package of client-go's events broadcaster.
const eventsBroadcaster = "k8s.io/client-go/tools/events."

// inUseUnder sums the in-use bytes of a heap profile's samples allocated
// with a function of the package prefix pkg on the stack.
func inUseUnder(raw []byte, pkg string) (float64, error) {
	p, err := profile.ParseData(raw)
	if err != nil {
		return 0, fmt.Errorf("parse heap profile: %w", err)
	}
	idx := slices.IndexFunc(p.SampleType, func(t *profile.ValueType) bool { return t.Type == "inuse_space" })
	if idx < 0 {
		return 0, errors.New("heap profile has no inuse_space")
	}
	var sum int64
	for _, smp := range p.Sample {
		if slices.ContainsFunc(smp.Location, func(l *profile.Location) bool {
			return slices.ContainsFunc(l.Line, func(ln profile.Line) bool {
				return ln.Function != nil && strings.HasPrefix(ln.Function.Name, pkg)
			})
		}) {
			sum += smp.Value[idx]
		}
	}
	return float64(sum), nil
}

// String prints the reading and its range over the rounds.
func (m memory) String() string {
	return fmt.Sprintf("RSS %.1f MiB (%.1f-%.1f), heap in use %.1f MiB (%.1f-%.1f), of it the events broadcaster's %.1f MiB",
		mib(m.rss), mib(m.rssRange[0]), mib(m.rssRange[1]),
		m.heapInuse/(1<<20), m.heapRange[0]/(1<<20), m.heapRange[1]/(1<<20), m.eventsHeap/(1<<20))
}

// convergence is one run of N apps to Ready.
type convergence struct {
	n         int
	queues    bool
	took      time.Duration // first create to last Ready
	creating  time.Duration // the driver's creates
	requests  requestCounts
	idle, end memory
	metrics   map[string]float64
	steady    *requestCounts
	steadyFor time.Duration
}

// converge runs n apps named prefix-0000...; with queues the prefix must be
// new to the shared broker, whose vhosts outlive the scenario.
func (o options) converge(ctx context.Context, prefix string, n int, rb *rabbit) (convergence, error) {
	c := convergence{n: n, queues: rb != nil}
	name := fmt.Sprintf("converge-%d", n)
	if rb != nil {
		name += "-queues"
	}
	s, err := o.start(ctx, name, o.operatorBin, rb, "--metrics-secure=false",
		"--kube-api-qps", fmt.Sprint(o.qps), "--kube-api-burst", fmt.Sprint(o.burst),
		"--max-concurrent-reconciles", fmt.Sprint(o.workers))
	if err != nil {
		return c, err
	}
	defer s.close()
	if c.idle, err = s.memory(ctx, "idle"); err != nil {
		return c, err
	}
	start := time.Now()
	// Every app's name is as long as the reference app's, so ours and the
	// peer's objects are of the same size.
	if err := s.createApps(ctx, prefix, n, rb); err != nil {
		return c, err
	}
	c.creating = time.Since(start)
	if err := waitFor(ctx, 30*time.Minute, fmt.Sprintf("%d apps Ready", n), func() bool { return s.obs.readyCount() == n }); err != nil {
		return c, err
	}
	end := s.obs.lastReady()
	c.took = end.Sub(start)
	if c.requests, err = s.api.requests(start, end.Add(time.Millisecond)); err != nil {
		return c, err
	}
	if c.metrics, err = s.proc.scrape(); err != nil {
		return c, err
	}
	if c.end, err = s.memory(ctx, "end"); err != nil {
		return c, err
	}
	say("%s: %d apps Ready in %.2fs (creates took %.2fs); operator requests %d writes, %d reads, %d watches: %s",
		name, n, c.took.Seconds(), c.creating.Seconds(), c.requests.Writes, c.requests.Reads, c.requests.Watches, c.requests.format(n))
	say("%s: after a forced GC, idle: %s; after: %s; reconciles %.0f taking %.1fs in all; workqueue wait %.1fs in all",
		name, c.idle, c.end, c.metrics["controller_runtime_reconcile_total"],
		c.metrics["controller_runtime_reconcile_time_seconds_sum"], c.metrics["workqueue_queue_duration_seconds_sum"])
	window := o.steadyWindow
	if rb == nil {
		// Apps without queues have no timers: a minute shows it.
		window = min(window, time.Minute)
	}
	if n == 100 && window > 0 {
		// At rest: counted from a moment after the last Ready, so the
		// window holds only timers (resyncs, queue statistics).
		from := time.Now()
		select {
		case <-time.After(window): // the window measured, not a wait for a condition
		case <-ctx.Done():
			return c, ctx.Err()
		}
		st, err := s.api.requests(from, from.Add(window))
		if err != nil {
			return c, err
		}
		c.steady, c.steadyFor = &st, window
		say("%s: at rest for %s: %d writes, %d reads: %s", name, window, st.Writes, st.Reads, st.format(n))
	}
	return c, nil
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// The latency scenario runs the operator with its default rate limit,
// what a user gets, passed explicitly so the driver knows how long the
// client's token bucket takes to fill.
const (
	latencyQPS   = 50
	latencyBurst = 100
)

// latency applies one app at a time to an idle operator and times until
// every object the operator makes for it exists. It also writes the
// objects of its first app, the reference for the peer.
//
// Idle means the app before is Ready, the operator's workqueue is empty
// and no worker is busy, and its client's token bucket is full again:
// applying the next app as soon as the last one's objects exist (as this
// benchmark first did) measures the client's sustained rate instead, once
// the follow-up work of a few apps has drained the burst.
func (o options) latency(ctx context.Context, templates string) ([]time.Duration, map[string]int, error) {
	s, err := o.start(ctx, "latency", o.operatorBin, nil, "--metrics-secure=false",
		"--kube-api-qps", fmt.Sprint(latencyQPS), "--kube-api-burst", fmt.Sprint(latencyBurst))
	if err != nil {
		return nil, nil, err
	}
	defer s.close()
	// The reference app: Ready, so every object it needs exists.
	if err := s.createApps(ctx, "ref", 1, nil); err != nil {
		return nil, nil, err
	}
	if err := waitFor(ctx, time.Minute, "the reference app Ready", func() bool { return s.obs.readyCount() == 1 }); err != nil {
		return nil, nil, err
	}
	want := s.obs.objects("ref-0000")
	if err := writeTemplates(ctx, s.api.c, "ref-0000", templates); err != nil {
		return nil, nil, err
	}
	say("latency: an app owns %v", want)
	var out []time.Duration
	for i := range o.latencyRuns {
		if err := s.idle(ctx, i+1); err != nil {
			return nil, nil, err
		}
		name := fmt.Sprintf("lat-%04d", i)
		start := time.Now()
		if err := s.api.c.Create(ctx, benchApp(name, nil)); err != nil {
			return nil, nil, fmt.Errorf("create app %s: %w", name, err)
		}
		err := waitFor(ctx, time.Minute, "every object of "+name, func() bool {
			got := s.obs.objects(name)
			for k, n := range want {
				if got[k] < n {
					return false
				}
			}
			return true
		})
		if err != nil {
			return nil, nil, err
		}
		d := s.obs.lastSeen(name).Sub(start)
		out = append(out, d)
		say("latency: %s: every object in %.1f ms", name, float64(d.Microseconds())/1000)
	}
	return out, want, nil
}

// idle waits until ready apps are Ready, the operator's workqueue is empty
// and none of its workers is busy, then for its client's token bucket to
// fill: the bucket cannot be observed from outside, and from empty it
// fills in burst/QPS.
func (s *scenario) idle(ctx context.Context, ready int) error {
	err := waitFor(ctx, time.Minute, "the operator idle", func() bool {
		if s.obs.readyCount() < ready {
			return false
		}
		m, err := s.proc.scrape()
		return err == nil && m["workqueue_depth"] == 0 && m["controller_runtime_active_workers"] == 0
	})
	if err != nil {
		return err
	}
	select {
	case <-time.After(time.Duration(float64(latencyBurst) / latencyQPS * float64(time.Second))):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// writeTemplates writes the objects the operator made for app, without
// what the API server set, as the peer's templates.
func writeTemplates(ctx context.Context, c client.Client, app, path string) error {
	var out []map[string]any
	for _, k := range []struct {
		list             client.ObjectList
		apiVersion, kind string
	}{
		{&appsv1.DeploymentList{}, "apps/v1", "Deployment"},
		{&corev1.ServiceList{}, "v1", "Service"},
		{&networkingv1.NetworkPolicyList{}, "networking.k8s.io/v1", "NetworkPolicy"},
		{&policyv1.PodDisruptionBudgetList{}, "policy/v1", "PodDisruptionBudget"},
	} {
		if err := c.List(ctx, k.list, client.InNamespace(namespace), client.MatchingLabels{"app.kubernetes.io/instance": app}); err != nil {
			return fmt.Errorf("list %ss: %w", k.kind, err)
		}
		items, err := meta.ExtractList(k.list)
		if err != nil {
			return err
		}
		for _, item := range items {
			obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(item)
			if err != nil {
				return err
			}
			m := obj["metadata"].(map[string]any)
			obj["metadata"] = map[string]any{"name": m["name"], "labels": m["labels"], "annotations": m["annotations"]}
			delete(obj, "status")
			if spec, ok := obj["spec"].(map[string]any); ok && k.kind == "Service" {
				// Allocated by the API server for each Service.
				for _, f := range []string{"clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy", "internalTrafficPolicy", "sessionAffinity"} {
					delete(spec, f)
				}
			}
			obj["apiVersion"], obj["kind"] = k.apiVersion, k.kind
			out = append(out, obj)
		}
	}
	b, err := json.Marshal(out)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o600)
}

// peerMemory runs the peer with n apps and measures it once every object
// exists and every Deployment was marked available.
func (o options) peerMemory(ctx context.Context, n int, templates string, perApp map[string]int) (memory, memory, time.Duration, error) {
	s, err := o.start(ctx, fmt.Sprintf("peer-%d", n), o.peerBin, nil, "--templates", templates, "--reference-app", "ref-0000")
	if err != nil {
		return memory{}, memory{}, 0, err
	}
	defer s.close()
	idle, err := s.memory(ctx, "idle")
	if err != nil {
		return idle, memory{}, 0, err
	}
	start := time.Now()
	if err := s.createApps(ctx, "per", n, nil); err != nil {
		return idle, memory{}, 0, err
	}
	err = waitFor(ctx, 30*time.Minute, fmt.Sprintf("the peer's objects for %d apps", n), func() bool {
		for k, want := range perApp {
			if s.obs.totalObjects(k) < want*n {
				return false
			}
		}
		return true
	})
	if err != nil {
		return idle, memory{}, 0, err
	}
	took := time.Since(start)
	// Every Deployment marked available, so the peer's cache holds the
	// same status our operator's does.
	err = waitFor(ctx, 10*time.Minute, "every Deployment available", func() bool {
		l := &appsv1.DeploymentList{}
		if err := s.api.c.List(ctx, l, client.InNamespace(namespace)); err != nil {
			return false
		}
		for _, d := range l.Items {
			if d.Status.ObservedGeneration != d.Generation {
				return false
			}
		}
		return true
	})
	if err != nil {
		return idle, memory{}, 0, err
	}
	end, err := s.memory(ctx, "end")
	if err != nil {
		return idle, end, took, err
	}
	say("peer-%d: objects for %d apps in %.2fs; after a forced GC, idle: %s; after: %s", n, n, took.Seconds(), idle, end)
	return idle, end, took, err
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	return strings.Join(f[:min(3, len(f))], " ")
}

func run(ctx context.Context, o options) error {
	if o.work == "" {
		dir, err := os.MkdirTemp("", "bench-operator-*")
		if err != nil {
			return err
		}
		defer func() { _ = os.RemoveAll(dir) }()
		o.work = dir
	}
	loadBefore, started := loadavg(), time.Now()
	templates := filepath.Join(o.work, "peer-templates.json")
	lat, perApp, err := o.latency(ctx, templates)
	if err != nil {
		return fmt.Errorf("latency: %w", err)
	}
	var convs []convergence
	for _, n := range o.sizes {
		c, err := o.converge(ctx, "app", n, nil)
		if err != nil {
			return fmt.Errorf("converge %d apps: %w", n, err)
		}
		convs = append(convs, c)
	}
	for i, n := range o.queueSizes {
		c, err := o.convergeOnNewBroker(ctx, fmt.Sprintf("q%02d", i), n)
		if err != nil {
			return fmt.Errorf("converge %d apps with queues: %w", n, err)
		}
		convs = append(convs, c)
	}
	var peers []peerRun
	if o.peerBin != "" {
		for _, n := range o.peerSizes {
			idle, end, took, err := o.peerMemory(ctx, n, templates, perApp)
			if err != nil {
				return fmt.Errorf("peer with %d apps: %w", n, err)
			}
			peers = append(peers, peerRun{n: n, idle: idle, end: end, took: took})
		}
	}
	if o.report == "" {
		return nil
	}
	r := o.writeReport(lat, perApp, convs, peers, loadBefore, loadavg(), time.Since(started))
	return os.WriteFile(o.report, []byte(r), 0o644)
}

// convergeOnNewBroker converges n apps with queues on a RabbitMQ node of
// their own: what a vhost costs RabbitMQ 3.10 grows with the exchanges the
// node already holds (each new vhost recovers every durable exchange on the
// node, one transaction each), so apps left over from a smaller scenario
// would slow a larger one down.
func (o options) convergeOnNewBroker(ctx context.Context, prefix string, n int) (convergence, error) {
	r, err := brokertest.NewRabbitMQ()
	if err != nil {
		return convergence{}, err
	}
	defer r.Close()
	return o.converge(ctx, prefix, n, &rabbit{r})
}

type peerRun struct {
	n         int
	idle, end memory
	took      time.Duration
}
