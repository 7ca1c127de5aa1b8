package main

import (
	"log/slog"
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/courier-dev/courier/services/internal/auth"
	"github.com/courier-dev/courier/services/kit"
)

// newRouter returns the users API's handler, every route in one place, from
// its dependencies; Run serves it inside the kit's middleware (request id,
// trace, logging, metrics, recovery, body limit and deadline).
func newRouter(users *store, passwords *bcryptHasher, tokens tokenService, outbox notifier, log *slog.Logger) http.Handler {
	e := kit.NewRouter()
	u := &usersHandler{users: users, passwords: passwords, outbox: outbox, tokens: tokens, log: log}
	s := &sessionsHandler{users: users, passwords: passwords, tokens: tokens, log: log,
		perAccount: kit.NewLimiter(signInsPerAccountEvery, signInsPerAccountBurst)}

	e.POST("/api/users", u.register)
	e.GET("/api/users/:id", u.get)
	e.POST("/api/sessions", s.create)
	// Public keys, for the services that verify tokens.
	e.GET(auth.JWKSPath, func(c *gin.Context) { c.Data(http.StatusOK, "application/jwk-set+json", tokens.JWKS()) })
	// For posts, which mails a post's author: never routed by the gateway,
	// and only for a signed-in caller's request (posts forwards its token).
	e.GET("/internal/users/:id", u.getInternal)
	return e
}
