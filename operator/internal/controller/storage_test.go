package controller

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apiresource "k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/courier-dev/courier/operator/api/v1alpha1"
	"github.com/courier-dev/courier/operator/internal/fixture"
	"github.com/courier-dev/courier/operator/internal/metadata"
	"github.com/courier-dev/courier/operator/internal/resource"
	"github.com/courier-dev/courier/services/kit/contract"
)

// TestStorage gives users and the mailer volumes and expects a claim per
// service, owned by the app, mounted by a Deployment that recreates its pod
// and tells the service where the volume is; services without storage stay
// as they were. Adding storage to a running service switches its rollout to
// Recreate, and removing a service deletes its claim.
func TestStorage(t *testing.T) {
	t.Parallel()
	ns := namespace(t)
	app := fixture.Blog(ns)
	app.UID = ""
	app.Spec.Services[1].Storage = &v1alpha1.Storage{Size: apiresource.MustParse("1Gi")}
	app.Spec.Services[3].Storage = &v1alpha1.Storage{
		Size: apiresource.MustParse("2Gi"), StorageClassName: ptr.To("fast"), MountPath: "/var/lib/mailer",
	}
	create(t, app)
	live := &v1alpha1.MicroserviceApp{}
	if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(app), live); err != nil {
		t.Fatal(err)
	}

	for _, tt := range []struct {
		service, mountPath, size string
		class                    *string
	}{
		{"users", "/data", "1Gi", nil}, // the API's default mount path
		{"mailer", "/var/lib/mailer", "2Gi", ptr.To("fast")},
	} {
		t.Run(tt.service, func(t *testing.T) {
			pvc := get(t, ns, "blog-"+tt.service+"-data", &corev1.PersistentVolumeClaim{})
			if !metav1.IsControlledBy(pvc, live) {
				t.Errorf("claim %s is not controlled by the app: %v", pvc.Name, pvc.OwnerReferences)
			}
			if !slices.Equal(pvc.Spec.AccessModes, []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}) {
				t.Errorf("access modes %v, want ReadWriteOnce", pvc.Spec.AccessModes)
			}
			if got := pvc.Spec.Resources.Requests[corev1.ResourceStorage]; got.Cmp(apiresource.MustParse(tt.size)) != 0 {
				t.Errorf("size %s, want %s", got.String(), tt.size)
			}
			if tt.class != nil && ptr.Deref(pvc.Spec.StorageClassName, "") != *tt.class {
				t.Errorf("storage class %v, want %s", pvc.Spec.StorageClassName, *tt.class)
			}

			d := get(t, ns, "blog-"+tt.service, &appsv1.Deployment{})
			if d.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType || d.Spec.Strategy.RollingUpdate != nil {
				t.Errorf("strategy %+v, want Recreate", d.Spec.Strategy)
			}
			pod := d.Spec.Template.Spec
			if !slices.ContainsFunc(pod.Volumes, func(v corev1.Volume) bool {
				return v.PersistentVolumeClaim != nil && v.PersistentVolumeClaim.ClaimName == pvc.Name
			}) {
				t.Errorf("volumes %+v do not mount claim %s", pod.Volumes, pvc.Name)
			}
			c := pod.Containers[0]
			if !slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool {
				return m.MountPath == tt.mountPath && !m.ReadOnly
			}) {
				t.Errorf("volume mounts %+v, want the volume writable at %s", c.VolumeMounts, tt.mountPath)
			}
			if got := envValue(c, contract.EnvDataDir); got != tt.mountPath {
				t.Errorf("%s = %q, want %q", contract.EnvDataDir, got, tt.mountPath)
			}
			if sc := pod.SecurityContext; sc == nil || ptr.Deref(sc.FSGroup, 0) != 65532 {
				t.Errorf("pod security context %+v, want fsGroup 65532 (the images' nonroot group)", sc)
			}
		})
	}

	t.Run("services without storage are unchanged", func(t *testing.T) {
		d := get(t, ns, "blog-gateway", &appsv1.Deployment{})
		if d.Spec.Strategy.Type != appsv1.RollingUpdateDeploymentStrategyType {
			t.Errorf("strategy %s, want RollingUpdate", d.Spec.Strategy.Type)
		}
		if got := envValue(d.Spec.Template.Spec.Containers[0], contract.EnvDataDir); got != "" {
			t.Errorf("%s = %q on a service without storage", contract.EnvDataDir, got)
		}
		err := k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "blog-gateway-data"}, &corev1.PersistentVolumeClaim{})
		if !apierrors.IsNotFound(err) {
			t.Errorf("get claim blog-gateway-data: %v, want not found", err)
		}
	})

	t.Run("a reconcile at steady state writes nothing", func(t *testing.T) {
		for _, svc := range app.Spec.Services {
			markAvailable(t, ns, metadata.Name(app.Name, svc.Name))
		}
		waitReady(t, app, metav1.ConditionTrue)
		reconcileWritesNothing(t, app)
	})

	t.Run("adding storage to a running service recreates its pod", func(t *testing.T) {
		before := get(t, ns, "blog-posts", &appsv1.Deployment{})
		if before.Spec.Strategy.Type != appsv1.RollingUpdateDeploymentStrategyType {
			t.Fatalf("posts starts with strategy %s, want RollingUpdate", before.Spec.Strategy.Type)
		}
		updateApp(t, ns, app.Name, func(a *v1alpha1.MicroserviceApp) {
			a.Spec.Services[2].Storage = &v1alpha1.Storage{Size: apiresource.MustParse("1Gi")}
		})
		get(t, ns, "blog-posts-data", &corev1.PersistentVolumeClaim{})
		eventually(t, "posts is recreated with its volume", func(ctx context.Context) error {
			d := &appsv1.Deployment{}
			if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "blog-posts"}, d); err != nil {
				return err
			}
			if d.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType || d.Spec.Strategy.RollingUpdate != nil {
				return fmt.Errorf("strategy %+v", d.Spec.Strategy)
			}
			if got := envValue(d.Spec.Template.Spec.Containers[0], contract.EnvDataDir); got != "/data" {
				return fmt.Errorf("%s = %q", contract.EnvDataDir, got)
			}
			return nil
		})
	})

	t.Run("removing a service deletes its claim", func(t *testing.T) {
		updateApp(t, ns, app.Name, func(a *v1alpha1.MicroserviceApp) {
			a.Spec.Services = slices.DeleteFunc(a.Spec.Services, func(s v1alpha1.Service) bool { return s.Name == "mailer" })
		})
		// The claim keeps its pvc-protection finalizer until no pod uses it,
		// and envtest runs no controller to remove it: being deleted is what
		// the operator can do.
		eventually(t, "claim blog-mailer-data is deleted", func(ctx context.Context) error {
			pvc := &corev1.PersistentVolumeClaim{}
			err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "blog-mailer-data"}, pvc)
			if apierrors.IsNotFound(err) || (err == nil && !pvc.DeletionTimestamp.IsZero()) {
				return nil
			}
			return fmt.Errorf("still there (err %v)", err)
		})
	})
}

// envValue is the value of the container's variable name, "" when unset.
func envValue(c corev1.Container, name string) string {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

// TestStorageRules updates a stored app with storage in the ways the API
// forbids (more than one replica, a new storage class, a smaller volume,
// no storage) and expects each rejected with a message naming the field;
// a larger volume and scaling to zero pass.
func TestStorageRules(t *testing.T) {
	t.Parallel()
	ns := namespace(t)
	create(t, appObject(ns, "stateful", with("users", svc{
		"storage": map[string]any{"size": "1Gi", "storageClassName": "fast"},
	})))
	storage := func(spec map[string]any) map[string]any {
		return service(spec, 0)["storage"].(map[string]any)
	}
	update := func(change func(spec map[string]any)) error { return dryRunUpdate(t, ns, "stateful", change) }

	rejected := []struct {
		name   string
		change func(spec map[string]any)
		want   []string
	}{
		{"two replicas", func(spec map[string]any) { service(spec, 0)["replicas"] = 2 },
			[]string{"spec.services[0].replicas", "spec.services[].replicas must be 0 or 1 with spec.services[].storage"}},
		{"changing the storage class", func(spec map[string]any) { storage(spec)["storageClassName"] = "slow" },
			[]string{"spec.services[0].storage.storageClassName", "spec.services[].storage.storageClassName is immutable"}},
		{"dropping the storage class", func(spec map[string]any) { delete(storage(spec), "storageClassName") },
			[]string{"spec.services[0].storage.storageClassName", "spec.services[].storage.storageClassName is immutable"}},
		{"shrinking the volume", func(spec map[string]any) { storage(spec)["size"] = "512Mi" },
			[]string{"spec.services[0].storage.size", "spec.services[].storage.size cannot shrink"}},
		{"removing the storage", func(spec map[string]any) { delete(service(spec, 0), "storage") },
			[]string{"spec.services[0].storage", "spec.services[].storage cannot be removed once set"}},
	}
	for _, tt := range rejected {
		t.Run("rejects "+tt.name, func(t *testing.T) {
			err := update(tt.change)
			if !apierrors.IsInvalid(err) {
				t.Fatalf("update: %v, want an Invalid error", err)
			}
			for _, want := range tt.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err.Error(), want)
				}
			}
		})
	}

	allowed := []struct {
		name   string
		change func(spec map[string]any)
	}{
		{"a larger volume", func(spec map[string]any) { storage(spec)["size"] = "2Gi" }},
		{"the same size written otherwise", func(spec map[string]any) { storage(spec)["size"] = "1024Mi" }},
		{"scaling to zero", func(spec map[string]any) { service(spec, 0)["replicas"] = 0 }},
		{"a new mount path", func(spec map[string]any) { storage(spec)["mountPath"] = "/var/lib/users" }},
	}
	for _, tt := range allowed {
		t.Run("accepts "+tt.name, func(t *testing.T) {
			if err := update(tt.change); err != nil {
				t.Errorf("update: %v", err)
			}
		})
	}
}

// TestStorageDefaultsFollowBuilders checks that the API server defaults the
// mount path to the one the Deployment builder assumes for an undefaulted
// service.
func TestStorageDefaultsFollowBuilders(t *testing.T) {
	t.Parallel()
	ns := namespace(t)
	u := appObject(ns, "defaults", with("users", svc{"storage": map[string]any{"size": "1Gi"}}))
	if err := k8s.Create(context.Background(), u, client.DryRunAll); err != nil {
		t.Fatalf("create: %v", err)
	}
	app := &v1alpha1.MicroserviceApp{}
	if err := k8s.Scheme().Convert(u, app, nil); err != nil {
		t.Fatalf("convert: %v", err)
	}
	defaulted := app.Spec.Services[0]
	undefaulted := defaulted
	undefaulted.Storage = &v1alpha1.Storage{Size: defaulted.Storage.Size}
	mountPath := func(s *v1alpha1.Service) (string, error) {
		d := resource.Deployment(resource.Input{App: app, Service: s})
		for _, e := range d.Spec.Template.Spec.Containers[0].Env {
			if *e.Name == contract.EnvDataDir {
				return *e.Value, nil
			}
		}
		return "", errors.New("no " + contract.EnvDataDir)
	}
	want, err := mountPath(&undefaulted)
	if err != nil {
		t.Fatal(err)
	}
	if got := defaulted.Storage.MountPath; got != want {
		t.Errorf("mountPath defaulted to %q, want the builder's default %q", got, want)
	}
}
