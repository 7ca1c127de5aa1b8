//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport/spdy"
	"k8s.io/streaming/pkg/httpstream"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// forwardTimeout bounds finding a ready pod and opening the tunnel to it.
const forwardTimeout = 2 * time.Minute

// forwardPod opens a local port to port of pod through the API server, as
// `kubectl port-forward` does, and returns its base URL
// ("http://127.0.0.1:<port>"). The forward lives until t ends.
//
// It dials the way kubectl does: WebSockets first (what current API servers
// prefer), SPDY when the upgrade is refused or a proxy cannot pass it.
func (c *cluster) forwardPod(t *testing.T, pod *corev1.Pod, port int32) string {
	t.Helper()
	u := c.core.CoreV1().RESTClient().Post().
		Resource("pods").Namespace(pod.Namespace).Name(pod.Name).
		SubResource("portforward").URL()
	transport, upgrader, err := spdy.RoundTripperFor(c.rest)
	if err != nil {
		t.Fatalf("port-forward to %s: %v", pod.Name, err)
	}
	dialer := spdy.NewDialer(upgrader, &http.Client{Transport: transport}, http.MethodPost, u)
	websocket, err := portforward.NewSPDYOverWebsocketDialer(u, c.rest)
	if err != nil {
		t.Fatalf("port-forward to %s: %v", pod.Name, err)
	}
	dialer = portforward.NewFallbackDialer(websocket, dialer, func(err error) bool {
		return httpstream.IsUpgradeFailure(err) || httpstream.IsHTTPSProxyError(err)
	})

	// The forward ends with the test, not with the deadline of the step
	// that opened it: its cleanup stops it and waits for it to return.
	ctx, stop := context.WithCancel(context.Background())
	ready := make(chan struct{})
	fw, err := portforward.NewOnAddressesWithContext(ctx, dialer, []string{"127.0.0.1"},
		[]string{fmt.Sprintf("0:%d", port)}, ready, io.Discard, io.Discard)
	if err != nil {
		stop()
		t.Fatalf("port-forward to %s: %v", pod.Name, err)
	}
	done := make(chan error, 1)
	go func() { done <- fw.ForwardPorts() }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Logf("port-forward to %s ended: %v", pod.Name, err)
		}
	})

	select {
	case <-ready:
	case err := <-done:
		done <- err // for the cleanup
		t.Fatalf("port-forward to %s:%d: %v", pod.Name, port, err)
	case <-time.After(forwardTimeout):
		t.Fatalf("port-forward to %s:%d: not ready within %s", pod.Name, port, forwardTimeout)
	}
	ports, err := fw.GetPorts()
	if err != nil || len(ports) != 1 {
		t.Fatalf("port-forward to %s:%d: local port: %v %v", pod.Name, port, ports, err)
	}
	return fmt.Sprintf("http://127.0.0.1:%d", ports[0].Local)
}

// forwardService opens a local port to the Service's port named portName
// the way `kubectl port-forward svc/<name>` does: to one ready pod the
// Service selects, on the container port the Service targets. It returns
// the base URL and the pod, since what the pod counted (its metrics) is
// only that pod's.
func (c *cluster) forwardService(t *testing.T, ctx context.Context, namespace, name, portName string) (string, *corev1.Pod) {
	t.Helper()
	svc := &corev1.Service{}
	if err := c.client.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, svc); err != nil {
		t.Fatalf("get service %s/%s: %v", namespace, name, err)
	}
	i := slices.IndexFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == portName })
	if i < 0 {
		t.Fatalf("service %s/%s has no port named %q: %v", namespace, name, portName, svc.Spec.Ports)
	}
	target := svc.Spec.Ports[i].TargetPort
	if len(svc.Spec.Selector) == 0 {
		t.Fatalf("service %s/%s has no selector", namespace, name)
	}

	pod, err := c.readyPod(ctx, namespace, client.MatchingLabels(svc.Spec.Selector))
	if err != nil {
		t.Fatalf("service %s/%s: %v", namespace, name, err)
	}
	port := target.IntVal
	if target.StrVal != "" {
		if port = containerPort(pod, target.StrVal); port == 0 {
			t.Fatalf("pod %s has no container port named %q", pod.Name, target.StrVal)
		}
	}
	if port == 0 { // an unset targetPort means the Service's own port
		port = svc.Spec.Ports[i].Port
	}
	return c.forwardPod(t, pod, port), pod
}

// readyPod waits for a ready pod matching sel and returns the first by name,
// so reruns pick the same one.
func (c *cluster) readyPod(ctx context.Context, namespace string, sel client.MatchingLabels) (*corev1.Pod, error) {
	var pod *corev1.Pod
	err := waitFor(ctx, forwardTimeout, fmt.Sprintf("a ready pod with labels %v", sel), func(ctx context.Context) (bool, string, error) {
		pods, err := c.readyPods(ctx, namespace, sel)
		if err != nil || len(pods) == 0 {
			return false, c.describePods(ctx, namespace, sel), err
		}
		pod = &pods[0]
		return true, "", nil
	})
	return pod, err
}

// readyPods lists the ready pods matching sel, sorted by name.
func (c *cluster) readyPods(ctx context.Context, namespace string, sel client.MatchingLabels) ([]corev1.Pod, error) {
	list := &corev1.PodList{}
	if err := c.client.List(ctx, list, client.InNamespace(namespace), sel); err != nil {
		return nil, err
	}
	pods := slices.DeleteFunc(list.Items, func(p corev1.Pod) bool { return !podReady(&p) })
	slices.SortFunc(pods, func(a, b corev1.Pod) int { return strings.Compare(a.Name, b.Name) })
	return pods, nil
}

// containerPort returns the number of the container port named name, or 0.
func containerPort(pod *corev1.Pod, name string) int32 {
	for _, c := range pod.Spec.Containers {
		for _, p := range c.Ports {
			if p.Name == name {
				return p.ContainerPort
			}
		}
	}
	return 0
}

// errNoPods is returned when a service has no ready pod to scrape.
var errNoPods = errors.New("no ready pods")
