package resource

import (
	"github.com/courier-dev/courier/operator/internal/metadata"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	policyv1ac "k8s.io/client-go/applyconfigurations/policy/v1"
)

// PodDisruptionBudget keeps all but one of a service's pods running through
// voluntary disruptions such as node drains. A service with one replica gets
// none (nil): a budget that allows no eviction would block every drain.
func PodDisruptionBudget(in Input) *policyv1ac.PodDisruptionBudgetApplyConfiguration {
	app, svc := in.App, in.Service
	if replicas(svc) <= 1 {
		return nil
	}
	return policyv1ac.PodDisruptionBudget(metadata.Name(app.Name, svc.Name), app.Namespace).
		WithLabels(metadata.Labels(app.Name, svc.Name)).
		WithOwnerReferences(metadata.OwnerReference(app)).
		WithSpec(policyv1ac.PodDisruptionBudgetSpec().
			WithSelector(selector(app.Name, svc.Name)).
			WithMaxUnavailable(intstr.FromInt32(1)).
			// A pod that is not ready serves nothing; letting it be evicted
			// keeps a broken rollout from wedging node drains.
			WithUnhealthyPodEvictionPolicy(policyv1.AlwaysAllow))
}
