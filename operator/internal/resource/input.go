// Package resource builds the objects the operator owns for a MicroserviceApp.
// Every builder is a pure function of its Input: no client, no clock, no
// mutation of the app. Builders return server-side apply configurations that
// hold exactly the fields the operator sets, so what the golden files show is
// what the operator owns.
package resource

import (
	"encoding/json"
	"fmt"

	"k8s.io/apimachinery/pkg/api/resource"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/courier-dev/courier/operator/api/v1alpha1"
	"github.com/courier-dev/courier/operator/internal/metadata"
	"github.com/courier-dev/courier/services/kit/contract"
)

// Input is what a builder builds from: an app and one of its services. The
// controller fills it and builders only read it; facts the controller
// gathers for a service (such as its broker connection) belong here.
type Input struct {
	// App is the MicroserviceApp being reconciled.
	App *v1alpha1.MicroserviceApp
	// Service is the entry of App.Spec.Services being built.
	Service *v1alpha1.Service
	// Broker is the service's broker wiring; nil when it uses no queue.
	Broker *Broker
}

// Default compute resources of a service container that declares none.
var (
	defaultCPURequest    = resource.MustParse("50m")
	defaultMemoryRequest = resource.MustParse("64Mi")
	defaultCPULimit      = resource.MustParse("500m")
	defaultMemoryLimit   = resource.MustParse("256Mi")
)

// The values below repeat the CRD's defaults so that builders give the same
// answer for an object the API server has not defaulted (a unit test, an
// object stored before a default was added).

func replicas(svc *v1alpha1.Service) int32 {
	return ptr.Deref(svc.Replicas, 1)
}

func httpPort(svc *v1alpha1.Service) int32 {
	if svc.HTTPPort == 0 {
		return contract.HTTPPort
	}
	return svc.HTTPPort
}

func adminPort(svc *v1alpha1.Service) int32 {
	if svc.AdminPort == 0 {
		return contract.AdminPort
	}
	return svc.AdminPort
}

// port resolves a port name to the port number and the name used on the
// container; unset means the admin port.
func port(svc *v1alpha1.Service, name v1alpha1.PortName) (int32, string) {
	if name == v1alpha1.PortHTTP {
		return httpPort(svc), contract.HTTPPortName
	}
	return adminPort(svc), contract.AdminPortName
}

// selector selects a service's pods.
func selector(app, service string) *metav1ac.LabelSelectorApplyConfiguration {
	return metav1ac.LabelSelector().WithMatchLabels(metadata.SelectorLabels(app, service))
}

// applyConfig converts an API type the user wrote in the app (an EnvVar, a
// ResourceRequirements) into its apply configuration. The two share their
// JSON form by construction, and client-go offers no other converter for
// values that are not whole objects.
func applyConfig[T any](v any) *T {
	raw, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("marshal %T: %v", v, err)) // API types always marshal
	}
	out := new(T)
	if err := json.Unmarshal(raw, out); err != nil {
		panic(fmt.Sprintf("unmarshal %T into %T: %v", v, out, err))
	}
	return out
}
