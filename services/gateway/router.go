package main

import (
	"fmt"
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

// newRouter returns the gateway's handler: the public API, every route
// naming the service it goes to; paths are forwarded unchanged. Paths not
// listed here answer 404 at the edge, so nothing internal is reachable by
// accident. trustedProxies (TRUSTED_PROXIES) are the addresses whose
// X-Forwarded-For names the client, for the per-client limits.
func newRouter(trustedProxies []string, users, posts *upstream, tokens tokenVerifier) (http.Handler, error) {
	e := kit.NewRouter()
	if len(trustedProxies) > 0 {
		if err := e.SetTrustedProxies(trustedProxies); err != nil {
			return nil, fmt.Errorf("config: invalid TRUSTED_PROXIES: %w", err)
		}
	}
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
	return e, nil
}
