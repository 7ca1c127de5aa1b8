// Package controller reconciles MicroserviceApps: it writes the objects the
// resource builders describe with server-side apply, deletes those no longer
// wanted, makes the app's broker hold its topology and users, and reports
// the app's state in its status conditions.
package controller

import (
	"cmp"
	"context"
	"fmt"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	kerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/courier-dev/courier/operator/api/v1alpha1"
	"github.com/courier-dev/courier/operator/internal/broker"
	"github.com/courier-dev/courier/operator/internal/broker/natsbroker"
	"github.com/courier-dev/courier/operator/internal/driver"
	"github.com/courier-dev/courier/operator/internal/metadata"
	"github.com/courier-dev/courier/operator/internal/resource"
)

// cleanupFinalizer guards clean-up that owner references cannot do: state
// outside the cluster, such as an app's broker users and topology. Objects in
// the cluster need no finalizer, since garbage collection deletes them with
// the app.
const cleanupFinalizer = "apps.courier.dev/cleanup"

// DefaultMaxConcurrentReconciles is how many apps the operator reconciles at
// once unless told otherwise. Reconciles of different apps share nothing
// but the API client's rate limit, and broker calls wait on the network, so
// more workers than cores pay off.
const DefaultMaxConcurrentReconciles = 8

// MicroserviceAppReconciler runs the services of MicroserviceApps and
// provisions their brokers.
type MicroserviceAppReconciler struct {
	// Client reads from the manager's cache and writes to the API server.
	client.Client
	// APIReader reads from the API server directly: the external broker's
	// Secret, which the cache does not hold, and Secrets the cache has not
	// seen yet. Nil means Client.
	APIReader client.Reader
	// Recorder emits events on the app when objects are created, updated,
	// deleted or fail to apply, and when the broker is changed.
	Recorder events.EventRecorder
	// Admin does the broker work. In a cluster it dials brokers by their
	// Service names; tests give it a resolver that maps them to a local
	// broker.
	Admin broker.Admin
	// NATSAdmin does the work on NATS systems (spec.broker.kind nats); nil
	// means natsbroker.New(). Admin and NATSAdmin are read once, by the
	// first reconcile. Tests give it a resolver as they give Admin.
	NATSAdmin *natsbroker.NATS
	// ClusterDomain is the cluster's DNS domain, part of a managed broker's
	// node names; empty means cluster.local.
	ClusterDomain string
	// OperatorNamespace is the namespace the operator runs in; the managed
	// brokers' NetworkPolicies admit its pods to the management API. Empty
	// when the operator runs outside the cluster.
	OperatorNamespace string
	// ResyncInterval is how often the broker is made to match the spec
	// although nothing changed, which repairs what was changed on the broker
	// by hand (default 5m).
	ResyncInterval time.Duration
	// QueueStatsInterval is how often queue depths are polled (default 30s).
	QueueStatsInterval time.Duration
	// RetryInterval is how soon a broker that is not ready is looked at
	// again (default 15s).
	RetryInterval time.Duration
	// MaxConcurrentReconciles is how many apps are reconciled at once
	// (default DefaultMaxConcurrentReconciles), so that one app whose
	// broker hangs does not hold back the others.
	MaxConcurrentReconciles int
	// MonitoringLabels label every app's PodMonitor and PrometheusRule
	// unless its spec.monitoring.labels are set (nil means
	// resource.DefaultMonitoringLabels).
	MonitoringLabels map[string]string
	// MonitoringDiscoveryInterval is how often the operator looks for the
	// prometheus-operator's CRDs until they are installed (default 1m).
	MonitoringDiscoveryInterval time.Duration

	memo       brokerMemo
	monitoring monitoringState
	// drivers are the broker drivers by kind (driverFor), made on first
	// use with Admin and NATSAdmin.
	driversOnce sync.Once
	drivers     map[v1alpha1.BrokerKind]driver.Driver
	// secretMetadata holds every Secret's metadata (SetupWithManager); nil
	// until then. externalSecrets are the external brokers' Secrets as
	// last read, valid while their resourceVersion is the one it shows.
	secretMetadata  client.Reader
	externalSecrets secretMemo
	createdSecrets  createdSecrets
	// clock tells the broker memo and the queue listings the time; nil
	// means the real clock. Tests step it to count calls per interval.
	clock clock.PassiveClock
}

func (r *MicroserviceAppReconciler) now() time.Time {
	if r.clock == nil {
		return time.Now()
	}
	return r.clock.Now()
}

func (r *MicroserviceAppReconciler) apiReader() client.Reader {
	if r.APIReader == nil {
		return r.Client
	}
	return r.APIReader
}

func (r *MicroserviceAppReconciler) resyncInterval() time.Duration {
	return cmp.Or(r.ResyncInterval, defaultResyncInterval)
}

func (r *MicroserviceAppReconciler) queueStatsInterval() time.Duration {
	return cmp.Or(r.QueueStatsInterval, defaultQueueStatsInterval)
}

func (r *MicroserviceAppReconciler) retryInterval() time.Duration {
	return cmp.Or(r.RetryInterval, defaultBrokerRetryInterval)
}

// +kubebuilder:rbac:groups=apps.courier.dev,resources=microserviceapps,verbs=get;list;watch;update
// +kubebuilder:rbac:groups=apps.courier.dev,resources=microserviceapps/status,verbs=get;patch
// +kubebuilder:rbac:groups=apps.courier.dev,resources=microserviceapps/finalizers,verbs=update
// +kubebuilder:rbac:groups=apps,resources=deployments;statefulsets,verbs=get;list;watch;create;patch;delete
// +kubebuilder:rbac:groups="",resources=services;secrets;configmaps;serviceaccounts;persistentvolumeclaims,verbs=get;list;watch;create;patch;delete
// +kubebuilder:rbac:groups=policy,resources=poddisruptionbudgets,verbs=get;list;watch;create;patch;delete
// +kubebuilder:rbac:groups=networking.k8s.io,resources=networkpolicies,verbs=get;list;watch;create;patch;delete
// +kubebuilder:rbac:groups=rbac.authorization.k8s.io,resources=roles;rolebindings,verbs=get;list;watch;create;patch;delete
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
//
// A managed broker's Role lets its nodes read their peers' endpoints and
// record events; the API server lets the operator grant only what it holds.
// +kubebuilder:rbac:groups="",resources=endpoints,verbs=get;list
//
// A deleted app's broker pods are marked to skip their preStop checks
// (stopManagedBroker).
// +kubebuilder:rbac:groups="",resources=pods,verbs=list;patch
// +kubebuilder:rbac:groups="",resources=events,verbs=create

// Reconcile brings one app's objects and broker to the state its spec
// describes and records what it observed in the app's status.
func (r *MicroserviceAppReconciler) Reconcile(ctx context.Context, req ctrl.Request) (result ctrl.Result, retErr error) {
	app := &v1alpha1.MicroserviceApp{}
	if err := r.Get(ctx, req.NamespacedName, app); err != nil {
		if apierrors.IsNotFound(err) {
			r.memo.forget(req.NamespacedName)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}

	if !app.DeletionTimestamp.IsZero() {
		return r.reconcileDelete(ctx, app)
	}
	if needsCleanup(app) && controllerutil.AddFinalizer(app, cleanupFinalizer) {
		if err := r.Update(ctx, app); err != nil {
			return ctrl.Result{}, fmt.Errorf("add finalizer: %w", err)
		}
	}

	s := newScope(app)
	var heldBack error
	defer func() {
		r.recordChanges(s.app, &s.changes)
		if err := r.patchStatus(ctx, s, cmp.Or(retErr, heldBack)); err != nil {
			retErr = kerrors.NewAggregate([]error{retErr, err})
		}
		if s.statusConflict {
			result.RequeueAfter = minPositive(result.RequeueAfter, statusConflictRetry)
		}
	}()
	if err := r.reconcile(ctx, s); err != nil {
		conflicts, others := nameConflicts(err)
		if len(others) > 0 {
			return ctrl.Result{}, err
		}
		// A name conflict waits for a person, not for the operator: it is
		// reported in status rather than returned, and looked at again with
		// backoff, since the foreign object's deletion sends no event (the
		// cache does not hold it).
		heldBack = kerrors.NewAggregate(conflicts)
		return ctrl.Result{RequeueAfter: minPositive(s.requeueAfter, r.conflictRetry(s))}, nil
	}
	return ctrl.Result{RequeueAfter: s.requeueAfter}, nil
}

// conflictRetry is how soon an app held back by a name conflict looks
// again: as long as the conflict has lasted so far, at least a second and
// at most the retry interval. A conflict resolved soon is noticed soon, and
// a lasting one costs one read per retry interval.
func (r *MicroserviceAppReconciler) conflictRetry(s *scope) time.Duration {
	wait := time.Second
	c := meta.FindStatusCondition(s.original.Status.Conditions, v1alpha1.ConditionResourcesApplied)
	if c != nil && c.Status == metav1.ConditionFalse && c.Reason == v1alpha1.ReasonNameConflict {
		wait = max(wait, time.Since(c.LastTransitionTime.Time))
	}
	return min(wait, r.retryInterval())
}

// minPositive returns the shorter of two requeue delays, zero meaning none.
func minPositive(a, b time.Duration) time.Duration {
	if a == 0 || (b != 0 && b < a) {
		return b
	}
	return a
}

// reconcile does the broker work first (see reconcileBroker), so that the
// topology exists and every password is settled before any Deployment
// refers to them; then it applies every service's objects, step by step
// in the order of resource.PerServiceSteps, and deletes the owned objects
// no longer wanted. One object failing does not stop the others, so one bad
// service cannot hold back the rest of the app; the broker not being ready
// holds back nothing but the broker's conditions.
func (r *MicroserviceAppReconciler) reconcile(ctx context.Context, s *scope) error {
	var errs []error
	if s.app.Spec.Broker != nil {
		applyErrs, err := r.reconcileBroker(ctx, s)
		if err != nil {
			return kerrors.NewAggregate(append(applyErrs, err))
		}
		errs = append(errs, applyErrs...)
		s.requeueAfter = r.brokerRequeue(s)
	}
	for _, step := range resource.PerServiceSteps {
		errs = append(errs, r.applyStep(ctx, s, step)...)
	}
	errs = append(errs, r.reconcileMonitoring(ctx, s)...)
	if err := r.prune(ctx, s); err != nil {
		errs = append(errs, err)
	}
	return kerrors.NewAggregate(errs)
}

// stepObject is one object of an ordering step: the builder's result for
// one service, and what applying it returned.
type stepObject struct {
	b       resource.Builder
	svc     *v1alpha1.Service
	desired runtime.ApplyConfiguration
	applied client.Object
	change  string
	err     error
}

// applyStep applies the objects step's builders make for every service,
// at most maxConcurrentApplies at once, and returns the errors of those
// that failed. What needs the scope (which objects are wanted, whether a
// Deployment is held back, the results) is done before and after, in one
// goroutine; the applies themselves share nothing.
func (r *MicroserviceAppReconciler) applyStep(ctx context.Context, s *scope, step []resource.Builder) []error {
	var objects []*stepObject
	for _, b := range step {
		for i := range s.app.Spec.Services {
			svc := &s.app.Spec.Services[i]
			desired := b.Build(resource.Input{App: s.app, Service: svc, Broker: s.wiring[svc.Name]})
			if desired == nil {
				continue
			}
			named, ok := desired.(namedApplyConfiguration)
			if !ok {
				return []error{fmt.Errorf("%s apply configuration %T has no name", b.Kind, desired)}
			}
			key := client.ObjectKey{Namespace: s.app.Namespace, Name: ptr.Deref(named.GetName(), "")}
			s.wanted[wantedKey(b.Kind, key.Name)] = true
			if b.Kind == "Secret" && r.deletedMeanwhile(ctx, s, key) {
				continue
			}
			if b.Kind == "Deployment" && r.holdBackDeployment(ctx, s, svc) {
				continue
			}
			objects = append(objects, &stepObject{b: b, svc: svc, desired: desired})
		}
	}

	var g errgroup.Group
	g.SetLimit(maxConcurrentApplies)
	for _, o := range objects {
		g.Go(func() error {
			o.applied, o.change, o.err = r.applyObject(ctx, s.app, o.b.Object, o.desired)
			return nil // each object's error is its own; the others go on
		})
	}
	_ = g.Wait() // every goroutine returns nil

	var errs []error
	for _, o := range objects {
		s.changes.add(o.change, o.b.Kind, ptr.Deref(o.desired.(namedApplyConfiguration).GetName(), ""))
		if o.err != nil {
			if s.broker != nil && o.b.Kind == "Secret" {
				s.broker.secretsFailed = true
			}
			errs = append(errs, o.err)
			continue
		}
		if d, ok := o.applied.(*appsv1.Deployment); ok {
			s.deployments[o.svc.Name] = d
		}
	}
	return errs
}

// holdBackDeployment reports whether a service's Deployment must wait:
// a service that uses the broker gets its first Deployment only once the
// broker holds its user and its connection Secret is written, so that no
// pod of a fresh app starts with credentials the broker refuses and backs
// off (seen: 7.4 s added to the first rollout). A Deployment that exists is
// kept up to date whatever the broker does.
func (r *MicroserviceAppReconciler) holdBackDeployment(ctx context.Context, s *scope, svc *v1alpha1.Service) bool {
	if s.broker == nil || s.wiring[svc.Name] == nil || (s.broker.declared && !s.broker.secretsFailed) {
		return false
	}
	key := client.ObjectKey{Namespace: s.app.Namespace, Name: metadata.Name(s.app.Name, svc.Name)}
	err := r.Get(ctx, key, &appsv1.Deployment{})
	return apierrors.IsNotFound(err)
}

// reconcileDelete runs the clean-up the finalizer guards, then lets the app
// go. The owned objects follow through garbage collection.
//
// A managed broker is first prepared to stop (stopManagedBroker), which may
// ask the app to wait a few seconds; the clean-up then runs while the
// broker still answers, and removing the finalizer lets the garbage
// collector delete the broker with the rest.
func (r *MicroserviceAppReconciler) reconcileDelete(ctx context.Context, app *v1alpha1.MicroserviceApp) (ctrl.Result, error) {
	if !controllerutil.ContainsFinalizer(app, cleanupFinalizer) {
		return ctrl.Result{}, nil
	}
	if app.Spec.Broker != nil {
		wait, err := r.stopManagedBroker(ctx, app)
		if err != nil {
			return ctrl.Result{}, err
		}
		if wait > 0 {
			return ctrl.Result{RequeueAfter: wait}, nil
		}
		logf.FromContext(ctx).Info("cleaning up before deletion")
		if err := r.cleanUpBroker(ctx, app); err != nil {
			r.reportCleanupFailed(ctx, app, err)
			return ctrl.Result{}, err
		}
	}
	r.memo.forget(client.ObjectKeyFromObject(app))
	forgetQueueStats(app)
	controllerutil.RemoveFinalizer(app, cleanupFinalizer)
	if err := r.Update(ctx, app); err != nil {
		return ctrl.Result{}, fmt.Errorf("remove finalizer: %w", err)
	}
	return ctrl.Result{}, nil
}

// needsCleanup reports whether the app has state outside the cluster that
// must be removed before it is deleted: its broker users and topology.
func needsCleanup(app *v1alpha1.MicroserviceApp) bool { return app.Spec.Broker != nil }

// externalSecretIndex indexes apps by the Secret their external broker's
// credentials are in.
const externalSecretIndex = "spec.broker.external.secretRef.name"

// SetupWithManager registers the reconciler with mgr. It watches the objects
// of every kind it owns, so a deleted or hand-edited object brings its app
// back into reconcile and is restored, and the Secrets external brokers'
// credentials are in.
func (r *MicroserviceAppReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if err := mgr.GetFieldIndexer().IndexField(context.Background(), &v1alpha1.MicroserviceApp{}, externalSecretIndex,
		func(obj client.Object) []string {
			b := obj.(*v1alpha1.MicroserviceApp).Spec.Broker
			if b == nil || b.External == nil {
				return nil
			}
			return []string{b.External.SecretRef.Name}
		}); err != nil {
		return fmt.Errorf("index apps by external broker Secret: %w", err)
	}

	// The manager's cache holds only the Secrets the operator labels. The
	// Secrets users write for external brokers are watched in a cache of
	// their own that holds every Secret's metadata and no data: enough to
	// notice a change, which the reconcile then reads from the API server.
	secrets, err := cache.New(mgr.GetConfig(), cache.Options{
		Scheme:           mgr.GetScheme(),
		Mapper:           mgr.GetRESTMapper(),
		DefaultTransform: cache.TransformStripManagedFields(),
	})
	if err != nil {
		return fmt.Errorf("create the Secret metadata cache: %w", err)
	}
	if err := mgr.Add(secrets); err != nil {
		return fmt.Errorf("add the Secret metadata cache: %w", err)
	}
	r.secretMetadata = secrets
	secretMeta := &metav1.PartialObjectMetadata{}
	secretMeta.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Secret"))

	b := ctrl.NewControllerManagedBy(mgr).
		For(&v1alpha1.MicroserviceApp{}, builder.WithPredicates(specOrMetadataChanged)).
		Named("microserviceapp").
		WithOptions(controller.Options{MaxConcurrentReconciles: cmp.Or(r.MaxConcurrentReconciles, DefaultMaxConcurrentReconciles)}).
		WatchesRawSource(source.Kind(secrets, secretMeta,
			handler.TypedEnqueueRequestsFromMapFunc(r.appsUsingSecret)))
	for _, k := range ownedKinds() {
		b = b.Owns(k.New())
	}
	c, err := b.Build(r)
	if err != nil {
		return err
	}
	return r.setupMonitoring(mgr, c)
}

// appsUsingSecret maps a Secret to the apps whose external broker's
// credentials it holds.
func (r *MicroserviceAppReconciler) appsUsingSecret(ctx context.Context, secret *metav1.PartialObjectMetadata) []reconcile.Request {
	apps := &v1alpha1.MicroserviceAppList{}
	if err := r.List(ctx, apps, client.InNamespace(secret.Namespace),
		client.MatchingFields{externalSecretIndex: secret.Name}); err != nil {
		logf.FromContext(ctx).Error(err, "list apps using Secret", "secret", secret.Name)
		return nil
	}
	out := make([]reconcile.Request, 0, len(apps.Items))
	for _, app := range apps.Items {
		out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&app)})
	}
	return out
}
