package controller

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"

	"github.com/courier-dev/courier/operator/api/v1alpha1"
	"github.com/courier-dev/courier/operator/internal/broker"
	"github.com/courier-dev/courier/operator/internal/fixture"
)

// kstatusOf is what kstatus-based tools (Flux, Argo CD's health, kpt live
// status) make of the app: cli-utils' own computation on the unstructured
// object, as they read it from the API server.
func kstatusOf(t *testing.T, app *v1alpha1.MicroserviceApp) *status.Result {
	t.Helper()
	content, err := runtime.DefaultUnstructuredConverter.ToUnstructured(app)
	if err != nil {
		t.Fatal(err)
	}
	u := &unstructured.Unstructured{Object: content}
	u.SetAPIVersion(v1alpha1.GroupVersion.String())
	u.SetKind("MicroserviceApp")
	res, err := status.Compute(u)
	if err != nil {
		t.Fatalf("kstatus: %v", err)
	}
	return res
}

// TestKstatus sets the app's conditions the way patchStatus does for
// outcomes a reconcile can have and checks what kstatus computes from them:
// Current only when Ready, InProgress while the app makes progress on its
// own, Failed when it waits for a person.
func TestKstatus(t *testing.T) {
	available := rollout{service: "api", available: true}
	rolling := rollout{service: "api", waiting: "1 of 2 pods available"}
	stuck := rollout{service: "api", stalled: true, waiting: "rollout exceeded its progress deadline"}
	conflict := &nameConflictError{kind: "Service", name: "shop-api", owner: "MicroserviceApp/other"}
	declared := &brokerOutcome{declared: true}

	tests := []struct {
		name string
		// managedReplicas, when set, gives the app a managed broker of
		// that many nodes.
		managedReplicas *int32
		reconcileErr    error
		broker          *brokerOutcome
		rollouts        []rollout
		// behind leaves metadata.generation one ahead of what the status
		// was computed for, as when the spec changed after the last reconcile.
		behind     bool
		want       status.Status
		wantReason string // of the true condition among Reconciling and Stalled
	}{
		{name: "ready", rollouts: []rollout{available}, want: status.CurrentStatus},
		{name: "ready with a broker", managedReplicas: ptr.To[int32](1), broker: declared, rollouts: []rollout{available},
			want: status.CurrentStatus},
		{name: "ready, but the spec changed since", rollouts: []rollout{available}, behind: true,
			want: status.InProgressStatus},
		{name: "rolling out", rollouts: []rollout{available, rolling}, want: status.InProgressStatus,
			wantReason: v1alpha1.ReasonRollingOut},
		{name: "no Deployment yet", rollouts: []rollout{{service: "api", waiting: "no Deployment yet"}},
			want: status.InProgressStatus, wantReason: v1alpha1.ReasonRollingOut},
		{name: "apply failed, retried", reconcileErr: errors.New("apply Deployment shop-api: etcd timeout"),
			rollouts: []rollout{available}, want: status.InProgressStatus},
		{name: "broker forming", managedReplicas: ptr.To[int32](3),
			broker:   &brokerOutcome{blockedReason: v1alpha1.ReasonWaitingForBrokerPods, blockedMessage: "0 of 3 broker pods ready"},
			rollouts: []rollout{available}, want: status.InProgressStatus, wantReason: v1alpha1.ReasonWaitingForBrokerPods},
		{name: "broker unreachable", managedReplicas: ptr.To[int32](1),
			broker:   &brokerOutcome{declareErr: broker.ErrUnreachable},
			rollouts: []rollout{available}, want: status.InProgressStatus, wantReason: v1alpha1.ReasonBrokerUnreachable},
		{name: "name conflict", reconcileErr: conflict, rollouts: []rollout{available},
			want: status.FailedStatus, wantReason: v1alpha1.ReasonNameConflict},
		{name: "name conflict while rolling out", reconcileErr: conflict, rollouts: []rollout{rolling},
			want: status.FailedStatus, wantReason: v1alpha1.ReasonNameConflict},
		{name: "invalid broker Secret", managedReplicas: ptr.To[int32](1),
			broker:   &brokerOutcome{blockedReason: v1alpha1.ReasonBrokerSecretInvalid, blockedMessage: `Secret "shop-broker-admin" has no key "password"`},
			rollouts: []rollout{available}, want: status.FailedStatus, wantReason: v1alpha1.ReasonBrokerSecretInvalid},
		{name: "broker refuses the administrator", managedReplicas: ptr.To[int32](1),
			broker:   &brokerOutcome{declareErr: broker.ErrUnauthorized},
			rollouts: []rollout{available}, want: status.FailedStatus, wantReason: v1alpha1.ReasonBrokerUnauthorized},
		{name: "declare refused", managedReplicas: ptr.To[int32](1),
			broker:   &brokerOutcome{declareErr: errors.New("queue shop.emails exists with type classic")},
			rollouts: []rollout{available}, want: status.FailedStatus, wantReason: v1alpha1.ReasonDeclareFailed},
		{name: "rollout past its deadline", rollouts: []rollout{rolling, stuck},
			want: status.FailedStatus, wantReason: v1alpha1.ReasonRolloutStalled},
		{name: "broker scaled to zero", managedReplicas: ptr.To[int32](0),
			broker:   &brokerOutcome{blockedReason: v1alpha1.ReasonWaitingForBrokerPods, blockedMessage: "the broker is scaled to zero (spec.broker.managed.replicas)"},
			rollouts: []rollout{available}, want: status.FailedStatus, wantReason: v1alpha1.ReasonBrokerStopped},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var opts []fixture.AppOption
			if tt.managedReplicas != nil {
				opts = append(opts, fixture.ManagedBroker(*tt.managedReplicas))
			}
			app := fixture.App("ns", "shop", opts...)
			app.Generation = 3
			setResourcesApplied(app, tt.reconcileErr)
			setBrokerConditions(app, tt.broker)
			setServicesAvailable(app, tt.rollouts)
			setReady(app)
			setKstatus(app)
			if _, others := nameConflicts(tt.reconcileErr); len(others) == 0 {
				app.Status.ObservedGeneration = app.Generation
			} else {
				app.Status.ObservedGeneration = app.Generation - 1
			}
			if tt.behind {
				app.Generation++
			}

			got := kstatusOf(t, app)
			if got.Status != tt.want {
				t.Fatalf("kstatus = %s (%s), want %s; conditions %+v", got.Status, got.Message, tt.want, app.Status.Conditions)
			}

			ready := meta.FindStatusCondition(app.Status.Conditions, v1alpha1.ConditionReady)
			reconciling := meta.FindStatusCondition(app.Status.Conditions, v1alpha1.ConditionReconciling)
			stalled := meta.FindStatusCondition(app.Status.Conditions, v1alpha1.ConditionStalled)
			if reconciling == nil || stalled == nil {
				t.Fatalf("Reconciling = %+v, Stalled = %+v, want both set", reconciling, stalled)
			}
			if reconciling.Status == metav1.ConditionTrue && stalled.Status == metav1.ConditionTrue {
				t.Errorf("Reconciling and Stalled both true")
			}
			switch {
			case ready.Status == metav1.ConditionTrue:
				if reconciling.Status != metav1.ConditionFalse || stalled.Status != metav1.ConditionFalse {
					t.Errorf("Ready, but Reconciling = %s, Stalled = %s; want both False", reconciling.Status, stalled.Status)
				}
			case tt.want == status.FailedStatus:
				if stalled.Status != metav1.ConditionTrue || stalled.Reason != tt.wantReason {
					t.Errorf("Stalled = %s %s, want True %s", stalled.Status, stalled.Reason, tt.wantReason)
				}
			default:
				if reconciling.Status != metav1.ConditionTrue || reconciling.Reason != ready.Reason {
					t.Errorf("Reconciling = %s %s, want True %s (Ready's reason)", reconciling.Status, reconciling.Reason, ready.Reason)
				}
				if tt.wantReason != "" && reconciling.Reason != tt.wantReason {
					t.Errorf("Reconciling reason %s, want %s", reconciling.Reason, tt.wantReason)
				}
			}
		})
	}
}

// TestReadyFalseIsNeverCurrent: whatever the reason Ready is false for,
// and whether or not the operator has caught up with the generation,
// kstatus must not read the app as Current, which would let a GitOps tool
// report a broken app healthy.
func TestReadyFalseIsNeverCurrent(t *testing.T) {
	reasons := []string{
		v1alpha1.ReasonApplyFailed, v1alpha1.ReasonNameConflict, v1alpha1.ReasonRollingOut,
		v1alpha1.ReasonRolloutStalled, v1alpha1.ReasonWaitingForBrokerPods, v1alpha1.ReasonBrokerUnreachable,
		v1alpha1.ReasonBrokerUnauthorized, v1alpha1.ReasonExternalSecretMissing, v1alpha1.ReasonAdminSecretMissing,
		v1alpha1.ReasonBrokerSecretInvalid, v1alpha1.ReasonWaitingForBroker, v1alpha1.ReasonDeclareFailed,
		v1alpha1.ReasonWaitingForTopology, v1alpha1.ReasonSecretsNotWritten,
	}
	for _, reason := range reasons {
		for _, typ := range readyDependsOn {
			app := fixture.App("ns", "shop")
			app.Generation = 2
			app.Status.ObservedGeneration = 2
			for _, dep := range readyDependsOn {
				c := metav1.Condition{Type: dep, Status: metav1.ConditionTrue, Reason: "Fine"}
				if dep == typ {
					c.Status, c.Reason, c.Message = metav1.ConditionFalse, reason, "not yet"
				}
				meta.SetStatusCondition(&app.Status.Conditions, c)
			}
			setReady(app)
			setKstatus(app)
			if got := kstatusOf(t, app); got.Status == status.CurrentStatus {
				t.Errorf("%s=False (%s): kstatus reads Current", typ, reason)
			}
		}
	}
	// Before the first reconcile: no conditions at all but Ready Unknown.
	app := fixture.App("ns", "shop")
	app.Generation = 1
	setReady(app)
	setKstatus(app)
	if got := kstatusOf(t, app); got.Status != status.InProgressStatus {
		t.Errorf("nothing determined yet: kstatus %s, want InProgress", got.Status)
	}
}

// TestKstatusTransitionTime: setting the same outcome again changes
// nothing, so a steady app's status is not rewritten.
func TestKstatusTransitionTime(t *testing.T) {
	app := fixture.App("ns", "shop")
	set := func() {
		setResourcesApplied(app, nil)
		setBrokerConditions(app, nil)
		setServicesAvailable(app, []rollout{{service: "api", waiting: "0 of 1 pods available"}})
		setReady(app)
		setKstatus(app)
	}
	set()
	before := app.Status.DeepCopy()
	set()
	if diff := cmp.Diff(before, &app.Status); diff != "" {
		t.Errorf("setting the same conditions again changed the status (-before +after):\n%s", diff)
	}
}
