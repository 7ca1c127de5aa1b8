// Package auth issues and verifies the blog's sign-in tokens and names the
// header the gateway uses to pass the verified caller downstream. users signs
// tokens, gateway verifies them; both read the same key, so the token format
// lives here once.
package auth

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// HeaderUserID carries the verified caller's user id from the gateway to the
// services behind it. The gateway strips any incoming value and sets it only
// from a valid token, so services trust it because only the gateway is
// reachable from outside.
const HeaderUserID = "X-User-ID"

// Issuer is the "iss" claim of every token; verification requires it, so a
// token signed with the same key for another purpose is refused.
const Issuer = "courier-users"

// MinKeyLength is the shortest signing key accepted: HS256 wants at least as
// many key bytes as hash bytes (RFC 7518, section 3.2).
const MinKeyLength = 32

// ErrInvalidToken is wrapped by every verification failure.
var ErrInvalidToken = errors.New("invalid token")

// Verifier verifies HS256 JWTs whose subject is a user id. The gateway
// needs only this half.
type Verifier struct {
	key []byte
	now func() time.Time
}

// Tokens signs and verifies tokens; the users service issues them.
type Tokens struct {
	Verifier
	ttl time.Duration
}

// Option tunes a Verifier or Tokens.
type Option func(*Verifier)

// WithClock replaces time.Now, so tests can issue tokens that are already
// expired or not yet valid.
func WithClock(now func() time.Time) Option { return func(v *Verifier) { v.now = now } }

// NewVerifier returns a Verifier checking signatures with key.
func NewVerifier(key []byte, opts ...Option) (*Verifier, error) {
	if len(key) < MinKeyLength {
		return nil, fmt.Errorf("token signing key is %d bytes: want at least %d", len(key), MinKeyLength)
	}
	v := &Verifier{key: append([]byte(nil), key...), now: time.Now}
	for _, o := range opts {
		o(v)
	}
	return v, nil
}

// New returns Tokens signing with key; issued tokens expire after ttl.
func New(key []byte, ttl time.Duration, opts ...Option) (*Tokens, error) {
	if ttl <= 0 {
		return nil, fmt.Errorf("token ttl %s: want a positive duration", ttl)
	}
	v, err := NewVerifier(key, opts...)
	if err != nil {
		return nil, err
	}
	return &Tokens{Verifier: *v, ttl: ttl}, nil
}

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
	signed, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(t.key)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("sign token: %w", err)
	}
	return signed, exp, nil
}

// Verify checks the token's signature, algorithm, issuer and validity window
// and returns the user id it was issued for.
func (v *Verifier) Verify(token string) (int64, error) {
	var claims jwt.RegisteredClaims
	_, err := jwt.ParseWithClaims(token, &claims, func(*jwt.Token) (any, error) { return v.key, nil },
		// Pinning the algorithm stops "alg: none" and key-confusion tokens.
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
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

// ParseUserID parses a user id as carried in a token subject or HeaderUserID.
func ParseUserID(s string) (int64, error) {
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || id <= 0 {
		return 0, fmt.Errorf("user id %q: want a positive integer", s)
	}
	return id, nil
}
