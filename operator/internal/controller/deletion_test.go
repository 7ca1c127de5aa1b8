package controller

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/courier-dev/courier/operator/api/v1alpha1"
	"github.com/courier-dev/courier/operator/internal/driver/rabbitmqdriver"
	"github.com/courier-dev/courier/operator/internal/metadata"
	"github.com/courier-dev/courier/operator/internal/resource/rabbitmq"
)

// TestDeletionStuckOnARefusingBroker deletes an app whose external broker
// refuses the operator's credentials: the deletion waits, says why on the
// app (Ready=False, CleanupFailed, naming the way out) and in an event; the
// skip annotation then lets the app go and leaves its state on the broker.
func TestDeletionStuckOnARefusingBroker(t *testing.T) {
	t.Parallel()
	node := testBroker(t)
	app := externalApp(t, "refusing-broker", "refusing", "http://"+node.Host+":"+fmt.Sprint(node.ManagementPort))
	waitCondition(t, app, v1alpha1.ConditionTopologyReady, metav1.ConditionTrue, v1alpha1.ReasonDeclared)

	secret := &corev1.Secret{}
	if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: app.Namespace, Name: "broker-admin"}, secret); err != nil {
		t.Fatal(err)
	}
	secret.Data[v1alpha1.ExternalPasswordKey] = []byte("wrong")
	if err := k8s.Update(context.Background(), secret); err != nil {
		t.Fatal(err)
	}
	waitCondition(t, app, v1alpha1.ConditionBrokerReady, metav1.ConditionFalse, v1alpha1.ReasonBrokerUnauthorized)
	live := &v1alpha1.MicroserviceApp{}
	if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(app), live); err != nil {
		t.Fatal(err)
	}
	if err := k8s.Delete(context.Background(), app); err != nil {
		t.Fatal(err)
	}
	c := waitCondition(t, app, v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonCleanupFailed)
	if !strings.Contains(c.Message, v1alpha1.AnnotationSkipBrokerCleanup) {
		t.Errorf("Ready message %q does not name the annotation that skips the clean-up", c.Message)
	}
	waitEvent(t, live, corev1.EventTypeWarning, eventBrokerCleanupFailed)

	patch := client.RawPatch("application/merge-patch+json", fmt.Appendf(nil,
		`{"metadata":{"annotations":{%q:"true"}}}`, v1alpha1.AnnotationSkipBrokerCleanup))
	if err := k8s.Patch(context.Background(), live, patch); err != nil {
		t.Fatal(err)
	}
	waitGone(t, app)
	waitEvent(t, live, corev1.EventTypeWarning, eventBrokerCleanupSkipped)
	if _, err := adminAPI(t).GetVhost(app.Name); err != nil {
		t.Errorf("vhost %s: %v, want it left on the broker", app.Name, err)
	}
}

// TestDeletionStopsTheBrokerWithoutPreStopChecks deletes an app with a
// managed broker: before the app lets its broker go, its running broker
// pods are marked (with the time) to skip the preStop checks, and the app
// stays until the marks are old enough for the kubelet to have shown them
// to the pods. (envtest runs no kubelet and no garbage collector: the pod is
// made by hand.)
func TestDeletionStopsTheBrokerWithoutPreStopChecks(t *testing.T) {
	t.Parallel()
	app := blogOnBroker(t, "stopping")
	ctx := context.Background()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: app.Namespace, Name: "stopping-broker-0", Labels: metadata.BrokerSelectorLabels(app.Name)},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "rabbitmq", Image: "rabbitmq"}}},
	}
	create(t, pod)

	if err := k8s.Delete(ctx, app); err != nil {
		t.Fatal(err)
	}
	var marked time.Time
	eventually(t, "the broker pod marked to skip its preStop checks", func(ctx context.Context) error {
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(pod), pod); err != nil {
			return err
		}
		mark := pod.Annotations[rabbitmq.AnnotationSkipPreStopChecks]
		at, err := time.Parse(time.RFC3339, mark)
		if err != nil {
			return fmt.Errorf("annotation %s=%q: %v", rabbitmq.AnnotationSkipPreStopChecks, mark, err)
		}
		marked = at
		return nil
	})
	waitGone(t, app)
	if gone := time.Now(); gone.Sub(marked) < rabbitmqdriver.MarkPropagation-time.Second {
		t.Errorf("the app went %s after marking its broker's pods, want at least %s (the mark's time has second precision)",
			gone.Sub(marked), rabbitmqdriver.MarkPropagation-time.Second)
	}
}

// TestSameNameInTwoNamespacesOnOneBroker runs two apps named alike in two
// namespaces on one external broker. The first owns the vhost (its
// description names it); the second is refused with a condition naming the
// owner, and neither declaring nor deleting it touches the first's vhost,
// users or passwords.
func TestSameNameInTwoNamespacesOnOneBroker(t *testing.T) {
	t.Parallel()
	node := testBroker(t)
	url := "http://" + node.Host + ":" + fmt.Sprint(node.ManagementPort)
	first := externalApp(t, "twin-first", "twin", url)
	waitCondition(t, first, v1alpha1.ConditionTopologyReady, metav1.ConditionTrue, v1alpha1.ReasonDeclared)
	vhost, err := adminAPI(t).GetVhost("twin")
	if err != nil {
		t.Fatal(err)
	}
	if want := "Managed by Courier for twin-first/twin"; vhost.Description != want {
		t.Errorf("vhost description %q, want %q", vhost.Description, want)
	}

	second := externalApp(t, "twin-second", "twin", url)
	c := waitCondition(t, second, v1alpha1.ConditionTopologyReady, metav1.ConditionFalse, v1alpha1.ReasonBrokerNameConflict)
	if !strings.Contains(c.Message, "twin-first/twin") {
		t.Errorf("TopologyReady message %q does not name the vhost's owner", c.Message)
	}
	dial := func() {
		t.Helper()
		conn, err := dialService(t, first, "users")
		if err != nil {
			t.Fatalf("the first app's users after the second app came: %v", err)
		}
		_ = conn.Close()
	}
	dial()

	live := &v1alpha1.MicroserviceApp{}
	if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(second), live); err != nil {
		t.Fatal(err)
	}
	if err := k8s.Delete(context.Background(), second); err != nil {
		t.Fatal(err)
	}
	waitGone(t, second)
	waitEvent(t, live, corev1.EventTypeWarning, eventBrokerCleanupSkipped)
	if _, err := adminAPI(t).GetVhost("twin"); err != nil {
		t.Errorf("the first app's vhost after deleting the second: %v", err)
	}
	dial()
	waitCondition(t, first, v1alpha1.ConditionTopologyReady, metav1.ConditionTrue, v1alpha1.ReasonDeclared)
}
