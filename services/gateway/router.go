package main

import (
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/courier-dev/courier/services/kit"
)

// Per-client limits at the edge, where the client's address is known (the
// services behind see only the gateway's): sign-up costs a bcrypt hash and
// a welcome e-mail, sign-in is where passwords are guessed, and each
// comment mails the post's author. Per-account limits sit in users and
// posts.
var (
	signUpsPerClient  = limit{every: time.Minute, burst: 5}
	signInsPerClient  = limit{every: 6 * time.Second, burst: 10}
	commentsPerClient = limit{every: 3 * time.Second, burst: 20}
)

type limit struct {
	every time.Duration
	burst int
}

func (l limit) perClient() gin.HandlerFunc {
	return kit.RateLimit(kit.NewLimiter(l.every, l.burst), func(c *gin.Context) string { return c.ClientIP() })
}

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

	api.POST("/users", signUpsPerClient.perClient(), users.forward)
	api.GET("/users/:id", users.forward)
	api.POST("/sessions", signInsPerClient.perClient(), users.forward)

	api.GET("/posts", posts.forward)
	api.POST("/posts", posts.forward)
	api.GET("/posts/:id", posts.forward)
	api.PUT("/posts/:id", posts.forward)
	api.DELETE("/posts/:id", posts.forward)
	api.GET("/posts/:id/comments", posts.forward)
	api.POST("/posts/:id/comments", commentsPerClient.perClient(), posts.forward)
	return e
}
