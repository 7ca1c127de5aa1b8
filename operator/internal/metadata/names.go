package metadata

import "k8s.io/apimachinery/pkg/util/validation"

// Name is the name of every object the operator owns for one service:
// "<app>-<service>". The API rejects apps whose names would not fit a
// Service name (63 characters). Two apps in one namespace could still
// collide ("blog" + "api-x" and "blog-api" + "x"); the controller never
// writes an object it finds controlled by another app (or by no one), and
// the second app reports the NameConflict instead.
func Name(app, service string) string { return app + "-" + service }

// DataClaimName is the name of the PersistentVolumeClaim of a service with
// storage: "<app>-<service>-data". Claim names may be longer than a
// Service's, so the suffix always fits.
func DataClaimName(app, service string) string { return Name(app, service) + "-data" }

// ConnectionSecretName is the name of a service's broker connection
// Secret, whatever the broker's kind: "<app>-<service>-broker". It can
// never be the admin Secret's name, which ends in "-admin".
func ConnectionSecretName(app, service string) string {
	return app + "-" + service + "-broker"
}

// MonitoringSecretName is the name of the Secret holding a RabbitMQ app's
// monitoring user, "<app>-broker-monitoring". No service's connection
// Secret ("<app>-<service>-broker") and no managed broker object can have
// it.
func MonitoringSecretName(app string) string { return app + "-broker-monitoring" }

// AccountSecretName is the name of the Secret holding a NATS app's
// account key, "<app>-broker-account". No connection Secret
// ("<app>-<service>-broker") and no managed broker object can have it.
func AccountSecretName(app string) string { return app + "-broker-account" }

// BrokerNames are the names of every object of one app's managed broker,
// whatever its kind; a kind uses those it needs.
type BrokerNames struct {
	// StatefulSet runs the broker's nodes; its pods are <StatefulSet>-<ordinal>.
	StatefulSet string
	// Headless is the headless Service that gives each node its DNS name.
	Headless string
	// Client is the Service clients and the operator dial.
	Client string
	// AdminSecret holds the credentials or keys the operator administers
	// the broker with.
	AdminSecret string
	// ConfigMap holds the servers' configuration.
	ConfigMap string
	// ServiceAccount is the pods' identity (RabbitMQ's peer discovery).
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

// BrokerNamesFor returns the names of app's managed broker objects. They
// all start with "<app>-broker", which a service of the app could only
// produce if it were named "broker" or "broker-nodes"; the API reserves
// those names.
func BrokerNamesFor(app string) BrokerNames {
	base := app + "-broker"
	return BrokerNames{
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

// MaxBrokerAppNameLength is the longest app name a managed broker
// supports. The StatefulSet controller labels every pod with
// controller-revision-hash = "<StatefulSet>-<10-character hash>", a label
// value of at most 63 characters, so "<app>-broker" may have at most 52.
const MaxBrokerAppNameLength = validation.LabelValueMaxLength - len("-broker") - 11
