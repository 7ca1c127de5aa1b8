//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/courier-dev/courier/services/kit/contract"
	"github.com/courier-dev/courier/test/blogapi"
)

// Names of the managed broker's admin Secret and management port, as the
// operator spells them (operator/internal/resource/rabbitmq): spelled again
// here for the reason cluster_test.go gives.
const (
	adminSecretSuffix  = "-broker-admin"
	managementPortName = "management"
	haComments         = 8
)

// brokerSurvivesNodeLoss: the suite's app runs a three-node managed
// broker. The nodes form one RabbitMQ cluster, the e-mail queue is a quorum
// queue with a member on each, and deleting one broker pod while jobs are
// being published loses none and duplicates none: every comment accepted
// mails its post's author exactly once. The pod comes back and the app is
// Ready again.
func (s *suite) brokerSurvivesNodeLoss(t *testing.T) {
	ctx := t.Context()
	app := s.getApp(t, ctx)
	sts := &appsv1.StatefulSet{}
	if err := s.c.client.Get(ctx, client.ObjectKey{Namespace: s.cfg.namespace, Name: brokerName(app.Name)}, sts); err != nil {
		t.Fatalf("broker statefulset: %v", err)
	}
	if sts.Spec.Replicas == nil || *sts.Spec.Replicas < 3 {
		t.Fatalf("the broker runs %v node(s); the suite installs three (hack/kind/install.sh BROKER_REPLICAS=3)", sts.Spec.Replicas)
	}
	nodes := int(*sts.Spec.Replicas)

	mgmt := s.management(t, ctx, app.Name)
	var running []struct {
		Name    string `json:"name"`
		Running bool   `json:"running"`
	}
	if err := mgmt.get(ctx, "/api/nodes", &running); err != nil {
		t.Fatal(err)
	}
	if up := slices.DeleteFunc(slices.Clone(running), func(n struct {
		Name    string `json:"name"`
		Running bool   `json:"running"`
	}) bool {
		return !n.Running
	}); len(up) != nodes {
		t.Fatalf("the management API sees %d running node(s) %v, want one cluster of %d", len(up), running, nodes)
	}
	var queue struct {
		Type    string   `json:"type"`
		Members []string `json:"members"`
	}
	physical := contract.QueueName(app.Name, queueEmails)
	if err := mgmt.get(ctx, "/api/queues/"+url.PathEscape(app.Name)+"/"+url.PathEscape(physical), &queue); err != nil {
		t.Fatal(err)
	}
	if queue.Type != "quorum" || len(queue.Members) != nodes {
		t.Fatalf("queue %s is %q with members %v, want a quorum queue on all %d nodes", physical, queue.Type, queue.Members, nodes)
	}

	victim := fmt.Sprintf("%s-%d", sts.Name, nodes-1)
	// The node goes down hard (no grace: no drain, as in a crash).
	s.jobsSurvivePodLoss(t, ctx, app.Name, victim, func(pod *corev1.Pod) error {
		return s.c.client.Delete(ctx, pod, client.GracePeriodSeconds(0))
	})
}

// jobsSurvivePodLoss publishes jobs through the blog while one of its
// broker's pods, victim, is stopped by stop and replaced: a user comments
// haComments times on their post, two comments before the stop and the
// others one a second while the pod is gone and while its replacement
// rejoins. Every comment must be mailed exactly once, counted once the pod
// is back and Ready and the app Ready again, so a duplicate redelivered
// after the recovery shows too.
func (s *suite) jobsSurvivePodLoss(t *testing.T, ctx context.Context, app, victim string, stop func(*corev1.Pod) error) {
	t.Helper()
	gateway, _ := s.c.forwardService(t, ctx, s.cfg.namespace, objectName(app, "gateway"), "http")
	mailpitURL, _ := s.c.forwardService(t, ctx, s.cfg.namespace, s.cfg.mailpit, "http")
	inbox := mailpit{base: mailpitURL}
	if err := inbox.deleteAll(ctx); err != nil {
		t.Fatal(err)
	}
	run := strconv.FormatInt(time.Now().UnixNano(), 36)
	email := "grace-" + run + "@example.com"
	api := &blogapi.Client{T: t, Ctx: ctx, Base: gateway, HTTP: httpClient}
	api.Register("Grace Hopper", email)
	token := api.SignIn(email)
	title := "Quorum " + run
	post, _ := api.CreatePost(token, title, "Three nodes, one queue.")

	pod := &corev1.Pod{}
	if err := s.c.client.Get(ctx, client.ObjectKey{Namespace: s.cfg.namespace, Name: victim}, pod); err != nil {
		t.Fatalf("broker pod: %v", err)
	}
	oldUID := pod.UID
	for i := range haComments {
		if i == 2 {
			if err := stop(pod); err != nil {
				t.Fatalf("stop broker pod %s: %v", victim, err)
			}
			t.Logf("stopped broker pod %s after %d comments", victim, i)
		}
		if i >= 2 {
			select {
			case <-ctx.Done():
				t.Fatal(ctx.Err())
			case <-time.After(time.Second): // the publishing spreads over the outage
			}
		}
		api.Comment(token, post, fmt.Sprintf("comment #%d of %s", i, run))
	}

	// The welcome e-mail and one notification per comment.
	want := haComments + 1
	var mails []mailMessage
	err := waitFor(ctx, mailTimeout, fmt.Sprintf("%d e-mails to %s", want, email), func(ctx context.Context) (bool, string, error) {
		var err error
		if mails, err = inbox.messages(ctx); err != nil {
			return false, "", err
		}
		return len(mails) >= want, fmt.Sprintf("  %d e-mails\n%s", len(mails), describeMails(mails)), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	err = waitFor(ctx, readyTimeout, "the stopped broker pod replaced and Ready, the app Ready", func(ctx context.Context) (bool, string, error) {
		pod := &corev1.Pod{}
		if err := s.c.client.Get(ctx, client.ObjectKey{Namespace: s.cfg.namespace, Name: victim}, pod); err != nil {
			return false, "", err
		}
		app := s.getApp(t, ctx)
		ready, _ := readyCondition(app)
		ok := pod.UID != oldUID && podReady(pod) && ready != nil && ready.Status == "True"
		return ok, fmt.Sprintf("  pod %s new %v ready %v\n%s", pod.Name, pod.UID != oldUID, podReady(pod), describeApp(app)), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Counted only now that the broker is whole again: a duplicate
	// redelivered after the recovery would show here.
	if mails, err = inbox.messages(ctx); err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, m := range mails {
		full, err := inbox.message(ctx, m.ID)
		if err != nil {
			t.Fatal(err)
		}
		for i := range haComments {
			if strings.Contains(full.Text, fmt.Sprintf("comment #%d of %s", i, run)) {
				seen[strconv.Itoa(i)]++
			}
		}
	}
	for i := range haComments {
		if n := seen[strconv.Itoa(i)]; n != 1 {
			t.Errorf("comment #%d was mailed %d times, want exactly once", i, n)
		}
	}
	if len(mails) != want {
		t.Errorf("%d e-mails, want exactly %d:\n%s", len(mails), want, describeMails(mails))
	}
}

// managementAPI is RabbitMQ's management HTTP API of the app's broker,
// through a port-forward, with the admin credentials the operator made.
type managementAPI struct {
	base, user, password string
}

func (s *suite) management(t *testing.T, ctx context.Context, app string) managementAPI {
	t.Helper()
	secret := &corev1.Secret{}
	if err := s.c.client.Get(ctx, client.ObjectKey{Namespace: s.cfg.namespace, Name: app + adminSecretSuffix}, secret); err != nil {
		t.Fatalf("broker admin secret: %v", err)
	}
	pod, err := s.c.readyPod(ctx, s.cfg.namespace, client.MatchingLabels{labelInstance: app, labelComponent: brokerComponent})
	if err != nil {
		t.Fatalf("a ready broker pod: %v", err)
	}
	base := s.c.forwardPod(t, pod, containerPort(pod, managementPortName))
	return managementAPI{base: base, user: string(secret.Data["username"]), password: string(secret.Data["password"])}
}

func (m managementAPI) get(ctx context.Context, path string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, m.base+path, nil)
	if err != nil {
		return err
	}
	req.SetBasicAuth(m.user, m.password)
	resp, err := httpClient.Do(req)
	if err != nil {
		return fmt.Errorf("management API %s: %w", path, err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("management API %s: %s", path, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(out)
}
