package controller

import (
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/courier-dev/courier/operator/api/v1alpha1"
	"github.com/courier-dev/courier/operator/internal/broker"
	"github.com/courier-dev/courier/operator/internal/fixture"
)

// TestBrokerConditions maps what a reconcile found out about the broker to
// BrokerReady, TopologyReady and CredentialsReady, and checks that Ready
// then reports the first that holds the app back.
func TestBrokerConditions(t *testing.T) {
	unreachable := fmt.Errorf("declare: %w: dial tcp: connection refused", broker.ErrUnreachable)
	unauthorized := fmt.Errorf("declare: %w: user %q", broker.ErrUnauthorized, "admin")
	conflict := fmt.Errorf("declare queue blog.emails: %w", broker.ErrConflict)
	type cond struct {
		Status metav1.ConditionStatus
		Reason string
	}
	tests := []struct {
		name    string
		outcome *brokerOutcome
		broker  cond
		topo    cond
		creds   cond
		ready   string
	}{
		{
			name:   "no broker",
			broker: cond{metav1.ConditionTrue, v1alpha1.ReasonNoBroker},
			topo:   cond{metav1.ConditionTrue, v1alpha1.ReasonNoBroker},
			creds:  cond{metav1.ConditionTrue, v1alpha1.ReasonNoBroker},
			ready:  v1alpha1.ReasonReady,
		},
		{
			name:    "declared",
			outcome: &brokerOutcome{declared: true},
			broker:  cond{metav1.ConditionTrue, v1alpha1.ReasonBrokerAvailable},
			topo:    cond{metav1.ConditionTrue, v1alpha1.ReasonDeclared},
			creds:   cond{metav1.ConditionTrue, v1alpha1.ReasonCredentialsIssued},
			ready:   v1alpha1.ReasonReady,
		},
		{
			name:    "external Secret missing",
			outcome: &brokerOutcome{blockedReason: v1alpha1.ReasonExternalSecretMissing, blockedMessage: "no Secret"},
			broker:  cond{metav1.ConditionFalse, v1alpha1.ReasonExternalSecretMissing},
			topo:    cond{metav1.ConditionFalse, v1alpha1.ReasonWaitingForBroker},
			creds:   cond{metav1.ConditionFalse, v1alpha1.ReasonWaitingForBroker},
			ready:   v1alpha1.ReasonExternalSecretMissing,
		},
		{
			name:    "no broker pod ready",
			outcome: &brokerOutcome{blockedReason: v1alpha1.ReasonWaitingForBrokerPods, blockedMessage: "0 of 3 broker pods ready"},
			broker:  cond{metav1.ConditionFalse, v1alpha1.ReasonWaitingForBrokerPods},
			topo:    cond{metav1.ConditionFalse, v1alpha1.ReasonWaitingForBroker},
			creds:   cond{metav1.ConditionFalse, v1alpha1.ReasonWaitingForBroker},
			ready:   v1alpha1.ReasonWaitingForBrokerPods,
		},
		{
			name:    "some broker pods ready",
			outcome: &brokerOutcome{podsWaiting: "1 of 3 broker pods ready", declared: true},
			broker:  cond{metav1.ConditionFalse, v1alpha1.ReasonWaitingForBrokerPods},
			topo:    cond{metav1.ConditionTrue, v1alpha1.ReasonDeclared},
			creds:   cond{metav1.ConditionTrue, v1alpha1.ReasonCredentialsIssued},
			ready:   v1alpha1.ReasonWaitingForBrokerPods,
		},
		{
			name:    "unreachable",
			outcome: &brokerOutcome{declareErr: unreachable},
			broker:  cond{metav1.ConditionFalse, v1alpha1.ReasonBrokerUnreachable},
			topo:    cond{metav1.ConditionFalse, v1alpha1.ReasonWaitingForBroker},
			creds:   cond{metav1.ConditionFalse, v1alpha1.ReasonWaitingForBroker},
			ready:   v1alpha1.ReasonBrokerUnreachable,
		},
		{
			name:    "administrator refused",
			outcome: &brokerOutcome{declareErr: unauthorized},
			broker:  cond{metav1.ConditionFalse, v1alpha1.ReasonBrokerUnauthorized},
			topo:    cond{metav1.ConditionFalse, v1alpha1.ReasonWaitingForBroker},
			creds:   cond{metav1.ConditionFalse, v1alpha1.ReasonWaitingForBroker},
			ready:   v1alpha1.ReasonBrokerUnauthorized,
		},
		{
			name:    "declare refused",
			outcome: &brokerOutcome{declareErr: conflict},
			broker:  cond{metav1.ConditionTrue, v1alpha1.ReasonBrokerAvailable},
			topo:    cond{metav1.ConditionFalse, v1alpha1.ReasonDeclareFailed},
			creds:   cond{metav1.ConditionFalse, v1alpha1.ReasonWaitingForTopology},
			ready:   v1alpha1.ReasonDeclareFailed,
		},
		{
			name:    "monitoring user refused",
			outcome: &brokerOutcome{declared: true, statsErr: unauthorized},
			broker:  cond{metav1.ConditionFalse, v1alpha1.ReasonBrokerUnauthorized},
			topo:    cond{metav1.ConditionTrue, v1alpha1.ReasonDeclared},
			creds:   cond{metav1.ConditionTrue, v1alpha1.ReasonCredentialsIssued},
			ready:   v1alpha1.ReasonBrokerUnauthorized,
		},
		{
			name:    "a Secret not written",
			outcome: &brokerOutcome{declared: true, secretsFailed: true},
			broker:  cond{metav1.ConditionTrue, v1alpha1.ReasonBrokerAvailable},
			topo:    cond{metav1.ConditionTrue, v1alpha1.ReasonDeclared},
			creds:   cond{metav1.ConditionFalse, v1alpha1.ReasonSecretsNotWritten},
			ready:   v1alpha1.ReasonSecretsNotWritten,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			app := fixture.App("ns", "blog")
			app.Generation = 2
			setResourcesApplied(app, nil)
			setBrokerConditions(app, tt.outcome)
			setServicesAvailable(app, nil)
			setReady(app)
			got := func(typ string) cond {
				c := meta.FindStatusCondition(app.Status.Conditions, typ)
				if c == nil {
					return cond{}
				}
				if c.ObservedGeneration != 2 {
					t.Errorf("%s at generation %d, want 2", typ, c.ObservedGeneration)
				}
				return cond{c.Status, c.Reason}
			}
			for typ, want := range map[string]cond{
				v1alpha1.ConditionBrokerReady:      tt.broker,
				v1alpha1.ConditionTopologyReady:    tt.topo,
				v1alpha1.ConditionCredentialsReady: tt.creds,
			} {
				if diff := cmp.Diff(want, got(typ)); diff != "" {
					t.Errorf("%s (-want +got):\n%s", typ, diff)
				}
			}
			if r := got(v1alpha1.ConditionReady).Reason; r != tt.ready {
				t.Errorf("Ready reason %s, want %s", r, tt.ready)
			}
		})
	}
}

// TestBrokerConditionsKeptWhenAborted checks that a reconcile that could not
// read the API server leaves the broker conditions as they were.
func TestBrokerConditionsKeptWhenAborted(t *testing.T) {
	app := fixture.App("ns", "blog")
	setBrokerConditions(app, &brokerOutcome{declared: true})
	before := app.Status.DeepCopy()
	setBrokerConditions(app, &brokerOutcome{aborted: true})
	if diff := cmp.Diff(before, &app.Status); diff != "" {
		t.Errorf("an aborted reconcile changed the broker conditions (-before +after):\n%s", diff)
	}
}

// TestQueueStatus checks that status.queues follows the spec's queues in
// name order, takes polled depths when there are some and keeps the last
// ones otherwise.
func TestQueueStatus(t *testing.T) {
	app := fixture.BlogWithQueues("ns", fixture.WithQueue("audit"))
	app.Status.Queues = []v1alpha1.QueueStatus{
		{Name: "emails", Type: v1alpha1.QueueClassic, Messages: 4, Consumers: 1, DeadLetters: 2},
		{Name: "gone", Type: v1alpha1.QueueClassic, Messages: 9},
	}
	setQueueStatus(app, &brokerOutcome{}) // neither declared nor polled
	want := []v1alpha1.QueueStatus{
		{Name: "audit"},
		{Name: "emails", Type: v1alpha1.QueueClassic, Messages: 4, Consumers: 1, DeadLetters: 2},
	}
	if diff := cmp.Diff(want, app.Status.Queues); diff != "" {
		t.Errorf("status.queues without a poll (-want +got):\n%s", diff)
	}
	if *app.Status.QueuedMessages != 4 || *app.Status.DeadLetters != 2 {
		t.Errorf("totals %d/%d, want 4/2", *app.Status.QueuedMessages, *app.Status.DeadLetters)
	}

	setQueueStatus(app, &brokerOutcome{
		declared: true,
		types:    map[string]v1alpha1.QueueType{"audit": v1alpha1.QueueClassic, "emails": v1alpha1.QueueClassic},
		stats: []broker.QueueStat{
			{Queue: "audit", Messages: 1, Consumers: 0},
			{Queue: "emails", Messages: 0, Consumers: 2, DeadLetters: 3},
		},
	})
	want = []v1alpha1.QueueStatus{
		{Name: "audit", Type: v1alpha1.QueueClassic, Messages: 1},
		{Name: "emails", Type: v1alpha1.QueueClassic, Consumers: 2, DeadLetters: 3},
	}
	if diff := cmp.Diff(want, app.Status.Queues); diff != "" {
		t.Errorf("status.queues after a poll (-want +got):\n%s", diff)
	}
	if *app.Status.QueuedMessages != 1 || *app.Status.DeadLetters != 3 {
		t.Errorf("totals %d/%d, want 1/3", *app.Status.QueuedMessages, *app.Status.DeadLetters)
	}

	setQueueStatus(app, nil)
	if app.Status.Queues != nil || app.Status.QueuedMessages != nil || app.Status.DeadLetters != nil {
		t.Errorf("status without a broker: %+v", app.Status)
	}
}
