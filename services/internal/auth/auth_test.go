package auth_test

import (
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/courier-dev/courier/services/internal/auth"
	"github.com/courier-dev/courier/services/internal/auth/authtest"
)

func TestIssueVerify(t *testing.T) {
	tokens := authtest.Tokens(t, nil)
	token, exp, err := tokens.Issue(42)
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Until(exp); d < 59*time.Minute || d > time.Hour {
		t.Errorf("expires in %s, want about an hour", d)
	}
	if id, err := tokens.Verify(token); err != nil || id != 42 {
		t.Fatalf("Verify = %d, %v; want 42", id, err)
	}
	// The gateway and posts verify with the public keys users publishes.
	_, remote := authtest.ServeJWKS(t, tokens)
	if id, err := remote.Verify(token); err != nil || id != 42 {
		t.Fatalf("remote Verify = %d, %v; want 42", id, err)
	}
}

// TestRotation: a token signed with the previous key verifies while users
// publishes that key next to the current one, and not once it stops.
func TestRotation(t *testing.T) {
	oldKey := authtest.Key(t, authtest.KeyPEM(t))
	newKey := authtest.Key(t, authtest.KeyPEM(t))
	oldToken := authtest.Token(t, authtest.Tokens(t, oldKey), 5)

	during, err := auth.New(newKey, time.Hour, []ed25519.PublicKey{oldKey.Public().(ed25519.PublicKey)})
	if err != nil {
		t.Fatal(err)
	}
	_, remote := authtest.ServeJWKS(t, during)
	if id, err := remote.Verify(oldToken); err != nil || id != 5 {
		t.Fatalf("old token during the rotation = %d, %v; want 5", id, err)
	}
	if id, err := remote.Verify(authtest.Token(t, during, 6)); err != nil || id != 6 {
		t.Fatalf("new token = %d, %v; want 6", id, err)
	}
	after := authtest.Tokens(t, newKey)
	if _, err := after.Verify(oldToken); !errors.Is(err, auth.ErrInvalidToken) {
		t.Fatalf("old token after the rotation: %v, want ErrInvalidToken", err)
	}
}

func TestVerifyRejects(t *testing.T) {
	start := time.Now()
	key := authtest.Key(t, authtest.KeyPEM(t))
	tokens := authtest.Tokens(t, key)
	past := authtest.Tokens(t, key, auth.WithClock(func() time.Time { return start.Add(-2 * time.Hour) }))
	future := authtest.Tokens(t, key, auth.WithClock(func() time.Time { return start.Add(2 * time.Hour) }))
	otherKey := authtest.Tokens(t, nil)
	kid := auth.KeyID(key.Public().(ed25519.PublicKey))

	sign := func(m jwt.SigningMethod, k any, c jwt.Claims) string {
		tok := jwt.NewWithClaims(m, c)
		tok.Header["kid"] = kid
		s, err := tok.SignedString(k)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	valid := func(mut func(*jwt.RegisteredClaims)) jwt.RegisteredClaims {
		c := jwt.RegisteredClaims{
			Issuer: auth.Issuer, Subject: "7",
			IssuedAt:  jwt.NewNumericDate(start),
			ExpiresAt: jwt.NewNumericDate(start.Add(time.Minute)),
		}
		mut(&c)
		return c
	}
	good := authtest.Token(t, tokens, 7)
	pubDER, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name  string
		token string
	}{
		{"empty", ""},
		{"garbage", "not.a.token"},
		{"expired", authtest.Token(t, past, 7)},
		{"issued in the future", authtest.Token(t, future, 7)},
		{"signed with another key", authtest.Token(t, otherKey, 7)},
		{"tampered signature", good[:len(good)-2] + "xx"},
		{"alg none", sign(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, valid(func(*jwt.RegisteredClaims) {}))},
		// Key confusion: the public key (which anyone may fetch) used as an
		// HMAC secret.
		{"HS256 with the public key as secret", sign(jwt.SigningMethodHS256, pubDER, valid(func(*jwt.RegisteredClaims) {}))},
		{"wrong issuer", sign(jwt.SigningMethodEdDSA, key, valid(func(c *jwt.RegisteredClaims) { c.Issuer = "someone" }))},
		{"no expiry", sign(jwt.SigningMethodEdDSA, key, valid(func(c *jwt.RegisteredClaims) { c.ExpiresAt = nil }))},
		{"non-numeric subject", sign(jwt.SigningMethodEdDSA, key, valid(func(c *jwt.RegisteredClaims) { c.Subject = "root" }))},
		{"zero subject", sign(jwt.SigningMethodEdDSA, key, valid(func(c *jwt.RegisteredClaims) { c.Subject = "0" }))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := tokens.Verify(tt.token)
			if !errors.Is(err, auth.ErrInvalidToken) {
				t.Fatalf("Verify = %d, %v; want ErrInvalidToken", id, err)
			}
		})
	}
	// The same token is fine when it is well formed: the table's failures
	// come from what each row changed.
	if _, err := tokens.Verify(sign(jwt.SigningMethodEdDSA, key, valid(func(*jwt.RegisteredClaims) {}))); err != nil {
		t.Fatalf("a well-formed token: %v", err)
	}
}

func TestKeyParsing(t *testing.T) {
	if _, err := auth.ParsePrivateKey([]byte("not a key")); err == nil {
		t.Error("garbage accepted as a private key")
	}
	if _, err := auth.New(authtest.Key(t, authtest.KeyPEM(t)), 0, nil); err == nil {
		t.Error("a zero ttl was accepted")
	}
	key := authtest.Key(t, authtest.KeyPEM(t))
	der, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	block := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	keys, err := auth.ParsePublicKeys(append(append([]byte{}, block...), block...))
	if err != nil || len(keys) != 2 {
		t.Fatalf("ParsePublicKeys of two blocks = %d keys, %v", len(keys), err)
	}
	if _, err := auth.ParsePublicKeys(append(block, "junk"...)); err == nil {
		t.Error("trailing junk accepted")
	}
}

func TestParseUserID(t *testing.T) {
	for in, want := range map[string]int64{"1": 1, "9007199254740993": 9007199254740993} {
		if got, err := auth.ParseUserID(in); err != nil || got != want {
			t.Errorf("ParseUserID(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "0", "-3", "1.5", "abc", " 1"} {
		if _, err := auth.ParseUserID(in); err == nil {
			t.Errorf("ParseUserID(%q) succeeded", in)
		}
	}
}
