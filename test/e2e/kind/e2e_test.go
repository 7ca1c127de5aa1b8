//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/courier-dev/courier/test/blogapi"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/courier-dev/courier/operator/api/v1alpha1"
	"github.com/courier-dev/courier/services/kit/contract"
)

// Deadlines of the steps. Ready covers pulling the RabbitMQ image into a
// fresh kind node and the broker's first start, the slowest part of a run.
const (
	operatorTimeout = 3 * time.Minute
	objectsTimeout  = 2 * time.Minute
	readyTimeout    = 10 * time.Minute
	mailTimeout     = 3 * time.Minute
	deleteTimeout   = 5 * time.Minute
)

// queueEmails is the queue charts/blog declares between users/posts and the
// mailer.
const queueEmails = "emails"

// blogServices are the services charts/blog declares.
var blogServices = []string{"gateway", "mailer", "posts", "users"}

// TestBlog walks the blog app through its life on a real cluster: the
// operator is up, it wrote the objects it owns, the app turns Ready, a user's
// requests through the gateway produce exactly the e-mails they should, the
// services count those requests in their metrics, and deleting the app
// removes what the operator made. Each step needs the previous one, so the
// first failure ends the run.
//
// The app's broker is RabbitMQ or NATS JetStream (E2E_BROKER_KIND): every
// step but the broker's own runs the same on both.
func TestBlog(t *testing.T) {
	s := &suite{cfg: configFromEnv(), c: connect(t)}
	t.Logf("operator %s/%s, app %s/%s on %s", s.cfg.operatorNamespace, s.cfg.operatorDeployment, s.cfg.namespace, s.cfg.app, s.cfg.brokerKind)
	type step struct {
		name string
		run  func(*testing.T)
	}
	var broker step
	switch s.cfg.brokerKind {
	case contract.BrokerRabbitMQ:
		broker = step{"a three-node broker loses a node and no job", s.brokerSurvivesNodeLoss}
	case contract.BrokerNATS:
		broker = step{"NATS servers ready in one cluster with metrics and least-privileged credentials; one leaves in lame duck mode and no job", s.natsBroker}
	default:
		t.Fatalf("E2E_BROKER_KIND %q: want %s or %s", s.cfg.brokerKind, contract.BrokerRabbitMQ, contract.BrokerNATS)
	}
	for _, step := range []step{
		{"operator available", s.operatorAvailable},
		{"owned objects", s.ownedObjects},
		{"app ready", s.appReady},
		{"pods admitted under the restricted Pod Security Standard", s.restrictedPodSecurity},
		{"operator runs with the chart's RBAC, not as an administrator", s.operatorLeastPrivilege},
		{"sign-up and comment send two e-mails", s.emails},
		{"metrics", s.metrics},
		{"NetworkPolicies admit only the service graph", s.networkPolicies},
		broker,
		{"delete", s.deleteApp},
		{"delete the namespace", s.deleteNamespace},
	} {
		if !t.Run(step.name, step.run) {
			return
		}
	}
}

// suite carries what one step learns for the next.
type suite struct {
	cfg config
	c   *cluster

	// gatewayPod served the emails step's requests; gatewaySignUps is what
	// its sign-up counter read before them.
	gatewayPod     *corev1.Pod
	gatewaySignUps float64
}

// signUpSeries is the gateway's and the users service's series for a
// successful sign-up: a route template, never a raw path.
var signUpSeries = map[string]string{"method": http.MethodPost, "route": "/api/users", "code": "201"}

func (s *suite) appKey() client.ObjectKey {
	return client.ObjectKey{Namespace: s.cfg.namespace, Name: s.cfg.app}
}

func (s *suite) getApp(t *testing.T, ctx context.Context) *v1alpha1.MicroserviceApp {
	t.Helper()
	app := &v1alpha1.MicroserviceApp{}
	if err := s.c.client.Get(ctx, s.appKey(), app); err != nil {
		t.Fatalf("get msa %s: %v (did hack/kind/install.sh run?)", s.appKey(), err)
	}
	return app
}

// operatorAvailable waits for the operator's Deployment to roll out its
// current spec with every replica available.
func (s *suite) operatorAvailable(t *testing.T) {
	ctx := t.Context()
	key := client.ObjectKey{Namespace: s.cfg.operatorNamespace, Name: s.cfg.operatorDeployment}
	d := &appsv1.Deployment{}
	err := waitFor(ctx, operatorTimeout, "deployment "+key.String()+" available", func(ctx context.Context) (bool, string, error) {
		if err := s.c.client.Get(ctx, key, d); err != nil {
			return false, "", err
		}
		return deploymentAvailable(d), describeDeployment(d), nil
	})
	if err != nil {
		pods := "  deployment not found\n"
		if d.Spec.Selector != nil {
			pods = s.c.describePods(ctx, key.Namespace, client.MatchingLabels(d.Spec.Selector.MatchLabels))
		}
		t.Fatalf("%v\n%s", err, pods)
	}
}

// deploymentAvailable reports whether d's controller has seen its current
// spec and every desired replica is updated and available.
func deploymentAvailable(d *appsv1.Deployment) bool {
	want := int32(1)
	if d.Spec.Replicas != nil {
		want = *d.Spec.Replicas
	}
	available := false
	for _, c := range d.Status.Conditions {
		if c.Type == appsv1.DeploymentAvailable {
			available = c.Status == corev1.ConditionTrue
		}
	}
	return available && d.Status.ObservedGeneration >= d.Generation &&
		d.Status.UpdatedReplicas == want && d.Status.AvailableReplicas == want
}

func describeDeployment(d *appsv1.Deployment) string {
	var b strings.Builder
	fmt.Fprintf(&b, "  deployment %s: generation %d, observed %d, replicas %d updated %d available %d\n",
		d.Name, d.Generation, d.Status.ObservedGeneration, d.Status.Replicas, d.Status.UpdatedReplicas, d.Status.AvailableReplicas)
	for _, c := range d.Status.Conditions {
		fmt.Fprintf(&b, "  %s=%s %s: %s\n", c.Type, c.Status, c.Reason, c.Message)
	}
	return b.String()
}

// ownedObjects checks what the operator wrote for the app, as users see it:
// names, labels, owner, and the broker wiring of each service. The operator
// writes these whether or not the broker is up yet, so this step needs no
// running pod.
func (s *suite) ownedObjects(t *testing.T) {
	ctx := t.Context()
	app := s.getApp(t, ctx)
	var names []string
	for _, svc := range app.Spec.Services {
		names = append(names, svc.Name)
	}
	slices.Sort(names)
	if !slices.Equal(names, blogServices) {
		t.Fatalf("msa %s declares services %v, want charts/blog's %v", s.appKey(), names, blogServices)
	}
	if app.Spec.Broker == nil || app.Spec.Broker.Managed == nil {
		t.Fatalf("msa %s has no managed broker; charts/blog's default is one", s.appKey())
	}
	if kind := string(app.Spec.Broker.Kind); kind != s.cfg.brokerKind {
		t.Fatalf("msa %s has spec.broker.kind %q, want E2E_BROKER_KIND %q", s.appKey(), kind, s.cfg.brokerKind)
	}

	// Every object, by kind and name, waited for together: the operator
	// applies them in one reconcile, but the suite may start before it.
	ns, a := s.cfg.namespace, app.Name
	objects := map[string]client.Object{
		"statefulset/" + brokerName(a):  &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: brokerName(a)}},
		"service/" + brokerName(a):      &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: brokerName(a)}},
		"service/" + brokerNodesName(a): &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: brokerNodesName(a)}},
	}
	for _, svc := range app.Spec.Services {
		objects["deployment/"+objectName(a, svc.Name)] = &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: objectName(a, svc.Name)}}
		objects["service/"+objectName(a, svc.Name)] = &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: objectName(a, svc.Name)}}
		if usesBroker(app, &svc) {
			name := connectionSecretName(a, svc.Name)
			objects["secret/"+name] = &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
		}
	}
	err := waitFor(ctx, objectsTimeout, "the operator's objects for msa "+s.appKey().String(), func(ctx context.Context) (bool, string, error) {
		if err := s.c.client.Get(ctx, s.appKey(), app); err != nil {
			return false, "", err
		}
		var missing []string
		for _, id := range slices.Sorted(maps.Keys(objects)) {
			obj := objects[id]
			if err := s.c.client.Get(ctx, client.ObjectKeyFromObject(obj), obj); err != nil {
				if !apierrors.IsNotFound(err) {
					return false, "", err
				}
				missing = append(missing, id)
			}
		}
		return len(missing) == 0, "  missing: " + strings.Join(missing, ", ") + "\n" + describeApp(app), nil
	})
	if err != nil {
		t.Fatal(err)
	}

	brokerLabels := map[string]string{labelName: brokerComponent, labelInstance: a, labelManagedBy: managedBy, labelComponent: brokerComponent}
	sts := objects["statefulset/"+brokerName(a)]
	s.checkMeta(t, app, "statefulset/"+brokerName(a), sts, brokerLabels)
	s.checkMeta(t, app, "service/"+brokerName(a), objects["service/"+brokerName(a)], brokerLabels)
	nodes := objects["service/"+brokerNodesName(a)].(*corev1.Service)
	s.checkMeta(t, app, "service/"+brokerNodesName(a), nodes, brokerLabels)
	if nodes.Spec.ClusterIP != corev1.ClusterIPNone {
		t.Errorf("service/%s: clusterIP %q, want a headless Service", nodes.Name, nodes.Spec.ClusterIP)
	}

	for _, svc := range app.Spec.Services {
		d := objects["deployment/"+objectName(a, svc.Name)].(*appsv1.Deployment)
		s.checkMeta(t, app, "deployment/"+d.Name, d, serviceLabels(a, svc.Name))
		if got := d.Spec.Selector.MatchLabels; !maps.Equal(got, serviceSelector(a, svc.Name)) {
			t.Errorf("deployment/%s: selector %v, want %v", d.Name, got, serviceSelector(a, svc.Name))
		}
		if m := missingLabels(d.Spec.Template.Labels, serviceLabels(a, svc.Name)); len(m) > 0 {
			t.Errorf("deployment/%s: pod template lacks labels %v", d.Name, m)
		}
		k8sSvc := objects["service/"+objectName(a, svc.Name)].(*corev1.Service)
		s.checkMeta(t, app, "service/"+k8sSvc.Name, k8sSvc, serviceLabels(a, svc.Name))
		checkService(t, k8sSvc, serviceSelector(a, svc.Name))

		c := container(d, svc.Name)
		if c == nil {
			t.Errorf("deployment/%s has no container named %s", d.Name, svc.Name)
			continue
		}
		if !usesBroker(app, &svc) {
			if env := findEnv(c, contract.EnvBrokerURL); env != nil {
				t.Errorf("deployment/%s: %s uses no queue but has %s", d.Name, svc.Name, contract.EnvBrokerURL)
			}
			secret := &corev1.Secret{}
			err := s.c.client.Get(ctx, client.ObjectKey{Namespace: ns, Name: connectionSecretName(a, svc.Name)}, secret)
			if !apierrors.IsNotFound(err) {
				t.Errorf("secret/%s: %s uses no queue, want no connection Secret; got error %v", connectionSecretName(a, svc.Name), svc.Name, err)
			}
			continue
		}
		secret := objects["secret/"+connectionSecretName(a, svc.Name)].(*corev1.Secret)
		s.checkMeta(t, app, "secret/"+secret.Name, secret, serviceLabels(a, svc.Name))
		s.checkBrokerWiring(t, app, &svc, d, c, secret)
	}
}

// usesBroker reports whether svc gets a broker user, as the operator decides
// it: the app has a broker and svc publishes or consumes.
func usesBroker(app *v1alpha1.MicroserviceApp, svc *v1alpha1.Service) bool {
	return app.Spec.Broker != nil && len(svc.Publishes)+len(svc.Consumes) > 0
}

// checkMeta checks an object's labels and that app controls it, which is
// what makes deleting the app delete the object.
func (s *suite) checkMeta(t *testing.T, app *v1alpha1.MicroserviceApp, id string, obj client.Object, labels map[string]string) {
	t.Helper()
	if m := missingLabels(obj.GetLabels(), labels); len(m) > 0 {
		t.Errorf("%s: labels %v lack %v", id, obj.GetLabels(), m)
	}
	if !ownedBy(obj, app) {
		t.Errorf("%s: controller %v, want msa %s (uid %s)", id, metav1.GetControllerOf(obj), app.Name, app.UID)
	}
}

// checkService checks that a service's Service selects its pods and exposes
// the contract's two named ports.
func checkService(t *testing.T, svc *corev1.Service, selector map[string]string) {
	t.Helper()
	if !maps.Equal(svc.Spec.Selector, selector) {
		t.Errorf("service/%s: selector %v, want %v", svc.Name, svc.Spec.Selector, selector)
	}
	for name, port := range map[string]int32{contract.HTTPPortName: contract.HTTPPort, contract.AdminPortName: contract.AdminPort} {
		i := slices.IndexFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == name })
		if i < 0 {
			t.Errorf("service/%s: no port named %s: %v", svc.Name, name, svc.Spec.Ports)
			continue
		}
		if p := svc.Spec.Ports[i]; p.Port != port || p.TargetPort.StrVal != name {
			t.Errorf("service/%s: port %s is %d -> %s, want %d -> the container port named %s", svc.Name, name, p.Port, p.TargetPort.String(), port, name)
		}
	}
}

// checkBrokerWiring checks how a service that uses queues reaches the
// broker: BROKER_URL comes from its own connection Secret (never a literal
// in the Deployment), that Secret's URL is the app's vhost on the managed
// broker as the service's own user (RabbitMQ) or the managed system's client
// Service with the service's own creds file beside it (NATS), every queue it
// uses has its variable, and the pod template carries the hash that rolls
// pods on rotation.
func (s *suite) checkBrokerWiring(t *testing.T, app *v1alpha1.MicroserviceApp, svc *v1alpha1.Service, d *appsv1.Deployment, c *corev1.Container, secret *corev1.Secret) {
	t.Helper()
	env := findEnv(c, contract.EnvBrokerURL)
	switch {
	case env == nil:
		t.Errorf("deployment/%s: no %s", d.Name, contract.EnvBrokerURL)
	case env.Value != "" || env.ValueFrom == nil || env.ValueFrom.SecretKeyRef == nil:
		t.Errorf("deployment/%s: %s must come from a secretKeyRef, got %+v", d.Name, contract.EnvBrokerURL, env)
	case env.ValueFrom.SecretKeyRef.Name != secret.Name || env.ValueFrom.SecretKeyRef.Key != connectionURLKey:
		t.Errorf("deployment/%s: %s from secret %s key %s, want secret %s key %s", d.Name, contract.EnvBrokerURL,
			env.ValueFrom.SecretKeyRef.Name, env.ValueFrom.SecretKeyRef.Key, secret.Name, connectionURLKey)
	}
	if kind := findEnv(c, contract.EnvBrokerKind); kind == nil || kind.Value != s.cfg.brokerKind {
		t.Errorf("deployment/%s: %s is %+v, want %q", d.Name, contract.EnvBrokerKind, kind, s.cfg.brokerKind)
	}
	for _, q := range slices.Concat(svc.Publishes, svc.Consumes) {
		if v := findEnv(c, contract.QueueEnv(q)); v == nil || v.Value != contract.QueueName(app.Name, q) {
			t.Errorf("deployment/%s: %s is %+v, want %q", d.Name, contract.QueueEnv(q), v, contract.QueueName(app.Name, q))
		}
	}
	if d.Spec.Template.Annotations[contract.AnnotationConnectionHash] == "" {
		t.Errorf("deployment/%s: pod template has no %s annotation", d.Name, contract.AnnotationConnectionHash)
	}

	raw := string(secret.Data[connectionURLKey])
	u, err := url.Parse(raw)
	if err != nil {
		t.Errorf("secret/%s: key %s is not a URL: %v", secret.Name, connectionURLKey, err)
		return
	}
	wantHost := brokerName(app.Name) + "." + app.Namespace + ".svc"
	if s.cfg.brokerKind == contract.BrokerNATS {
		checkNATSConnection(t, d, c, secret, u, wantHost)
		return
	}
	user, pass := u.User.Username(), ""
	if p, ok := u.User.Password(); ok {
		pass = p
	}
	// 5672 is AMQP's registered port, where the managed broker listens.
	if u.Scheme != "amqp" || u.Hostname() != wantHost || u.Port() != "5672" || u.Path != "/"+app.Name {
		t.Errorf("secret/%s: URL amqp://%s@%s%s, want amqp://<user>@%s:5672/%s", secret.Name, user, u.Host, u.Path, wantHost, app.Name)
	}
	if user == "" || user != string(secret.Data["username"]) || pass == "" || pass != string(secret.Data["password"]) {
		t.Errorf("secret/%s: URL credentials do not match its username and password keys (user %q)", secret.Name, user)
	}
}

func container(d *appsv1.Deployment, name string) *corev1.Container {
	for i := range d.Spec.Template.Spec.Containers {
		if d.Spec.Template.Spec.Containers[i].Name == name {
			return &d.Spec.Template.Spec.Containers[i]
		}
	}
	return nil
}

func findEnv(c *corev1.Container, name string) *corev1.EnvVar {
	for i := range c.Env {
		if c.Env[i].Name == name {
			return &c.Env[i]
		}
	}
	return nil
}

// appReady waits for the app's Ready condition to be True for its current
// spec, then checks that the status agrees: every service available.
func (s *suite) appReady(t *testing.T) {
	ctx := t.Context()
	app := &v1alpha1.MicroserviceApp{}
	err := waitFor(ctx, readyTimeout, "msa "+s.appKey().String()+" Ready", func(ctx context.Context) (bool, string, error) {
		if err := s.c.client.Get(ctx, s.appKey(), app); err != nil {
			return false, "", err
		}
		c, current := readyCondition(app)
		done := current && c.Status == metav1.ConditionTrue && app.Status.ObservedGeneration == app.Generation
		return done, describeApp(app), nil
	})
	if err != nil {
		t.Fatalf("%v\npods of the app:\n%s", err, s.c.describePods(ctx, s.cfg.namespace, appLabels(s.cfg.app)))
	}
	t.Logf("ready:\n%s", describeApp(app))
	for _, svc := range app.Status.Services {
		if !svc.Available || svc.ReadyReplicas != svc.DesiredReplicas {
			t.Errorf("Ready, yet service %s is %d/%d ready, available %v", svc.Name, svc.ReadyReplicas, svc.DesiredReplicas, svc.Available)
		}
	}
	if len(app.Status.Services) != len(app.Spec.Services) {
		t.Errorf("status lists %d services, spec %d", len(app.Status.Services), len(app.Spec.Services))
	}
}

// messageID is the Message-ID the mailer derives from a job id (a UUID);
// Mailpit may show it with or without the angle brackets.
var messageID = regexp.MustCompile(`^<?[0-9a-f-]{36}@courier>?$`)

// emails signs a user up through the gateway, has her write a post and
// comment on it, and expects exactly two e-mails, both to her: the welcome
// e-mail from users and the comment notification from posts, sent by the
// mailer through Mailpit.
func (s *suite) emails(t *testing.T) {
	ctx := t.Context()
	app := s.getApp(t, ctx)

	gateway, gatewayPod := s.c.forwardService(t, ctx, s.cfg.namespace, objectName(app.Name, "gateway"), contract.HTTPPortName)
	s.gatewayPod = gatewayPod
	t.Logf("gateway: %s (pod %s)", gateway, gatewayPod.Name)
	gatewayAdmin := s.c.forwardPod(t, gatewayPod, adminPort(t, gatewayPod))
	before, err := scrape(ctx, gatewayAdmin)
	if err != nil {
		t.Fatal(err)
	}
	s.gatewaySignUps, _ = before.counter(contract.MetricHTTPRequests, signUpSeries)

	mailpitURL, _ := s.c.forwardService(t, ctx, s.cfg.namespace, s.cfg.mailpit, "http")
	inbox := mailpit{base: mailpitURL}
	if err := inbox.deleteAll(ctx); err != nil {
		t.Fatal(err)
	}

	// The job counters of every publisher and consumer of the queue, read
	// before and after: "exactly two e-mails" is only a fact once every
	// job published has been handled, or a late one could still arrive.
	publishers, consumers := map[string]string{}, map[string]string{}
	for _, svc := range app.Spec.Services {
		if slices.Contains(svc.Publishes, queueEmails) {
			maps.Copy(publishers, s.c.adminForwards(t, ctx, s.cfg, svc.Name))
		}
		if slices.Contains(svc.Consumes, queueEmails) {
			maps.Copy(consumers, s.c.adminForwards(t, ctx, s.cfg, svc.Name))
		}
	}
	success := map[string]string{"queue": queueEmails, "outcome": contract.OutcomeSuccess}
	deadLetter := map[string]string{"queue": queueEmails, "outcome": contract.OutcomeDeadLetter}
	published0, err := sumCounter(ctx, publishers, contract.MetricMessagesPublished, success)
	if err != nil {
		t.Fatal(err)
	}
	handled0, err := sumCounter(ctx, consumers, contract.MetricMessagesConsumed, success)
	if err != nil {
		t.Fatal(err)
	}
	dead0, err := sumCounter(ctx, consumers, contract.MetricMessagesConsumed, deadLetter)
	if err != nil {
		t.Fatal(err)
	}

	// A run id keeps the addresses new, so a rerun against the same pods
	// (whose databases keep earlier runs' users) signs up a new user.
	run := strconv.FormatInt(time.Now().UnixNano(), 36)
	email := "ada-" + run + "@example.com"
	api := &blogapi.Client{T: t, Ctx: ctx, Base: gateway, HTTP: httpClient}
	ada := api.Register("Ada Lovelace", email)
	token := api.SignIn(email)
	post, author := api.CreatePost(token, "Notes on the Analytical Engine", "It weaves algebraic patterns.")
	if author != ada {
		t.Fatalf("post author is user %d, want Ada (%d): the gateway did not pass the caller on", author, ada)
	}
	api.Comment(token, post, "Reading this back a year later: still true.")
	// A write without a token is refused at the edge and mails no one.
	api.Expect(http.MethodPost, fmt.Sprintf("/api/posts/%d/comments", post), "", map[string]string{"body": "anonymous"}, http.StatusUnauthorized, nil)

	var mails []mailMessage
	var published, handled float64
	err = waitFor(ctx, mailTimeout, "two e-mails in Mailpit and every e-mail job handled", func(ctx context.Context) (bool, string, error) {
		var err error
		if mails, err = inbox.messages(ctx); err != nil {
			return false, "", err
		}
		p, err := sumCounter(ctx, publishers, contract.MetricMessagesPublished, success)
		if err != nil {
			return false, "", err
		}
		h, err := sumCounter(ctx, consumers, contract.MetricMessagesConsumed, success)
		if err != nil {
			return false, "", err
		}
		published, handled = p-published0, h-handled0
		seen := fmt.Sprintf("  %d e-mails in Mailpit, %v jobs published, %v handled\n%s", len(mails), published, handled, describeMails(mails))
		return len(mails) >= 2 && published >= 2 && handled >= published, seen, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if published != 2 {
		t.Errorf("%v e-mail jobs published, want 2 (a welcome and a comment notification)", published)
	}
	if dead, err := sumCounter(ctx, consumers, contract.MetricMessagesConsumed, deadLetter); err != nil || dead != dead0 {
		t.Errorf("%v e-mail jobs dead-lettered during the run (err %v)", dead-dead0, err)
	}

	want := []struct{ subject, body string }{
		{"Welcome to the blog, Ada Lovelace", "Hello Ada Lovelace,"},
		{`New comment on "Notes on the Analytical Engine"`, `Ada Lovelace commented on your post "Notes on the Analytical Engine"`},
	}
	if len(mails) != len(want) {
		t.Fatalf("%d e-mails in Mailpit, want exactly %d:\n%s", len(mails), len(want), describeMails(mails))
	}
	seenIDs := map[string]bool{}
	for _, w := range want {
		i := slices.IndexFunc(mails, func(m mailMessage) bool { return m.Subject == w.subject })
		if i < 0 {
			t.Errorf("no e-mail with subject %q:\n%s", w.subject, describeMails(mails))
			continue
		}
		m, err := inbox.message(ctx, mails[i].ID)
		if err != nil {
			t.Fatal(err)
		}
		if len(m.To) != 1 || m.To[0].Address != email {
			t.Errorf("%q went to %v, want only %s", w.subject, m.To, email)
		}
		if !strings.Contains(m.Text, w.body) {
			t.Errorf("%q: body lacks %q:\n%s", w.subject, w.body, m.Text)
		}
		if !messageID.MatchString(m.MessageID) || seenIDs[m.MessageID] {
			t.Errorf("%q: Message-ID %q is not a job's own <uuid@courier>", w.subject, m.MessageID)
		}
		seenIDs[m.MessageID] = true
	}
}

func describeMails(mails []mailMessage) string {
	var b strings.Builder
	for _, m := range mails {
		var to []string
		for _, a := range m.To {
			to = append(to, a.Address)
		}
		fmt.Fprintf(&b, "  to %v %q %s\n", to, m.Subject, m.MessageID)
	}
	return b.String()
}

// metrics scrapes the admin port of the gateway pod that served the emails
// step and of the users service: each counted the one sign-up under the
// route template "/api/users", and no route label holds a raw path.
func (s *suite) metrics(t *testing.T) {
	ctx := t.Context()
	if s.gatewayPod == nil {
		t.Fatal("the emails step recorded no gateway pod")
	}
	gw, err := scrape(ctx, s.c.forwardPod(t, s.gatewayPod, adminPort(t, s.gatewayPod)))
	if err != nil {
		t.Fatal(err)
	}
	signUps, ok := gw.counter(contract.MetricHTTPRequests, signUpSeries)
	if !ok || signUps-s.gatewaySignUps != 1 {
		t.Errorf("gateway pod %s: %s%v rose by %v during the run, want 1", s.gatewayPod.Name, contract.MetricHTTPRequests, signUpSeries, signUps-s.gatewaySignUps)
	}
	checkRouteTemplates(t, "gateway pod "+s.gatewayPod.Name, gw)

	users := s.c.adminForwards(t, ctx, s.cfg, "users")
	for _, pod := range slices.Sorted(maps.Keys(users)) {
		m, err := scrape(ctx, users[pod])
		if err != nil {
			t.Fatal(err)
		}
		checkRouteTemplates(t, "users pod "+pod, m)
	}
	total, err := sumCounter(ctx, users, contract.MetricHTTPRequests, signUpSeries)
	if err != nil {
		t.Fatal(err)
	}
	if total < 1 {
		t.Errorf("users: no %s series for %v over pods %v", contract.MetricHTTPRequests, signUpSeries, slices.Sorted(maps.Keys(users)))
	}
	for _, name := range []string{contract.MetricHTTPDuration, contract.MetricBuildInfo} {
		if gw[name] == nil {
			t.Errorf("gateway pod %s exports no %s", s.gatewayPod.Name, name)
		}
	}
}

// numericSegment finds a path segment that is a number, such as a post id:
// a route label holding one is a raw path, and would make a series per post.
var numericSegment = regexp.MustCompile(`/[0-9]+(/|$)`)

func checkRouteTemplates(t *testing.T, who string, m metrics) {
	t.Helper()
	routes := m.labelValues(contract.MetricHTTPRequests, "route")
	if len(routes) == 0 {
		t.Errorf("%s: %s has no route label", who, contract.MetricHTTPRequests)
	}
	for r := range routes {
		if numericSegment.MatchString(r) {
			t.Errorf("%s: route label %q is a raw path, not a template", who, r)
		}
	}
}

// deleteApp deletes the app and waits for the operator's clean-up (its
// finalizer) to let it go and for garbage collection to remove the
// Deployments, the broker's StatefulSet and the Services it owned.
func (s *suite) deleteApp(t *testing.T) {
	ctx := t.Context()
	app := s.getApp(t, ctx)
	if err := s.c.client.Delete(ctx, app); err != nil {
		t.Fatalf("delete msa %s: %v", s.appKey(), err)
	}
	err := waitFor(ctx, deleteTimeout, "msa "+s.appKey().String()+" gone", func(ctx context.Context) (bool, string, error) {
		err := s.c.client.Get(ctx, s.appKey(), app)
		if apierrors.IsNotFound(err) {
			return true, "", nil
		}
		if err != nil {
			return false, "", err
		}
		return false, fmt.Sprintf("  deletionTimestamp %v\n%s", app.DeletionTimestamp, describeApp(app)), nil
	})
	if err != nil {
		t.Fatal(err)
	}

	sel := appLabels(s.cfg.app)
	err = waitFor(ctx, deleteTimeout, "the app's Deployments, StatefulSets and Services gone", func(ctx context.Context) (bool, string, error) {
		var left []string
		for kind, list := range map[string]client.ObjectList{
			"deployment":  &appsv1.DeploymentList{},
			"statefulset": &appsv1.StatefulSetList{},
			"service":     &corev1.ServiceList{},
		} {
			if err := s.c.client.List(ctx, list, client.InNamespace(s.cfg.namespace), sel); err != nil {
				return false, "", err
			}
			items, err := listNames(list)
			if err != nil {
				return false, "", err
			}
			for _, o := range items {
				left = append(left, kind+"/"+o)
			}
		}
		slices.Sort(left)
		return len(left) == 0, "  left: " + strings.Join(left, ", "), nil
	})
	if err != nil {
		t.Fatal(err)
	}

	// The operator stops a deleted app's broker without the preStop
	// checks (quorum wait 300 s, drain 120 s per node), which cannot
	// succeed when every node goes: the pods are gone well before the
	// first check alone would have timed out.
	err = waitFor(ctx, podsGoneTimeout, "the app's pods gone, the broker's without its preStop checks", func(ctx context.Context) (bool, string, error) {
		pods := &corev1.PodList{}
		if err := s.c.client.List(ctx, pods, client.InNamespace(s.cfg.namespace), sel); err != nil {
			return false, "", err
		}
		var left []string
		for _, p := range pods.Items {
			left = append(left, p.Name)
		}
		return len(left) == 0, "  left: " + strings.Join(left, ", "), nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// podsGoneTimeout bounds the termination of a deleted app's pods: a service
// pod's grace period (40 s) with room to spare, and far less than a broker
// node's preStop quorum wait (300 s).
const podsGoneTimeout = 150 * time.Second

// deleteNamespace deletes the app's namespace after the app and waits until
// it is gone: nothing the operator left (a finalizer, a volume claim of the
// broker) holds it up. hack/kind/install.sh makes it again.
func (s *suite) deleteNamespace(t *testing.T) {
	ctx := t.Context()
	ns := &corev1.Namespace{}
	ns.Name = s.cfg.namespace
	if err := s.c.client.Delete(ctx, ns); err != nil {
		t.Fatalf("delete namespace %s: %v", ns.Name, err)
	}
	err := waitFor(ctx, deleteTimeout, "namespace "+ns.Name+" gone", func(ctx context.Context) (bool, string, error) {
		err := s.c.client.Get(ctx, client.ObjectKeyFromObject(ns), ns)
		if apierrors.IsNotFound(err) {
			return true, "", nil
		}
		if err != nil {
			return false, "", err
		}
		var conds []string
		for _, c := range ns.Status.Conditions {
			if c.Status == corev1.ConditionTrue {
				conds = append(conds, fmt.Sprintf("%s: %s", c.Type, c.Message))
			}
		}
		return false, "  " + strings.Join(conds, "\n  "), nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// listNames returns the names of the objects in list.
func listNames(list client.ObjectList) ([]string, error) {
	objs, err := meta.ExtractList(list)
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(objs))
	for _, o := range objs {
		acc, err := meta.Accessor(o)
		if err != nil {
			return nil, err
		}
		names = append(names, acc.GetName())
	}
	return names, nil
}
