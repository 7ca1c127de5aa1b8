package main

import (
	"net/http"

	"github.com/gin-gonic/gin"
)

// publicWrites are the write routes anyone may call: signing up and signing
// in. Every other write needs a valid token.
var publicWrites = map[string]bool{
	"POST /api/users":    true,
	"POST /api/sessions": true,
}

// newRouter registers the public API on e, the kit's engine, and returns it
// as the gateway's handler. Each route names the service it goes to; paths
// are forwarded unchanged. Paths not listed here answer 404 at the edge, so
// nothing internal is reachable by accident.
func newRouter(e *gin.Engine, users, posts *upstream, tokens tokenVerifier) http.Handler {
	api := e.Group("/api", authenticate(tokens, publicWrites))

	api.POST("/users", users.forward)
	api.GET("/users/:id", users.forward)
	api.POST("/sessions", users.forward)

	api.GET("/posts", posts.forward)
	api.POST("/posts", posts.forward)
	api.GET("/posts/:id", posts.forward)
	api.PUT("/posts/:id", posts.forward)
	api.DELETE("/posts/:id", posts.forward)
	api.GET("/posts/:id/comments", posts.forward)
	api.POST("/posts/:id/comments", posts.forward)
	return e
}
