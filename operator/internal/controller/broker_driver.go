package controller

import (
	"cmp"
	"context"
	"maps"
	"slices"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/courier-dev/courier/operator/api/v1alpha1"
	"github.com/courier-dev/courier/operator/internal/broker"
	"github.com/courier-dev/courier/operator/internal/broker/natsbroker"
	"github.com/courier-dev/courier/operator/internal/driver"
	"github.com/courier-dev/courier/operator/internal/driver/natsdriver"
	"github.com/courier-dev/courier/operator/internal/driver/rabbitmqdriver"
	"github.com/courier-dev/courier/operator/internal/resource/kind"
)

// brokerDrivers are the broker kinds the operator runs, by
// spec.broker.kind, each doing its work through the admin given. A new
// kind is a driver package (see package driver) and one line here (and
// its value in the API's BrokerKind enum).
func brokerDrivers(rabbit broker.Admin, nats *natsbroker.NATS) map[v1alpha1.BrokerKind]driver.Driver {
	return map[v1alpha1.BrokerKind]driver.Driver{
		v1alpha1.BrokerRabbitMQ: rabbitmqdriver.New(rabbit),
		v1alpha1.BrokerNATS:     natsdriver.New(nats),
	}
}

// defaultNATSAdmin does the work on NATS systems unless NATSAdmin is set.
var defaultNATSAdmin = natsbroker.New()

// driverFor is the driver of the app's broker kind. The API admits only
// registered kinds; one stored before a kind was dropped falls back to
// RabbitMQ, the kind of the seed. The drivers live as long as the
// reconciler: they keep what their apps share (a broker's queue listing).
func (r *MicroserviceAppReconciler) driverFor(app *v1alpha1.MicroserviceApp) driver.Driver {
	r.driversOnce.Do(func() {
		r.drivers = brokerDrivers(r.Admin, cmp.Or(r.NATSAdmin, defaultNATSAdmin))
	})
	if d, ok := r.drivers[app.Spec.Broker.Kind]; ok {
		return d
	}
	return r.drivers[v1alpha1.BrokerRabbitMQ]
}

// brokerKinds are the kinds of object of every driver's managed broker,
// RabbitMQ's first (the seed's order), then the others by name.
func brokerKinds() []kind.Object {
	drivers := brokerDrivers(nil, nil) // kinds need no admin
	out := drivers[v1alpha1.BrokerRabbitMQ].Kinds()
	for _, k := range slices.Sorted(maps.Keys(drivers)) {
		if k != v1alpha1.BrokerRabbitMQ {
			out = append(out, drivers[k].Kinds()...)
		}
	}
	return out
}

// driverHost is the reconciler as a driver sees it (driver.Host), for one
// reconcile's scope; nil for a clean-up or stop, which apply nothing.
type driverHost struct {
	r *MicroserviceAppReconciler
	s *scope
}

var _ driver.Host = driverHost{}

func (h driverHost) Client() client.Client    { return h.r.Client }
func (h driverHost) APIReader() client.Reader { return h.r.apiReader() }

func (h driverHost) Apply(ctx context.Context, k kind.Object, desired runtime.ApplyConfiguration) (client.Object, error) {
	return h.r.applyChild(ctx, h.s, k, desired)
}

func (h driverHost) Want(kind, name string) { h.s.wanted[wantedKey(kind, name)] = true }

func (h driverHost) GetSecret(ctx context.Context, key client.ObjectKey, secret *corev1.Secret) (bool, error) {
	return h.r.getSecret(ctx, key, secret)
}

func (h driverHost) KeptSecretValue(ctx context.Context, namespace, name, key string, generate func() ([]byte, error)) ([]byte, bool, error) {
	return h.r.keptSecretValue(ctx, namespace, name, key, generate)
}

func (h driverHost) ExternalSecret(ctx context.Context, app *v1alpha1.MicroserviceApp) (*corev1.Secret, string, error) {
	return h.r.externalSecret(ctx, app)
}

func (h driverHost) Config() driver.Config {
	return driver.Config{
		ClusterDomain:      h.r.ClusterDomain,
		OperatorNamespace:  h.r.OperatorNamespace,
		QueueStatsInterval: h.r.queueStatsInterval(),
		Now:                h.r.now,
	}
}
