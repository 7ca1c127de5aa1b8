package controller

import (
	"context"
	"fmt"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/courier-dev/courier/operator/api/v1alpha1"
	"github.com/courier-dev/courier/operator/internal/fixture"
	"github.com/courier-dev/courier/operator/internal/metadata"
)

// waitNameConflict waits for the app's ResourcesApplied to be False with
// reason NameConflict and a message holding every one of want, and returns
// the app as read then.
func waitNameConflict(t *testing.T, app *v1alpha1.MicroserviceApp, want ...string) *v1alpha1.MicroserviceApp {
	t.Helper()
	live := &v1alpha1.MicroserviceApp{}
	eventually(t, fmt.Sprintf("app %s reports a NameConflict naming %q", app.Name, want), func(ctx context.Context) error {
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(app), live); err != nil {
			return err
		}
		c := findCondition(live, v1alpha1.ConditionResourcesApplied)
		if c == nil || c.Status != metav1.ConditionFalse || c.Reason != v1alpha1.ReasonNameConflict {
			return fmt.Errorf("ResourcesApplied = %+v", c)
		}
		for _, w := range want {
			if !strings.Contains(c.Message, w) {
				return fmt.Errorf("ResourcesApplied message %q lacks %q", c.Message, w)
			}
		}
		return nil
	})
	return live
}

// unchanged fails the test if obj, read again, differs from before in its
// resourceVersion (any write at all), its labels, its owners or its spec.
func unchanged[T client.Object](t *testing.T, before T, fresh T, spec func(T) any) {
	t.Helper()
	if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(before), fresh); err != nil {
		t.Fatal(err)
	}
	if fresh.GetResourceVersion() != before.GetResourceVersion() {
		t.Errorf("%T %s was written: resourceVersion %s, was %s", fresh, fresh.GetName(), fresh.GetResourceVersion(), before.GetResourceVersion())
	}
	if !equality.Semantic.DeepEqual(spec(fresh), spec(before)) ||
		!equality.Semantic.DeepEqual(fresh.GetLabels(), before.GetLabels()) ||
		!equality.Semantic.DeepEqual(fresh.GetOwnerReferences(), before.GetOwnerReferences()) {
		t.Errorf("%T %s changed:\n%s", fresh, fresh.GetName(), diffYAML(before, fresh))
	}
}

// TestNameCollisionBetweenApps: app shop with service api-v2 and app
// shop-api with service v2 both name their objects shop-api-v2. The first
// keeps them and stays Ready; the second reports the conflict and writes
// nothing.
func TestNameCollisionBetweenApps(t *testing.T) {
	t.Parallel()
	ns := namespace(t)
	first := fixture.App(ns, "shop", fixture.WithService("api-v2"))
	first.UID = ""
	create(t, first)
	get(t, ns, "shop-api-v2", &appsv1.Deployment{})
	markAvailable(t, ns, "shop-api-v2")
	waitReady(t, first, metav1.ConditionTrue)
	svc := get(t, ns, "shop-api-v2", &corev1.Service{})
	dep := get(t, ns, "shop-api-v2", &appsv1.Deployment{})

	second := fixture.App(ns, "shop-api", fixture.WithService("v2"))
	second.UID = ""
	create(t, second)
	live := waitNameConflict(t, second,
		"Service/shop-api-v2 already exists and is controlled by MicroserviceApp/shop",
		"Deployment/shop-api-v2 already exists and is controlled by MicroserviceApp/shop")
	if c := findCondition(live, v1alpha1.ConditionReady); c == nil || c.Status != metav1.ConditionFalse || c.Reason != v1alpha1.ReasonNameConflict {
		t.Errorf("second app's Ready = %+v, want False NameConflict", c)
	}
	// The conflict waits for a person: Stalled, which kstatus reads as
	// Failed once observedGeneration has caught up.
	if c := findCondition(live, v1alpha1.ConditionStalled); c == nil || c.Status != metav1.ConditionTrue || c.Reason != v1alpha1.ReasonNameConflict {
		t.Errorf("second app's Stalled = %+v, want True NameConflict", c)
	}
	if live.Status.ObservedGeneration != live.Generation {
		t.Errorf("observedGeneration %d with a conflict, want %d", live.Status.ObservedGeneration, live.Generation)
	}
	if got := kstatusOf(t, live); got.Status != status.FailedStatus {
		t.Errorf("kstatus of the second app = %s (%s), want Failed", got.Status, got.Message)
	}
	waitEvent(t, live, corev1.EventTypeWarning, v1alpha1.ReasonNameConflict)

	// A retry, run now rather than waited for, still leaves them alone.
	reconcileOnce(t, second)
	unchanged(t, svc, &corev1.Service{}, func(s *corev1.Service) any { return s.Spec })
	unchanged(t, dep, &appsv1.Deployment{}, func(d *appsv1.Deployment) any { return d.Spec })
	if c := readyCondition(context.Background(), first); c == nil || c.Status != metav1.ConditionTrue {
		t.Errorf("first app's Ready = %+v, want True", c)
	}
}

// TestHandMadeObjectIsLeftAlone: a Deployment someone made by hand, without
// the operator's labels or any owner, has the name the app's service needs.
// The operator must not write it, must say so on the app, and must take the
// name once the Deployment is gone.
func TestHandMadeObjectIsLeftAlone(t *testing.T) {
	t.Parallel()
	ns := namespace(t)
	foreign := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "shop-api", Labels: map[string]string{"team": "payments"}},
		Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"foreign": "yes"}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"foreign": "yes"}},
				Spec: corev1.PodSpec{
					ServiceAccountName: "payments",
					Containers:         []corev1.Container{{Name: "c", Image: "foreign:1"}},
				},
			},
		},
	}
	create(t, foreign)
	app := fixture.App(ns, "shop", fixture.WithService("api"), fixture.WithService("worker"))
	app.UID = ""
	create(t, app)

	// The other service is not held back.
	get(t, ns, "shop-worker", &appsv1.Deployment{})
	get(t, ns, "shop-api", &corev1.Service{})
	live := waitNameConflict(t, app, "Deployment/shop-api already exists and has no owner")
	reconcileOnce(t, app)
	unchanged(t, foreign, &appsv1.Deployment{}, func(d *appsv1.Deployment) any { return d.Spec })
	waitEvent(t, live, corev1.EventTypeWarning, v1alpha1.ReasonNameConflict)

	// Once it is gone the app takes the name, with no event and no edit of
	// the app: the conflict is retried.
	if err := k8s.Delete(context.Background(), foreign); err != nil {
		t.Fatal(err)
	}
	eventually(t, "Deployment shop-api is the app's", func(ctx context.Context) error {
		d := &appsv1.Deployment{}
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "shop-api"}, d); err != nil {
			return err
		}
		if !metav1.IsControlledBy(d, live) {
			return fmt.Errorf("owners %v", d.OwnerReferences)
		}
		return nil
	})
	markAvailable(t, ns, "shop-api")
	markAvailable(t, ns, "shop-worker")
	waitReady(t, app, metav1.ConditionTrue)
}

// TestObjectOfAnotherControllerIsLeftAlone: an object carrying the
// operator's labels (so it is in the cache) but controlled by something
// else is not taken over either.
func TestObjectOfAnotherControllerIsLeftAlone(t *testing.T) {
	t.Parallel()
	ns := namespace(t)
	foreign := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: ns,
			Name:      "shop-api",
			Labels:    metadata.Labels("shop", "api"),
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "v1", Kind: "ConfigMap", Name: "someone-else",
				UID: "00000000-0000-0000-0000-00000000beef", Controller: ptr.To(true),
			}},
		},
		Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"foreign": "yes"}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"foreign": "yes"}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "foreign:1"}}},
			},
		},
	}
	create(t, foreign)
	app := fixture.App(ns, "shop", fixture.WithService("api"), fixture.WithService("worker"))
	app.UID = ""
	create(t, app)

	get(t, ns, "shop-worker", &appsv1.Deployment{})
	waitNameConflict(t, app, "Deployment/shop-api already exists and is controlled by ConfigMap/someone-else")
	reconcileOnce(t, app)
	unchanged(t, foreign, &appsv1.Deployment{}, func(d *appsv1.Deployment) any { return d.Spec })
}

// TestOwnObjectMissingFromCacheIsKept: an object the app controls that the
// cache does not hold (its managed-by label removed by hand, as an object
// the cache has not caught up with yet) makes the create-only apply find
// the name taken; the operator reads it, sees it is the app's, and repairs
// it in place rather than reporting a conflict.
func TestOwnObjectMissingFromCacheIsKept(t *testing.T) {
	t.Parallel()
	ns := namespace(t)
	app := fixture.App(ns, "shop", fixture.WithService("api"))
	app.UID = ""
	create(t, app)
	dep := get(t, ns, "shop-api", &appsv1.Deployment{})
	markAvailable(t, ns, "shop-api")
	waitReady(t, app, metav1.ConditionTrue)

	eventually(t, "remove the managed-by label", func(ctx context.Context) error {
		d := &appsv1.Deployment{}
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(dep), d); err != nil {
			return err
		}
		delete(d.Labels, metadata.LabelManagedBy)
		return k8s.Update(ctx, d, client.FieldOwner("kubectl-edit"))
	})
	eventually(t, "the label restored on the same Deployment", func(ctx context.Context) error {
		d := &appsv1.Deployment{}
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(dep), d); err != nil {
			return err
		}
		if d.UID != dep.UID {
			return fmt.Errorf("Deployment recreated: UID %s, was %s", d.UID, dep.UID)
		}
		if d.Labels[metadata.LabelManagedBy] != metadata.ManagedBy {
			return fmt.Errorf("labels %v", d.Labels)
		}
		return nil
	})
	if c := readyCondition(context.Background(), app); c == nil || c.Status != metav1.ConditionTrue {
		t.Errorf("Ready = %+v, want True", c)
	}
}
