// Package broker is the operator's broker admin layer: it turns an app's
// queues and each service's publishes and consumes into broker topology,
// users and least-privilege permissions.
//
// The package is split the way RabbitMQ's messaging-topology-operator splits
// it: a pure settings generator (Generate: Topology -> Settings, no I/O,
// golden-tested) and a small client (RabbitMQ) that makes the broker match the
// settings (Declare), removes them (Delete) and reads queue depths
// (QueueStats). The input types are independent of the MicroserviceApp API;
// the controller maps the custom resource into them. Physical names come only
// from services/kit/contract, which the service kit uses as well, so the
// operator and the services can never disagree about a name.
package broker

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// QueueType is the RabbitMQ queue type.
type QueueType string

const (
	// QueueClassic is a classic queue: one node holds it.
	QueueClassic QueueType = "classic"
	// QueueQuorum is a Raft-replicated quorum queue; it needs a cluster of
	// three or more nodes to tolerate a node failure, and it is the only type
	// on which the broker itself enforces a delivery limit.
	QueueQuorum QueueType = "quorum"
)

// DeletionPolicy says what happens to a queue when its app is deleted.
type DeletionPolicy string

const (
	// Retain deletes the queue only when it is empty. A queue that still holds
	// messages is kept, and so is its vhost (deleting a vhost deletes every
	// queue in it), so re-creating the app picks the messages up again.
	Retain DeletionPolicy = "retain"
	// Delete deletes the queue and its dead letters with the app.
	Delete DeletionPolicy = "delete"
)

// Topology is what the operator knows about one app's messaging: the input
// of Generate. It mirrors the MicroserviceApp spec without depending on it.
type Topology struct {
	// App is the app's broker namespace: the vhost name and the prefix of
	// every physical name (contract.QueueName) and user name (UserName).
	App string
	// Owner identifies the app across the cluster ("<namespace>/<name>").
	// Declare records it on the vhost it creates and refuses a vhost that
	// records another owner (ErrOwnedElsewhere), so two apps of the same
	// name in different namespaces cannot share one broker's vhost and
	// users. Empty means no check.
	Owner string
	// Queues are the app's logical queues.
	Queues []QueueSpec
	// Services are the app's services and the queues each one uses. A
	// service that neither publishes nor consumes gets no broker user.
	Services []ServicePerms
	// Replicas is how many servers keep a copy of each queue, where the
	// broker takes it per queue: NATS JetStream's stream and consumer
	// replicas (0 means 1). RabbitMQ ignores it: a quorum queue has a
	// member on every node of the cluster it is declared on.
	Replicas int
}

// QueueSpec is one logical queue.
type QueueSpec struct {
	// Name is the logical name services use ("emails").
	Name string
	// Type is classic or quorum; it is required because it cannot change
	// once the queue exists.
	Type QueueType
	// MaxDeliveries is the number of delivery attempts before a message is
	// dead-lettered; 0 means no limit. The broker enforces it on quorum
	// queues only; on classic queues the consumer (the service kit) must.
	MaxDeliveries int32
	// MessageTTL dead-letters a message that waited longer; 0 means no TTL.
	// It is applied in whole milliseconds.
	MessageTTL time.Duration
	// MaxLength caps the ready messages; 0 means no cap. A full queue
	// refuses new messages (publishers get a negative confirm) rather than
	// dropping old ones.
	MaxLength int64
	// DeletionPolicy applies to the queue and its dead-letter queue when the
	// app is deleted; empty means Retain.
	DeletionPolicy DeletionPolicy
}

// ServicePerms is one service and the logical queues it uses.
type ServicePerms struct {
	// Name is the service's name; it is part of its broker user name, so it
	// may not contain a dot (see UserName).
	Name string
	// Publishes lists the logical queues the service publishes to.
	Publishes []string
	// Consumes lists the logical queues the service consumes from.
	Consumes []string
}

// usesBroker reports whether the service needs a broker user at all.
func (s ServicePerms) usesBroker() bool { return len(s.Publishes)+len(s.Consumes) > 0 }

// deletionPolicy returns the queue's policy with the default applied.
func (q QueueSpec) deletionPolicy() DeletionPolicy {
	if q.DeletionPolicy == "" {
		return Retain
	}
	return q.DeletionPolicy
}

// ErrInvalidTopology marks a Topology that Generate refuses; the error text
// names the offending field. The API's validation should make it impossible.
var ErrInvalidTopology = errors.New("invalid topology")

// Validate checks what Generate relies on: names present and unique, known
// queue types and deletion policies, limits in range and every queue a
// service uses declared.
func (t Topology) Validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf(format, args...))
	}
	if t.App == "" {
		bad("app: name is empty")
	}
	queues := make(map[string]bool, len(t.Queues))
	for i, q := range t.Queues {
		field := fmt.Sprintf("queues[%d]", i)
		switch {
		case q.Name == "":
			bad("%s.name: empty", field)
		case queues[q.Name]:
			bad("%s.name: duplicate queue %q", field, q.Name)
		}
		queues[q.Name] = true
		switch q.Type {
		case QueueClassic, QueueQuorum:
		default:
			bad("%s.type: %q is neither %q nor %q", field, q.Type, QueueClassic, QueueQuorum)
		}
		switch q.DeletionPolicy {
		case "", Retain, Delete:
		default:
			bad("%s.deletionPolicy: %q is neither %q nor %q", field, q.DeletionPolicy, Retain, Delete)
		}
		if q.MaxDeliveries < 0 {
			bad("%s.maxDeliveries: %d is negative", field, q.MaxDeliveries)
		}
		if q.MessageTTL < 0 || (q.MessageTTL > 0 && q.MessageTTL < time.Millisecond) {
			bad("%s.messageTTL: %s is not a positive number of milliseconds", field, q.MessageTTL)
		}
		if q.MaxLength < 0 {
			bad("%s.maxLength: %d is negative", field, q.MaxLength)
		}
	}
	services := make(map[string]bool, len(t.Services))
	for i, s := range t.Services {
		field := fmt.Sprintf("services[%d]", i)
		switch {
		case s.Name == "":
			bad("%s.name: empty", field)
		case strings.Contains(s.Name, "."):
			// "<app>.<service>" stays unambiguous only while service names
			// have no dot: the last dot then separates app and service.
			bad("%s.name: %q contains a dot", field, s.Name)
		case services[s.Name]:
			bad("%s.name: duplicate service %q", field, s.Name)
		}
		services[s.Name] = true
		for j, q := range s.Publishes {
			if !queues[q] {
				bad("%s.publishes[%d]: queue %q is not declared", field, j, q)
			}
		}
		for j, q := range s.Consumes {
			if !queues[q] {
				bad("%s.consumes[%d]: queue %q is not declared", field, j, q)
			}
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %w", ErrInvalidTopology, errors.Join(errs...))
	}
	return nil
}
