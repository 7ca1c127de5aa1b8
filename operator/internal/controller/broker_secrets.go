package controller

import (
	"context"
	"fmt"
	"maps"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/courier-dev/courier/operator/api/v1alpha1"
)

// keptSecretValue returns the value in key of the Secret name, and true,
// or generate's new one when the Secret or the key is missing; that is
// also how a connection Secret is rotated: delete it (or its key), and the
// next reconcile generates new credentials, sets them on the broker and
// rolls the pods.
func (r *MicroserviceAppReconciler) keptSecretValue(ctx context.Context, namespace, name, key string, generate func() ([]byte, error)) ([]byte, bool, error) {
	secret := &corev1.Secret{}
	found, err := r.getSecret(ctx, client.ObjectKey{Namespace: namespace, Name: name}, secret)
	if err != nil {
		return nil, false, err
	}
	if v := secret.Data[key]; found && len(v) > 0 {
		return v, true, nil
	}
	v, err := generate()
	if err != nil {
		return nil, false, fmt.Errorf("generate %s of Secret %s: %w", key, name, err)
	}
	return v, false, nil
}

// deletedMeanwhile reports whether a connection Secret whose credentials the
// reconcile kept has been deleted since. Applying it would re-create it with
// the old credentials and undo a rotation; the deletion brings the app back
// into reconcile, and that reconcile makes new ones.
func (r *MicroserviceAppReconciler) deletedMeanwhile(ctx context.Context, s *scope, key client.ObjectKey) bool {
	if !s.keptSecrets[key.Name] {
		return false
	}
	return apierrors.IsNotFound(r.Get(ctx, key, &corev1.Secret{}))
}

// getSecret reads a Secret the operator labels from the cache. A Secret
// the cache does not hold is read from the API server only when it may
// exist all the same: the operator created it moments ago and the cache
// has not seen it yet (createdSecrets), or the metadata cache of every
// Secret shows one by that name (someone else's, or a lagging cache). Taking
// such a Secret for "missing" would generate a second password or admin
// credentials; asking the API server about every Secret the cache lacks
// cost each new app one read per connection Secret.
func (r *MicroserviceAppReconciler) getSecret(ctx context.Context, key client.ObjectKey, secret *corev1.Secret) (bool, error) {
	err := r.Get(ctx, key, secret)
	if err == nil {
		r.createdSecrets.seen(key)
		return true, nil
	}
	if apierrors.IsNotFound(err) {
		if !r.createdSecrets.pending(key) && !r.secretMetadataShows(ctx, key) {
			return false, nil
		}
		err = r.apiReader().Get(ctx, key, secret)
	}
	switch {
	case apierrors.IsNotFound(err):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("read Secret %s: %w", key.Name, err)
	}
	return true, nil
}

// secretMetadataShows reports whether the metadata cache of every Secret
// may hold key: true when it does, and when it cannot say (not set up yet,
// or any error but not found).
func (r *MicroserviceAppReconciler) secretMetadataShows(ctx context.Context, key client.ObjectKey) bool {
	if r.secretMetadata == nil {
		return true
	}
	_, err := r.cachedSecretMetadata(ctx, key)
	return !apierrors.IsNotFound(err)
}

// cachedSecretMetadata reads a Secret's metadata from the metadata cache of
// every Secret, which must be set up (SetupWithManager).
func (r *MicroserviceAppReconciler) cachedSecretMetadata(ctx context.Context, key client.ObjectKey) (*metav1.PartialObjectMetadata, error) {
	m := &metav1.PartialObjectMetadata{}
	m.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Secret"))
	return m, r.secretMetadata.Get(ctx, key, m)
}

// createdSecrets are the Secrets this process created that its cache may
// not show yet: the "expectations" of kube-controller-manager's ReplicaSet
// controller, for one kind and without counts. An entry ends when the cache
// shows the Secret (seen) or, for a Secret deleted before the cache saw it,
// after createdSecretsKept.
type createdSecrets struct {
	mu sync.Mutex
	at map[client.ObjectKey]time.Time
}

// createdSecretsKept is far longer than a cache lags behind a write.
const createdSecretsKept = 10 * time.Minute

func (c *createdSecrets) created(key client.ObjectKey) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	if c.at == nil {
		c.at = map[client.ObjectKey]time.Time{}
	}
	maps.DeleteFunc(c.at, func(_ client.ObjectKey, at time.Time) bool { return now.Sub(at) > createdSecretsKept })
	c.at[key] = now
}

func (c *createdSecrets) pending(key client.ObjectKey) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	at, ok := c.at[key]
	return ok && time.Since(at) <= createdSecretsKept
}

func (c *createdSecrets) seen(key client.ObjectKey) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.at, key)
}

// readExternalSecret reads a Secret a user made for an external broker.
// The manager's cache holds only the Secrets the operator labels, and
// these are the user's, unlabelled; what the operator caches of every
// Secret is its metadata (SetupWithManager). So the Secret's data is read
// from the API server once per resourceVersion and kept (externalSecrets):
// while the metadata cache shows the version kept, no request is made,
// however many apps use the Secret and however often they are reconciled.
// A change to the Secret changes its resourceVersion, which the metadata
// watch delivers (and which brings the apps back). The caller must not
// modify the Secret returned.
func (r *MicroserviceAppReconciler) readExternalSecret(ctx context.Context, key client.ObjectKey) (*corev1.Secret, error) {
	if r.secretMetadata != nil {
		// Any failure to read the metadata (not cached yet, not found)
		// falls back to the API server, which has the last word.
		if m, err := r.cachedSecretMetadata(ctx, key); err == nil {
			if secret, ok := r.externalSecrets.get(key, m.ResourceVersion); ok {
				return secret, nil
			}
		}
	}
	secret := &corev1.Secret{}
	if err := r.apiReader().Get(ctx, key, secret); err != nil {
		if apierrors.IsNotFound(err) {
			r.externalSecrets.forget(key)
		}
		return nil, err
	}
	r.externalSecrets.put(key, secret)
	return secret, nil
}

// secretMemo keeps Secrets by key as last read from the API server.
type secretMemo struct {
	mu      sync.Mutex
	secrets map[client.ObjectKey]*corev1.Secret
}

// get is the Secret kept for key if it is at resourceVersion.
func (m *secretMemo) get(key client.ObjectKey, resourceVersion string) (*corev1.Secret, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.secrets[key]
	if !ok || resourceVersion == "" || s.ResourceVersion != resourceVersion {
		return nil, false
	}
	return s, true
}

func (m *secretMemo) put(key client.ObjectKey, secret *corev1.Secret) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.secrets == nil {
		m.secrets = map[client.ObjectKey]*corev1.Secret{}
	}
	m.secrets[key] = secret
}

func (m *secretMemo) forget(key client.ObjectKey) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.secrets, key)
}

// externalSecret reads the Secret spec.broker.external.secretRef names
// (readExternalSecret). A missing one comes with
// ReasonExternalSecretMissing; an error without a reason is a failure to
// read it.
func (r *MicroserviceAppReconciler) externalSecret(ctx context.Context, app *v1alpha1.MicroserviceApp) (*corev1.Secret, string, error) {
	name := app.Spec.Broker.External.SecretRef.Name
	secret, err := r.readExternalSecret(ctx, client.ObjectKey{Namespace: app.Namespace, Name: name})
	if err != nil {
		if apierrors.IsNotFound(err) {
			return nil, v1alpha1.ReasonExternalSecretMissing,
				fmt.Errorf("the Secret %s named by spec.broker.external.secretRef does not exist", name)
		}
		return nil, "", fmt.Errorf("read Secret %s: %w", name, err)
	}
	return secret, "", nil
}
