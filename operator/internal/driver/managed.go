package driver

import (
	"context"
	"errors"
	"fmt"
	"slices"

	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/courier-dev/courier/operator/api/v1alpha1"
	"github.com/courier-dev/courier/operator/internal/resource/kind"
)

// PodsReady reads a managed broker's readiness from its StatefulSet (nil
// when it is not written yet), wantReplicas being the spec's: a reason and
// message that block the broker work, or podsWaiting while at least one pod
// is ready but not all. A pod is ready once it has booted and joined the
// cluster; the broker answers as soon as one is.
func PodsReady(sts *appsv1.StatefulSet, wantReplicas int32) (reason, message, podsWaiting string) {
	want, ready := wantReplicas, int32(0)
	if sts != nil {
		want, ready = ptr.Deref(sts.Spec.Replicas, wantReplicas), sts.Status.ReadyReplicas
	}
	switch {
	case sts == nil:
		return v1alpha1.ReasonWaitingForBrokerPods, "the broker's StatefulSet is not written yet", ""
	case want == 0:
		return v1alpha1.ReasonWaitingForBrokerPods, "the broker is scaled to zero (spec.broker.managed.replicas)", ""
	case ready == 0:
		return v1alpha1.ReasonWaitingForBrokerPods, fmt.Sprintf("0 of %d broker pods ready", want), ""
	case ready < want:
		return "", "", fmt.Sprintf("%d of %d broker pods ready", ready, want)
	}
	return "", "", ""
}

// adminSecretError marks the failure to write the admin Secret, after which
// the StatefulSet is not written either.
type adminSecretError struct{ error }

func (e adminSecretError) Unwrap() error { return e.error }

func isAdminSecretError(err error) bool {
	var e adminSecretError
	return errors.As(err, &e)
}

// ApplyManagedBroker applies a managed broker's objects in the builders'
// order and returns its StatefulSet as the API server has it (nil when not
// written) and the objects that failed to apply. The kinds in
// waitForSecret, mapped to their object names, are the admin Secret and
// what reads it: they are written only while the reconcile has good admin
// credentials and the Secret applied, since new credentials would lock the
// operator out of a broker that holds the old ones, and the broker's pods
// take what they first find there. Held back, they stay wanted, so nothing
// prunes them.
func ApplyManagedBroker[In any](ctx context.Context, h Host, s *State,
	builders []kind.Builder[In], in In, waitForSecret map[string]string) (*appsv1.StatefulSet, []error) {
	var errs []error
	var sts *appsv1.StatefulSet
	for _, bl := range builders {
		desired := bl.Build(in)
		if desired == nil {
			continue
		}
		secretOK := s.BlockedReason == "" && !slices.ContainsFunc(errs, isAdminSecretError)
		if _, gated := waitForSecret[bl.Kind]; gated && !secretOK {
			for k, name := range waitForSecret {
				h.Want(k, name)
			}
			continue
		}
		obj, err := h.Apply(ctx, bl.Object, desired)
		if err != nil {
			if bl.Kind == "Secret" {
				err = adminSecretError{err}
			}
			errs = append(errs, err)
			continue
		}
		if o, ok := obj.(*appsv1.StatefulSet); ok {
			sts = o
		}
	}
	return sts, errs
}

// AdminSecretLost is called when a managed broker's admin Secret is
// missing: it says whether the broker exists all the same, whose servers
// keep what they were first started with, so new admin secrets would lock
// the operator out (ReasonAdminSecretMissing and an error saying how to get
// past it). An error without a reason is a failure to read the API.
func AdminSecretLost(ctx context.Context, h Host, namespace, secret, statefulSet string) (string, error) {
	// The cache may lag behind a StatefulSet written a moment ago; this
	// path is rare enough to ask the API server.
	key := client.ObjectKey{Namespace: namespace, Name: statefulSet}
	err := h.Client().Get(ctx, key, &appsv1.StatefulSet{})
	if apierrors.IsNotFound(err) {
		err = h.APIReader().Get(ctx, key, &appsv1.StatefulSet{})
	}
	switch {
	case apierrors.IsNotFound(err):
		return "", nil
	case err != nil:
		return "", fmt.Errorf("read StatefulSet %s: %w", statefulSet, err)
	}
	return v1alpha1.ReasonAdminSecretMissing, fmt.Errorf(
		"the admin Secret %s is missing but the broker exists; its nodes keep the credentials they were initialised with: "+
			"restore the Secret, or delete the StatefulSet %s (its volumes go with it) to start the broker over",
		secret, statefulSet)
}

// ManagedBrokerGone says why a deleting app's managed broker, the
// StatefulSet name, cannot be cleaned up ("" when it can); an error is a
// failure to read the API.
func ManagedBrokerGone(ctx context.Context, h Host, namespace, name string) (string, error) {
	sts := &appsv1.StatefulSet{}
	switch err := h.Client().Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, sts); {
	case apierrors.IsNotFound(err):
		return "the broker's StatefulSet is gone", nil
	case err != nil:
		return "", fmt.Errorf("read the broker's StatefulSet: %w", err)
	case ptr.Deref(sts.Spec.Replicas, 1) == 0:
		return "the broker is scaled to zero", nil
	case sts.Status.ReadyReplicas == 0:
		return "no broker pod is ready", nil
	}
	return "", nil
}
