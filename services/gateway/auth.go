package main

import (
	"context"
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/courier-dev/courier/services/internal/auth"
	"github.com/courier-dev/courier/services/kit"
)

// callerKey keys the verified user id in the request's context, where the
// proxy's Rewrite finds it.
type callerKey struct{}

// tokenVerifier checks a sign-in token and returns its user id.
type tokenVerifier interface {
	Verify(token string) (int64, error)
}

// authenticate verifies the bearer token on every write (any method but
// GET, HEAD and OPTIONS) unless the route is in public, and answers 401
// without a valid one. The policy is one rule over all routes rather than a
// flag per route, so a new write route is protected by default.
func authenticate(tokens tokenVerifier, public map[string]bool) gin.HandlerFunc {
	return func(c *gin.Context) {
		// Never trust a client's claim to be someone.
		c.Request.Header.Del(auth.HeaderUserID)
		switch c.Request.Method {
		case http.MethodGet, http.MethodHead, http.MethodOptions:
			c.Next()
			return
		}
		if public[c.Request.Method+" "+c.FullPath()] {
			c.Next()
			return
		}
		token, ok := bearerToken(c.GetHeader("Authorization"))
		if !ok {
			c.Header("WWW-Authenticate", `Bearer realm="courier"`)
			kit.WriteError(c, http.StatusUnauthorized, "sign-in required: send Authorization: Bearer <token>")
			return
		}
		id, err := tokens.Verify(token)
		if err != nil {
			_ = c.Error(err)
			c.Header("WWW-Authenticate", `Bearer realm="courier", error="invalid_token"`)
			kit.WriteError(c, http.StatusUnauthorized, "invalid or expired token")
			return
		}
		c.Request = c.Request.WithContext(context.WithValue(c.Request.Context(), callerKey{}, id))
		c.Next()
	}
}

// bearerToken extracts the token of an "Authorization: Bearer <token>"
// header; the scheme is case-insensitive (RFC 9110, section 11.1).
func bearerToken(header string) (string, bool) {
	scheme, token, ok := strings.Cut(strings.TrimSpace(header), " ")
	token = strings.TrimSpace(token)
	if !ok || !strings.EqualFold(scheme, "Bearer") || token == "" {
		return "", false
	}
	return token, true
}
