package main

import (
	"log/slog"
	"net/http"

	"github.com/courier-dev/courier/services/kit"
)

// newRouter returns the posts API's handler, every route in one place, from
// its dependencies; Run serves it inside the kit's middleware (request id,
// trace, logging, metrics, recovery, body limit and deadline). Every write
// route requires a sign-in token that posts verifies itself.
func newRouter(posts *store, users userDirectory, tokens tokenVerifier, outbox notifier, log *slog.Logger) http.Handler {
	e := kit.NewRouter()
	p := &postsHandler{posts: posts, log: log}
	cm := &commentsHandler{posts: posts, users: users, outbox: outbox, log: log,
		perAccount: kit.NewLimiter(commentsPerAccountEvery, commentsPerAccountBurst)}
	signedIn := requireUser(tokens)

	e.GET("/api/posts", p.list)
	e.POST("/api/posts", signedIn, p.create)
	e.GET("/api/posts/:id", p.get)
	e.PUT("/api/posts/:id", signedIn, p.update)
	e.DELETE("/api/posts/:id", signedIn, p.delete)
	e.GET("/api/posts/:id/comments", cm.list)
	e.POST("/api/posts/:id/comments", signedIn, cm.create)
	return e
}
