package rabbitmq_test

import (
	"bytes"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"gotest.tools/v3/golden"
	corev1 "k8s.io/api/core/v1"
	apiresource "k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/types"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/courier-dev/courier/operator/api/v1alpha1"
	"github.com/courier-dev/courier/operator/internal/fixture"
	"github.com/courier-dev/courier/operator/internal/metadata"
	"github.com/courier-dev/courier/operator/internal/resource"
	"github.com/courier-dev/courier/operator/internal/resource/podspec"
	"github.com/courier-dev/courier/operator/internal/resource/rabbitmq"
)

// BrokerOption changes a Broker under construction.
type BrokerOption func(*rabbitmq.Broker)

// testBroker is the broker the controller would build for app "blog" in
// namespace "apps": the operator's labels and a controller reference to the
// app, with the given options applied.
func testBroker(opts ...BrokerOption) rabbitmq.Broker {
	b := rabbitmq.Broker{
		App:       "blog",
		Namespace: "apps",
		Replicas:  1,
		Labels:    metadata.Labels("blog", metadata.BrokerComponent),
		Owner: metav1ac.OwnerReference().
			WithAPIVersion(v1alpha1.GroupVersion.String()).
			WithKind("MicroserviceApp").
			WithName("blog").
			WithUID(types.UID("00000000-0000-0000-0000-000000000001")).
			WithController(true).
			WithBlockOwnerDeletion(true),
		Network: rabbitmq.Network{
			Clients:           metadata.AppLabels("blog"),
			OperatorNamespace: "courier-system",
			Monitoring:        resource.MonitoringPeer(fixture.App("apps", "blog")),
		},
	}
	for _, o := range opts {
		o(&b)
	}
	return b
}

func replicas(n int32) BrokerOption { return func(b *rabbitmq.Broker) { b.Replicas = n } }

// podOptions sets every pod option a cluster policy may ask for, with a
// label and an annotation that try to replace the builder's own.
func podOptions(b *rabbitmq.Broker) {
	b.Pod = podspec.Options{
		ImagePullSecrets: []string{"registry-creds"},
		NodeSelector:     map[string]string{"node-role.example.org/broker": "true"},
		Tolerations: []corev1.Toleration{{
			Key: "dedicated", Operator: corev1.TolerationOpEqual, Value: "broker", Effect: corev1.TaintEffectNoSchedule,
		}},
		Affinity: &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{
			RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
				MatchExpressions: []corev1.NodeSelectorRequirement{{
					Key: corev1.LabelTopologyZone, Operator: corev1.NodeSelectorOpIn, Values: []string{"a", "b", "c"},
				}},
			}}},
		}},
		TopologySpreadConstraints: []corev1.TopologySpreadConstraint{{
			MaxSkew: 1, TopologyKey: corev1.LabelTopologyZone, WhenUnsatisfiable: corev1.ScheduleAnyway,
		}},
		PriorityClassName: "infrastructure",
		Labels:            map[string]string{"team": "platform", metadata.LabelInstance: "someone-else"},
		Annotations:       map[string]string{"example.org/owner": "platform", rabbitmq.AnnotationConfigHash: "spoofed"},
	}
}

// testCredentials are fixed so that golden files are stable.
var testCredentials = rabbitmq.Credentials{
	Username:     "admin-abcdefghij",
	Password:     "PASSWORDPASSWORDPASSWORD23",
	ErlangCookie: "COOKIECOOKIECOOKIECOOKIECOOKIECOOKIECOOKIECOOKIE2345",
}

func mustQuantity(s string) apiresource.Quantity { return apiresource.MustParse(s) }

var builderCases = []struct {
	name   string
	broker rabbitmq.Broker
}{
	{
		// The defaults: one node, no disruption budget.
		name:   "single-node",
		broker: testBroker(),
	},
	{
		// A three-node cluster with storage, resources, image and cluster
		// domain overridden; the memory limit sets RabbitMQ's memory budget.
		name: "three-nodes",
		broker: testBroker(replicas(3), func(b *rabbitmq.Broker) {
			b.Image = "registry.example/rabbitmq:3.13.7-management"
			b.StorageSize = mustQuantity("20Gi")
			b.StorageClassName = ptr.To("fast-ssd")
			b.ClusterDomain = "corp.internal"
			b.Resources = corev1.ResourceRequirements{
				Requests: corev1.ResourceList{
					corev1.ResourceCPU:    mustQuantity("1"),
					corev1.ResourceMemory: mustQuantity("2Gi"),
				},
				Limits: corev1.ResourceList{corev1.ResourceMemory: mustQuantity("2Gi")},
			}
		}),
	},
	{
		// Without a memory limit RabbitMQ measures the memory itself.
		name: "no-memory-limit",
		broker: testBroker(replicas(2), func(b *rabbitmq.Broker) {
			b.Resources = corev1.ResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceMemory: mustQuantity("1Gi")},
			}
		}),
	},
	{
		// Every pod option: pull Secret, node selector, toleration, node
		// affinity beside the default anti-affinity, a zone spread whose
		// selector defaults to the broker's pods, priority class, and
		// extra labels and annotations that cannot replace the builder's.
		name:   "pod-options",
		broker: testBroker(replicas(3), podOptions),
	},
	{
		// Scaled to zero: every object but the budget stays.
		name:   "scaled-to-zero",
		broker: testBroker(replicas(0)),
	},
}

// TestBuilders renders every object of a managed broker in apply order and
// compares it with testdata/<name>.yaml.
func TestBuilders(t *testing.T) {
	for _, tt := range builderCases {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.broker.Validate(); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			in := rabbitmq.Input{Broker: tt.broker, Credentials: testCredentials}
			var got bytes.Buffer
			for _, b := range rabbitmq.Builders {
				obj := b.Build(in)
				if obj == nil {
					continue
				}
				out, err := yaml.Marshal(obj)
				if err != nil {
					t.Fatalf("marshal %s: %v", b.Kind, err)
				}
				got.WriteString("---\n")
				got.Write(out)
			}
			golden.Assert(t, got.String(), tt.name+".yaml")
		})
	}
}

// TestBuildersOrder pins the apply order the Builders comment explains.
func TestBuildersOrder(t *testing.T) {
	var kinds []string
	for _, b := range rabbitmq.Builders {
		kinds = append(kinds, b.Kind)
	}
	want := []string{"NetworkPolicy", "ServiceAccount", "Role", "RoleBinding", "ConfigMap", "Secret", "Service", "Service", "StatefulSet", "PodDisruptionBudget"}
	if diff := cmp.Diff(want, kinds); diff != "" {
		t.Errorf("builder order (-want +got):\n%s", diff)
	}
}

// TestPodDisruptionBudgetOnlyForClusters checks the budget exists exactly
// when more than one node can be disrupted.
func TestPodDisruptionBudgetOnlyForClusters(t *testing.T) {
	for _, tt := range []struct {
		replicas int32
		want     bool
	}{{0, false}, {1, false}, {2, true}, {3, true}, {5, true}} {
		pdb := rabbitmq.PodDisruptionBudget(testBroker(replicas(tt.replicas)))
		if got := pdb != nil; got != tt.want {
			t.Errorf("replicas %d: budget built = %t, want %t", tt.replicas, got, tt.want)
		}
		if pdb != nil && pdb.Spec.MaxUnavailable.IntValue() != 1 {
			t.Errorf("replicas %d: maxUnavailable = %s, want 1", tt.replicas, pdb.Spec.MaxUnavailable.String())
		}
	}
}

// TestBuildersArePure checks that builders leave their input untouched, give
// the same answer twice, and return objects that share no map with the
// input, so the controller may change what it gets back.
func TestBuildersArePure(t *testing.T) {
	broker := testBroker(replicas(3), podOptions, func(b *rabbitmq.Broker) {
		b.Resources = corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceMemory: mustQuantity("1Gi")},
			Limits:   corev1.ResourceList{corev1.ResourceMemory: mustQuantity("1Gi")},
		}
	})
	in := rabbitmq.Input{Broker: broker, Credentials: testCredentials}
	labelsBefore := copyMap(broker.Labels)
	resourcesBefore := broker.Resources.DeepCopy()
	podBefore := copyPodOptions(broker.Pod)

	for _, b := range rabbitmq.Builders {
		first, err1 := yaml.Marshal(b.Build(in))
		second, err2 := yaml.Marshal(b.Build(in))
		if err1 != nil || err2 != nil {
			t.Fatalf("marshal %s: %v %v", b.Kind, err1, err2)
		}
		if !bytes.Equal(first, second) {
			t.Errorf("%s differs between two builds:\n%s", b.Kind, cmp.Diff(string(first), string(second)))
		}
	}

	// Scribble over everything the StatefulSet returns that came from the input.
	sts := rabbitmq.StatefulSet(broker)
	sts.Labels["scribbled"] = "yes"
	sts.Spec.Template.Labels["scribbled"] = "yes"
	(*sts.Spec.Template.Spec.Containers[0].Resources.Limits)[corev1.ResourceMemory] = mustQuantity("1Ti")
	sts.Spec.Template.Annotations["scribbled"] = "yes"
	sts.Spec.Template.Spec.NodeSelector["scribbled"] = "yes"
	sts.Spec.Template.Spec.TopologySpreadConstraints[0].LabelSelector.MatchLabels["scribbled"] = "yes"
	sts.Spec.Template.Spec.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms[0].MatchExpressions[0].Values[0] = "scribbled"

	if diff := cmp.Diff(labelsBefore, broker.Labels); diff != "" {
		t.Errorf("builders changed the input labels (-before +after):\n%s", diff)
	}
	if diff := cmp.Diff(resourcesBefore, &broker.Resources); diff != "" {
		t.Errorf("builders changed the input resources (-before +after):\n%s", diff)
	}
	if diff := cmp.Diff(podBefore, broker.Pod); diff != "" {
		t.Errorf("builders changed the input pod options (-before +after):\n%s", diff)
	}
}

// copyPodOptions is a deep copy of o, through the API types' own DeepCopy.
func copyPodOptions(o podspec.Options) podspec.Options {
	out := o
	out.ImagePullSecrets = append([]string(nil), o.ImagePullSecrets...)
	out.NodeSelector, out.Labels, out.Annotations = copyMap(o.NodeSelector), copyMap(o.Labels), copyMap(o.Annotations)
	out.Tolerations = nil
	for _, t := range o.Tolerations {
		out.Tolerations = append(out.Tolerations, *t.DeepCopy())
	}
	out.Affinity = o.Affinity.DeepCopy()
	out.TopologySpreadConstraints = nil
	for _, c := range o.TopologySpreadConstraints {
		out.TopologySpreadConstraints = append(out.TopologySpreadConstraints, *c.DeepCopy())
	}
	return out
}

// TestPodOptionsCannotReplaceTheBuilders checks that the caller's pod labels
// and annotations never replace the builder's own, and that an affinity
// without podAntiAffinity keeps the default spread over nodes.
func TestPodOptionsCannotReplaceTheBuilders(t *testing.T) {
	b := testBroker(replicas(3), podOptions)
	tmpl := rabbitmq.StatefulSet(b).Spec.Template
	if got := tmpl.Labels[metadata.LabelInstance]; got != "blog" {
		t.Errorf("pod label %s = %q, want the builder's %q", metadata.LabelInstance, got, "blog")
	}
	if got := tmpl.Annotations[rabbitmq.AnnotationConfigHash]; got == "spoofed" {
		t.Errorf("pod annotation %s = %q, want the builder's hash", rabbitmq.AnnotationConfigHash, got)
	}
	if tmpl.Labels["team"] != "platform" || tmpl.Annotations["example.org/owner"] != "platform" {
		t.Errorf("pod labels %v, annotations %v: want the caller's team and example.org/owner beside the builder's", tmpl.Labels, tmpl.Annotations)
	}
	a := tmpl.Spec.Affinity
	if a == nil || a.NodeAffinity == nil || a.PodAntiAffinity == nil {
		t.Errorf("affinity = %+v, want the caller's node affinity and the default pod anti-affinity", a)
	}
}

// TestSelectorLabelsWin checks that a caller's labels cannot detach the pods
// from their own selector.
func TestSelectorLabelsWin(t *testing.T) {
	b := testBroker(func(b *rabbitmq.Broker) {
		b.Labels = map[string]string{
			metadata.LabelInstance:  "someone-else",
			metadata.LabelComponent: "web",
			"team":                  "mail",
		}
	})
	got := rabbitmq.StatefulSet(b).Spec.Template.Labels
	for k, v := range metadata.BrokerSelectorLabels("blog") {
		if got[k] != v {
			t.Errorf("pod label %s = %q, want %q", k, got[k], v)
		}
	}
	if got["team"] != "mail" {
		t.Errorf("pod label team = %q, want the caller's %q", got["team"], "mail")
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name    string
		broker  rabbitmq.Broker
		wantErr string
	}{
		{name: "valid", broker: testBroker()},
		{name: "longest app name", broker: testBroker(func(b *rabbitmq.Broker) { b.App = strings.Repeat("a", metadata.MaxBrokerAppNameLength) })},
		{name: "app name too long", broker: testBroker(func(b *rabbitmq.Broker) { b.App = strings.Repeat("a", metadata.MaxBrokerAppNameLength+1) }), wantErr: "at most 45"},
		{name: "no app", broker: testBroker(func(b *rabbitmq.Broker) { b.App = "" }), wantErr: "app name is empty"},
		{name: "app name not a DNS label", broker: testBroker(func(b *rabbitmq.Broker) { b.App = "Blog" }), wantErr: "invalid object name"},
		{name: "no namespace", broker: testBroker(func(b *rabbitmq.Broker) { b.Namespace = "" }), wantErr: "namespace is empty"},
		{name: "negative replicas", broker: testBroker(replicas(-1)), wantErr: "replicas is -1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.broker.Validate()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("Validate: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("Validate = %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}

// TestNames pins the addresses other code and people rely on.
func TestNames(t *testing.T) {
	b := testBroker()
	ep := rabbitmq.Endpoint(b, testCredentials)
	for _, tt := range []struct{ what, got, want string }{
		{"NodeName(2)", b.NodeName(2), "rabbit@blog-broker-2.blog-broker-nodes.apps.svc.cluster.local"},
		{"AMQPHost", b.AMQPHost(), "blog-broker.apps.svc"},
		{"ManagementURL", b.ManagementURL(), "http://blog-broker.apps.svc:15672"},
		{"Endpoint.ManagementURL", ep.ManagementURL, b.ManagementURL()},
		{"Endpoint.AMQPHost", ep.AMQPHost, b.AMQPHost()},
		{"Endpoint.Username", ep.Username, testCredentials.Username},
		{"Endpoint.Password", ep.Password, testCredentials.Password},
	} {
		if tt.got != tt.want {
			t.Errorf("%s = %q, want %q", tt.what, tt.got, tt.want)
		}
	}
	if ep.AMQPPort != int(rabbitmq.AMQPPort) {
		t.Errorf("Endpoint.AMQPPort = %d, want %d", ep.AMQPPort, rabbitmq.AMQPPort)
	}
}

func copyMap(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
