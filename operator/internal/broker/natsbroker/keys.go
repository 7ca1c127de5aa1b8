package natsbroker

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"

	"github.com/courier-dev/courier/operator/internal/broker"
)

// System says where a NATS system in operator mode is and how the operator
// administers it. Services never see any of it.
type System struct {
	// URL is the client URL (or comma-separated URLs) the operator dials.
	URL string
	// OperatorSigningKey is the seed ("SO...") of the operator key, or of
	// one of its signing keys, that signs the apps' account JWTs.
	OperatorSigningKey string
	// SystemUserCreds is a credentials file (user JWT and seed) of a user of
	// the system account: the operator pushes and deletes account JWTs on
	// $SYS.REQ.CLAIMS.UPDATE and $SYS.REQ.CLAIMS.DELETE with it.
	SystemUserCreds []byte
}

// Keys of the Secret an external NATS system is described by
// (spec.broker.external.secretRef). ParseExternalSecret reads them.
const (
	// SecretKeyURL holds the client URL: "nats://nats.messaging.svc:4222".
	SecretKeyURL = "url"
	// SecretKeyOperatorSigningKey holds the seed of the operator key or of
	// one of its signing keys (nsc: the operator's signing key, "SO...").
	SecretKeyOperatorSigningKey = "operator-signing-key"
	// SecretKeySystemUserCreds holds a system account user's creds file
	// (nsc: "nsc generate creds -a SYS -n <user>").
	SecretKeySystemUserCreds = "system-user.creds"
)

// ParseExternalSecret reads an external system's Secret; the error names
// every key that is missing or malformed.
func ParseExternalSecret(data map[string][]byte) (System, error) {
	s := System{
		URL:                strings.TrimSpace(string(data[SecretKeyURL])),
		OperatorSigningKey: strings.TrimSpace(string(data[SecretKeyOperatorSigningKey])),
		SystemUserCreds:    data[SecretKeySystemUserCreds],
	}
	return s, s.validate("secret key ")
}

func (s System) validate(prefix string) error {
	var errs []error
	if s.URL == "" {
		errs = append(errs, fmt.Errorf("%s%s: empty", prefix, SecretKeyURL))
	}
	if kp, err := nkeys.FromSeed([]byte(s.OperatorSigningKey)); err != nil {
		errs = append(errs, fmt.Errorf("%s%s: not an nkey seed: %w", prefix, SecretKeyOperatorSigningKey, err))
	} else if p, _ := kp.PublicKey(); !nkeys.IsValidPublicOperatorKey(p) {
		errs = append(errs, fmt.Errorf("%s%s: the seed of %s, which is not an operator key", prefix, SecretKeyOperatorSigningKey, p))
	}
	if _, _, err := parseCreds(s.SystemUserCreds); err != nil {
		errs = append(errs, fmt.Errorf("%s%s: %w", prefix, SecretKeySystemUserCreds, err))
	}
	return errors.Join(errs...)
}

// Managed is what the operator generates once for a managed NATS system and
// keeps in its admin Secret: the operator key, the system account and a
// system user. The server's configuration trusts OperatorJWT and preloads
// SystemAccountJWT (see package resource/nats).
type Managed struct {
	OperatorSeed      string
	OperatorJWT       string
	SystemAccountSeed string
	SystemAccountJWT  string
	SystemUserCreds   []byte
}

// Keys of a managed system's admin Secret.
const (
	SecretKeyOperatorSeed      = "operator-seed"
	SecretKeyOperatorJWT       = "operator.jwt"
	SecretKeySystemAccountSeed = "system-account-seed"
	SecretKeySystemAccountJWT  = "system-account.jwt"
)

// GenerateManaged creates a new operator, system account and system user
// for app's managed NATS. It uses crypto/rand; call it once, when the admin
// Secret does not exist, and keep the result (the server trusts exactly
// this operator).
func GenerateManaged(app string) (Managed, error) {
	op, err := nkeys.CreateOperator()
	if err != nil {
		return Managed{}, fmt.Errorf("create operator key: %w", err)
	}
	sys, err := nkeys.CreateAccount()
	if err != nil {
		return Managed{}, fmt.Errorf("create system account key: %w", err)
	}
	opPub, _ := op.PublicKey()
	sysPub, _ := sys.PublicKey()
	oc := jwt.NewOperatorClaims(opPub)
	oc.Name = "courier-" + app
	oc.SystemAccount = sysPub
	opJWT, err := oc.Encode(op)
	if err != nil {
		return Managed{}, fmt.Errorf("sign operator JWT: %w", err)
	}
	sc := jwt.NewAccountClaims(sysPub)
	sc.Name = "SYS"
	sysJWT, err := sc.Encode(op)
	if err != nil {
		return Managed{}, fmt.Errorf("sign system account JWT: %w", err)
	}
	creds, err := newUserCreds(sys, "courier-operator", 0)
	if err != nil {
		return Managed{}, fmt.Errorf("issue system user: %w", err)
	}
	m := Managed{SystemUserCreds: creds, OperatorJWT: opJWT, SystemAccountJWT: sysJWT}
	opSeed, _ := op.Seed()
	sysSeed, _ := sys.Seed()
	m.OperatorSeed, m.SystemAccountSeed = string(opSeed), string(sysSeed)
	return m, nil
}

// SecretData is the admin Secret's data.
func (m Managed) SecretData() map[string][]byte {
	return map[string][]byte{
		SecretKeyOperatorSeed:      []byte(m.OperatorSeed),
		SecretKeyOperatorJWT:       []byte(m.OperatorJWT),
		SecretKeySystemAccountSeed: []byte(m.SystemAccountSeed),
		SecretKeySystemAccountJWT:  []byte(m.SystemAccountJWT),
		SecretKeySystemUserCreds:   m.SystemUserCreds,
	}
}

// ParseManagedSecret reads a managed system's admin Secret and checks that
// its parts belong together; the error names the offending key.
func ParseManagedSecret(data map[string][]byte) (Managed, error) {
	m := Managed{
		OperatorSeed:      string(data[SecretKeyOperatorSeed]),
		OperatorJWT:       string(data[SecretKeyOperatorJWT]),
		SystemAccountSeed: string(data[SecretKeySystemAccountSeed]),
		SystemAccountJWT:  string(data[SecretKeySystemAccountJWT]),
		SystemUserCreds:   data[SecretKeySystemUserCreds],
	}
	op, err := nkeys.FromSeed([]byte(m.OperatorSeed))
	if err != nil {
		return m, fmt.Errorf("secret key %s: %w", SecretKeyOperatorSeed, err)
	}
	opPub, _ := op.PublicKey()
	if !nkeys.IsValidPublicOperatorKey(opPub) {
		return m, fmt.Errorf("secret key %s: not an operator seed", SecretKeyOperatorSeed)
	}
	oc, err := jwt.DecodeOperatorClaims(m.OperatorJWT)
	if err != nil {
		return m, fmt.Errorf("secret key %s: %w", SecretKeyOperatorJWT, err)
	}
	if oc.Subject != opPub {
		return m, fmt.Errorf("secret key %s: operator %s, but %s holds the seed of %s", SecretKeyOperatorJWT, oc.Subject, SecretKeyOperatorSeed, opPub)
	}
	sys, err := nkeys.FromSeed([]byte(m.SystemAccountSeed))
	if err != nil {
		return m, fmt.Errorf("secret key %s: %w", SecretKeySystemAccountSeed, err)
	}
	sysPub, _ := sys.PublicKey()
	if oc.SystemAccount != sysPub {
		return m, fmt.Errorf("secret key %s: the operator's system account is %q, but %s holds the seed of %s", SecretKeyOperatorJWT, oc.SystemAccount, SecretKeySystemAccountSeed, sysPub)
	}
	sc, err := jwt.DecodeAccountClaims(m.SystemAccountJWT)
	if err != nil {
		return m, fmt.Errorf("secret key %s: %w", SecretKeySystemAccountJWT, err)
	}
	if sc.Subject != sysPub || sc.Issuer != opPub {
		return m, fmt.Errorf("secret key %s: account %s issued by %s, want %s issued by %s", SecretKeySystemAccountJWT, sc.Subject, sc.Issuer, sysPub, opPub)
	}
	uc, _, err := parseCreds(m.SystemUserCreds)
	if err != nil {
		return m, fmt.Errorf("secret key %s: %w", SecretKeySystemUserCreds, err)
	}
	if uc.Issuer != sysPub && uc.IssuerAccount != sysPub {
		return m, fmt.Errorf("secret key %s: a user of account %s, not of the system account %s", SecretKeySystemUserCreds, uc.Issuer, sysPub)
	}
	return m, nil
}

// System is how the operator administers the managed system at url.
func (m Managed) System(url string) System {
	return System{URL: url, OperatorSigningKey: m.OperatorSeed, SystemUserCreds: m.SystemUserCreds}
}

// SystemAccount is the system account's public key, for the server's
// configuration.
func (m Managed) SystemAccount() string {
	sys, err := nkeys.FromSeed([]byte(m.SystemAccountSeed))
	if err != nil {
		return ""
	}
	p, _ := sys.PublicKey()
	return p
}

// AccountSecretKey is the key of an app's account seed in the Secret the
// controller keeps it in.
const AccountSecretKey = "account-seed"

// GenerateAccount returns the seed of a new account key for an app. The
// operator keeps it (it names the app's account on the server, and signs
// the short-lived users the operator administers the account's streams
// with); it uses crypto/rand.
func GenerateAccount() (string, error) {
	kp, err := nkeys.CreateAccount()
	if err != nil {
		return "", fmt.Errorf("create account key: %w", err)
	}
	seed, err := kp.Seed()
	return string(seed), err
}

// accountKey parses an account seed.
func accountKey(seed string) (nkeys.KeyPair, string, error) {
	kp, err := nkeys.FromSeed([]byte(seed))
	if err != nil {
		return nil, "", fmt.Errorf("account seed: %w", err)
	}
	pub, _ := kp.PublicKey()
	if !nkeys.IsValidPublicAccountKey(pub) {
		return nil, "", errors.New("account seed: not the seed of an account key")
	}
	return kp, pub, nil
}

// Credentials are what Declare needs besides the topology: the app's
// account and every service's credentials.
type Credentials struct {
	// AccountSeed is the app's account key (GenerateAccount).
	AccountSeed string
	// Services maps a service name to its creds file (IssueUser); every
	// service that publishes or consumes needs one.
	Services map[string][]byte
}

// IssueUser creates the credentials of service in the app whose account
// key is accountSeed: a new user key and a user JWT signed by a new,
// single-use signing key whose scope Declare then adds to the account JWT
// with the service's permissions. The signing key's seed is discarded: no
// other user is ever signed with it, so replacing the creds (rotation) and
// declaring removes the old key, and with it every user it signed. It uses
// crypto/rand; the controller keeps the result in the connection Secret.
func IssueUser(app, service, accountSeed string) ([]byte, error) {
	_, account, err := accountKey(accountSeed)
	if err != nil {
		return nil, err
	}
	signer, err := nkeys.CreateAccount()
	if err != nil {
		return nil, fmt.Errorf("create signing key: %w", err)
	}
	u, err := nkeys.CreateUser()
	if err != nil {
		return nil, fmt.Errorf("create user key: %w", err)
	}
	upub, _ := u.PublicKey()
	uc := jwt.NewUserClaims(upub)
	uc.Name = broker.UserName(app, service)
	uc.IssuerAccount = account
	uc.SetScoped(true)
	tok, err := uc.Encode(signer)
	if err != nil {
		return nil, fmt.Errorf("sign user JWT of %s: %w", uc.Name, err)
	}
	seed, _ := u.Seed()
	return jwt.FormatUserConfig(tok, seed)
}

// newUserCreds issues a user of the account whose key is acct, signed by
// that key, without permissions; ttl 0 means no expiry.
func newUserCreds(acct nkeys.KeyPair, name string, ttl time.Duration) ([]byte, error) {
	u, err := nkeys.CreateUser()
	if err != nil {
		return nil, err
	}
	upub, _ := u.PublicKey()
	uc := jwt.NewUserClaims(upub)
	uc.Name = name
	if ttl > 0 {
		uc.Expires = time.Now().Add(ttl).Unix()
	}
	tok, err := uc.Encode(acct)
	if err != nil {
		return nil, err
	}
	seed, _ := u.Seed()
	return jwt.FormatUserConfig(tok, seed)
}

// parseCreds reads a creds file: the user's claims and its key pair,
// checked to belong together.
func parseCreds(creds []byte) (*jwt.UserClaims, nkeys.KeyPair, error) {
	if len(creds) == 0 {
		return nil, nil, errors.New("empty")
	}
	tok, err := jwt.ParseDecoratedJWT(creds)
	if err != nil {
		return nil, nil, fmt.Errorf("no user JWT: %w", err)
	}
	uc, err := jwt.DecodeUserClaims(tok)
	if err != nil {
		return nil, nil, fmt.Errorf("user JWT: %w", err)
	}
	kp, err := jwt.ParseDecoratedUserNKey(creds)
	if err != nil {
		return nil, nil, fmt.Errorf("no user seed: %w", err)
	}
	if pub, _ := kp.PublicKey(); pub != uc.Subject {
		return nil, nil, fmt.Errorf("the seed is of user %s, the JWT of user %s", pub, uc.Subject)
	}
	return uc, kp, nil
}
