// Package podspec adds what a user sets on a workload's pods (scheduling,
// pull Secrets, extra labels and annotations) to a pod template a builder
// made, for the services' Deployments and the managed broker's StatefulSet
// alike. Like the builders it is pure: no client, no mutation of its input.
package podspec

import (
	"encoding/json"
	"fmt"
	"maps"

	corev1 "k8s.io/api/core/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"
)

// Options are a workload's pod settings as the user wrote them; zero values
// add nothing.
type Options struct {
	// ImagePullSecrets name the Secrets the images are pulled with.
	ImagePullSecrets []string
	// NodeSelector, Tolerations, Affinity, TopologySpreadConstraints and
	// PriorityClassName go into the pod spec as in a Pod.
	NodeSelector              map[string]string
	Tolerations               []corev1.Toleration
	Affinity                  *corev1.Affinity
	TopologySpreadConstraints []corev1.TopologySpreadConstraint
	PriorityClassName         string
	// Labels and Annotations are added to the pod template's; the
	// builder's own keys win on a clash (the API refuses such keys, this
	// only makes sure).
	Labels      map[string]string
	Annotations map[string]string
}

// Apply adds o to spec. selector is the workload's selector labels: a
// topology spread constraint without a labelSelector gets them, so it
// spreads the workload's own pods. An affinity without podAntiAffinity
// keeps the anti-affinity spec already has.
func Apply(spec *corev1ac.PodSpecApplyConfiguration, o Options, selector map[string]string) *corev1ac.PodSpecApplyConfiguration {
	for _, name := range o.ImagePullSecrets {
		spec.WithImagePullSecrets(corev1ac.LocalObjectReference().WithName(name))
	}
	if len(o.NodeSelector) > 0 {
		spec.WithNodeSelector(maps.Clone(o.NodeSelector))
	}
	for i := range o.Tolerations {
		spec.WithTolerations(applyConfig[corev1ac.TolerationApplyConfiguration](&o.Tolerations[i]))
	}
	if o.Affinity != nil {
		a := applyConfig[corev1ac.AffinityApplyConfiguration](o.Affinity)
		if a.PodAntiAffinity == nil && spec.Affinity != nil {
			a.PodAntiAffinity = spec.Affinity.PodAntiAffinity
		}
		spec.Affinity = a
	}
	for i := range o.TopologySpreadConstraints {
		c := applyConfig[corev1ac.TopologySpreadConstraintApplyConfiguration](&o.TopologySpreadConstraints[i])
		if c.LabelSelector == nil {
			c.WithLabelSelector(metav1ac.LabelSelector().WithMatchLabels(maps.Clone(selector)))
		}
		spec.WithTopologySpreadConstraints(c)
	}
	if o.PriorityClassName != "" {
		spec.WithPriorityClassName(o.PriorityClassName)
	}
	return spec
}

// Merge returns extra with own laid over it: the pod template's labels or
// annotations, the builder's own winning.
func Merge(own, extra map[string]string) map[string]string {
	out := make(map[string]string, len(own)+len(extra))
	maps.Copy(out, extra)
	maps.Copy(out, own)
	return out
}

// applyConfig converts an API value into its apply configuration through
// their shared JSON form (client-go has no converter for values that are
// not whole objects).
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
