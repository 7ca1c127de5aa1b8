package v1alpha1_test

import (
	"testing"

	"github.com/courier-dev/courier/operator/api/v1alpha1"
	"github.com/courier-dev/courier/operator/internal/broker"
	"github.com/courier-dev/courier/services/kit/contract"
)

// TestPortNamesFollowContract keeps the API's port names, which the enum
// marker repeats as literals, equal to the contract's.
func TestPortNamesFollowContract(t *testing.T) {
	if v1alpha1.PortHTTP != contract.HTTPPortName || v1alpha1.PortAdmin != contract.AdminPortName {
		t.Errorf("port names %q/%q, contract %q/%q", v1alpha1.PortHTTP, v1alpha1.PortAdmin, contract.HTTPPortName, contract.AdminPortName)
	}
}

// TestBrokerKindsFollowContract keeps the API's broker kinds, which the
// operator passes to services as BROKER_KIND, equal to the contract's.
func TestBrokerKindsFollowContract(t *testing.T) {
	if v1alpha1.BrokerRabbitMQ != contract.BrokerRabbitMQ {
		t.Errorf("broker kind %q, contract %q", v1alpha1.BrokerRabbitMQ, contract.BrokerRabbitMQ)
	}
}

// TestQueueValuesFollowBroker keeps the API's queue types and deletion
// policies, which the controller hands to the broker package as they are,
// equal to that package's.
func TestQueueValuesFollowBroker(t *testing.T) {
	if string(v1alpha1.QueueClassic) != string(broker.QueueClassic) || string(v1alpha1.QueueQuorum) != string(broker.QueueQuorum) {
		t.Errorf("queue types %q/%q, broker %q/%q", v1alpha1.QueueClassic, v1alpha1.QueueQuorum, broker.QueueClassic, broker.QueueQuorum)
	}
	if string(v1alpha1.DeletionRetain) != string(broker.Retain) || string(v1alpha1.DeletionDelete) != string(broker.Delete) {
		t.Errorf("deletion policies %q/%q, broker %q/%q", v1alpha1.DeletionRetain, v1alpha1.DeletionDelete, broker.Retain, broker.Delete)
	}
}
