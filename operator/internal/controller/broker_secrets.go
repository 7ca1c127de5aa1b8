package controller

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"
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

// getSecret reads a Secret the operator labels, from the cache and, when the
// cache has none, from the API server: right after the operator created it
// the cache may not have it yet, and taking that for "missing" would
// generate a second password or admin credentials.
func (r *MicroserviceAppReconciler) getSecret(ctx context.Context, key client.ObjectKey, secret *corev1.Secret) (bool, error) {
	err := r.Get(ctx, key, secret)
	if apierrors.IsNotFound(err) {
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
