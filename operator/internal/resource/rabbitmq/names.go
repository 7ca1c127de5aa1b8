package rabbitmq

import (
	"fmt"

	"k8s.io/apimachinery/pkg/util/validation"
)

// Every name and label of a managed broker comes from this file, derived
// only from the app's name, so a stale cache can at worst re-apply an object
// and never create a second one.

// Names are the names of every object of one app's managed broker.
type Names struct {
	// StatefulSet runs the RabbitMQ nodes; its pods are <StatefulSet>-<ordinal>.
	StatefulSet string
	// Headless is the headless Service that gives each node its DNS name and
	// whose endpoints peer discovery reads.
	Headless string
	// Client is the Service clients and the operator dial: AMQP, management
	// and Prometheus.
	Client string
	// AdminSecret holds the administrator's credentials and the Erlang cookie.
	AdminSecret string
	// ConfigMap holds rabbitmq.conf and enabled_plugins.
	ConfigMap string
	// ServiceAccount is the pods' identity for peer discovery.
	ServiceAccount string
	// Role and RoleBinding grant ServiceAccount what peer discovery needs.
	Role        string
	RoleBinding string
	// PodDisruptionBudget protects the cluster's quorum during drains.
	PodDisruptionBudget string
	// NetworkPolicy admits to the nodes only the app, the operator and
	// monitoring, and to their clustering ports only each other.
	NetworkPolicy string
}

// NamesFor returns the names of app's managed broker objects. They all start
// with "<app>-broker", which a service of the app could only produce if it
// were named "broker" or "broker-nodes"; the API reserves those names.
func NamesFor(app string) Names {
	base := app + "-broker"
	return Names{
		StatefulSet:         base,
		Headless:            base + "-nodes",
		Client:              base,
		AdminSecret:         base + "-admin",
		ConfigMap:           base + "-config",
		ServiceAccount:      base,
		Role:                base + "-peer-discovery",
		RoleBinding:         base + "-peer-discovery",
		PodDisruptionBudget: base,
		NetworkPolicy:       base,
	}
}

// ConnectionSecretName is the name of a service's broker connection Secret:
// "<app>-<service>-broker". It can never be the admin Secret's name, which
// ends in "-admin".
func ConnectionSecretName(app, service string) string {
	return app + "-" + service + "-broker"
}

// MaxAppNameLength is the longest app name a managed broker supports. The
// StatefulSet controller labels every pod with controller-revision-hash =
// "<StatefulSet>-<10-character hash>", a label value of at most 63
// characters, so "<app>-broker" may have at most 52.
const MaxAppNameLength = validation.LabelValueMaxLength - len("-broker") - 11

// Label keys and values. LabelInstance is the key resource.LabelInstance
// uses; it is spelled out rather than imported so that package resource can
// import this one.
const (
	// LabelInstance holds the MicroserviceApp's name.
	LabelInstance = "app.kubernetes.io/instance"
	// LabelComponent says which part of the app an object belongs to.
	LabelComponent = "app.kubernetes.io/component"
	// ComponentBroker is LabelComponent's value on every broker object.
	ComponentBroker = "broker"
)

// SelectorLabels select app's broker pods. They never change, since a
// StatefulSet's selector and volume claim templates are immutable, and they
// do not overlap a service's selector (app.kubernetes.io/name = <service>),
// because no service's pods carry the component label.
func SelectorLabels(app string) map[string]string {
	return map[string]string{
		LabelInstance:  app,
		LabelComponent: ComponentBroker,
	}
}

// labels are the caller's labels plus the selector labels, which win: the
// pods must match the selector whatever the caller passed.
func (b Broker) labels() map[string]string {
	out := make(map[string]string, len(b.Labels)+2)
	for k, v := range b.Labels {
		out[k] = v
	}
	for k, v := range SelectorLabels(b.App) {
		out[k] = v
	}
	return out
}

// validateAppName checks that every name derived from app is a valid object
// name and label value.
func validateAppName(app string) error {
	if app == "" {
		return fmt.Errorf("app name is empty")
	}
	if len(app) > MaxAppNameLength {
		return fmt.Errorf("app name %q is %d characters; a managed broker allows at most %d", app, len(app), MaxAppNameLength)
	}
	n := NamesFor(app)
	for _, name := range []string{n.StatefulSet, n.Headless, n.Client} {
		if errs := validation.IsDNS1035Label(name); len(errs) > 0 {
			return fmt.Errorf("app name %q gives the invalid object name %q: %v", app, name, errs)
		}
	}
	return nil
}
