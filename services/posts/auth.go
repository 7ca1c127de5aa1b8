package main

import (
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/courier-dev/courier/services/internal/auth"
	"github.com/courier-dev/courier/services/kit"
)

// callerKey keys the signed-in user's id in the gin context.
const callerKey = "posts.caller"

// requireUser answers 401 unless the request carries the user id the
// gateway sets from a verified token (auth.HeaderUserID). posts is only
// reachable through the gateway, which strips any client-supplied value.
func requireUser() gin.HandlerFunc {
	return func(c *gin.Context) {
		id, err := auth.ParseUserID(c.GetHeader(auth.HeaderUserID))
		if err != nil {
			kit.WriteError(c, http.StatusUnauthorized, "sign-in required")
			return
		}
		c.Set(callerKey, id)
		c.Next()
	}
}

// caller is the id requireUser stored; only call it behind requireUser.
func caller(c *gin.Context) int64 { return c.MustGet(callerKey).(int64) }
