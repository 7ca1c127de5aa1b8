// Package auth issues and verifies the blog's sign-in tokens.
//
// Tokens are JWTs signed with Ed25519 (EdDSA). Only users holds a private
// key and signs; every other service verifies with users' public keys,
// which users publishes as a JSON Web Key Set (JWKSPath) and the others
// fetch and cache (NewRemoteVerifier). So no service but users can mint a
// token, and no service trusts an identity it did not verify itself: the
// gateway forwards the caller's bearer token and posts checks it again.
//
// Every token names its key ("kid", the key's RFC 7638 thumbprint), so keys
// rotate without downtime: users publishes its previous public keys
// (TOKEN_PREVIOUS_PUBLIC_KEYS) next to the current one until the tokens they
// signed have expired.
package auth

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/time/rate"
)

// JWKSPath is where users serves its public keys.
const JWKSPath = "/.well-known/jwks.json"

// HeaderUserID is the identity header an earlier design trusted from the
// gateway. Nothing trusts it now; the gateway strips it at the edge so no
// service behind it is ever tempted to.
const HeaderUserID = "X-User-ID"

// Issuer is the "iss" claim of every token; verification requires it, so a
// token signed with the same key for another purpose is refused.
const Issuer = "courier-users"

// ErrInvalidToken is wrapped by every verification failure.
var ErrInvalidToken = errors.New("invalid token")

// Verifier verifies EdDSA JWTs whose subject is a user id, with keys chosen
// by the token's kid.
type Verifier struct {
	keys jwt.Keyfunc
	now  func() time.Time
}

// Tokens signs tokens with users' private key and verifies them with its
// own public keys.
type Tokens struct {
	Verifier
	key  ed25519.PrivateKey
	kid  string
	ttl  time.Duration
	jwks json.RawMessage
}

// Option tunes a Verifier or Tokens.
type Option func(*Verifier)

// WithClock replaces time.Now, so tests can issue tokens that are already
// expired or not yet valid.
func WithClock(now func() time.Time) Option { return func(v *Verifier) { v.now = now } }

// GenerateKey returns a new Ed25519 private key as PKCS #8 PEM, what
// TOKEN_PRIVATE_KEY holds (`openssl genpkey -algorithm ed25519` writes the
// same, and Helm's genPrivateKey "ed25519" too).
func GenerateKey() ([]byte, error) {
	_, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ParsePrivateKey reads an Ed25519 private key in PKCS #8 PEM.
func ParsePrivateKey(pemBytes []byte) (ed25519.PrivateKey, error) {
	block, _ := pem.Decode(pemBytes)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, errors.New("want a PKCS #8 PEM block (BEGIN PRIVATE KEY)")
	}
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse PKCS #8 key: %w", err)
	}
	priv, ok := key.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("key is %T, want an Ed25519 key", key)
	}
	return priv, nil
}

// ParsePublicKeys reads zero or more Ed25519 public keys in PKIX PEM
// ("BEGIN PUBLIC KEY"), concatenated.
func ParsePublicKeys(pemBytes []byte) ([]ed25519.PublicKey, error) {
	var keys []ed25519.PublicKey
	rest := pemBytes
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "PUBLIC KEY" {
			return nil, fmt.Errorf("PEM block %q, want PUBLIC KEY", block.Type)
		}
		key, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse public key: %w", err)
		}
		pub, ok := key.(ed25519.PublicKey)
		if !ok {
			return nil, fmt.Errorf("public key is %T, want an Ed25519 key", key)
		}
		keys = append(keys, pub)
	}
	if len(strings.TrimSpace(string(rest))) > 0 {
		return nil, errors.New("trailing data that is not PEM")
	}
	return keys, nil
}

// KeyID is pub's RFC 7638 JWK thumbprint, the kid of the tokens it signs.
func KeyID(pub ed25519.PublicKey) string {
	// The thumbprint's input for an OKP key: its required members in
	// lexicographic order, no whitespace.
	canonical := `{"crv":"Ed25519","kty":"OKP","x":"` + base64.RawURLEncoding.EncodeToString(pub) + `"}`
	sum := sha256.Sum256([]byte(canonical))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// New returns Tokens signing with key; issued tokens expire after ttl.
// previous are public keys of earlier private keys, still published and
// accepted until the tokens they signed have expired.
func New(key ed25519.PrivateKey, ttl time.Duration, previous []ed25519.PublicKey, opts ...Option) (*Tokens, error) {
	if ttl <= 0 {
		return nil, fmt.Errorf("token ttl %s: want a positive duration", ttl)
	}
	pub, ok := key.Public().(ed25519.PublicKey)
	if !ok {
		return nil, errors.New("not an Ed25519 key")
	}
	storage := jwkset.NewMemoryStorage()
	for _, k := range append([]ed25519.PublicKey{pub}, previous...) {
		jwk, err := jwkset.NewJWKFromKey(k, jwkset.JWKOptions{Metadata: jwkset.JWKMetadataOptions{
			ALG: jwkset.AlgEdDSA, KID: KeyID(k), USE: jwkset.UseSig,
		}})
		if err != nil {
			return nil, fmt.Errorf("public key as JWK: %w", err)
		}
		if err := storage.KeyWrite(context.Background(), jwk); err != nil {
			return nil, err
		}
	}
	jwks, err := storage.JSONPublic(context.Background())
	if err != nil {
		return nil, fmt.Errorf("JWKS: %w", err)
	}
	kf, err := keyfunc.New(keyfunc.Options{Storage: storage})
	if err != nil {
		return nil, err
	}
	t := &Tokens{Verifier: *newVerifier(kf.Keyfunc, opts), key: key, kid: KeyID(pub), ttl: ttl, jwks: jwks}
	return t, nil
}

// NewRemoteVerifier verifies with the keys published at jwksURL (users'
// JWKSPath), fetched in the background and again, at most every few
// seconds, when a token names a key not seen yet: a rotation reaches the
// verifiers with its first token. Users being down when this starts is not
// an error; tokens fail to verify until its keys have been fetched.
func NewRemoteVerifier(ctx context.Context, jwksURL string, opts ...Option) (*Verifier, error) {
	noFirstErr := true
	kf, err := keyfunc.NewDefaultOverrideCtx(ctx, []string{jwksURL}, keyfunc.Override{
		HTTPTimeout:               5 * time.Second,
		NoErrorReturnFirstHTTPReq: &noFirstErr,
		RefreshInterval:           10 * time.Minute,
		RefreshUnknownKID:         rate.NewLimiter(rate.Every(5*time.Second), 1),
		RateLimitWaitMax:          2 * time.Second,
	})
	if err != nil {
		return nil, fmt.Errorf("token keys from %s: %w", jwksURL, err)
	}
	return newVerifier(kf.Keyfunc, opts), nil
}

func newVerifier(keys jwt.Keyfunc, opts []Option) *Verifier {
	v := &Verifier{keys: keys, now: time.Now}
	for _, o := range opts {
		o(v)
	}
	return v
}

// JWKS is the JSON Web Key Set users serves at JWKSPath: the current and
// previous public keys.
func (t *Tokens) JWKS() json.RawMessage { return t.jwks }

// Issue returns a signed token for userID and when it expires.
func (t *Tokens) Issue(userID int64) (string, time.Time, error) {
	now := t.now()
	exp := now.Add(t.ttl)
	claims := jwt.RegisteredClaims{
		Issuer:    Issuer,
		Subject:   strconv.FormatInt(userID, 10),
		IssuedAt:  jwt.NewNumericDate(now),
		NotBefore: jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(exp),
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodEdDSA, claims)
	tok.Header["kid"] = t.kid
	signed, err := tok.SignedString(crypto.Signer(t.key))
	if err != nil {
		return "", time.Time{}, fmt.Errorf("sign token: %w", err)
	}
	return signed, exp, nil
}

// Verify checks the token's signature, algorithm, key id, issuer and
// validity window and returns the user id it was issued for.
func (v *Verifier) Verify(token string) (int64, error) {
	var claims jwt.RegisteredClaims
	_, err := jwt.ParseWithClaims(token, &claims, v.keys,
		// Pinning the algorithm stops "alg: none" and key-confusion tokens.
		jwt.WithValidMethods([]string{jwt.SigningMethodEdDSA.Alg()}),
		jwt.WithIssuer(Issuer),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithTimeFunc(v.now),
	)
	if err != nil {
		return 0, fmt.Errorf("%w: %w", ErrInvalidToken, err)
	}
	id, err := ParseUserID(claims.Subject)
	if err != nil {
		return 0, fmt.Errorf("%w: subject: %w", ErrInvalidToken, err)
	}
	return id, nil
}

// BearerToken returns the token of an "Authorization: Bearer <token>"
// header value, or "".
func BearerToken(header string) string {
	scheme, token, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(token)
}

// ParseUserID parses a user id as carried in a token subject or a path.
func ParseUserID(s string) (int64, error) {
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || id <= 0 {
		return 0, fmt.Errorf("user id %q: want a positive integer", s)
	}
	return id, nil
}
