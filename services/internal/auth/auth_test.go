package auth_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/courier-dev/courier/services/internal/auth"
)

var key = []byte("0123456789abcdef0123456789abcdef")

func TestIssueVerify(t *testing.T) {
	tokens, err := auth.New(key, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	token, exp, err := tokens.Issue(42)
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Until(exp); d < 59*time.Minute || d > time.Hour {
		t.Errorf("expires in %s, want about an hour", d)
	}
	id, err := tokens.Verify(token)
	if err != nil || id != 42 {
		t.Fatalf("Verify = %d, %v; want 42", id, err)
	}
	// The gateway verifies with a Verifier built from the same key.
	verifier, err := auth.NewVerifier(key)
	if err != nil {
		t.Fatal(err)
	}
	if id, err := verifier.Verify(token); err != nil || id != 42 {
		t.Fatalf("Verifier.Verify = %d, %v; want 42", id, err)
	}
}

func TestVerifyRejects(t *testing.T) {
	start := time.Now()
	tokens, err := auth.New(key, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	past, _ := auth.New(key, time.Minute, auth.WithClock(func() time.Time { return start.Add(-2 * time.Minute) }))
	future, _ := auth.New(key, time.Minute, auth.WithClock(func() time.Time { return start.Add(time.Hour) }))
	otherKey, _ := auth.New([]byte(strings.Repeat("k", 32)), time.Minute)

	issue := func(tk *auth.Tokens) string {
		s, _, err := tk.Issue(7)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	sign := func(m jwt.SigningMethod, k any, c jwt.Claims) string {
		s, err := jwt.NewWithClaims(m, c).SignedString(k)
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
	good := issue(tokens)

	tests := []struct {
		name  string
		token string
	}{
		{"empty", ""},
		{"garbage", "not.a.token"},
		{"expired", issue(past)},
		{"issued in the future", issue(future)},
		{"forged with another key", issue(otherKey)},
		{"tampered signature", good[:len(good)-2] + "xx"},
		{"alg none", sign(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, valid(func(*jwt.RegisteredClaims) {}))},
		{"HS512 with the right key", sign(jwt.SigningMethodHS512, key, valid(func(*jwt.RegisteredClaims) {}))},
		{"wrong issuer", sign(jwt.SigningMethodHS256, key, valid(func(c *jwt.RegisteredClaims) { c.Issuer = "someone" }))},
		{"no expiry", sign(jwt.SigningMethodHS256, key, valid(func(c *jwt.RegisteredClaims) { c.ExpiresAt = nil }))},
		{"non-numeric subject", sign(jwt.SigningMethodHS256, key, valid(func(c *jwt.RegisteredClaims) { c.Subject = "root" }))},
		{"zero subject", sign(jwt.SigningMethodHS256, key, valid(func(c *jwt.RegisteredClaims) { c.Subject = "0" }))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := tokens.Verify(tt.token)
			if !errors.Is(err, auth.ErrInvalidToken) {
				t.Fatalf("Verify = %d, %v; want ErrInvalidToken", id, err)
			}
		})
	}
}

func TestNewRejectsWeakSettings(t *testing.T) {
	if _, err := auth.New([]byte("short"), time.Hour); err == nil {
		t.Error("a 5-byte key was accepted")
	}
	if _, err := auth.NewVerifier([]byte("short")); err == nil {
		t.Error("a 5-byte key was accepted by NewVerifier")
	}
	if _, err := auth.New(key, 0); err == nil {
		t.Error("a zero ttl was accepted")
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
