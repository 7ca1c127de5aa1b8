//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/courier-dev/courier/services/kit/contract"
)

// probeImage runs the connection checks: an image with sh, timeout and
// wget. hack/test-e2e.sh points it at the busybox image the local node
// builds; on kind the public busybox is pulled.
func probeImage() (string, corev1.PullPolicy) {
	if img := os.Getenv("E2E_PROBE_IMAGE"); img != "" {
		return img, corev1.PullPolicy(os.Getenv("E2E_PROBE_PULL_POLICY"))
	}
	return "busybox:1.36", corev1.PullIfNotPresent
}

// networkPolicies: the operator's NetworkPolicies are enforced. A pod that
// is no service of the app reaches the gateway (an entry point) but not the
// users service, which only the gateway and posts may call. The control
// connection to the gateway shows the refusal is the policy's doing, not a
// pod that cannot reach anything. On a network plugin that does not enforce
// NetworkPolicies this step fails: the suite wants one that does.
func (s *suite) networkPolicies(t *testing.T) {
	ctx := t.Context()
	app := s.getApp(t, ctx)
	for _, tt := range []struct {
		service, path string // a path that answers 200
		reach         bool
	}{
		{"gateway", "/api/posts", true},
		{"users", "/.well-known/jwks.json", false},
	} {
		t.Run(tt.service, func(t *testing.T) {
			svc := &corev1.Service{}
			if err := s.c.client.Get(ctx, client.ObjectKey{Namespace: s.cfg.namespace, Name: objectName(app.Name, tt.service)}, svc); err != nil {
				t.Fatal(err)
			}
			var port int32
			for _, p := range svc.Spec.Ports {
				if p.Name == contract.HTTPPortName {
					port = p.Port
				}
			}
			url := fmt.Sprintf("http://%s.%s.svc:%d%s", svc.Name, svc.Namespace, port, tt.path)
			ok, logs := s.runProbe(t, ctx, "netcheck-"+tt.service, url)
			if ok != tt.reach {
				t.Errorf("a pod outside the app reached %s: %v, want %v (%s)", url, ok, tt.reach, logs)
			}
		})
	}
}

// runProbe runs a pod that fetches url with a 5 s limit and reports
// whether it succeeded. The pod meets the restricted Pod Security Standard
// of the namespace and carries none of the app's labels.
func (s *suite) runProbe(t *testing.T, ctx context.Context, name, url string) (bool, string) {
	t.Helper()
	image, pull := probeImage()
	pod := &corev1.Pod{}
	pod.Namespace, pod.Name = s.cfg.namespace, name+"-"+strconv.FormatInt(time.Now().UnixNano()%1_000_000, 36)
	pod.Spec = corev1.PodSpec{
		RestartPolicy:                corev1.RestartPolicyNever,
		AutomountServiceAccountToken: ptr.To(false),
		SecurityContext: &corev1.PodSecurityContext{
			RunAsNonRoot: ptr.To(true), RunAsUser: ptr.To[int64](65534),
			SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
		Containers: []corev1.Container{{
			Name: "probe", Image: image, ImagePullPolicy: pull,
			// busybox's own wget -T crashes in Debian's 1.35; timeout bounds
			// it. "; exit $?" keeps sh as PID 1: busybox timeout runs the
			// command in its own process, and as PID 1 wget would ignore
			// the SIGTERM and never end.
			Command: []string{"sh", "-c", "timeout 5 wget -q -O /dev/null " + url + "; exit $?"},
			SecurityContext: &corev1.SecurityContext{
				AllowPrivilegeEscalation: ptr.To(false),
				Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			},
		}},
	}
	if err := s.c.client.Create(ctx, pod); err != nil {
		t.Fatalf("create probe pod: %v", err)
	}
	t.Cleanup(func() {
		if err := s.c.client.Delete(context.Background(), pod, client.GracePeriodSeconds(0)); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("delete probe pod: %v", err)
		}
	})
	err := waitFor(ctx, 2*time.Minute, "probe pod "+pod.Name+" done", func(ctx context.Context) (bool, string, error) {
		if err := s.c.client.Get(ctx, client.ObjectKeyFromObject(pod), pod); err != nil {
			return false, "", err
		}
		var states []string
		for _, cs := range pod.Status.ContainerStatuses {
			states = append(states, fmt.Sprintf("%+v", cs.State))
		}
		done := pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed
		return done, fmt.Sprintf("  phase %s %s", pod.Status.Phase, strings.Join(states, " ")), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return pod.Status.Phase == corev1.PodSucceeded, string(pod.Status.Phase)
}
