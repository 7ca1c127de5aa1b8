package kit

import (
	"context"
	"errors"
	"net/http"
	"sync"

	"github.com/gin-gonic/gin"
)

var ginModeOnce sync.Once

// NewRouter returns a Gin engine for a service's routes, set up the way
// the kit serves it: JSON 404 and 405 answers, no trusted proxies (client
// IPs come from the connection, never from a header a client can forge;
// the gateway sets its own), handlers may pass *gin.Context as a
// context.Context and get the request's deadline and trace, and the route
// template of each request is recorded for the kit's metrics, access line
// and span name. A service's router constructor starts from it, registers
// every route and returns it; Run gets it in App.Handler:
//
//	func newRouter(users *store, log *slog.Logger) http.Handler {
//		h := &usersHandler{users: users, log: log}
//		r := kit.NewRouter()
//		r.POST("/api/users", h.register)
//		r.GET("/api/users/:id", h.get)
//		return r
//	}
func NewRouter() *gin.Engine {
	// Gin's mode is process-wide; release mode drops its debug route dump.
	ginModeOnce.Do(func() { gin.SetMode(gin.ReleaseMode) })
	useJSONNames()
	e := gin.New()
	e.ContextWithFallback = true
	_ = e.SetTrustedProxies(nil) // nil is always accepted
	e.HandleMethodNotAllowed = true
	e.Use(recordRoute)
	e.NoRoute(func(c *gin.Context) { WriteError(c, http.StatusNotFound, "not found") })
	e.NoMethod(func(c *gin.Context) { WriteError(c, http.StatusMethodNotAllowed, "method not allowed") })
	return e
}

// recordRoute puts the matched route template where the kit's middleware
// reads it, http.Request.Pattern (as http.ServeMux does; otelhttp reads it
// there too), and hands the errors the handlers recorded (WriteInternalError,
// BindJSON) to the access line. A handler that ran out of time without
// answering gets the kit's 503 here: past this point Gin writes a 200 for a
// handler that wrote nothing.
func recordRoute(c *gin.Context) {
	c.Request.Pattern = c.FullPath()
	c.Next()
	if !c.Writer.Written() && errors.Is(c.Request.Context().Err(), context.DeadlineExceeded) {
		WriteError(c, http.StatusServiceUnavailable, "request timed out")
	}
	if len(c.Errors) > 0 {
		if rec := recorderOf(c.Writer); rec != nil {
			rec.err = c.Errors.String()
		}
	}
}
