package main

import (
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/courier-dev/courier/services/internal/auth"
	"github.com/courier-dev/courier/services/kit"
)

// Keys of what requireUser stores in the gin context.
const (
	callerKey = "posts.caller"
	tokenKey  = "posts.token"
)

// tokenVerifier checks a sign-in token and returns its user id.
type tokenVerifier interface {
	Verify(token string) (int64, error)
}

// requireUser answers 401 unless the request carries a sign-in token that
// verifies with users' public keys. posts trusts no identity header: the
// gateway forwards the caller's token, and any pod that reaches posts
// directly needs a valid token too.
func requireUser(tokens tokenVerifier) gin.HandlerFunc {
	return func(c *gin.Context) {
		token := auth.BearerToken(c.GetHeader("Authorization"))
		id, err := tokens.Verify(token)
		if err != nil {
			_ = c.Error(err)
			c.Header("WWW-Authenticate", `Bearer realm="courier"`)
			kit.WriteError(c, http.StatusUnauthorized, "sign-in required")
			return
		}
		c.Set(callerKey, id)
		c.Set(tokenKey, token)
		c.Next()
	}
}

// caller is the id requireUser stored; only call it behind requireUser.
func caller(c *gin.Context) int64 { return c.MustGet(callerKey).(int64) }

// callerToken is the verified token requireUser stored, forwarded to users
// when posts looks a user up on the caller's behalf.
func callerToken(c *gin.Context) string { return c.MustGet(tokenKey).(string) }
