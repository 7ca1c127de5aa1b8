package natsdriver_test

import (
	"testing"

	"k8s.io/utils/ptr"

	"github.com/courier-dev/courier/operator/api/v1alpha1"
	"github.com/courier-dev/courier/operator/internal/broker/natsbroker"
	"github.com/courier-dev/courier/operator/internal/driver/natsdriver"
	"github.com/courier-dev/courier/operator/internal/fixture"
)

// TestNATSStreamReplicas: a managed cluster of three or more servers keeps
// three copies of the app's stream and consumers; one server, or an
// external system, one.
func TestNATSStreamReplicas(t *testing.T) {
	for _, tc := range []struct {
		name     string
		managed  *int32 // nil: external
		replicas int
	}{
		{"one server", ptr.To[int32](1), 1},
		{"three servers", ptr.To[int32](3), 3},
		{"five servers", ptr.To[int32](5), 3},
		{"external", nil, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			app := fixture.BlogWithQueues("ns")
			app.Spec.Broker.Kind = v1alpha1.BrokerNATS
			if tc.managed == nil {
				app.Spec.Broker.Managed = nil
				app.Spec.Broker.External = &v1alpha1.ExternalBroker{Host: "nats.example"}
			} else {
				app.Spec.Broker.Managed.Replicas = tc.managed
			}
			topo, _ := (&natsdriver.Driver{}).Topology(app, nil)
			s, err := natsbroker.Generate(topo)
			if err != nil {
				t.Fatal(err)
			}
			if s.Stream.Replicas != tc.replicas {
				t.Errorf("stream replicas %d, want %d", s.Stream.Replicas, tc.replicas)
			}
			for _, c := range s.Consumers {
				if c.Replicas != tc.replicas {
					t.Errorf("consumer %s replicas %d, want %d", c.Durable, c.Replicas, tc.replicas)
				}
			}
		})
	}
}
