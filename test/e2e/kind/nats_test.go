//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/courier-dev/courier/services/kit/contract"
)

// Names of the managed NATS system's pods, as the operator spells them
// (operator/internal/resource/nats): spelled again here for the reason
// cluster_test.go gives.
const (
	natsContainer      = "nats"
	natsMetrics        = "metrics"
	natsClientPortName = "nats"
	natsMonitorName    = "monitor"
	natsMetricsName    = "metrics"
	natsClientPort     = "4222"
	// natsCredsKey is the key of a connection Secret holding the
	// service's creds file.
	natsCredsKey = "nats.creds"
)

// permissionTimeout bounds waiting for the server's answer to a publish it
// refuses: an asynchronous -ERR on the connection.
const permissionTimeout = 15 * time.Second

// checkNATSConnection checks a NATS service's connection: BROKER_URL is the
// managed system's client Service with no credentials in it, and the
// service authenticates with its own creds file, mounted read-only from its
// connection Secret at BROKER_CREDENTIALS_FILE.
func checkNATSConnection(t *testing.T, d *appsv1.Deployment, c *corev1.Container, secret *corev1.Secret, u *url.URL, wantHost string) {
	t.Helper()
	if u.Scheme != "nats" || u.Hostname() != wantHost || u.Port() != natsClientPort || u.User != nil {
		t.Errorf("secret/%s: URL %s, want nats://%s:%s without credentials", secret.Name, u.Redacted(), wantHost, natsClientPort)
	}
	if creds := string(secret.Data[natsCredsKey]); !strings.Contains(creds, "BEGIN NATS USER JWT") || !strings.Contains(creds, "BEGIN USER NKEY SEED") {
		t.Errorf("secret/%s: key %s is not a creds file (a user JWT and its seed)", secret.Name, natsCredsKey)
	}
	file := findEnv(c, contract.EnvBrokerCredentialsFile)
	if file == nil || file.Value == "" {
		t.Errorf("deployment/%s: no %s", d.Name, contract.EnvBrokerCredentialsFile)
		return
	}
	i := slices.IndexFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.MountPath == path.Dir(file.Value) })
	if i < 0 || !c.VolumeMounts[i].ReadOnly {
		t.Errorf("deployment/%s: nothing mounted read-only at %s, the directory of %s", d.Name, path.Dir(file.Value), file.Value)
		return
	}
	vols := d.Spec.Template.Spec.Volumes
	j := slices.IndexFunc(vols, func(v corev1.Volume) bool { return v.Name == c.VolumeMounts[i].Name })
	if j < 0 || vols[j].Secret == nil || vols[j].Secret.SecretName != secret.Name {
		t.Errorf("deployment/%s: %s is not mounted from secret/%s", d.Name, file.Value, secret.Name)
	}
}

// natsBroker checks the managed NATS system the blog ran on: every server
// is ready with its startup, liveness and readiness probes on the
// monitoring port; the servers form one JetStream cluster; the exporter
// sidecar serves the servers' and the app stream's metrics; the services'
// credentials are least privileged: the mailer, which only consumes, may
// not publish to the e-mail queue, and users, which only publishes, may not
// take messages from its consumer. Last, one server is deleted as a drain
// or a rollout deletes it: its preStop hook puts it in lame duck mode,
// which its clients are told of, and no job published meanwhile is lost
// or mailed twice.
func (s *suite) natsBroker(t *testing.T) {
	ctx := t.Context()
	app := s.getApp(t, ctx)
	sts := &appsv1.StatefulSet{}
	if err := s.c.client.Get(ctx, client.ObjectKey{Namespace: s.cfg.namespace, Name: brokerName(app.Name)}, sts); err != nil {
		t.Fatalf("broker statefulset: %v", err)
	}
	servers := int32(1)
	if sts.Spec.Replicas != nil {
		servers = *sts.Spec.Replicas
	}
	sel := client.MatchingLabels{labelInstance: app.Name, labelComponent: brokerComponent}
	pods, err := s.c.readyPods(ctx, s.cfg.namespace, sel)
	if err != nil {
		t.Fatal(err)
	}
	if servers < 3 {
		t.Fatalf("the broker runs %d server(s); the suite installs three (hack/kind/install.sh BROKER_REPLICAS=3)", servers)
	}
	if int32(len(pods)) != servers {
		t.Fatalf("%d ready server pod(s), want %d:\n%s", len(pods), servers, s.c.describePods(ctx, s.cfg.namespace, sel))
	}

	stream := contract.StreamName(app.Name)
	consumer := contract.ConsumerName(contract.QueueName(app.Name, queueEmails))
	streamSeen := false
	for i := range pods {
		pod := &pods[i]
		checkNATSProbes(t, pod)

		monitor := s.c.forwardPod(t, pod, containerPort(pod, natsMonitorName))
		var health struct {
			Status string `json:"status"`
		}
		if err := getJSON(ctx, monitor+"/healthz", &health); err != nil || health.Status != "ok" {
			t.Errorf("pod %s: /healthz %+v, %v; want status ok", pod.Name, health, err)
		}
		var jsz struct {
			Meta *struct {
				Leader      string `json:"leader"`
				ClusterSize int32  `json:"cluster_size"`
			} `json:"meta_cluster"`
		}
		if err := getJSON(ctx, monitor+"/jsz", &jsz); err != nil {
			t.Errorf("pod %s: /jsz: %v", pod.Name, err)
		}
		if servers >= 3 && (jsz.Meta == nil || jsz.Meta.ClusterSize != servers || jsz.Meta.Leader == "") {
			t.Errorf("pod %s: JetStream meta cluster %+v, want %d servers with a leader", pod.Name, jsz.Meta, servers)
		}

		m, err := scrape(ctx, s.c.forwardPod(t, pod, containerPort(pod, natsMetricsName)))
		if err != nil {
			t.Errorf("pod %s: exporter: %v", pod.Name, err)
			continue
		}
		for _, name := range []string{"gnatsd_varz_connections", "gnatsd_healthz_status", "jetstream_server_total_streams"} {
			if m[name] == nil {
				t.Errorf("pod %s: the exporter serves no %s", pod.Name, name)
			}
		}
		// A stream lives on its replicas only: one server of three may
		// not hold it.
		if m.labelValues("jetstream_stream_total_messages", "stream_name")[stream] &&
			m.labelValues("jetstream_consumer_num_pending", "consumer_name")[consumer] {
			streamSeen = true
		}
	}
	if !streamSeen {
		t.Errorf("no server's exporter serves stream %s and its consumer %s", stream, consumer)
	}

	// Least privilege, through one server, with each service's own creds.
	forward := s.c.forwardPod(t, &pods[0], containerPort(&pods[0], natsClientPortName))
	addr := "nats://" + strings.TrimPrefix(forward, "http://")
	for _, tt := range []struct {
		service, subject, why string
	}{
		{"mailer", contract.Subject(contract.QueueName(app.Name, queueEmails)), "it only consumes " + queueEmails},
		{"users", "$JS.API.CONSUMER.MSG.NEXT." + stream + "." + consumer, "it only publishes to " + queueEmails},
	} {
		t.Run(tt.service, func(t *testing.T) {
			if err := s.publishRefused(t, ctx, app.Name, tt.service, addr, tt.subject); err != nil {
				t.Errorf("%s's credentials, publishing to %s (%s): %v", tt.service, tt.subject, tt.why, err)
			}
		})
	}
	if t.Failed() {
		return
	}

	// A client of the server about to go, told of its lame duck mode.
	victim := &pods[len(pods)-1]
	ldm := make(chan struct{})
	nc := s.connectAs(t, app.Name, "mailer", victim, nats.LameDuckModeHandler(func(*nats.Conn) {
		select {
		case <-ldm:
		default:
			close(ldm)
		}
	}))
	defer nc.Close()
	s.jobsSurvivePodLoss(t, ctx, app.Name, victim.Name, func(pod *corev1.Pod) error {
		return s.c.client.Delete(ctx, pod) // with the pod's grace period, as a drain
	})
	select {
	case <-ldm:
	default:
		t.Errorf("server %s was deleted and its client was never told of lame duck mode: did its preStop hook run?", victim.Name)
	}
}

// connectAs connects to the client port of a server pod with the creds of
// service's connection Secret.
func (s *suite) connectAs(t *testing.T, app, service string, pod *corev1.Pod, opts ...nats.Option) *nats.Conn {
	t.Helper()
	creds, err := s.credsFile(t, app, service)
	if err != nil {
		t.Fatal(err)
	}
	forward := s.c.forwardPod(t, pod, containerPort(pod, natsClientPortName))
	nc, err := nats.Connect("nats://"+strings.TrimPrefix(forward, "http://"),
		append([]nats.Option{nats.UserCredentials(creds), nats.NoReconnect()}, opts...)...)
	if err != nil {
		t.Fatalf("connect to %s as %s: %v", pod.Name, service, err)
	}
	return nc
}

// credsFile writes the creds of service's connection Secret to a file of
// the test's and returns its path.
func (s *suite) credsFile(t *testing.T, app, service string) (string, error) {
	t.Helper()
	secret := &corev1.Secret{}
	if err := s.c.client.Get(t.Context(), client.ObjectKey{Namespace: s.cfg.namespace, Name: connectionSecretName(app, service)}, secret); err != nil {
		return "", err
	}
	creds := filepath.Join(t.TempDir(), "nats.creds")
	if err := os.WriteFile(creds, secret.Data[natsCredsKey], 0o600); err != nil {
		return "", err
	}
	return creds, nil
}

// checkNATSProbes checks that a server pod runs the server with its three
// probes on the monitoring port and the exporter beside it.
func checkNATSProbes(t *testing.T, pod *corev1.Pod) {
	t.Helper()
	var server, exporter *corev1.Container
	for i := range pod.Spec.Containers {
		switch pod.Spec.Containers[i].Name {
		case natsContainer:
			server = &pod.Spec.Containers[i]
		case natsMetrics:
			exporter = &pod.Spec.Containers[i]
		}
	}
	if server == nil || exporter == nil {
		t.Errorf("pod %s: containers %v, want %s and %s", pod.Name, pod.Spec.Containers, natsContainer, natsMetrics)
		return
	}
	for name, p := range map[string]*corev1.Probe{"startup": server.StartupProbe, "liveness": server.LivenessProbe, "readiness": server.ReadinessProbe} {
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Port.String() != natsMonitorName {
			t.Errorf("pod %s: %s probe %+v, want an HTTP GET on port %s", pod.Name, name, p, natsMonitorName)
		}
	}
	if server.Lifecycle == nil || server.Lifecycle.PreStop == nil || server.Lifecycle.PreStop.Exec == nil {
		t.Errorf("pod %s: no preStop hook putting the server in lame duck mode", pod.Name)
	}
	for _, st := range pod.Status.ContainerStatuses {
		if !st.Ready || st.RestartCount > 0 {
			t.Errorf("pod %s: container %s ready %t after %d restart(s), want ready without restarts", pod.Name, st.Name, st.Ready, st.RestartCount)
		}
	}
}

// publishRefused connects as service with the creds of its connection
// Secret and publishes to subject, which its permissions must not allow:
// the server answers with a permissions violation naming the subject,
// and keeps the connection.
func (s *suite) publishRefused(t *testing.T, ctx context.Context, app, service, addr, subject string) error {
	t.Helper()
	creds, err := s.credsFile(t, app, service)
	if err != nil {
		return err
	}
	errs := make(chan error, 16)
	nc, err := nats.Connect(addr, nats.UserCredentials(creds), nats.NoReconnect(),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			select {
			case errs <- err:
			default:
			}
		}))
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer nc.Close()
	if err := nc.Publish(subject, []byte("{}")); err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	if err := nc.FlushTimeout(permissionTimeout); err != nil {
		return fmt.Errorf("flush: %w", err)
	}
	deadline := time.NewTimer(permissionTimeout)
	defer deadline.Stop()
	for {
		select {
		case err := <-errs:
			if strings.Contains(strings.ToLower(err.Error()), "permissions violation") && strings.Contains(err.Error(), subject) {
				return nil
			}
		case <-deadline.C:
			return fmt.Errorf("no permissions violation within %s: the server accepted it", permissionTimeout)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// getJSON decodes the JSON answer of a GET of u.
func getJSON(ctx context.Context, u string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(out)
}
