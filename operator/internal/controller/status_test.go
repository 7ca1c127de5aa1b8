package controller

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/courier-dev/courier/operator/api/v1alpha1"
	"github.com/courier-dev/courier/operator/internal/fixture"
)

// deployment is a Deployment of generation 2 with replicas and status st.
func deployment(replicas int32, st appsv1.DeploymentStatus) *appsv1.Deployment {
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Generation: 2},
		Spec:       appsv1.DeploymentSpec{Replicas: ptr.To(replicas)},
		Status:     st,
	}
	d.Spec.Template.Spec.Containers = []corev1.Container{{Name: "api", Image: "api:2"}}
	return d
}

func TestRolloutOf(t *testing.T) {
	svc := &v1alpha1.Service{Name: "api", Replicas: ptr.To[int32](3)}
	stalled := []appsv1.DeploymentCondition{{Type: appsv1.DeploymentProgressing, Status: corev1.ConditionFalse, Reason: progressDeadlineExceeded}}
	tests := []struct {
		name string
		d    *appsv1.Deployment
		want rollout
	}{
		{"no deployment", nil,
			rollout{service: "api", desired: 3, waiting: "no Deployment yet"}},
		{"spec not yet observed", deployment(3, appsv1.DeploymentStatus{ObservedGeneration: 1, Replicas: 3, UpdatedReplicas: 3, AvailableReplicas: 3, ReadyReplicas: 3}),
			rollout{service: "api", image: "api:2", desired: 3, ready: 3, waiting: "rollout not started"}},
		{"stalled", deployment(3, appsv1.DeploymentStatus{ObservedGeneration: 2, Conditions: stalled}),
			rollout{service: "api", image: "api:2", desired: 3, stalled: true, waiting: "rollout exceeded its progress deadline"}},
		{"pods not updated", deployment(3, appsv1.DeploymentStatus{ObservedGeneration: 2, Replicas: 3, UpdatedReplicas: 1}),
			rollout{service: "api", image: "api:2", desired: 3, waiting: "1 of 3 pods updated"}},
		{"old pods left", deployment(3, appsv1.DeploymentStatus{ObservedGeneration: 2, Replicas: 4, UpdatedReplicas: 3}),
			rollout{service: "api", image: "api:2", desired: 3, waiting: "1 old pods terminating"}},
		{"pods unavailable", deployment(3, appsv1.DeploymentStatus{ObservedGeneration: 2, Replicas: 3, UpdatedReplicas: 3, AvailableReplicas: 2, ReadyReplicas: 2}),
			rollout{service: "api", image: "api:2", desired: 3, ready: 2, waiting: "2 of 3 pods available"}},
		{"available", deployment(3, appsv1.DeploymentStatus{ObservedGeneration: 2, Replicas: 3, UpdatedReplicas: 3, AvailableReplicas: 3, ReadyReplicas: 3}),
			rollout{service: "api", image: "api:2", desired: 3, ready: 3, available: true}},
		{"scaled to zero", deployment(0, appsv1.DeploymentStatus{ObservedGeneration: 2}),
			rollout{service: "api", image: "api:2", desired: 0, available: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := rolloutOf(svc, tt.d)
			if diff := cmp.Diff(tt.want, got, cmp.AllowUnexported(rollout{})); diff != "" {
				t.Errorf("rolloutOf (-want +got):\n%s", diff)
			}
		})
	}
}

func TestConditions(t *testing.T) {
	available := rollout{service: "api", available: true}
	waiting := rollout{service: "worker", waiting: "0 of 1 pods available"}
	stalled := rollout{service: "mail", stalled: true, waiting: "rollout exceeded its progress deadline"}
	tests := []struct {
		name      string
		applyErr  error
		rollouts  []rollout
		want      map[string]metav1.ConditionStatus
		wantReady metav1.Condition
	}{
		{
			name:     "all available",
			rollouts: []rollout{available},
			want: map[string]metav1.ConditionStatus{
				v1alpha1.ConditionResourcesApplied:  metav1.ConditionTrue,
				v1alpha1.ConditionServicesAvailable: metav1.ConditionTrue,
			},
			wantReady: metav1.Condition{Status: metav1.ConditionTrue, Reason: v1alpha1.ReasonReady,
				Message: "every service is running its current spec"},
		},
		{
			name:     "rolling out",
			rollouts: []rollout{available, waiting},
			want: map[string]metav1.ConditionStatus{
				v1alpha1.ConditionResourcesApplied:  metav1.ConditionTrue,
				v1alpha1.ConditionServicesAvailable: metav1.ConditionFalse,
			},
			wantReady: metav1.Condition{Status: metav1.ConditionFalse, Reason: v1alpha1.ReasonRollingOut,
				Message: "ServicesAvailable: waiting for worker: 0 of 1 pods available"},
		},
		{
			name:     "a stalled rollout outranks a slow one",
			rollouts: []rollout{waiting, stalled},
			want: map[string]metav1.ConditionStatus{
				v1alpha1.ConditionResourcesApplied:  metav1.ConditionTrue,
				v1alpha1.ConditionServicesAvailable: metav1.ConditionFalse,
			},
			wantReady: metav1.Condition{Status: metav1.ConditionFalse, Reason: v1alpha1.ReasonRolloutStalled,
				Message: "ServicesAvailable: waiting for worker: 0 of 1 pods available; mail: rollout exceeded its progress deadline"},
		},
		{
			name:     "apply failure comes first",
			applyErr: errors.New("apply Deployment shop-api: forbidden"),
			rollouts: []rollout{waiting},
			want: map[string]metav1.ConditionStatus{
				v1alpha1.ConditionResourcesApplied:  metav1.ConditionFalse,
				v1alpha1.ConditionServicesAvailable: metav1.ConditionFalse,
			},
			wantReady: metav1.Condition{Status: metav1.ConditionFalse, Reason: v1alpha1.ReasonApplyFailed,
				Message: "ResourcesApplied: apply Deployment shop-api: forbidden"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			app := fixture.App("ns", "shop")
			app.Generation = 4
			setResourcesApplied(app, tt.applyErr)
			setBrokerConditions(app, nil)
			setServicesAvailable(app, tt.rollouts)
			setReady(app)
			for typ, want := range tt.want {
				c := meta.FindStatusCondition(app.Status.Conditions, typ)
				if c == nil || c.Status != want || c.ObservedGeneration != 4 {
					t.Errorf("%s = %+v, want status %s at generation 4", typ, c, want)
				}
			}
			ready := meta.FindStatusCondition(app.Status.Conditions, v1alpha1.ConditionReady)
			got := metav1.Condition{Status: ready.Status, Reason: ready.Reason, Message: ready.Message}
			if diff := cmp.Diff(tt.wantReady, got); diff != "" {
				t.Errorf("Ready (-want +got):\n%s", diff)
			}
		})
	}
}

// TestReadyTransitionTime checks that re-setting an unchanged condition keeps
// its transition time, which is what keeps status writes away at steady state.
func TestReadyTransitionTime(t *testing.T) {
	app := fixture.App("ns", "shop")
	setResourcesApplied(app, nil)
	setBrokerConditions(app, nil)
	setServicesAvailable(app, nil)
	setReady(app)
	before := app.Status.DeepCopy()
	setResourcesApplied(app, nil)
	setBrokerConditions(app, nil)
	setServicesAvailable(app, nil)
	setReady(app)
	if diff := cmp.Diff(before, &app.Status); diff != "" {
		t.Errorf("setting the same conditions again changed the status (-before +after):\n%s", diff)
	}
}
