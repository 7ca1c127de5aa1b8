//go:build e2e

package e2e

import (
	"fmt"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// operatorLeastPrivilege checks that the operator runs as its chart's
// ServiceAccount, and that the API server denies that account what only an
// administrator may do: the operator works (the earlier steps) without
// being one.
func (s *suite) operatorLeastPrivilege(t *testing.T) {
	ctx := t.Context()
	d := &appsv1.Deployment{}
	key := client.ObjectKey{Namespace: s.cfg.operatorNamespace, Name: s.cfg.operatorDeployment}
	if err := s.c.client.Get(ctx, key, d); err != nil {
		t.Fatalf("get operator deployment: %v", err)
	}
	sa := d.Spec.Template.Spec.ServiceAccountName
	if sa == "" || sa == "default" {
		t.Fatalf("operator runs as ServiceAccount %q, want the chart's own", sa)
	}
	user := fmt.Sprintf("system:serviceaccount:%s:%s", s.cfg.operatorNamespace, sa)
	for _, attr := range []authorizationv1.ResourceAttributes{
		{Verb: "*", Group: "*", Resource: "*"},
		{Verb: "create", Group: "rbac.authorization.k8s.io", Resource: "clusterrolebindings"},
		{Verb: "escalate", Group: "rbac.authorization.k8s.io", Resource: "clusterroles"},
		{Verb: "impersonate", Resource: "users"},
		{Verb: "delete", Resource: "nodes"},
		{Verb: "create", Resource: "pods", Namespace: s.cfg.namespace},
	} {
		sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
			User: user, ResourceAttributes: &attr,
		}}
		if err := s.c.client.Create(ctx, sar); err != nil {
			t.Fatalf("SubjectAccessReview: %v", err)
		}
		if sar.Status.Allowed {
			t.Errorf("%s may %s %s.%s in %q: the operator must not hold administrator rights", user, attr.Verb, attr.Resource, attr.Group, attr.Namespace)
		}
	}
}

// restrictedPodSecurity checks that the app's namespace enforces the
// restricted Pod Security Standard and that every pod its workloads want
// was admitted under it: no ReplicaSet or StatefulSet reports a failed
// create, and every replica exists.
func (s *suite) restrictedPodSecurity(t *testing.T) {
	ctx := t.Context()
	ns := &corev1.Namespace{}
	if err := s.c.client.Get(ctx, client.ObjectKey{Name: s.cfg.namespace}, ns); err != nil {
		t.Fatalf("get namespace: %v", err)
	}
	if got := ns.Labels["pod-security.kubernetes.io/enforce"]; got != "restricted" {
		t.Fatalf("namespace %s enforces Pod Security %q, want restricted", s.cfg.namespace, got)
	}
	var rsets appsv1.ReplicaSetList
	var ssets appsv1.StatefulSetList
	for _, list := range []client.ObjectList{&rsets, &ssets} {
		if err := s.c.client.List(ctx, list, client.InNamespace(s.cfg.namespace)); err != nil {
			t.Fatal(err)
		}
	}
	allPods := func(kind, name string, spec *int32, have int32) {
		if want := ptrValue(spec); have != want {
			t.Errorf("%s %s has %d of %d pods", kind, name, have, want)
		}
	}
	for _, rs := range rsets.Items {
		for _, c := range rs.Status.Conditions {
			if c.Type == appsv1.ReplicaSetReplicaFailure && c.Status == corev1.ConditionTrue {
				t.Errorf("replicaset %s cannot create pods: %s", rs.Name, c.Message)
			}
		}
		allPods("replicaset", rs.Name, rs.Spec.Replicas, rs.Status.Replicas)
	}
	for _, ss := range ssets.Items {
		allPods("statefulset", ss.Name, ss.Spec.Replicas, ss.Status.Replicas)
	}
	var events corev1.EventList
	if err := s.c.client.List(ctx, &events, client.InNamespace(s.cfg.namespace)); err != nil {
		t.Fatal(err)
	}
	for _, e := range events.Items {
		if e.Reason == "FailedCreate" && strings.Contains(e.Message, "violates PodSecurity") {
			t.Errorf("%s %s: %s", e.InvolvedObject.Kind, e.InvolvedObject.Name, e.Message)
		}
	}
}

func ptrValue(p *int32) int32 {
	if p == nil {
		return 1
	}
	return *p
}
