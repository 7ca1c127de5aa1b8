package controller

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/courier-dev/courier/operator/api/v1alpha1"
	"github.com/courier-dev/courier/operator/internal/fixture"
	"github.com/courier-dev/courier/operator/internal/metadata"
	"github.com/courier-dev/courier/services/kit/contract"
)

// admitted is who a NetworkPolicy admits on one port: anyone, or the
// services of the app (by name) and the namespaces (by selector) its rules
// name.
type admitted struct {
	Anyone     bool
	Services   []string
	Namespaces []string
}

func admittedOn(np *networkingv1.NetworkPolicy, port int32) admitted {
	var out admitted
	for _, rule := range np.Spec.Ingress {
		if !slices.ContainsFunc(rule.Ports, func(p networkingv1.NetworkPolicyPort) bool {
			return p.Port != nil && *p.Port == intstr.FromInt32(port)
		}) {
			continue
		}
		if len(rule.From) == 0 {
			out.Anyone = true
		}
		for _, peer := range rule.From {
			switch {
			case peer.NamespaceSelector != nil:
				out.Namespaces = append(out.Namespaces, metav1.FormatLabelSelector(peer.NamespaceSelector))
			case peer.PodSelector != nil:
				out.Services = append(out.Services, peer.PodSelector.MatchLabels[metadata.LabelName])
			}
		}
	}
	slices.Sort(out.Services)
	return out
}

// TestNetworkPolicies checks that every service gets a NetworkPolicy owned
// by the app that follows the calls graph: callees admit their callers'
// pods, the entry point admits anyone, a service nobody calls admits no one
// on its HTTP port, and the monitoring namespace reaches every admin port.
// A change of calls changes the policies; at steady state nothing is
// written.
func TestNetworkPolicies(t *testing.T) {
	t.Parallel()
	ns := namespace(t)
	app := fixture.Blog(ns)
	app.UID = ""
	create(t, app)

	monitoring := []string{"kubernetes.io/metadata.name=monitoring"}
	want := map[string]admitted{
		"gateway": {Anyone: true},
		"users":   {Services: []string{"gateway", "posts"}},
		"posts":   {Services: []string{"gateway"}},
		"mailer":  {},
	}
	check := func(ctx context.Context, want map[string]admitted) error {
		live := &v1alpha1.MicroserviceApp{}
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(app), live); err != nil {
			return err
		}
		for svc, w := range want {
			np := &networkingv1.NetworkPolicy{}
			if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: metadata.Name(app.Name, svc)}, np); err != nil {
				return err
			}
			if !metav1.IsControlledBy(np, live) {
				return fmt.Errorf("NetworkPolicy %s is not controlled by the app: %v", np.Name, np.OwnerReferences)
			}
			if diff := cmp.Diff(metadata.SelectorLabels(app.Name, svc), np.Spec.PodSelector.MatchLabels); diff != "" {
				return fmt.Errorf("NetworkPolicy %s selects other pods (-want +got):\n%s", np.Name, diff)
			}
			if !slices.Equal(np.Spec.PolicyTypes, []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}) {
				return fmt.Errorf("NetworkPolicy %s: policyTypes %v, want Ingress only (egress stays open)", np.Name, np.Spec.PolicyTypes)
			}
			if diff := cmp.Diff(w, admittedOn(np, contract.HTTPPort)); diff != "" {
				return fmt.Errorf("NetworkPolicy %s on the HTTP port (-want +got):\n%s", np.Name, diff)
			}
			if diff := cmp.Diff(admitted{Namespaces: monitoring}, admittedOn(np, contract.AdminPort)); diff != "" {
				return fmt.Errorf("NetworkPolicy %s on the admin port (-want +got):\n%s", np.Name, diff)
			}
		}
		return nil
	}
	eventually(t, "the policies follow the calls graph", func(ctx context.Context) error { return check(ctx, want) })

	// posts stops calling users, mailer starts; gateway is no longer an
	// entry point.
	updateApp(t, ns, app.Name, func(a *v1alpha1.MicroserviceApp) {
		a.Spec.Services[0].EntryPoint = false
		a.Spec.Services[2].Calls = nil
		a.Spec.Services[3].Calls = []string{"users"}
	})
	want = map[string]admitted{
		"gateway": {},
		"users":   {Services: []string{"gateway", "mailer"}},
		"posts":   {Services: []string{"gateway"}},
		"mailer":  {},
	}
	eventually(t, "the policies follow the new calls graph", func(ctx context.Context) error { return check(ctx, want) })

	// The calls change rewrites the Deployments too, perhaps after the
	// policies: mark each available at the generation it has when the
	// check runs, until the app is Ready, rather than once at a generation
	// the operator may still move past (seen under load).
	eventually(t, "app Ready once its Deployments report their current spec", func(ctx context.Context) error {
		for _, svc := range app.Spec.Services {
			markAvailable(t, ns, metadata.Name(app.Name, svc.Name))
		}
		if c := readyCondition(ctx, app); c == nil || c.Status != metav1.ConditionTrue {
			return fmt.Errorf("Ready = %+v", c)
		}
		return nil
	})
	reconcileWritesNothing(t, app)
}
