// Command courier-operator runs the controller manager that reconciles
// MicroserviceApps.
package main

import (
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	// Import all Kubernetes client auth plugins (e.g. OIDC) so the operator
	// runs outside the cluster against any kubeconfig.
	_ "k8s.io/client-go/plugin/pkg/client/auth"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/validation"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/flowcontrol"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/certwatcher"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/courier-dev/courier/operator/api/v1alpha1"
	"github.com/courier-dev/courier/operator/internal/broker"
	"github.com/courier-dev/courier/operator/internal/broker/natsbroker"
	"github.com/courier-dev/courier/operator/internal/controller"
	"github.com/courier-dev/courier/operator/internal/resource"
)

var (
	scheme   = runtime.NewScheme()
	setupLog = ctrl.Log.WithName("setup")
)

func init() {
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(v1alpha1.AddToScheme(scheme))
	utilruntime.Must(monitoringv1.AddToScheme(scheme))
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		setupLog.Error(err, "courier-operator failed")
		os.Exit(1)
	}
}

func run(args []string) error {
	var (
		metricsAddr, probeAddr, pprofAddr                string
		metricsCertPath, metricsCertName, metricsCertKey string
		enableLeaderElection, secureMetrics, enableHTTP2 bool
		clusterDomain, operatorNamespace                 string
		brokerResync, queueStatsInterval                 time.Duration
		maxConcurrentReconciles, kubeAPIBurst            int
		kubeAPIQPS                                       float64
		brokerTimeout                                    time.Duration
		monitoringLabels                                 = labelsFlag(resource.DefaultMonitoringLabels)
	)
	fs := flag.NewFlagSet("courier-operator", flag.ContinueOnError)
	fs.StringVar(&metricsAddr, "metrics-bind-address", "0",
		"The address the metrics endpoint binds to. Use :8443 for HTTPS or :8080 for HTTP, or 0 to disable the metrics endpoint.")
	fs.StringVar(&probeAddr, "health-probe-bind-address", ":8081", "The address the health probe endpoint binds to.")
	fs.StringVar(&pprofAddr, "pprof-bind-address", "0",
		"The address the Go profiler (net/http/pprof under /debug/pprof/) binds to, or 0 to disable it. "+
			"It has no authentication: bind it to localhost.")
	fs.BoolVar(&enableLeaderElection, "leader-elect", false,
		"Enable leader election, so that only one replica of the manager reconciles at a time.")
	fs.BoolVar(&secureMetrics, "metrics-secure", true,
		"Serve metrics over HTTPS, to authenticated and authorized clients only. Use --metrics-secure=false for plain HTTP.")
	fs.StringVar(&metricsCertPath, "metrics-cert-path", "",
		"The directory holding the metrics server certificate. Without it, a self-signed certificate is generated.")
	fs.StringVar(&metricsCertName, "metrics-cert-name", "tls.crt", "The name of the metrics server certificate file.")
	fs.StringVar(&metricsCertKey, "metrics-cert-key", "tls.key", "The name of the metrics server key file.")
	fs.BoolVar(&enableHTTP2, "enable-http2", false,
		"Enable HTTP/2 on the metrics server. Off by default for the HTTP/2 Stream Cancellation and Rapid Reset CVEs.")
	fs.StringVar(&clusterDomain, "cluster-domain", "cluster.local",
		"The cluster's DNS domain, part of a managed broker's RabbitMQ node names.")
	fs.StringVar(&operatorNamespace, "operator-namespace", inClusterNamespace(),
		"The namespace the operator runs in; managed brokers' NetworkPolicies admit its pods to the management API. "+
			"Defaults to the pod's own namespace (from its service account); empty outside a cluster.")
	fs.DurationVar(&brokerResync, "broker-resync-interval", 5*time.Minute,
		"How often each app's broker is made to match its spec although nothing changed, which repairs users, permissions and queues changed on the broker by hand.")
	fs.DurationVar(&queueStatsInterval, "queue-stats-interval", 30*time.Second,
		"How often each app's queue depths and consumer counts are polled into its status.")
	fs.DurationVar(&brokerTimeout, "broker-timeout", broker.DefaultTimeout,
		"How long one declare, clean-up or queue-statistics call to a broker may take (each HTTP request half of it); "+
			"a broker that accepts connections but never answers holds one reconcile worker this long.")
	fs.IntVar(&maxConcurrentReconciles, "max-concurrent-reconciles", controller.DefaultMaxConcurrentReconciles,
		"How many apps are reconciled at once; a broker that hangs holds back only the worker reconciling its app.")
	fs.Float64Var(&kubeAPIQPS, "kube-api-qps", 50,
		"The sustained rate of requests per second the operator's client sends to the API server.")
	fs.IntVar(&kubeAPIBurst, "kube-api-burst", 100,
		"The burst of requests the operator's client may send to the API server above --kube-api-qps.")
	fs.Var(&monitoringLabels, "monitoring-labels",
		"Labels (key=value,...) of the PodMonitor and PrometheusRule the operator writes per app when the prometheus-operator's CRDs are installed, "+
			"unless the app's spec.monitoring.labels are set; the default matches kube-prometheus-stack's default selectors. An empty value sets none.")
	opts := zap.Options{}
	opts.BindFlags(fs)
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("parse flags: %w", err)
	}
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&opts)))

	var tlsOpts []func(*tls.Config)
	if !enableHTTP2 {
		tlsOpts = append(tlsOpts, func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} })
	}

	metricsOptions := metricsserver.Options{
		BindAddress:   metricsAddr,
		SecureServing: secureMetrics,
		TLSOpts:       tlsOpts,
	}
	if secureMetrics {
		// Authenticate callers with TokenReviews and authorize them with
		// SubjectAccessReviews for GET /metrics; see
		// config/rbac/metrics_auth_role.yaml and metrics_reader_role.yaml.
		metricsOptions.FilterProvider = filters.WithAuthenticationAndAuthorization
	}
	var metricsCertWatcher *certwatcher.CertWatcher
	if metricsCertPath != "" {
		var err error
		metricsCertWatcher, err = certwatcher.New(
			filepath.Join(metricsCertPath, metricsCertName),
			filepath.Join(metricsCertPath, metricsCertKey),
		)
		if err != nil {
			return fmt.Errorf("watch metrics certificate: %w", err)
		}
		metricsOptions.TLSOpts = append(metricsOptions.TLSOpts, func(c *tls.Config) {
			c.GetCertificate = metricsCertWatcher.GetCertificate
		})
	}

	restConfig, err := ctrl.GetConfig()
	if err != nil {
		return fmt.Errorf("load kubeconfig: %w", err)
	}
	restConfig.QPS = float32(kubeAPIQPS)
	restConfig.Burst = kubeAPIBurst
	// client-go gives every REST client made from a config without a rate
	// limiter a token bucket of its own, and controller-runtime makes one
	// REST client per kind (plus the event recorder's): without one shared
	// bucket, --kube-api-qps would bound each kind apart, not the operator.
	// The leader election's lease renewals go through a client of their
	// own (copied before the shared bucket is set, so client-go gives it a
	// bucket of its own): behind a bucket the writes of a thousand apps
	// keep empty, a renewal could wait past its deadline and the operator
	// lose its lease in the middle of the work.
	leaderConfig := rest.CopyConfig(restConfig)
	restConfig.RateLimiter = flowcontrol.NewTokenBucketRateLimiter(restConfig.QPS, restConfig.Burst)
	mgr, err := ctrl.NewManager(restConfig, ctrl.Options{
		Scheme:                 scheme,
		Metrics:                metricsOptions,
		HealthProbeBindAddress: probeAddr,
		PprofBindAddress:       pprofAddr,
		LeaderElection:         enableLeaderElection,
		LeaderElectionID:       "courier-operator.apps.courier.dev",
		LeaderElectionConfig:   leaderConfig,
		// The process exits as soon as the manager stops, so handing the
		// lease over early is safe and lets a new leader start at once.
		LeaderElectionReleaseOnCancel: true,
		Cache:                         cache.Options{ByObject: controller.CacheByObject()},
	})
	if err != nil {
		return fmt.Errorf("create manager: %w", err)
	}

	if err := (&controller.MicroserviceAppReconciler{
		Client:    mgr.GetClient(),
		APIReader: mgr.GetAPIReader(),
		Recorder:  mgr.GetEventRecorder("courier-operator"),
		// In the cluster, brokers are dialled by their Service names.
		Admin:                   broker.NewRabbitMQ(broker.WithTimeout(brokerTimeout)),
		NATSAdmin:               natsbroker.New(natsbroker.WithTimeout(brokerTimeout)),
		ClusterDomain:           clusterDomain,
		OperatorNamespace:       operatorNamespace,
		ResyncInterval:          brokerResync,
		QueueStatsInterval:      queueStatsInterval,
		MaxConcurrentReconciles: maxConcurrentReconciles,
		MonitoringLabels:        monitoringLabels,
	}).SetupWithManager(mgr); err != nil {
		return fmt.Errorf("set up MicroserviceApp controller: %w", err)
	}

	if metricsCertWatcher != nil {
		if err := mgr.Add(metricsCertWatcher); err != nil {
			return fmt.Errorf("add metrics certificate watcher: %w", err)
		}
	}
	if err := errors.Join(
		mgr.AddHealthzCheck("healthz", healthz.Ping),
		mgr.AddReadyzCheck("readyz", healthz.Ping),
	); err != nil {
		return fmt.Errorf("set up health checks: %w", err)
	}

	setupLog.Info("starting manager")
	if err := mgr.Start(ctrl.SetupSignalHandler()); err != nil {
		return fmt.Errorf("run manager: %w", err)
	}
	return nil
}

// inClusterNamespace is the namespace of the pod the operator runs in, as
// its service account's mount gives it; empty outside a cluster.
func inClusterNamespace() string {
	ns, err := os.ReadFile("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(ns))
}

// labelsFlag is a flag of labels written key=value,key=value.
type labelsFlag map[string]string

func (l labelsFlag) String() string {
	pairs := make([]string, 0, len(l))
	for k, v := range l {
		pairs = append(pairs, k+"="+v)
	}
	slices.Sort(pairs)
	return strings.Join(pairs, ",")
}

// Set replaces the labels with those of s, each key and value checked as
// the API server would check them.
func (l *labelsFlag) Set(s string) error {
	out := labelsFlag{}
	for pair := range strings.SplitSeq(s, ",") {
		if pair = strings.TrimSpace(pair); pair == "" {
			continue
		}
		k, v, ok := strings.Cut(pair, "=")
		if !ok {
			return fmt.Errorf("%q is not key=value", pair)
		}
		if errs := validation.IsQualifiedName(k); len(errs) > 0 {
			return fmt.Errorf("label key %q: %s", k, strings.Join(errs, "; "))
		}
		if errs := validation.IsValidLabelValue(v); len(errs) > 0 {
			return fmt.Errorf("label value %q: %s", v, strings.Join(errs, "; "))
		}
		out[k] = v
	}
	*l = out
	return nil
}
