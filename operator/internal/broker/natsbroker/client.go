package natsbroker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/courier-dev/courier/operator/internal/broker"
	"github.com/courier-dev/courier/services/kit/contract"
)

// Subjects of the system account's resolver API.
const (
	subjectClaimsUpdate = "$SYS.REQ.CLAIMS.UPDATE"
	subjectClaimsDelete = "$SYS.REQ.CLAIMS.DELETE"
	subjectClaimsLookup = "$SYS.REQ.ACCOUNT.%s.CLAIMS.LOOKUP"
)

// adminUserTTL bounds the life of the user the operator administers an
// app's account with; a new one is issued per operation.
const adminUserTTL = 10 * time.Minute

// Option configures NATS.
type Option func(*NATS)

// WithDialTimeout bounds connecting to the server (default 5s), so an
// unreachable server is reported quickly.
func WithDialTimeout(d time.Duration) Option { return func(n *NATS) { n.dialTimeout = d } }

// WithTimeout bounds a whole Declare, Delete or QueueStats (default 1m).
func WithTimeout(d time.Duration) Option { return func(n *NATS) { n.timeout = d } }

// WithResolver makes every connection dial the address resolve returns for
// the "host:port" of the system's URL. In a cluster it is nil (service DNS
// resolves); tests map a managed server's Service name to a local server,
// as broker.WithResolver does for RabbitMQ.
func WithResolver(resolve broker.Resolver) Option { return func(n *NATS) { n.resolve = resolve } }

// NATS administers NATS systems in operator mode. It holds no per-system
// state; one value serves every app.
type NATS struct {
	resolve     broker.Resolver
	dialTimeout time.Duration
	timeout     time.Duration
}

// New returns a NATS admin client.
func New(opts ...Option) *NATS {
	n := &NATS{dialTimeout: 5 * time.Second, timeout: time.Minute}
	for _, o := range opts {
		o(n)
	}
	return n
}

// connect dials sys with creds (a creds file's JWT and key) and classifies
// the failure.
func (n *NATS) connect(ctx context.Context, url, name string, uc *jwt.UserClaims, tok string, kp nkeys.KeyPair) (*nats.Conn, error) {
	seed, err := kp.Seed()
	if err != nil {
		return nil, err
	}
	d := &net.Dialer{Timeout: n.dialTimeout}
	nc, err := nats.Connect(url,
		nats.Name(name),
		nats.UserJWTAndSeed(tok, string(seed)),
		nats.Timeout(n.dialTimeout),
		nats.SetCustomDialer(ctxDialer{ctx: ctx, d: d, resolve: n.resolve}),
		nats.NoReconnect(),
	)
	if err != nil {
		return nil, classify(fmt.Sprintf("connect to %s as %s", url, uc.Name), err)
	}
	return nc, nil
}

type ctxDialer struct {
	ctx     context.Context
	d       *net.Dialer
	resolve broker.Resolver
}

func (c ctxDialer) Dial(network, addr string) (net.Conn, error) {
	if c.resolve != nil {
		resolved, err := c.resolve(c.ctx, addr)
		if err != nil {
			return nil, err
		}
		addr = resolved
	}
	return c.d.DialContext(c.ctx, network, addr)
}

// classify wraps err with broker.ErrUnreachable or broker.ErrUnauthorized
// where it means that.
func classify(what string, err error) error {
	var netErr net.Error
	switch {
	case errors.Is(err, nats.ErrAuthorization), errors.Is(err, nats.ErrAuthExpired),
		errors.Is(err, nats.ErrAuthRevoked), errors.Is(err, nats.ErrAccountAuthExpired):
		return fmt.Errorf("%s: %w: %w", what, broker.ErrUnauthorized, err)
	case errors.Is(err, nats.ErrNoServers), errors.Is(err, nats.ErrTimeout),
		errors.Is(err, context.DeadlineExceeded), errors.As(err, &netErr):
		return fmt.Errorf("%s: %w: %w", what, broker.ErrUnreachable, err)
	default:
		return fmt.Errorf("%s: %w", what, err)
	}
}

// session is one operation on one system: a system-account connection and
// the operator's signing key.
type session struct {
	n      *NATS
	ctx    context.Context
	sys    System
	signer nkeys.KeyPair
	nc     *nats.Conn
}

func (n *NATS) open(ctx context.Context, sys System) (*session, func(), error) {
	if err := sys.validate(""); err != nil {
		return nil, nil, fmt.Errorf("nats system: %w", err)
	}
	signer, _ := nkeys.FromSeed([]byte(sys.OperatorSigningKey))
	uc, kp, _ := parseCreds(sys.SystemUserCreds)
	tok, _ := jwt.ParseDecoratedJWT(sys.SystemUserCreds)
	ctx, cancel := context.WithTimeout(ctx, n.timeout)
	nc, err := n.connect(ctx, sys.URL, "courier-operator", uc, tok, kp)
	if err != nil {
		cancel()
		return nil, nil, err
	}
	return &session{n: n, ctx: ctx, sys: sys, signer: signer, nc: nc}, func() { nc.Close(); cancel() }, nil
}

// lookup returns the account JWT the resolver holds, or "" if none.
func (s *session) lookup(account string) (string, error) {
	msg, err := s.nc.RequestWithContext(s.ctx, fmt.Sprintf(subjectClaimsLookup, account), nil)
	if err != nil {
		return "", classify("look up account "+account, err)
	}
	return string(msg.Data), nil
}

// claimResponse is the resolver's answer to an update or delete.
type claimResponse struct {
	Data *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"data"`
	Error *struct {
		Code        int    `json:"code"`
		Description string `json:"description"`
	} `json:"error"`
}

// request sends a claims request and checks the resolver's answer.
func (s *session) request(what, subject string, body []byte) error {
	msg, err := s.nc.RequestWithContext(s.ctx, subject, body)
	if err != nil {
		return classify(what, err)
	}
	var r claimResponse
	if err := json.Unmarshal(msg.Data, &r); err != nil {
		return fmt.Errorf("%s: unreadable answer %q: %w", what, msg.Data, err)
	}
	if r.Error != nil {
		return fmt.Errorf("%s: %s (code %d)", what, r.Error.Description, r.Error.Code)
	}
	return nil
}

// push signs claims with the operator's key and updates the resolver.
func (s *session) push(claims *jwt.AccountClaims) error {
	tok, err := claims.Encode(s.signer)
	if err != nil {
		return fmt.Errorf("sign account JWT of %s: %w", claims.Name, err)
	}
	return s.request("update account "+claims.Name, subjectClaimsUpdate, []byte(tok))
}

// jetStream connects to the app's account as a short-lived user signed by
// the account key, without permission limits.
func (s *session) jetStream(app string, acct nkeys.KeyPair) (jetstream.JetStream, func(), error) {
	creds, err := newUserCreds(acct, "courier-operator", adminUserTTL)
	if err != nil {
		return nil, nil, fmt.Errorf("issue the operator's user of account %s: %w", app, err)
	}
	uc, kp, _ := parseCreds(creds)
	tok, _ := jwt.ParseDecoratedJWT(creds)
	nc, err := s.n.connect(s.ctx, s.sys.URL, "courier-operator/"+app, uc, tok, kp)
	if err != nil {
		return nil, nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("jetstream of account %s: %w", app, err)
	}
	return js, nc.Close, nil
}

// Declare makes the system match t: the app's account JWT (JetStream
// enabled, one scoped signing key per service holding its permissions),
// then the stream and its consumers. It reads first and writes only what
// differs, so a second call returns no changes; a consumer or stream
// deleted by hand, a changed setting, or an account JWT replaced by hand
// is repaired. Scoped keys of services no longer in the topology, or whose
// creds were replaced, leave the account, which cuts off their users.
// Queues dropped from the topology keep their consumers and subjects until
// Delete, as RabbitMQ keeps their queues.
func (n *NATS) Declare(ctx context.Context, sys System, t broker.Topology, creds Credentials) ([]broker.Change, error) {
	want, err := Generate(t)
	if err != nil {
		return nil, err
	}
	acct, account, err := accountKey(creds.AccountSeed)
	if err != nil {
		return nil, fmt.Errorf("declare %s: %w", t.App, err)
	}
	claims, err := accountClaims(want, account, creds.Services)
	if err != nil {
		return nil, fmt.Errorf("declare %s: %w", t.App, err)
	}
	s, done, err := n.open(ctx, sys)
	if err != nil {
		return nil, err
	}
	defer done()

	var changes []broker.Change
	current, err := s.lookup(account)
	if err != nil {
		return nil, err
	}
	if reason := accountDiffers(current, claims); reason != "" {
		if err := s.push(claims); err != nil {
			return changes, err
		}
		action := broker.ActionUpdate
		if current == "" {
			action, reason = broker.ActionCreate, ""
		}
		changes = append(changes, broker.Change{Action: action, Kind: KindAccount, Name: t.App, Reason: reason})
	}

	js, closeJS, err := s.jetStream(t.App, acct)
	if err != nil {
		return changes, err
	}
	defer closeJS()
	c, err := declareStream(s.ctx, js, want.Stream)
	if err != nil {
		return changes, err
	}
	if c != nil {
		changes = append(changes, *c)
	}
	for _, cc := range want.Consumers {
		c, err := declareConsumer(s.ctx, js, want.Stream.Name, cc)
		if err != nil {
			return changes, err
		}
		if c != nil {
			changes = append(changes, *c)
		}
	}
	return changes, nil
}

// Verify checks in one request that the resolver still holds the app's
// account JWT as Declare left it: the services' scoped signing keys, and
// with them every user's permissions. It returns an error wrapping
// broker.ErrDrift when not, so the caller declares again before its
// resync. Streams and consumers are compared by Declare only.
func (n *NATS) Verify(ctx context.Context, sys System, t broker.Topology, creds Credentials) error {
	want, err := Generate(t)
	if err != nil {
		return err
	}
	_, account, err := accountKey(creds.AccountSeed)
	if err != nil {
		return fmt.Errorf("verify %s: %w", t.App, err)
	}
	claims, err := accountClaims(want, account, creds.Services)
	if err != nil {
		return fmt.Errorf("verify %s: %w", t.App, err)
	}
	s, done, err := n.open(ctx, sys)
	if err != nil {
		return err
	}
	defer done()
	current, err := s.lookup(account)
	if err != nil {
		return err
	}
	if reason := accountDiffers(current, claims); reason != "" {
		return fmt.Errorf("account %s: %s: %w", t.App, reason, broker.ErrDrift)
	}
	return nil
}

// accountClaims builds the app's account JWT claims: JetStream on, and per
// service the scoped signing key that signed its user (from its creds).
func accountClaims(want Settings, account string, services map[string][]byte) (*jwt.AccountClaims, error) {
	ac := jwt.NewAccountClaims(account)
	ac.Name = want.App
	ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
	var errs []error
	for _, u := range want.Users {
		creds, ok := services[u.Service]
		if !ok {
			errs = append(errs, fmt.Errorf("service %s: no credentials", u.Service))
			continue
		}
		uc, _, err := parseCreds(creds)
		if err != nil {
			errs = append(errs, fmt.Errorf("service %s: credentials: %w", u.Service, err))
			continue
		}
		if uc.IssuerAccount != account {
			errs = append(errs, fmt.Errorf("service %s: credentials: a user of account %s, not of the app's %s", u.Service, uc.IssuerAccount, account))
			continue
		}
		scope := jwt.NewUserScope()
		scope.Key = uc.Issuer
		scope.Role = u.Service
		scope.Description = u.Name
		scope.Template.Permissions = u.Permissions
		ac.SigningKeys.AddScopedSigner(scope)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return ac, nil
}

// accountDiffers says why the resolver's JWT current differs from want, or
// "" when it does not. Only what Courier sets is compared; the issuer may be
// any operator key.
func accountDiffers(current string, want *jwt.AccountClaims) string {
	if current == "" {
		return "missing"
	}
	got, err := jwt.DecodeAccountClaims(current)
	if err != nil {
		return "unreadable"
	}
	var reasons []string
	if got.Name != want.Name {
		reasons = append(reasons, "name")
	}
	if !sameJSON(got.Limits, want.Limits) {
		reasons = append(reasons, "limits")
	}
	if !sameScopes(got.SigningKeys, want.SigningKeys) {
		reasons = append(reasons, "signing keys")
	}
	if len(got.Revocations) > 0 || len(got.Imports) > 0 || len(got.Exports) > 0 || len(got.Mappings) > 0 ||
		!reflect.DeepEqual(got.DefaultPermissions, want.DefaultPermissions) {
		reasons = append(reasons, "permissions")
	}
	return strings.Join(reasons, ", ")
}

func sameScopes(got, want jwt.SigningKeys) bool {
	if !slices.Equal(sortedKeys(got), sortedKeys(want)) {
		return false
	}
	for k, w := range want {
		g, ok := got[k].(*jwt.UserScope)
		ws := w.(*jwt.UserScope)
		if !ok || g.Role != ws.Role || g.Description != ws.Description ||
			!sameJSON(g.Template, ws.Template) {
			return false
		}
	}
	return true
}

// sameJSON compares two claim parts by their encoding, as the resolver
// stores them: an empty list or map equals a missing one.
func sameJSON(a, b any) bool {
	ja, errA := json.Marshal(a)
	jb, errB := json.Marshal(b)
	return errA == nil && errB == nil && string(ja) == string(jb)
}

func sortedKeys(m jwt.SigningKeys) []string {
	return slices.Sorted(maps.Keys(m))
}

// declareStream creates the stream or updates what differs.
func declareStream(ctx context.Context, js jetstream.JetStream, want jetstream.StreamConfig) (*broker.Change, error) {
	st, err := js.Stream(ctx, want.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		if _, err := js.CreateStream(ctx, want); err != nil {
			return nil, wrapJS("create stream "+want.Name, err)
		}
		return &broker.Change{Action: broker.ActionCreate, Kind: KindStream, Name: want.Name}, nil
	}
	if err != nil {
		return nil, wrapJS("read stream "+want.Name, err)
	}
	got := st.CachedInfo().Config
	merged, reason := streamDiff(got, want)
	if reason == "" {
		return nil, nil
	}
	if _, err := js.UpdateStream(ctx, merged); err != nil {
		return nil, wrapJS("update stream "+want.Name, err)
	}
	return &broker.Change{Action: broker.ActionUpdate, Kind: KindStream, Name: want.Name, Reason: reason}, nil
}

// streamDiff returns got with Courier's settings applied and why it
// changed. Subjects are merged, never dropped: a queue removed from the
// topology keeps its messages until the app is deleted.
func streamDiff(got, want jetstream.StreamConfig) (jetstream.StreamConfig, string) {
	var reasons []string
	out := got
	subjects := slices.Clone(got.Subjects)
	for _, s := range want.Subjects {
		if !slices.Contains(subjects, s) {
			subjects = append(subjects, s)
		}
	}
	if len(subjects) != len(got.Subjects) {
		out.Subjects = subjects
		reasons = append(reasons, "subjects")
	}
	set := func(name string, differs bool, apply func()) {
		if differs {
			apply()
			reasons = append(reasons, name)
		}
	}
	set("retention", got.Retention != want.Retention, func() { out.Retention = want.Retention })
	set("storage", got.Storage != want.Storage, func() { out.Storage = want.Storage })
	set("replicas", got.Replicas != want.Replicas, func() { out.Replicas = want.Replicas })
	set("maxAge", got.MaxAge != want.MaxAge, func() { out.MaxAge = want.MaxAge })
	set("maxMsgsPerSubject", got.MaxMsgsPerSubject != want.MaxMsgsPerSubject && (got.MaxMsgsPerSubject > 0 || want.MaxMsgsPerSubject != 0),
		func() { out.MaxMsgsPerSubject = want.MaxMsgsPerSubject })
	set("discard", got.Discard != want.Discard || got.DiscardNewPerSubject != want.DiscardNewPerSubject,
		func() { out.Discard, out.DiscardNewPerSubject = want.Discard, want.DiscardNewPerSubject })
	set("duplicates", got.Duplicates != want.Duplicates, func() { out.Duplicates = want.Duplicates })
	return out, strings.Join(reasons, ", ")
}

// declareConsumer creates the durable consumer or updates what differs.
func declareConsumer(ctx context.Context, js jetstream.JetStream, stream string, want jetstream.ConsumerConfig) (*broker.Change, error) {
	c, err := js.Consumer(ctx, stream, want.Durable)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		if _, err := js.CreateConsumer(ctx, stream, want); err != nil {
			return nil, wrapJS("create consumer "+want.Durable, err)
		}
		return &broker.Change{Action: broker.ActionCreate, Kind: KindConsumer, Name: want.Durable}, nil
	}
	if err != nil {
		return nil, wrapJS("read consumer "+want.Durable, err)
	}
	got := c.CachedInfo().Config
	var reasons []string
	if got.FilterSubject != want.FilterSubject {
		reasons = append(reasons, "filterSubject")
	}
	if got.AckPolicy != want.AckPolicy {
		reasons = append(reasons, "ackPolicy")
	}
	if got.AckWait != want.AckWait {
		reasons = append(reasons, "ackWait")
	}
	if got.MaxDeliver != want.MaxDeliver {
		reasons = append(reasons, "maxDeliver")
	}
	if got.Replicas != want.Replicas && (got.Replicas != 0 || want.Replicas != 1) {
		reasons = append(reasons, "replicas")
	}
	if len(reasons) == 0 {
		return nil, nil
	}
	// Keep what Courier does not set (MaxAckPending, say, tuned by hand).
	update := got
	update.FilterSubject, update.AckPolicy, update.AckWait = want.FilterSubject, want.AckPolicy, want.AckWait
	update.MaxDeliver, update.Replicas = want.MaxDeliver, want.Replicas
	if _, err := js.UpdateConsumer(ctx, stream, update); err != nil {
		return nil, wrapJS("update consumer "+want.Durable, err)
	}
	return &broker.Change{Action: broker.ActionUpdate, Kind: KindConsumer, Name: want.Durable, Reason: strings.Join(reasons, ", ")}, nil
}

// wrapJS classifies a JetStream API error: a 400 answer means the server
// holds something that cannot be changed in place.
func wrapJS(what string, err error) error {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.Code == 400 {
		return fmt.Errorf("%s: %w: %w", what, broker.ErrConflict, err)
	}
	return classify(what, err)
}

// Delete removes what Declare made for t:
//
//  1. the account JWT loses every service's signing key, which disconnects
//     and locks out every service user, so nothing is published meanwhile;
//  2. per queue, DeletionPolicy Delete deletes its consumer and purges its
//     subject and dead-letter subject; Retain does the same only if both
//     hold no message, and otherwise keeps them (result.Retained);
//  3. unless something was retained, the stream and then the account are
//     deleted (the resolver must allow deletes; if it does not, the account
//     stays, empty and without users, and Delete still succeeds).
//
// Without an answer from the server it returns an error wrapping
// broker.ErrUnreachable within the dial timeout, so a finalizer can move on.
func (n *NATS) Delete(ctx context.Context, sys System, t broker.Topology, accountSeed string) (broker.DeleteResult, error) {
	var result broker.DeleteResult
	if t.App == "" {
		return result, fmt.Errorf("delete: %w: app: name is empty", broker.ErrInvalidTopology)
	}
	acct, account, err := accountKey(accountSeed)
	if err != nil {
		return result, fmt.Errorf("delete %s: %w", t.App, err)
	}
	s, done, err := n.open(ctx, sys)
	if err != nil {
		return result, err
	}
	defer done()
	current, err := s.lookup(account)
	if err != nil {
		return result, err
	}
	if current == "" {
		return result, nil
	}
	locked := jwt.NewAccountClaims(account)
	locked.Name = t.App
	locked.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
	if err := s.push(locked); err != nil {
		return result, err
	}

	js, closeJS, err := s.jetStream(t.App, acct)
	if err != nil {
		return result, err
	}
	defer closeJS()
	stream := contract.StreamName(t.App)
	st, err := js.Stream(s.ctx, stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return result, s.deleteAccount(t.App, account)
	}
	if err != nil {
		return result, wrapJS("read stream "+stream, err)
	}
	counts, err := subjectCounts(s.ctx, st)
	if err != nil {
		return result, err
	}
	queues := slices.Clone(t.Queues)
	slices.SortFunc(queues, func(a, b broker.QueueSpec) int { return strings.Compare(a.Name, b.Name) })
	for _, q := range queues {
		p := contract.QueueName(t.App, q.Name)
		subjects := []string{contract.Subject(p), contract.DeadLetterSubject(p)}
		if q.DeletionPolicy != broker.Delete && counts[subjects[0]]+counts[subjects[1]] > 0 {
			result.Retained = append(result.Retained, p)
			continue
		}
		if err := js.DeleteConsumer(s.ctx, stream, contract.ConsumerName(p)); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return result, wrapJS("delete consumer "+contract.ConsumerName(p), err)
		}
		for _, subj := range subjects {
			if err := st.Purge(s.ctx, jetstream.WithPurgeSubject(subj)); err != nil {
				return result, wrapJS("purge "+subj, err)
			}
		}
	}
	if len(result.Retained) > 0 {
		return result, nil
	}
	// Messages of subjects no longer in the topology count too.
	if info, err := st.Info(s.ctx); err != nil {
		return result, wrapJS("read stream "+stream, err)
	} else if info.State.Msgs > 0 {
		result.Retained = append(result.Retained, stream)
		return result, nil
	}
	if err := js.DeleteStream(s.ctx, stream); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
		return result, wrapJS("delete stream "+stream, err)
	}
	return result, s.deleteAccount(t.App, account)
}

// deleteAccount asks the resolver to delete the account's JWT. A resolver
// that does not allow deletes keeps the locked account; that is not an
// error.
func (s *session) deleteAccount(app, account string) error {
	signerPub, _ := s.signer.PublicKey()
	gc := jwt.NewGenericClaims(signerPub)
	gc.Data["accounts"] = []string{account}
	tok, err := gc.Encode(s.signer)
	if err != nil {
		return fmt.Errorf("sign delete request of account %s: %w", app, err)
	}
	err = s.request("delete account "+app, subjectClaimsDelete, []byte(tok))
	if err != nil && strings.Contains(err.Error(), "delete must be enabled") {
		return nil
	}
	return err
}

// subjectCounts reads the number of messages on every subject of the
// stream in one request.
func subjectCounts(ctx context.Context, st jetstream.Stream) (map[string]uint64, error) {
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(">"))
	if err != nil {
		return nil, wrapJS("read subjects of stream "+st.CachedInfo().Config.Name, err)
	}
	return info.State.Subjects, nil
}

// QueueStats reads every queue's messages (on its subject: waiting and
// unacknowledged, since a work-queue stream removes a message when it is
// acked), consumers (the pull requests waiting on its durable consumer:
// each running consumer of the kit keeps one open) and dead letters (on its
// dead-letter subject). It makes two requests per app: the stream's
// subjects and the list of its consumers.
func (n *NATS) QueueStats(ctx context.Context, sys System, t broker.Topology, accountSeed string) ([]broker.QueueStat, error) {
	acct, _, err := accountKey(accountSeed)
	if err != nil {
		return nil, fmt.Errorf("queue stats of %s: %w", t.App, err)
	}
	s, done, err := n.open(ctx, sys)
	if err != nil {
		return nil, err
	}
	defer done()
	js, closeJS, err := s.jetStream(t.App, acct)
	if err != nil {
		return nil, err
	}
	defer closeJS()
	stream := contract.StreamName(t.App)
	counts := map[string]uint64{}
	consumers := map[string]*jetstream.ConsumerInfo{}
	st, err := js.Stream(s.ctx, stream)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
	case err != nil:
		return nil, wrapJS("read stream "+stream, err)
	default:
		if counts, err = subjectCounts(s.ctx, st); err != nil {
			return nil, err
		}
		list := st.ListConsumers(s.ctx)
		for ci := range list.Info() {
			consumers[ci.Name] = ci
		}
		if err := list.Err(); err != nil {
			return nil, wrapJS("list consumers of stream "+stream, err)
		}
	}
	queues := slices.Clone(t.Queues)
	slices.SortFunc(queues, func(a, b broker.QueueSpec) int { return strings.Compare(a.Name, b.Name) })
	stats := make([]broker.QueueStat, 0, len(queues))
	for _, q := range queues {
		p := contract.QueueName(t.App, q.Name)
		stat := broker.QueueStat{
			Queue:       q.Name,
			Name:        p,
			Messages:    int(counts[contract.Subject(p)]),
			DeadLetters: int(counts[contract.DeadLetterSubject(p)]),
		}
		if ci, ok := consumers[contract.ConsumerName(p)]; ok {
			stat.Exists = true
			stat.Consumers = ci.NumWaiting
		}
		stats = append(stats, stat)
	}
	return stats, nil
}
