// Package natsdriver is the operator's driver for NATS JetStream
// (spec.broker.kind nats).
package natsdriver

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"

	"github.com/courier-dev/courier/operator/api/v1alpha1"
	"github.com/courier-dev/courier/operator/internal/broker"
	"github.com/courier-dev/courier/operator/internal/broker/natsbroker"
	"github.com/courier-dev/courier/operator/internal/driver"
	"github.com/courier-dev/courier/operator/internal/metadata"
	"github.com/courier-dev/courier/operator/internal/resource"
	"github.com/courier-dev/courier/operator/internal/resource/kind"
	"github.com/courier-dev/courier/operator/internal/resource/nats"
	"github.com/courier-dev/courier/services/kit/contract"
)

// Driver runs NATS JetStream in operator mode: one account per app
// (its key kept in AccountSecretName), one user per service signed by a
// scoped key holding its permissions, one stream with a durable consumer
// per queue (package natsbroker); a managed system is a StatefulSet of
// nats-server (package resource/nats) whose operator key and system
// account are generated once and kept in its admin Secret.
type Driver struct {
	admin *natsbroker.NATS
}

// New is the NATS driver doing the work on NATS systems through admin.
func New(admin *natsbroker.NATS) *Driver { return &Driver{admin: admin} }

var _ driver.Driver = (*Driver)(nil)

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

// Kinds are the managed system's kinds of object.
func (*Driver) Kinds() []kind.Object {
	out := make([]kind.Object, 0, len(nats.Builders))
	for _, b := range nats.Builders {
		out = append(out, b.Object)
	}
	return out
}

// Topology is RabbitMQ's mapping without queue types: one stream holds
// every queue (the API refuses spec.queues[].type for nats). On a managed
// cluster of three or more servers the stream and its consumers keep three
// copies, so a server lost (a drain, a restart) loses no message and stops
// no queue; an external system's streams keep one, its operators' choice
// being unknown to the app.
func (*Driver) Topology(app *v1alpha1.MicroserviceApp, observed []v1alpha1.QueueStatus) (broker.Topology, map[string]v1alpha1.QueueType) {
	t, _ := driver.TopologyOf(app, observed)
	if m := app.Spec.Broker.Managed; app.Spec.Broker.External == nil && m != nil && ptr.Deref(m.Replicas, 1) >= clusterReplicas {
		t.Replicas = clusterReplicas
	}
	return t, nil
}

// clusterReplicas is the replica count of a replicated stream: a
// JetStream cluster's majority survives one server lost of three.
const clusterReplicas = 3

// managedBroker maps spec.broker.managed to the nats builders' input,
// with the labels, owner and network peers of resource.ManagedBroker.
func managedBroker(app *v1alpha1.MicroserviceApp, h driver.Host) nats.Broker {
	rb := resource.ManagedBroker(app, h.Config().ClusterDomain, h.Config().OperatorNamespace)
	return nats.Broker{
		App: rb.App, Namespace: rb.Namespace, Image: rb.Image, Replicas: rb.Replicas,
		ExporterImage: app.Spec.Broker.Managed.ExporterImage,
		StorageSize:   rb.StorageSize, StorageClassName: rb.StorageClassName, Resources: rb.Resources,
		ClusterDomain: rb.ClusterDomain, Labels: rb.Labels, Owner: rb.Owner, Network: rb.Network,
		Pod: rb.Pod,
	}
}

// Open reaches the managed or external system (driver.Driver).
func (d *Driver) Open(ctx context.Context, h driver.Host, s *driver.State) (driver.Conn, []error, error) {
	if s.App.Spec.Broker.Managed != nil {
		return d.openManaged(ctx, h, s)
	}
	c, err := d.openExternal(ctx, h, s)
	return c, nil, err
}

func (d *Driver) openManaged(ctx context.Context, h driver.Host, s *driver.State) (driver.Conn, []error, error) {
	b := managedBroker(s.App, h)
	names := metadata.BrokerNamesFor(b.App)
	c := &natsConn{admin: d.admin, url: b.URL()}
	keys, reason, err := managedKeys(ctx, h, b)
	switch {
	case err != nil && reason == "":
		return nil, nil, err
	case err != nil:
		s.BlockedReason, s.BlockedMessage = reason, err.Error()
	}

	// As for RabbitMQ; the servers' configuration names the operator they
	// trust, so it waits for the Secret too.
	sts, errs := driver.ApplyManagedBroker(ctx, h, s, nats.Builders, nats.Input{Broker: b, Keys: keys},
		map[string]string{"Secret": names.AdminSecret, "StatefulSet": names.StatefulSet, "ConfigMap": names.ConfigMap})
	if s.BlockedReason != "" {
		return c, errs, nil
	}
	c.sys = keys.System(b.URL())
	s.BlockedReason, s.BlockedMessage, s.PodsWaiting = driver.PodsReady(sts, b.Replicas)
	return c, errs, nil
}

// managedKeys are the managed system's operator key, system account
// and system user: those of its admin Secret, or new ones for a system
// that does not exist yet, never new ones for one that does (its servers
// trust the operator key they were configured with).
func managedKeys(ctx context.Context, h driver.Host, b nats.Broker) (natsbroker.Managed, string, error) {
	names := metadata.BrokerNamesFor(b.App)
	secret := &corev1.Secret{}
	found, err := h.GetSecret(ctx, client.ObjectKey{Namespace: b.Namespace, Name: names.AdminSecret}, secret)
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
	reason, err := driver.AdminSecretLost(ctx, h, b.Namespace, names.AdminSecret, names.StatefulSet)
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
func (d *Driver) openExternal(ctx context.Context, h driver.Host, s *driver.State) (driver.Conn, error) {
	c := d.external(s.App)
	sys, reason, err := externalSystem(ctx, h, s.App)
	switch {
	case reason != "":
		s.BlockedReason, s.BlockedMessage = reason, err.Error()
		return c, nil
	case err != nil:
		return nil, err
	}
	c.sys = sys
	return c, nil
}

// external is the conn of an external system before its Secret is
// read: the client address the spec gives.
func (d *Driver) external(app *v1alpha1.MicroserviceApp) *natsConn {
	ext := app.Spec.Broker.External
	port := ext.Port
	if port == 0 {
		port = nats.ClientPort
	}
	return &natsConn{admin: d.admin, url: fmt.Sprintf("nats://%s:%d", ext.Host, port)}
}

// externalSystem reads the external system's Secret.
func externalSystem(ctx context.Context, h driver.Host, app *v1alpha1.MicroserviceApp) (natsbroker.System, string, error) {
	secret, reason, err := h.ExternalSecret(ctx, app)
	if reason != "" || err != nil {
		return natsbroker.System{}, reason, err
	}
	sys, err := natsbroker.ParseExternalSecret(secret.Data)
	if err != nil {
		return natsbroker.System{}, v1alpha1.ReasonBrokerSecretInvalid, fmt.Errorf("the Secret %s: %w", secret.Name, err)
	}
	return sys, "", nil
}

// Wire keeps the app's account key and every service's creds, makes the
// missing ones, and applies the account Secret. Creds signed for another
// account (the account Secret was lost and made anew) are issued again.
func (c *natsConn) Wire(ctx context.Context, h driver.Host, s *driver.State) ([]error, error) {
	seed, _, err := h.KeptSecretValue(ctx, s.App.Namespace, metadata.AccountSecretName(s.App.Name), natsbroker.AccountSecretKey,
		func() ([]byte, error) {
			seed, err := natsbroker.GenerateAccount()
			return []byte(seed), err
		})
	if err != nil {
		return nil, err
	}
	account, err := accountOf(string(seed))
	if err != nil {
		return nil, fmt.Errorf("the Secret %s: %w", metadata.AccountSecretName(s.App.Name), err)
	}
	c.creds = natsbroker.Credentials{AccountSeed: string(seed), Services: map[string][]byte{}}
	for i := range s.App.Spec.Services {
		svc := &s.App.Spec.Services[i]
		if !resource.UsesBroker(s.App, svc) {
			continue
		}
		name := metadata.ConnectionSecretName(s.App.Name, svc.Name)
		creds, kept, err := h.KeptSecretValue(ctx, s.App.Namespace, name, nats.ConnectionCredsKey, func() ([]byte, error) {
			return natsbroker.IssueUser(s.App.Name, svc.Name, string(seed))
		})
		if err != nil {
			return nil, err
		}
		if kept && !issuedFor(creds, account) {
			if creds, err = natsbroker.IssueUser(s.App.Name, svc.Name, string(seed)); err != nil {
				return nil, fmt.Errorf("issue the creds of %s: %w", svc.Name, err)
			}
			kept = false
		}
		if kept {
			s.KeptSecrets[name] = true
		}
		c.creds.Services[svc.Name] = creds
		s.Wiring[svc.Name] = &resource.Broker{
			Kind:            contract.BrokerNATS,
			Data:            nats.ConnectionData(nats.Connection{URL: c.url, Creds: creds}),
			URLKey:          nats.ConnectionURLKey,
			CredentialsKey:  nats.ConnectionCredsKey,
			CredentialsFile: nats.CredentialsFile,
		}
	}
	if _, err := h.Apply(ctx, kind.Secret, resource.AccountSecret(s.App, natsbroker.AccountSecretKey, seed)); err != nil {
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

// HoldDeclare never holds: a stream has no members to wait for.
func (c *natsConn) HoldDeclare(*driver.State) (string, string) { return "", "" }

// MemoInput is the system and the credentials.
func (c *natsConn) MemoInput() any {
	return struct {
		System      natsbroker.System
		Credentials natsbroker.Credentials
	}{c.sys, c.creds}
}

// Declare declares the account, stream and consumers.
func (c *natsConn) Declare(ctx context.Context, t broker.Topology) ([]broker.Change, error) {
	return c.admin.Declare(ctx, c.sys, t, c.creds)
}

// Verify checks the account and its scoped keys.
func (c *natsConn) Verify(ctx context.Context, t broker.Topology) error {
	return c.admin.Verify(ctx, c.sys, t, c.creds)
}

// QueueStats reads the app's stream as its account: NATS keeps every
// account's streams apart, so each app is read on its own (two requests).
func (c *natsConn) QueueStats(ctx context.Context, t broker.Topology) ([]broker.QueueStat, error) {
	return c.admin.QueueStats(ctx, c.sys, t, c.creds.AccountSeed)
}

// Remove deletes the app's account, stream and consumers.
func (c *natsConn) Remove(ctx context.Context, t broker.Topology) (broker.DeleteResult, error) {
	return c.admin.Delete(ctx, c.sys, t, c.creds.AccountSeed)
}

// OpenForCleanup reaches a deleting app's system with the account key it
// was declared with, or says why it cannot.
func (d *Driver) OpenForCleanup(ctx context.Context, h driver.Host, app *v1alpha1.MicroserviceApp) (driver.Conn, string, error) {
	c := &natsConn{admin: d.admin}
	if app.Spec.Broker.External != nil {
		sys, reason, err := externalSystem(ctx, h, app)
		switch {
		case reason != "":
			return nil, err.Error(), nil
		case err != nil:
			return nil, "", err
		}
		c.sys = sys
	} else {
		b := managedBroker(app, h)
		names := metadata.BrokerNamesFor(app.Name)
		if skip, err := driver.ManagedBrokerGone(ctx, h, app.Namespace, names.StatefulSet); skip != "" || err != nil {
			return nil, skip, err
		}
		secret := &corev1.Secret{}
		found, err := h.GetSecret(ctx, client.ObjectKey{Namespace: app.Namespace, Name: names.AdminSecret}, secret)
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
	found, err := h.GetSecret(ctx, client.ObjectKey{Namespace: app.Namespace, Name: metadata.AccountSecretName(app.Name)}, secret)
	switch {
	case err != nil:
		return nil, "", err
	case !found || len(secret.Data[natsbroker.AccountSecretKey]) == 0:
		return nil, "the app's account Secret " + metadata.AccountSecretName(app.Name) + " is missing", nil
	}
	c.creds.AccountSeed = string(secret.Data[natsbroker.AccountSecretKey])
	return c, "", nil
}

// Stop has nothing to add: the garbage collector deletes the servers with
// the app, and each leaves in lame duck mode within its grace period.
func (*Driver) Stop(context.Context, driver.Host, *v1alpha1.MicroserviceApp) (time.Duration, error) {
	return 0, nil
}
