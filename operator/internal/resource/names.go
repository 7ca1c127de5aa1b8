package resource

// FieldOwner is the server-side apply field manager of every object the
// operator writes. One owner means one consistent view of what the operator
// manages, and lets the controller compare its intent with exactly the fields
// it owns.
const FieldOwner = "courier-operator"

// Label keys, the recommended app.kubernetes.io set.
const (
	// LabelName holds the service's name within its app.
	LabelName = "app.kubernetes.io/name"
	// LabelInstance holds the MicroserviceApp's name.
	LabelInstance = "app.kubernetes.io/instance"
	// LabelManagedBy marks objects the operator writes; the operator's cache
	// only holds objects carrying it.
	LabelManagedBy = "app.kubernetes.io/managed-by"
)

// ManagedBy is the value of LabelManagedBy.
const ManagedBy = "courier-operator"

// Name is the name of every object the operator owns for one service:
// "<app>-<service>". It is deterministic, never generateName, so a stale cache
// can at worst re-apply an object, never create a duplicate. The API rejects
// apps whose names would not fit a Service name (63 characters). Two apps in
// one namespace could still collide ("blog" + "api-x" and "blog-api" + "x");
// the controller never writes an object it finds controlled by another app
// (or by no one), and the second app reports the NameConflict instead.
func Name(app, service string) string { return app + "-" + service }

// Labels are put on every object the operator owns for a service and on its
// pods.
func Labels(app, service string) map[string]string {
	return map[string]string{
		LabelName:      service,
		LabelInstance:  app,
		LabelManagedBy: ManagedBy,
	}
}

// SelectorLabels select a service's pods. They are the part of Labels that
// never changes, since a Deployment's selector is immutable.
func SelectorLabels(app, service string) map[string]string {
	return map[string]string{
		LabelName:     service,
		LabelInstance: app,
	}
}

// AppLabels select every object the operator owns for an app, to find those
// no longer wanted.
func AppLabels(app string) map[string]string {
	return map[string]string{
		LabelInstance:  app,
		LabelManagedBy: ManagedBy,
	}
}

// DataClaimName is the name of the PersistentVolumeClaim of a service with
// storage: "<app>-<service>-data". Claim names may be longer than a
// Service's, so the suffix always fits.
func DataClaimName(app, service string) string { return Name(app, service) + "-data" }
