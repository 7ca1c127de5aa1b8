package messaging_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/courier-dev/courier/services/kit/contract"
	"github.com/courier-dev/courier/services/kit/messaging"
)

// TestNATSCredentialsFileAndInboxPrefix connects the kit to a server in
// operator mode (decentralised JWT auth) with a credentials file, as the
// operator deploys it: the user may publish to its queue's subject and
// subscribe to its own inbox prefix only (no "_INBOX.>"), so its publish
// acks reach it only through InboxPrefix; a publish is confirmed and stored
// in the stream.
func TestNATSCredentialsFileAndInboxPrefix(t *testing.T) {
	app := newApp(t)
	physical := contract.QueueName(app, queue)
	const inbox = "_INBOX_users"

	op := mustKey(t, nkeys.CreateOperator)
	acct := mustKey(t, nkeys.CreateAccount)
	sys := mustKey(t, nkeys.CreateAccount)
	opClaims := jwt.NewOperatorClaims(pub(t, op))
	opClaims.SystemAccount = pub(t, sys)
	opJWT := encode(t, opClaims, op)
	resolver := &server.MemAccResolver{}
	for _, a := range []struct {
		kp nkeys.KeyPair
		js bool
	}{{sys, false}, {acct, true}} {
		ac := jwt.NewAccountClaims(pub(t, a.kp))
		if a.js {
			ac.Limits.JetStreamLimits = jwt.JetStreamLimits{DiskStorage: -1, MemoryStorage: -1, Streams: -1, Consumer: -1}
		}
		if err := resolver.Store(pub(t, a.kp), encode(t, ac, op)); err != nil {
			t.Fatal(err)
		}
	}
	oc, err := jwt.DecodeOperatorClaims(opJWT)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true,
		TrustedOperators: []*jwt.OperatorClaims{oc}, SystemAccount: pub(t, sys), AccountResolver: resolver,
	})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	t.Cleanup(srv.Shutdown)

	// An unrestricted user of the account declares the stream, as the
	// operator would.
	admin := userCreds(t, acct, nil)
	nc, err := nats.Connect(srv.ClientURL(), nats.UserCredentials(admin))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := js.CreateStream(t.Context(), jetstream.StreamConfig{
		Name: contract.StreamName(app), Subjects: []string{contract.Subject(physical)},
		Retention: jetstream.WorkQueuePolicy, Storage: jetstream.FileStorage,
	})
	if err != nil {
		t.Fatal(err)
	}

	restricted := userCreds(t, acct, func(u *jwt.UserClaims) {
		u.Pub.Allow.Add(contract.Subject(physical))
		u.Sub.Allow.Add(inbox + ".>")
	})
	b, err := connectWith(t, messaging.Config{
		Kind: contract.BrokerNATS, URL: srv.ClientURL(), App: app, Queues: physicalNames(app, queue),
		CredentialsFile: restricted, InboxPrefix: inbox,
	})
	if err != nil {
		t.Fatalf("Connect with a credentials file: %v", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if _, err := b.Publish(ctx, queue, []byte("hello")); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 1 {
		t.Errorf("stream holds %d messages, want 1", info.State.Msgs)
	}
}

// TestNATSCredentialsFileMissing: a credentials file that is not there is
// a configuration error at once, not an outage to wait out.
func TestNATSCredentialsFileMissing(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	_, err := messaging.Connect(ctx, messaging.Config{
		Kind: contract.BrokerNATS, URL: "nats://127.0.0.1:1", App: newApp(t),
		CredentialsFile: filepath.Join(t.TempDir(), "missing.creds"),
	})
	if !errors.Is(err, messaging.ErrConfig) || !strings.Contains(err.Error(), "credentials file") {
		t.Fatalf("Connect = %v, want an ErrConfig error naming the credentials file", err)
	}
	_, err = messaging.Connect(ctx, messaging.Config{
		Kind: contract.BrokerNATS, URL: "nats://127.0.0.1:1", App: newApp(t), InboxPrefix: "_INBOX.*",
	})
	if !errors.Is(err, messaging.ErrConfig) || !strings.Contains(err.Error(), "inbox prefix") {
		t.Fatalf("Connect = %v, want an ErrConfig error naming the inbox prefix", err)
	}
}

func mustKey(t *testing.T, create func() (nkeys.KeyPair, error)) nkeys.KeyPair {
	t.Helper()
	kp, err := create()
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

func pub(t *testing.T, kp nkeys.KeyPair) string {
	t.Helper()
	p, err := kp.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func encode(t *testing.T, c jwt.Claims, kp nkeys.KeyPair) string {
	t.Helper()
	tok, err := c.Encode(kp)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// userCreds writes the creds file of a new user of acct, with perms applied
// to its claims, and returns its path.
func userCreds(t *testing.T, acct nkeys.KeyPair, perms func(*jwt.UserClaims)) string {
	t.Helper()
	u := mustKey(t, nkeys.CreateUser)
	uc := jwt.NewUserClaims(pub(t, u))
	if perms != nil {
		perms(uc)
	}
	seed, err := u.Seed()
	if err != nil {
		t.Fatal(err)
	}
	creds, err := jwt.FormatUserConfig(encode(t, uc, acct), seed)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "user.creds")
	if err := os.WriteFile(path, creds, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
