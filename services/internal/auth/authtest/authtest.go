// Package authtest makes signing keys, tokens and a JWKS endpoint for the
// tests of the services that issue or verify sign-in tokens.
package authtest

import (
	"context"
	"crypto/ed25519"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/courier-dev/courier/services/internal/auth"
)

// KeyPEM returns a new Ed25519 private key in PKCS #8 PEM, as
// TOKEN_PRIVATE_KEY holds it.
func KeyPEM(t testing.TB) []byte {
	t.Helper()
	pemBytes, err := auth.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return pemBytes
}

// Key returns the private key of KeyPEM's PEM.
func Key(t testing.TB, pemBytes []byte) ed25519.PrivateKey {
	t.Helper()
	k, err := auth.ParsePrivateKey(pemBytes)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// Tokens signs with a new key unless key is given, tokens valid for an hour.
func Tokens(t testing.TB, key ed25519.PrivateKey, opts ...auth.Option) *auth.Tokens {
	t.Helper()
	if key == nil {
		key = Key(t, KeyPEM(t))
	}
	tk, err := auth.New(key, time.Hour, nil, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return tk
}

// MustKey returns a new private key, for package-level test variables,
// where there is no testing.TB: it panics on error.
func MustKey() ed25519.PrivateKey {
	pemBytes, err := auth.GenerateKey()
	if err != nil {
		panic(err)
	}
	key, err := auth.ParsePrivateKey(pemBytes)
	if err != nil {
		panic(err)
	}
	return key
}

// MustTokens is Tokens for package-level test variables: it signs with key
// (a new one when nil) and panics on error.
func MustTokens(key ed25519.PrivateKey) *auth.Tokens {
	if key == nil {
		key = MustKey()
	}
	tk, err := auth.New(key, time.Hour, nil)
	if err != nil {
		panic(err)
	}
	return tk
}

// Token issues a token for userID.
func Token(t testing.TB, tokens *auth.Tokens, userID int64) string {
	t.Helper()
	s, _, err := tokens.Issue(userID)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// ServeJWKS serves tokens' public keys at auth.JWKSPath, as users does,
// and returns a Verifier that fetches them, as gateway and posts do.
func ServeJWKS(t testing.TB, tokens *auth.Tokens) (*httptest.Server, *auth.Verifier) {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != auth.JWKSPath {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/jwk-set+json")
		_, _ = w.Write(tokens.JWKS())
	}))
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	v, err := auth.NewRemoteVerifier(ctx, srv.URL+auth.JWKSPath)
	if err != nil {
		t.Fatal(err)
	}
	return srv, v
}
