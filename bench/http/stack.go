// Package httpbench compares the kit's whole HTTP stack with a bare net/http
// handler serving the same route and payload. run.sh runs it; RESULTS.md
// holds the last run.
package httpbench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/courier-dev/courier/services/kit"
)

// Route is the route both stacks serve, in Gin syntax.
const Route = "/api/users/:id"

// Path is the path the benchmarks request.
const Path = "/api/users/42"

// User is the payload both stacks answer with.
type User struct {
	ID    string `json:"id"`
	Email string `json:"email"`
}

// Bare is the baseline: the standard library's mux and JSON encoder, nothing
// else.
func Bare() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/users/{id}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		_ = json.NewEncoder(w).Encode(User{ID: r.PathValue("id"), Email: "ada@example.com"})
	})
	return mux
}

// Gin is Gin alone: gin.New with the route and no middleware, the floor
// under the kit, which is built on Gin. It is shown to split the kit's
// overhead into Gin's and the kit's own.
func Gin() http.Handler {
	gin.SetMode(gin.ReleaseMode)
	e := gin.New()
	e.GET(Route, func(c *gin.Context) {
		c.JSON(http.StatusOK, User{ID: c.Param("id"), Email: "ada@example.com"})
	})
	return e
}

// BareServer wraps Bare in an http.Server with the same timeouts the kit
// sets, so the loopback comparison differs only in the handler stack.
func BareServer() *http.Server {
	return &http.Server{
		Handler:           Bare(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      15 * time.Second,
		IdleTimeout:       120 * time.Second,
	}
}

// Kit builds a kit Service with its default configuration, JSON logs at
// logLevel written to logs, and the service's router (kit.NewRouter with
// the route), which Run serves inside the kit's middleware (for
// in-process use, svc.APIHandler(router)). The request id, tracing, access
// log, metrics, recovery, body limit and deadline middleware all run, as in
// production.
func Kit(logs io.Writer, logLevel string, api, admin net.Listener) (*kit.Service, http.Handler, error) {
	getenv := func(k string) string {
		if k == "LOG_LEVEL" {
			return logLevel
		}
		return ""
	}
	cfg, err := kit.LoadConfig(getenv, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("load config: %w", err)
	}
	svc, err := kit.New(context.Background(), cfg, getenv, kit.WithLogOutput(logs), kit.WithListeners(api, admin))
	if err != nil {
		return nil, nil, fmt.Errorf("build service: %w", err)
	}
	router := kit.NewRouter()
	router.GET(Route, func(c *gin.Context) {
		c.JSON(http.StatusOK, User{ID: c.Param("id"), Email: "ada@example.com"})
	})
	return svc, router, nil
}
