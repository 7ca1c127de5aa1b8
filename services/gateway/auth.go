package main

import (
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/courier-dev/courier/services/internal/auth"
	"github.com/courier-dev/courier/services/kit"
)

// tokenVerifier checks a sign-in token and returns its user id.
type tokenVerifier interface {
	Verify(token string) (int64, error)
}

// authenticate verifies the bearer token on every write (any method but
// GET, HEAD and OPTIONS) unless the route is in public, and answers 401
// without a valid one. The policy is one rule over all routes rather than a
// flag per route, so a new write route is protected by default. The token
// itself travels on to the service, which verifies it again: the gateway
// turns bad requests away early, it does not vouch for anyone.
func authenticate(tokens tokenVerifier, public map[string]bool) gin.HandlerFunc {
	return func(c *gin.Context) {
		switch c.Request.Method {
		case http.MethodGet, http.MethodHead, http.MethodOptions:
			c.Next()
			return
		}
		if public[c.Request.Method+" "+c.FullPath()] {
			c.Next()
			return
		}
		token := auth.BearerToken(c.GetHeader("Authorization"))
		if token == "" {
			c.Header("WWW-Authenticate", `Bearer realm="courier"`)
			kit.WriteError(c, http.StatusUnauthorized, "sign-in required: send Authorization: Bearer <token>")
			return
		}
		if _, err := tokens.Verify(token); err != nil {
			_ = c.Error(err)
			c.Header("WWW-Authenticate", `Bearer realm="courier", error="invalid_token"`)
			kit.WriteError(c, http.StatusUnauthorized, "invalid or expired token")
			return
		}
		c.Next()
	}
}
