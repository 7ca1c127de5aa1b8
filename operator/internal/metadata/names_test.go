package metadata

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestNames pins the names other code and people rely on.
func TestNames(t *testing.T) {
	want := BrokerNames{
		StatefulSet:         "blog-broker",
		Headless:            "blog-broker-nodes",
		Client:              "blog-broker",
		AdminSecret:         "blog-broker-admin",
		ConfigMap:           "blog-broker-config",
		ServiceAccount:      "blog-broker",
		Role:                "blog-broker-peer-discovery",
		RoleBinding:         "blog-broker-peer-discovery",
		PodDisruptionBudget: "blog-broker",
		NetworkPolicy:       "blog-broker",
	}
	if diff := cmp.Diff(want, BrokerNamesFor("blog")); diff != "" {
		t.Errorf("BrokerNamesFor (-want +got):\n%s", diff)
	}
	for _, tt := range []struct{ what, got, want string }{
		{"Name", Name("blog", "users"), "blog-users"},
		{"DataClaimName", DataClaimName("blog", "users"), "blog-users-data"},
		{"ConnectionSecretName", ConnectionSecretName("blog", "users"), "blog-users-broker"},
		{"MonitoringSecretName", MonitoringSecretName("blog"), "blog-broker-monitoring"},
		{"AccountSecretName", AccountSecretName("blog"), "blog-broker-account"},
	} {
		if tt.got != tt.want {
			t.Errorf("%s = %q, want %q", tt.what, tt.got, tt.want)
		}
	}
}

// TestBrokerSelectorDoesNotSelectServices: a service's pods never match
// the broker's selector, since they lack the component label.
func TestBrokerSelectorDoesNotSelectServices(t *testing.T) {
	pod := Labels("blog", BrokerComponent)
	for k, v := range BrokerSelectorLabels("blog") {
		if pod[k] != v {
			return
		}
	}
	t.Errorf("the labels of a service named %q match the broker's selector %v", BrokerComponent, BrokerSelectorLabels("blog"))
}
