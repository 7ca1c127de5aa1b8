package nats_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"
	"gotest.tools/v3/golden"
	corev1 "k8s.io/api/core/v1"
	apiresource "k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/types"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/courier-dev/courier/operator/api/v1alpha1"
	"github.com/courier-dev/courier/operator/internal/broker/natsbroker"
	"github.com/courier-dev/courier/operator/internal/fixture"
	"github.com/courier-dev/courier/operator/internal/metadata"
	"github.com/courier-dev/courier/operator/internal/resource"
	"github.com/courier-dev/courier/operator/internal/resource/nats"
	"github.com/courier-dev/courier/operator/internal/resource/podspec"
	"github.com/courier-dev/courier/operator/internal/resource/rabbitmq"
)

type BrokerOption func(*nats.Broker)

// testBroker is the broker the controller would build for app "blog" in
// namespace "apps".
func testBroker(opts ...BrokerOption) nats.Broker {
	b := nats.Broker{
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

func replicas(n int32) BrokerOption { return func(b *nats.Broker) { b.Replicas = n } }

// podOptions sets every pod option a cluster policy may ask for, with a
// label and an annotation that try to replace the builder's own, as the
// RabbitMQ builders' test does.
func podOptions(b *nats.Broker) {
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

// testKeys are fixed so that golden files are stable: real seeds from fixed
// bytes, placeholder JWTs (the builders copy them and never parse them).
func testKeys(t *testing.T) natsbroker.Managed {
	t.Helper()
	seed := func(prefix nkeys.PrefixByte, b byte) string {
		kp, err := nkeys.FromRawSeed(prefix, bytes.Repeat([]byte{b}, 32))
		if err != nil {
			t.Fatal(err)
		}
		s, _ := kp.Seed()
		return string(s)
	}
	return natsbroker.Managed{
		OperatorSeed:      seed(nkeys.PrefixByteOperator, 1),
		OperatorJWT:       "eyJ0eXAiOiJKV1QifQ.OPERATOR.SIGNATURE",
		SystemAccountSeed: seed(nkeys.PrefixByteAccount, 2),
		SystemAccountJWT:  "eyJ0eXAiOiJKV1QifQ.SYSTEM-ACCOUNT.SIGNATURE",
		SystemUserCreds:   []byte("-----BEGIN NATS USER JWT-----\nplaceholder\n------END NATS USER JWT------\n"),
	}
}

var builderCases = []struct {
	name   string
	broker nats.Broker
}{
	{name: "single-server", broker: testBroker()},
	{name: "three-servers", broker: testBroker(replicas(3), func(b *nats.Broker) {
		b.Image = "registry.example/nats:2.15.2-alpine"
		b.ExporterImage = "registry.example/prometheus-nats-exporter:0.16.0"
		b.StorageSize = apiresource.MustParse("20Gi")
		b.StorageClassName = ptr.To("fast-ssd")
		b.ClusterDomain = "corp.internal"
	})},
	{name: "scaled-to-zero", broker: testBroker(replicas(0))},
	{name: "pod-options", broker: testBroker(replicas(3), podOptions)},
}

// TestBuilders renders every object in apply order and compares it with
// testdata/<name>.yaml (go test -update writes them).
func TestBuilders(t *testing.T) {
	for _, tt := range builderCases {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.broker.Validate(); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			in := nats.Input{Broker: tt.broker, Keys: testKeys(t)}
			var got bytes.Buffer
			for _, b := range nats.Builders {
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

// TestConnectionSecret pins a service's connection Secret.
func TestConnectionSecret(t *testing.T) {
	b := testBroker()
	s := nats.ConnectionSecret(nats.Connection{
		App: "blog", Service: "mailer", Namespace: "apps", URL: b.URL(),
		Creds: []byte("CREDS"), Labels: metadata.Labels("blog", "mailer"), Owner: b.Owner,
	})
	out, err := yaml.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	golden.Assert(t, string(out), "connection.yaml")
}

// TestConfigIsAcceptedByNATSServer parses the rendered nats.conf with the
// real server's parser, with real keys: operator mode trusting the
// generated operator, the system account, JetStream, and routes to every
// server from three up.
func TestConfigIsAcceptedByNATSServer(t *testing.T) {
	keys, err := natsbroker.GenerateManaged("blog")
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("POD_NAME", "blog-broker-0")
	for _, n := range []int32{1, 3, 5} {
		b := testBroker(replicas(n))
		path := filepath.Join(t.TempDir(), "nats.conf")
		if err := os.WriteFile(path, []byte(nats.Config(b, keys)), 0o600); err != nil {
			t.Fatal(err)
		}
		opts, err := server.ProcessConfigFile(path)
		if err != nil {
			t.Fatalf("replicas %d: nats-server refuses nats.conf: %v\n%s", n, err, nats.Config(b, keys))
		}
		if len(opts.TrustedOperators) != 1 || opts.SystemAccount != keys.SystemAccount() || !opts.JetStream || opts.ServerName != "blog-broker-0" {
			t.Errorf("replicas %d: operators %d, system account %q, jetstream %t, server name %q",
				n, len(opts.TrustedOperators), opts.SystemAccount, opts.JetStream, opts.ServerName)
		}
		wantRoutes := 0
		if n >= 3 {
			wantRoutes = int(n)
		}
		if len(opts.Routes) != wantRoutes {
			t.Errorf("replicas %d: %d routes, want %d", n, len(opts.Routes), wantRoutes)
		}
	}
}

func TestPodDisruptionBudgetOnlyForClusters(t *testing.T) {
	for _, tt := range []struct {
		replicas int32
		want     bool
	}{{0, false}, {1, false}, {3, true}, {5, true}} {
		if got := nats.PodDisruptionBudget(testBroker(replicas(tt.replicas))) != nil; got != tt.want {
			t.Errorf("replicas %d: budget built = %t, want %t", tt.replicas, got, tt.want)
		}
	}
}

// TestBuildersArePure: the same answer twice and the input untouched.
func TestBuildersArePure(t *testing.T) {
	broker := testBroker(replicas(3), func(b *nats.Broker) {
		b.Resources = corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceMemory: apiresource.MustParse("1Gi")}}
	})
	labelsBefore := map[string]string{}
	for k, v := range broker.Labels {
		labelsBefore[k] = v
	}
	in := nats.Input{Broker: broker, Keys: testKeys(t)}
	for _, b := range nats.Builders {
		first, _ := yaml.Marshal(b.Build(in))
		second, _ := yaml.Marshal(b.Build(in))
		if !bytes.Equal(first, second) {
			t.Errorf("%s differs between two builds", b.Kind)
		}
	}
	sts := nats.StatefulSet(broker, in.Keys)
	sts.Labels["scribbled"] = "yes"
	(*sts.Spec.Template.Spec.Containers[0].Resources.Limits)[corev1.ResourceMemory] = apiresource.MustParse("1Ti")
	if diff := cmp.Diff(labelsBefore, broker.Labels); diff != "" {
		t.Errorf("builders changed the input labels:\n%s", diff)
	}
	if got := broker.Resources.Limits[corev1.ResourceMemory]; got.String() != "1Gi" {
		t.Errorf("builders changed the input resources: %s", got.String())
	}
}

// TestPodOptionsCannotReplaceTheBuilders checks that the caller's pod labels
// and annotations never replace the builder's own, and that an affinity
// without podAntiAffinity keeps the default spread over nodes.
func TestPodOptionsCannotReplaceTheBuilders(t *testing.T) {
	b := testBroker(replicas(3), podOptions)
	tmpl := nats.StatefulSet(b, testKeys(t)).Spec.Template
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

// TestLameDuckOnStop checks that a stopping server is put in lame duck mode
// through the PID file nats.conf names, and that the grace period covers
// the lame duck settings of nats.conf with time to spare for the shutdown.
func TestLameDuckOnStop(t *testing.T) {
	b := testBroker(replicas(3))
	keys, err := natsbroker.GenerateManaged("blog")
	if err != nil {
		t.Fatal(err)
	}
	spec := nats.StatefulSet(b, keys).Spec.Template.Spec
	c := spec.Containers[0]
	if c.Lifecycle == nil || c.Lifecycle.PreStop == nil || c.Lifecycle.PreStop.Exec == nil {
		t.Fatalf("container %s has no preStop exec hook", *c.Name)
	}
	t.Setenv("POD_NAME", "blog-broker-0")
	path := filepath.Join(t.TempDir(), "nats.conf")
	if err := os.WriteFile(path, []byte(nats.Config(b, keys)), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(path)
	if err != nil {
		t.Fatalf("parse nats.conf: %v", err)
	}
	want := []string{"nats-server", "--signal", "ldm=" + opts.PidFile}
	if diff := cmp.Diff(want, c.Lifecycle.PreStop.Exec.Command); opts.PidFile == "" || diff != "" {
		t.Errorf("preStop command (-want +got), with nats.conf's pid_file %q:\n%s", opts.PidFile, diff)
	}
	mounted := false
	for _, m := range c.VolumeMounts {
		if strings.HasPrefix(opts.PidFile, *m.MountPath+"/") && (m.ReadOnly == nil || !*m.ReadOnly) {
			mounted = true
		}
	}
	if !mounted {
		t.Errorf("pid_file %s is on no writable volume of container %s", opts.PidFile, *c.Name)
	}
	if opts.LameDuckDuration == 0 {
		t.Fatal("nats.conf sets no lame_duck_duration")
	}
	stop := opts.LameDuckGracePeriod + opts.LameDuckDuration
	if grace := time.Duration(*spec.TerminationGracePeriodSeconds) * time.Second; grace < stop+10*time.Second {
		t.Errorf("terminationGracePeriodSeconds %s, want at least lame duck grace and duration (%s) plus 10 s for the shutdown", grace, stop)
	}
}

func TestValidate(t *testing.T) {
	for _, tt := range []struct {
		name    string
		broker  nats.Broker
		wantErr string
	}{
		{name: "valid", broker: testBroker()},
		{name: "two servers", broker: testBroker(replicas(2)), wantErr: "replicas is 2"},
		{name: "negative", broker: testBroker(replicas(-1)), wantErr: "replicas is -1"},
		{name: "no namespace", broker: testBroker(func(b *nats.Broker) { b.Namespace = "" }), wantErr: "namespace is empty"},
	} {
		err := tt.broker.Validate()
		if (tt.wantErr == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
			t.Errorf("%s: Validate = %v, want %q", tt.name, err, tt.wantErr)
		}
	}
}
