package main

import (
	"log/slog"
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/courier-dev/courier/services/kit"
)

// newRouter registers every route of the posts API on e, the kit's engine
// (which carries the request id, logging, metrics, recovery, body limit and
// deadline middleware), and returns it as the API's handler. Every write
// route requires a sign-in token that posts verifies itself.
func newRouter(e *gin.Engine, posts *store, users userDirectory, tokens tokenVerifier, outbox notifier, log *slog.Logger) http.Handler {
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
