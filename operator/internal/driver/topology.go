package driver

import (
	"k8s.io/utils/ptr"

	"github.com/courier-dev/courier/operator/api/v1alpha1"
	"github.com/courier-dev/courier/operator/internal/broker"
	"github.com/courier-dev/courier/operator/internal/resource"
)

// TopologyOf maps the app's spec to the broker's input. Queue types follow
// QueueType; the chosen types are returned for status.queues.
func TopologyOf(app *v1alpha1.MicroserviceApp, observed []v1alpha1.QueueStatus) (broker.Topology, map[string]v1alpha1.QueueType) {
	t := broker.Topology{App: resource.VHost(app), Owner: app.Namespace + "/" + app.Name}
	types := make(map[string]v1alpha1.QueueType, len(app.Spec.Queues))
	for _, q := range app.Spec.Queues {
		typ := QueueType(q, observed)
		types[q.Name] = typ
		spec := broker.QueueSpec{
			Name:           q.Name,
			Type:           broker.QueueType(typ),
			MaxDeliveries:  ptr.Deref(q.MaxDeliveries, 0),
			MaxLength:      ptr.Deref(q.MaxLength, 0),
			DeletionPolicy: broker.DeletionPolicy(q.DeletionPolicy),
		}
		if q.MessageTTL != nil {
			spec.MessageTTL = q.MessageTTL.Duration
		}
		t.Queues = append(t.Queues, spec)
	}
	for _, svc := range app.Spec.Services {
		t.Services = append(t.Services, broker.ServicePerms{Name: svc.Name, Publishes: svc.Publishes, Consumes: svc.Consumes})
	}
	return t, types
}

// QueueType is the queue's spec type or, unset, the type it was declared
// with before (status.queues), since a queue cannot change type; a queue
// declared for the first time is a quorum queue, on any broker: quorum
// queues count deliveries on the broker, so a message that crashes its
// consumer is dead-lettered after maxDeliveries attempts (classic queues in
// RabbitMQ 3.x have no such limit), and they run on a single node too.
// Remembering the type keeps queues an earlier version declared classic
// from being asked to become quorum queues, which RabbitMQ refuses.
func QueueType(q v1alpha1.Queue, observed []v1alpha1.QueueStatus) v1alpha1.QueueType {
	if q.Type != "" {
		return q.Type
	}
	for _, o := range observed {
		if o.Name == q.Name && o.Type != "" {
			return o.Type
		}
	}
	return v1alpha1.QueueQuorum
}
