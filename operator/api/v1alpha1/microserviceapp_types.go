package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The literal defaults in the markers below are the values of
// services/kit/contract (HTTPPort, AdminPort, MetricsPath, the port names).
// Markers cannot reference Go constants, so TestDefaultsFollowContract (in
// the controller's envtest suite) and TestPortNamesFollowContract keep the
// two in step.

// MicroserviceAppSpec declares the services of one application.
//
// The calls rule has a fixed message: a messageExpression naming the unknown
// entries exceeds the API server's CEL cost budget.
// +kubebuilder:validation:XValidation:rule="self.services.all(s, !has(s.calls) || s.calls.all(c, self.services.exists(t, t.name == c)))",fieldPath=".services",message="spec.services[].calls must name services of this app"
type MicroserviceAppSpec struct {
	// services are the workloads of the app. Each becomes a Deployment and a
	// Service named "<app>-<service>", plus a PodDisruptionBudget when it runs
	// more than one replica.
	//
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=32
	// +required
	Services []Service `json:"services"`
}

// Service declares one workload of the app: its image and ports, how it is
// run, and which other services of the app it calls.
//
// +kubebuilder:validation:XValidation:rule="self.httpPort != self.adminPort",fieldPath=".adminPort",message="adminPort must differ from httpPort"
// +kubebuilder:validation:XValidation:rule="!has(self.calls) || !(self.name in self.calls)",fieldPath=".calls",message="calls must not name the service itself"
type Service struct {
	// name identifies the service within the app. It is a DNS-1035 label
	// (lower-case letters, digits and '-', starting with a letter) and, joined
	// to the app's name as "<app>-<name>", names the service's objects.
	//
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=62
	// +kubebuilder:validation:Pattern=`^[a-z]([-a-z0-9]*[a-z0-9])?$`
	// +required
	Name string `json:"name"`

	// image is the container image reference, such as
	// "ghcr.io/courier-dev/users:1.0.0".
	//
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:Pattern=`^\S+$`
	// +required
	Image string `json:"image"`

	// imagePullPolicy is the container's image pull policy. Unset, the
	// cluster's default applies: Always for ":latest" or untagged images,
	// IfNotPresent otherwise.
	//
	// +kubebuilder:validation:Enum=Always;IfNotPresent;Never
	// +optional
	ImagePullPolicy corev1.PullPolicy `json:"imagePullPolicy,omitempty"`

	// replicas is the number of pods. Zero scales the service down and keeps
	// its Service. More than one adds a PodDisruptionBudget that keeps all but
	// one pod up through voluntary disruptions.
	//
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=0
	// +optional
	Replicas *int32 `json:"replicas,omitempty"`

	// httpPort is the container port of the service's public API, named
	// "http" on the container and the Service. Callers reach it through the
	// SERVICE_<NAME>_URL variable.
	//
	// +kubebuilder:default=8080
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	// +optional
	HTTPPort int32 `json:"httpPort,omitempty"`

	// adminPort is the container port of /livez, /readyz and /metrics, named
	// "admin", kept off the public port. It must differ from httpPort.
	//
	// +kubebuilder:default=9090
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	// +optional
	AdminPort int32 `json:"adminPort,omitempty"`

	// command replaces the image's entrypoint.
	//
	// +listType=atomic
	// +optional
	Command []string `json:"command,omitempty"`

	// args replaces the image's default arguments.
	//
	// +listType=atomic
	// +optional
	Args []string `json:"args,omitempty"`

	// env adds environment variables to the container. A variable named like
	// one the operator sets (COURIER_APP, HTTP_PORT, SERVICE_<NAME>_URL, ...)
	// replaces the operator's value.
	//
	// +listType=map
	// +listMapKey=name
	// +optional
	Env []corev1.EnvVar `json:"env,omitempty"`

	// envFrom adds every key of ConfigMaps or Secrets to the environment.
	// Variables in env, and those the operator sets, take precedence.
	//
	// +listType=atomic
	// +optional
	EnvFrom []corev1.EnvFromSource `json:"envFrom,omitempty"`

	// resources are the container's compute requests and limits. Unset, the
	// operator requests 50m CPU and 64Mi memory and limits the container to
	// 500m CPU and 256Mi memory.
	//
	// +optional
	Resources *corev1.ResourceRequirements `json:"resources,omitempty"`

	// probes override the paths, ports and timing of the liveness, readiness
	// and startup probes, which otherwise follow the contract: /livez and
	// /readyz on the admin port.
	//
	// +optional
	Probes *Probes `json:"probes,omitempty"`

	// metrics overrides where Prometheus scrapes the service, which otherwise
	// is /metrics on the admin port.
	//
	// +optional
	Metrics *Metrics `json:"metrics,omitempty"`

	// calls names the other services of this app that this one sends
	// requests to. Each becomes a variable SERVICE_<NAME>_URL holding
	// "http://<app>-<name>.<namespace>.svc:<httpPort>", with <NAME> the
	// callee's name upper-cased and '-' turned into '_'. A service cannot call
	// itself.
	//
	// +listType=set
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:MaxLength=62
	// +optional
	Calls []string `json:"calls,omitempty"`
}

// PortName selects one of a service's two ports by its name.
//
// +kubebuilder:validation:Enum=http;admin
type PortName string

// The names of a service's ports, the same as contract.HTTPPortName and
// contract.AdminPortName.
const (
	// PortHTTP selects the httpPort.
	PortHTTP PortName = "http"
	// PortAdmin selects the adminPort.
	PortAdmin PortName = "admin"
)

// Probes overrides the probes of a service's container. An unset probe, and
// every unset field of a set one, keeps its default.
type Probes struct {
	// liveness restarts the container when it fails. Default: /livez on the
	// admin port every 10s, failing after 3 misses.
	//
	// +optional
	Liveness *Probe `json:"liveness,omitempty"`

	// readiness removes the pod from its Service's endpoints while it fails.
	// Default: /readyz on the admin port every 5s, failing after 3 misses.
	//
	// +optional
	Readiness *Probe `json:"readiness,omitempty"`

	// startup holds back the other probes until the container has started.
	// Default: /livez on the admin port every 2s, allowing 60s to start.
	//
	// +optional
	Startup *Probe `json:"startup,omitempty"`
}

// Probe overrides one HTTP probe.
type Probe struct {
	// path is the HTTP path requested.
	//
	// +kubebuilder:validation:MaxLength=1024
	// +kubebuilder:validation:Pattern=`^/\S*$`
	// +optional
	Path string `json:"path,omitempty"`

	// port names the port probed: "admin" (the default) or "http".
	//
	// +optional
	Port PortName `json:"port,omitempty"`

	// initialDelaySeconds waits this long after the container starts before
	// the first probe.
	//
	// +kubebuilder:validation:Minimum=0
	// +optional
	InitialDelaySeconds *int32 `json:"initialDelaySeconds,omitempty"`

	// periodSeconds is the time between probes.
	//
	// +kubebuilder:validation:Minimum=1
	// +optional
	PeriodSeconds *int32 `json:"periodSeconds,omitempty"`

	// timeoutSeconds is how long one probe may take.
	//
	// +kubebuilder:validation:Minimum=1
	// +optional
	TimeoutSeconds *int32 `json:"timeoutSeconds,omitempty"`

	// failureThreshold is how many consecutive failures make the probe fail.
	//
	// +kubebuilder:validation:Minimum=1
	// +optional
	FailureThreshold *int32 `json:"failureThreshold,omitempty"`
}

// Metrics overrides where Prometheus scrapes a service.
type Metrics struct {
	// path is the HTTP path of the metrics.
	//
	// +kubebuilder:default="/metrics"
	// +kubebuilder:validation:MaxLength=1024
	// +kubebuilder:validation:Pattern=`^/\S*$`
	// +optional
	Path string `json:"path,omitempty"`

	// port names the port scraped: "admin" or "http".
	//
	// +kubebuilder:default=admin
	// +optional
	Port PortName `json:"port,omitempty"`
}

// MicroserviceAppStatus is what the operator observed when it last reconciled
// the app.
type MicroserviceAppStatus struct {
	// observedGeneration is the metadata.generation of the spec the operator
	// last reconciled successfully.
	//
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// conditions say whether the app is Ready and, when it is not, which
	// concern holds it back: ResourcesApplied (the operator wrote every
	// object) and ServicesAvailable (every Deployment has rolled out).
	//
	// +listType=map
	// +listMapKey=type
	// +patchStrategy=merge
	// +patchMergeKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty" patchStrategy:"merge" patchMergeKey:"type"`

	// services report each service's rollout, in the order of spec.services.
	//
	// +listType=map
	// +listMapKey=name
	// +optional
	Services []ServiceStatus `json:"services,omitempty"`

	// readyServices counts available services of all services, as
	// "available/total", for kubectl get.
	//
	// +optional
	ReadyServices string `json:"readyServices,omitempty"`
}

// ServiceStatus reports one service's Deployment.
type ServiceStatus struct {
	// name is the service's name in spec.services.
	//
	// +required
	Name string `json:"name"`

	// image is the image the service's Deployment runs.
	//
	// +optional
	Image string `json:"image,omitempty"`

	// desiredReplicas is the number of pods asked for.
	//
	// +optional
	DesiredReplicas int32 `json:"desiredReplicas"`

	// readyReplicas is the number of pods passing their readiness probe.
	//
	// +optional
	ReadyReplicas int32 `json:"readyReplicas"`

	// available is true once the Deployment has rolled out the current spec
	// and every desired pod is available.
	//
	// +optional
	Available bool `json:"available"`
}

// MicroserviceApp is an application made of services that call each other.
// The operator runs each service as a Deployment with the contract's probes,
// metrics annotations and environment, and a Service in front of it.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=msa,categories=courier
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Services",type=string,JSONPath=`.status.readyServices`
// +kubebuilder:printcolumn:name="Reason",type=string,priority=1,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`
// +kubebuilder:printcolumn:name="Message",type=string,priority=1,JSONPath=`.status.conditions[?(@.type=="Ready")].message`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:validation:XValidation:rule="self.spec.services.all(s, size(self.metadata.name) + size(s.name) <= 62)",message="metadata.name and each spec.services[].name together must be at most 62 characters, since objects are named <app>-<service>"
type MicroserviceApp struct {
	metav1.TypeMeta `json:",inline"`

	// metadata is the standard object metadata.
	//
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec declares the app's services.
	//
	// +required
	Spec MicroserviceAppSpec `json:"spec"`

	// status is what the operator observed.
	//
	// +optional
	Status MicroserviceAppStatus `json:"status,omitempty"`
}

// MicroserviceAppList is a list of MicroserviceApps.
//
// +kubebuilder:object:root=true
type MicroserviceAppList struct {
	metav1.TypeMeta `json:",inline"`
	// metadata is the standard list metadata.
	metav1.ListMeta `json:"metadata,omitempty"`
	// items are the MicroserviceApps.
	Items []MicroserviceApp `json:"items"`
}

func init() {
	SchemeBuilder.Register(&MicroserviceApp{}, &MicroserviceAppList{})
}
