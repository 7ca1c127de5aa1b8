package controller

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"

	"github.com/courier-dev/courier/operator/api/v1alpha1"
	"github.com/courier-dev/courier/operator/internal/broker"
	"github.com/courier-dev/courier/operator/internal/broker/natsbroker"
	"github.com/courier-dev/courier/operator/internal/resource"
	"github.com/courier-dev/courier/operator/internal/resource/kind"
	"github.com/courier-dev/courier/operator/internal/resource/nats"
	"github.com/courier-dev/courier/operator/internal/resource/rabbitmq"
	"github.com/courier-dev/courier/services/kit/contract"
)

// natsDriver runs NATS JetStream in operator mode: one account per app
// (its key kept in AccountSecretName), one user per service signed by a
// scoped key holding its permissions, one stream with a durable consumer
// per queue (package natsbroker); a managed system is a StatefulSet of
// nats-server (package resource/nats) whose operator key and system
// account are generated once and kept in its admin Secret.
type natsDriver struct{}

// natsConn is a NATS system as one reconcile reaches it.
type natsConn struct {
	admin *natsbroker.NATS
	// sys administers the system; zero while the broker is blocked.
	sys natsbroker.System
	// url is the client URL the services dial.
	url string
	// creds are the app's account key and the services' creds files
	// wire kept or made.
	creds natsbroker.Credentials
}

// natsAdmin is the NATS admin client, natsbroker.New() unless set.
func (r *MicroserviceAppReconciler) natsAdmin() *natsbroker.NATS {
	if r.NATSAdmin == nil {
		return defaultNATSAdmin
	}
	return r.NATSAdmin
}

var defaultNATSAdmin = natsbroker.New()

func (natsDriver) kinds() []kind.Object {
	out := make([]kind.Object, 0, len(nats.Builders))
	for _, b := range nats.Builders {
		out = append(out, b.Object)
	}
	return out
}

// topology is RabbitMQ's mapping without queue types: one stream holds
// every queue (the API refuses spec.queues[].type for nats).
func (natsDriver) topology(app *v1alpha1.MicroserviceApp, observed []v1alpha1.QueueStatus) (broker.Topology, map[string]v1alpha1.QueueType) {
	t, _ := topologyOf(app, observed)
	return t, nil
}

// natsManagedBroker maps spec.broker.managed to the nats builders' input,
// with the labels, owner and network peers of resource.ManagedBroker.
func natsManagedBroker(app *v1alpha1.MicroserviceApp, r *MicroserviceAppReconciler) nats.Broker {
	rb := resource.ManagedBroker(app, r.ClusterDomain, r.OperatorNamespace)
	return nats.Broker{
		App: rb.App, Namespace: rb.Namespace, Image: rb.Image, Replicas: rb.Replicas,
		ExporterImage: app.Spec.Broker.Managed.ExporterImage,
		StorageSize:   rb.StorageSize, StorageClassName: rb.StorageClassName, Resources: rb.Resources,
		ClusterDomain: rb.ClusterDomain, Labels: rb.Labels, Owner: rb.Owner, Network: rb.Network,
		Pod: rb.Pod,
	}
}

func (d natsDriver) open(ctx context.Context, r *MicroserviceAppReconciler, s *scope) (brokerConn, []error, error) {
	if s.app.Spec.Broker.Managed != nil {
		return d.openManaged(ctx, r, s)
	}
	c, err := d.openExternal(ctx, r, s)
	return c, nil, err
}

func (natsDriver) openManaged(ctx context.Context, r *MicroserviceAppReconciler, s *scope) (brokerConn, []error, error) {
	b := natsManagedBroker(s.app, r)
	names := rabbitmq.NamesFor(b.App)
	c := &natsConn{admin: r.natsAdmin(), url: b.URL()}
	keys, reason, err := r.natsManagedKeys(ctx, b)
	switch {
	case err != nil && reason == "":
		return nil, nil, err
	case err != nil:
		s.broker.blockedReason, s.broker.blockedMessage = reason, err.Error()
	}

	// As for RabbitMQ; the servers' configuration names the operator they
	// trust, so it waits for the Secret too.
	sts, errs := applyManagedBroker(ctx, r, s, nats.Builders, nats.Input{Broker: b, Keys: keys},
		map[string]string{"Secret": names.AdminSecret, "StatefulSet": names.StatefulSet, "ConfigMap": names.ConfigMap})
	if s.broker.blockedReason != "" {
		return c, errs, nil
	}
	c.sys = keys.System(b.URL())
	s.broker.blockedReason, s.broker.blockedMessage, s.broker.podsWaiting = podsReady(sts, b.Replicas)
	return c, errs, nil
}

// natsManagedKeys are the managed system's operator key, system account
// and system user: those of its admin Secret, or new ones for a system
// that does not exist yet, never new ones for one that does (its servers
// trust the operator key they were configured with).
func (r *MicroserviceAppReconciler) natsManagedKeys(ctx context.Context, b nats.Broker) (natsbroker.Managed, string, error) {
	names := rabbitmq.NamesFor(b.App)
	secret := &corev1.Secret{}
	found, err := r.getSecret(ctx, client.ObjectKey{Namespace: b.Namespace, Name: names.AdminSecret}, secret)
	if err != nil {
		return natsbroker.Managed{}, "", err
	}
	if found {
		keys, err := natsbroker.ParseManagedSecret(secret.Data)
		if err != nil {
			return natsbroker.Managed{}, v1alpha1.ReasonBrokerSecretInvalid, fmt.Errorf("the admin Secret %s: %w", names.AdminSecret, err)
		}
		return keys, "", nil
	}
	reason, err := r.adminSecretLost(ctx, b.Namespace, names.AdminSecret, names.StatefulSet)
	if reason != "" || err != nil {
		return natsbroker.Managed{}, reason, err
	}
	keys, err := natsbroker.GenerateManaged(b.App)
	if err != nil {
		return natsbroker.Managed{}, "", fmt.Errorf("generate the NATS operator keys: %w", err)
	}
	return keys, "", nil
}

// openExternal reads the external system's Secret; a missing or malformed
// one blocks the broker work, naming the Secret and the key.
func (natsDriver) openExternal(ctx context.Context, r *MicroserviceAppReconciler, s *scope) (brokerConn, error) {
	c := natsExternal(r, s.app)
	sys, reason, err := r.natsExternalSystem(ctx, s.app)
	switch {
	case reason != "":
		s.broker.blockedReason, s.broker.blockedMessage = reason, err.Error()
		return c, nil
	case err != nil:
		return nil, err
	}
	c.sys = sys
	return c, nil
}

// natsExternal is the conn of an external system before its Secret is
// read: the client address the spec gives.
func natsExternal(r *MicroserviceAppReconciler, app *v1alpha1.MicroserviceApp) *natsConn {
	ext := app.Spec.Broker.External
	port := ext.Port
	if port == 0 {
		port = nats.ClientPort
	}
	return &natsConn{admin: r.natsAdmin(), url: fmt.Sprintf("nats://%s:%d", ext.Host, port)}
}

func (r *MicroserviceAppReconciler) natsExternalSystem(ctx context.Context, app *v1alpha1.MicroserviceApp) (natsbroker.System, string, error) {
	secret, reason, err := r.externalSecret(ctx, app)
	if reason != "" || err != nil {
		return natsbroker.System{}, reason, err
	}
	sys, err := natsbroker.ParseExternalSecret(secret.Data)
	if err != nil {
		return natsbroker.System{}, v1alpha1.ReasonBrokerSecretInvalid, fmt.Errorf("the Secret %s: %w", secret.Name, err)
	}
	return sys, "", nil
}

// wire keeps the app's account key and every service's creds, makes the
// missing ones, and applies the account Secret. Creds signed for another
// account (the account Secret was lost and made anew) are issued again.
func (c *natsConn) wire(ctx context.Context, r *MicroserviceAppReconciler, s *scope) ([]error, error) {
	seed, _, err := r.keptSecretValue(ctx, s.app.Namespace, resource.AccountSecretName(s.app.Name), natsbroker.AccountSecretKey,
		func() ([]byte, error) {
			seed, err := natsbroker.GenerateAccount()
			return []byte(seed), err
		})
	if err != nil {
		return nil, err
	}
	account, err := accountOf(string(seed))
	if err != nil {
		return nil, fmt.Errorf("the Secret %s: %w", resource.AccountSecretName(s.app.Name), err)
	}
	c.creds = natsbroker.Credentials{AccountSeed: string(seed), Services: map[string][]byte{}}
	for i := range s.app.Spec.Services {
		svc := &s.app.Spec.Services[i]
		if !resource.UsesBroker(s.app, svc) {
			continue
		}
		name := resource.ConnectionSecretName(s.app.Name, svc.Name)
		creds, kept, err := r.keptSecretValue(ctx, s.app.Namespace, name, nats.ConnectionCredsKey, func() ([]byte, error) {
			return natsbroker.IssueUser(s.app.Name, svc.Name, string(seed))
		})
		if err != nil {
			return nil, err
		}
		if kept && !issuedFor(creds, account) {
			if creds, err = natsbroker.IssueUser(s.app.Name, svc.Name, string(seed)); err != nil {
				return nil, fmt.Errorf("issue the creds of %s: %w", svc.Name, err)
			}
			kept = false
		}
		if kept {
			s.keptSecrets[name] = true
		}
		c.creds.Services[svc.Name] = creds
		s.wiring[svc.Name] = &resource.Broker{
			Kind:            contract.BrokerNATS,
			Data:            nats.ConnectionData(nats.Connection{URL: c.url, Creds: creds}),
			URLKey:          nats.ConnectionURLKey,
			CredentialsKey:  nats.ConnectionCredsKey,
			CredentialsFile: nats.CredentialsFile,
		}
	}
	if _, err := r.applyChild(ctx, s, kind.Secret, resource.AccountSecret(s.app, natsbroker.AccountSecretKey, seed)); err != nil {
		return []error{err}, nil
	}
	return nil, nil
}

// accountOf is the public key of an account seed.
func accountOf(seed string) (string, error) {
	kp, err := nkeys.FromSeed([]byte(seed))
	if err != nil {
		return "", fmt.Errorf("key %s: %w", natsbroker.AccountSecretKey, err)
	}
	pub, err := kp.PublicKey()
	if err != nil || !nkeys.IsValidPublicAccountKey(pub) {
		return "", fmt.Errorf("key %s: not the seed of an account key", natsbroker.AccountSecretKey)
	}
	return pub, nil
}

// issuedFor reports whether a creds file holds a user of account.
func issuedFor(creds []byte, account string) bool {
	tok, err := jwt.ParseDecoratedJWT(creds)
	if err != nil {
		return false
	}
	uc, err := jwt.DecodeUserClaims(tok)
	return err == nil && uc.IssuerAccount == account
}

func (c *natsConn) holdDeclare(*scope) (string, string) { return "", "" }

func (c *natsConn) memoInput() any {
	return struct {
		System      natsbroker.System
		Credentials natsbroker.Credentials
	}{c.sys, c.creds}
}

func (c *natsConn) declare(ctx context.Context, t broker.Topology) ([]broker.Change, error) {
	return c.admin.Declare(ctx, c.sys, t, c.creds)
}

func (c *natsConn) verify(ctx context.Context, t broker.Topology) error {
	return c.admin.Verify(ctx, c.sys, t, c.creds)
}

func (c *natsConn) queueStats(ctx context.Context, t broker.Topology) ([]broker.QueueStat, error) {
	return c.admin.QueueStats(ctx, c.sys, t, c.creds.AccountSeed)
}

func (c *natsConn) remove(ctx context.Context, t broker.Topology) (broker.DeleteResult, error) {
	return c.admin.Delete(ctx, c.sys, t, c.creds.AccountSeed)
}

// openForCleanup reaches a deleting app's system with the account key it
// was declared with, or says why it cannot.
func (natsDriver) openForCleanup(ctx context.Context, r *MicroserviceAppReconciler, app *v1alpha1.MicroserviceApp) (brokerConn, string, error) {
	c := &natsConn{admin: r.natsAdmin()}
	if app.Spec.Broker.External != nil {
		sys, reason, err := r.natsExternalSystem(ctx, app)
		switch {
		case reason != "":
			return nil, err.Error(), nil
		case err != nil:
			return nil, "", err
		}
		c.sys = sys
	} else {
		b := natsManagedBroker(app, r)
		names := rabbitmq.NamesFor(app.Name)
		if skip, err := r.managedBrokerGone(ctx, app.Namespace, names.StatefulSet); skip != "" || err != nil {
			return nil, skip, err
		}
		secret := &corev1.Secret{}
		found, err := r.getSecret(ctx, client.ObjectKey{Namespace: app.Namespace, Name: names.AdminSecret}, secret)
		switch {
		case err != nil:
			return nil, "", err
		case !found:
			return nil, "the broker's admin Secret is missing", nil
		}
		keys, err := natsbroker.ParseManagedSecret(secret.Data)
		if err != nil {
			return nil, err.Error(), nil
		}
		c.sys = keys.System(b.URL())
	}
	secret := &corev1.Secret{}
	found, err := r.getSecret(ctx, client.ObjectKey{Namespace: app.Namespace, Name: resource.AccountSecretName(app.Name)}, secret)
	switch {
	case err != nil:
		return nil, "", err
	case !found || len(secret.Data[natsbroker.AccountSecretKey]) == 0:
		return nil, "the app's account Secret " + resource.AccountSecretName(app.Name) + " is missing", nil
	}
	c.creds.AccountSeed = string(secret.Data[natsbroker.AccountSecretKey])
	return c, "", nil
}

// stop has nothing to add: the garbage collector deletes the servers with
// the app, and each leaves in lame duck mode within its grace period.
func (natsDriver) stop(context.Context, *MicroserviceAppReconciler, *v1alpha1.MicroserviceApp) (time.Duration, error) {
	return 0, nil
}
