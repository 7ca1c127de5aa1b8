//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/courier-dev/courier/operator/api/v1alpha1"
)

// config says where the suite looks. The defaults are what
// hack/kind/install.sh installs, and both read the same environment
// variables, so the suite follows an install into other namespaces.
type config struct {
	// operatorNamespace and operatorDeployment locate the operator that
	// charts/courier installs (release "courier" names its Deployment so).
	operatorNamespace  string
	operatorDeployment string
	// namespace holds the app and Mailpit; app is the MicroserviceApp's
	// name, which is charts/blog's release name.
	namespace string
	app       string
	// mailpit is the name of Mailpit's Service in namespace.
	mailpit string
	// brokerKind is the app's spec.broker.kind (contract.BrokerRabbitMQ or
	// contract.BrokerNATS), what hack/kind/install.sh installed with
	// BROKER_KIND. The steps that look at the broker itself follow it.
	brokerKind string
}

func configFromEnv() config {
	get := func(key, def string) string {
		if v := os.Getenv(key); v != "" {
			return v
		}
		return def
	}
	return config{
		operatorNamespace:  get("E2E_OPERATOR_NAMESPACE", "courier-system"),
		operatorDeployment: get("E2E_OPERATOR_DEPLOYMENT", "courier"),
		namespace:          get("E2E_NAMESPACE", "courier-e2e"),
		app:                get("E2E_APP", "blog"),
		mailpit:            get("E2E_MAILPIT", "mailpit"),
		brokerKind:         get("E2E_BROKER_KIND", "rabbitmq"),
	}
}

// Names and labels the operator gives the objects it writes. The operator
// spells them in operator/internal/metadata (labels.go and names.go),
// which a package outside operator/ cannot import. Spelling them again here
// is deliberate: they are part of what users see (kubectl get, label
// selectors, dashboards), so a change to them should fail this suite.
const (
	labelName      = "app.kubernetes.io/name"
	labelInstance  = "app.kubernetes.io/instance"
	labelManagedBy = "app.kubernetes.io/managed-by"
	labelComponent = "app.kubernetes.io/component"
	managedBy      = "courier-operator"
	// brokerComponent is the name label of the managed broker's objects
	// and the value of their component label.
	brokerComponent = "broker"
	// connectionURLKey is the key of a connection Secret that BROKER_URL
	// comes from.
	connectionURLKey = "url"
)

// objectName is the name of a service's Deployment and Service.
func objectName(app, service string) string { return app + "-" + service }

// connectionSecretName is the name of a service's broker connection Secret.
func connectionSecretName(app, service string) string { return app + "-" + service + "-broker" }

// brokerName names the managed broker's StatefulSet and client Service;
// brokerNodesName its headless Service.
func brokerName(app string) string      { return app + "-broker" }
func brokerNodesName(app string) string { return app + "-broker-nodes" }

// serviceLabels are the labels on every object of one service of app.
func serviceLabels(app, service string) map[string]string {
	return map[string]string{labelName: service, labelInstance: app, labelManagedBy: managedBy}
}

// appLabels select every object the operator owns for app.
func appLabels(app string) client.MatchingLabels {
	return client.MatchingLabels{labelInstance: app, labelManagedBy: managedBy}
}

// cluster is the cluster of the current kubeconfig context.
type cluster struct {
	rest *rest.Config
	// client reads straight from the API server, no cache, so every poll
	// sees the current state.
	client client.Client
	// core builds the URLs of the pods/portforward sub-resource.
	core kubernetes.Interface
}

// connect loads the kubeconfig the way kubectl does (KUBECONFIG, then
// ~/.kube/config, current context), as hack/controlplane does too.
func connect(t *testing.T) *cluster {
	t.Helper()
	loader := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(
		clientcmd.NewDefaultClientConfigLoadingRules(), &clientcmd.ConfigOverrides{})
	cfg, err := loader.ClientConfig()
	if err != nil {
		t.Fatalf("load kubeconfig (hack/kind/up.sh sets the current context): %v", err)
	}
	raw, err := loader.RawConfig()
	if err != nil {
		t.Fatalf("read kubeconfig: %v", err)
	}
	t.Logf("cluster: context %q, API server %s", raw.CurrentContext, cfg.Host)
	// client-go's default of 5 requests a second would throttle the polls,
	// which read a dozen objects a second.
	cfg.QPS, cfg.Burst = 50, 100

	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, v1alpha1.AddToScheme} {
		if err := add(scheme); err != nil {
			t.Fatal(err)
		}
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatalf("create client: %v", err)
	}
	core, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatalf("create clientset: %v", err)
	}
	return &cluster{rest: cfg, client: c, core: core}
}

// pollInterval is how often waitFor checks. The states waited for take
// seconds to minutes to reach; checking faster would only load the API
// server.
const pollInterval = time.Second

// checkTimeout bounds one check of waitFor: a few API reads or scrapes.
const checkTimeout = 30 * time.Second

// waitFor checks until check reports done or timeout passes. check returns
// what it saw; an error (the API server restarting, a port-forward
// dropping) does not end the wait. On timeout the error carries the last
// thing seen and any error after it, so a failure says what was missing,
// not only that time ran out.
func waitFor(ctx context.Context, timeout time.Duration, what string, check func(context.Context) (done bool, seen string, err error)) error {
	var lastSeen string
	var lastErr error
	err := wait.PollUntilContextTimeout(ctx, pollInterval, timeout, true, func(context.Context) (bool, error) {
		// Each check gets its own deadline rather than the rest of the
		// wait's: a check cut short by the wait's end would only report
		// that, in place of what it saw.
		checkCtx, cancel := context.WithTimeout(ctx, checkTimeout)
		defer cancel()
		done, seen, err := check(checkCtx)
		if err != nil {
			lastErr = err
			return false, nil
		}
		lastSeen, lastErr = seen, nil
		return done, nil
	})
	if err == nil {
		return nil
	}
	msg := fmt.Sprintf("%s: not within %s (%v); last seen:\n%s", what, timeout, err, lastSeen)
	if lastErr != nil {
		msg += fmt.Sprintf("\n  then: %v", lastErr)
	}
	return errors.New(msg)
}

// describeApp renders what an app's status says: the generations, every
// condition and every service's rollout.
func describeApp(app *v1alpha1.MicroserviceApp) string {
	var b strings.Builder
	fmt.Fprintf(&b, "  msa/%s: generation %d, observedGeneration %d, finalizers %v\n",
		app.Name, app.Generation, app.Status.ObservedGeneration, app.Finalizers)
	if len(app.Status.Conditions) == 0 {
		b.WriteString("  no conditions yet: is the operator running?\n")
	}
	for _, c := range app.Status.Conditions {
		fmt.Fprintf(&b, "  %s=%s reason=%s observedGeneration=%d: %s\n", c.Type, c.Status, c.Reason, c.ObservedGeneration, c.Message)
	}
	for _, s := range app.Status.Services {
		fmt.Fprintf(&b, "  service %s: %d/%d ready, available %v\n", s.Name, s.ReadyReplicas, s.DesiredReplicas, s.Available)
	}
	for _, q := range app.Status.Queues {
		fmt.Fprintf(&b, "  queue %s: %d messages, %d consumers, %d dead letters\n", q.Name, q.Messages, q.Consumers, q.DeadLetters)
	}
	return b.String()
}

// describePods renders the pods in namespace matching sel: phase, readiness,
// restarts and why a container is waiting or last terminated. It is what a
// reader needs when an app is not Ready, such as ErrImageNeverPull for an
// image that was not loaded into kind.
func (c *cluster) describePods(ctx context.Context, namespace string, sel client.MatchingLabels) string {
	pods := &corev1.PodList{}
	if err := c.client.List(ctx, pods, client.InNamespace(namespace), sel); err != nil {
		return fmt.Sprintf("  list pods: %v\n", err)
	}
	if len(pods.Items) == 0 {
		return "  no pods\n"
	}
	var b strings.Builder
	for i := range pods.Items {
		p := &pods.Items[i]
		fmt.Fprintf(&b, "  pod %s: %s, ready %v\n", p.Name, p.Status.Phase, podReady(p))
		for _, cs := range slices.Concat(p.Status.InitContainerStatuses, p.Status.ContainerStatuses) {
			fmt.Fprintf(&b, "    container %s: restarts %d", cs.Name, cs.RestartCount)
			if w := cs.State.Waiting; w != nil {
				fmt.Fprintf(&b, ", waiting %s: %s", w.Reason, w.Message)
			}
			if l := cs.LastTerminationState.Terminated; l != nil {
				fmt.Fprintf(&b, ", last terminated %s (exit %d): %s", l.Reason, l.ExitCode, l.Message)
			}
			b.WriteString("\n")
		}
	}
	return b.String()
}

// podReady reports whether p runs and passes its readiness probe.
func podReady(p *corev1.Pod) bool {
	if p.Status.Phase != corev1.PodRunning || p.DeletionTimestamp != nil {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// readyCondition returns app's Ready condition when it describes the
// current spec: true, false or unknown, as long as the operator has seen
// metadata.generation. A stale True from an older spec is not an answer.
func readyCondition(app *v1alpha1.MicroserviceApp) (*metav1.Condition, bool) {
	c := meta.FindStatusCondition(app.Status.Conditions, v1alpha1.ConditionReady)
	if c == nil || c.ObservedGeneration != app.Generation {
		return nil, false
	}
	return c, true
}

// missingLabels returns want's labels that got lacks or holds with another
// value, as sorted "key=value"; none means got has them all.
func missingLabels(got, want map[string]string) []string {
	var missing []string
	for k, v := range want {
		if got[k] != v {
			missing = append(missing, k+"="+v)
		}
	}
	slices.Sort(missing)
	return missing
}

// ownedBy reports whether obj's controller owner reference names app.
func ownedBy(obj metav1.Object, app *v1alpha1.MicroserviceApp) bool {
	ref := metav1.GetControllerOf(obj)
	return ref != nil && ref.UID == app.UID && ref.Kind == "MicroserviceApp" && ref.Name == app.Name
}
