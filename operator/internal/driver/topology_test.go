package driver

import (
	"testing"

	"github.com/courier-dev/courier/operator/api/v1alpha1"
	"github.com/courier-dev/courier/operator/internal/fixture"
)

// TestQueueType checks the default queue type: the spec's, else the type
// the queue was declared with, else quorum on every broker.
func TestQueueType(t *testing.T) {
	declaredClassic := []v1alpha1.QueueStatus{{Name: "emails", Type: v1alpha1.QueueClassic}}
	tests := []struct {
		name     string
		app      *v1alpha1.MicroserviceApp
		observed []v1alpha1.QueueStatus
		want     v1alpha1.QueueType
	}{
		{"one managed node", fixture.BlogWithQueues("ns", fixture.ManagedBroker(1)), nil, v1alpha1.QueueQuorum},
		{"three managed nodes", fixture.BlogWithQueues("ns", fixture.ManagedBroker(3)), nil, v1alpha1.QueueQuorum},
		{"external broker", fixture.BlogWithQueues("ns", fixture.ExternalBroker("s", "mq", 5672)), nil, v1alpha1.QueueQuorum},
		{"declared classic before", fixture.BlogWithQueues("ns", fixture.ManagedBroker(3)), declaredClassic, v1alpha1.QueueClassic},
		{"spec wins", fixture.BlogWithQueues("ns", fixture.ManagedBroker(1), func(a *v1alpha1.MicroserviceApp) {
			a.Spec.Queues[0].Type = v1alpha1.QueueQuorum
		}), declaredClassic, v1alpha1.QueueQuorum},
		{"spec asks for classic", fixture.BlogWithQueues("ns", fixture.ManagedBroker(3), func(a *v1alpha1.MicroserviceApp) {
			a.Spec.Queues[0].Type = v1alpha1.QueueClassic
		}), nil, v1alpha1.QueueClassic},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := QueueType(tt.app.Spec.Queues[0], tt.observed); got != tt.want {
				t.Errorf("QueueType = %s, want %s", got, tt.want)
			}
		})
	}
}
