// Package kit is the shared service kit: every Courier service is a kit
// Service, so it honours the operator's contract (package contract) without
// boilerplate.
//
// A Service brings a Gin engine with request ids (X-Request-ID), W3C trace
// context, JSON access logs through log/slog (request id, route template,
// status, latency, trace id), panic recovery, a body limit (413) and a
// per-request deadline; an admin listener with /livez, cached /readyz,
// /metrics from a private Prometheus registry and pprof; the broker
// connection and its consumers; and a graceful shutdown within the grace
// period. A service's main only calls run, through Main, which adds the
// signal handling and the exit code:
//
//	func main() { kit.Main(run) }
//
//	func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
//		var own struct {
//			DBPath string `env:"USERS_DB_PATH" envDefault:"users.db"`
//		}
//		// The logical queues this service uses; each maps through QUEUE_<NAME>.
//		cfg, err := kit.LoadConfig(getenv, &own, "emails")
//		if err != nil {
//			return err
//		}
//		svc, err := kit.New(ctx, cfg, kit.WithLogOutput(stdout))
//		if err != nil {
//			return err
//		}
//		db, err := openDB(own.DBPath)
//		if err != nil {
//			return err
//		}
//		svc.AddReadinessCheck("database", db.PingContext)
//		routes(svc.Engine(), &handlers{db: db, jobs: svc.Broker(), log: svc.Logger()})
//		return svc.Run(ctx)
//	}
//
// Handlers bind with BindJSON, which answers
// {"error":"invalid request","fields":{"email":"must be a valid e-mail"}}
// itself, and use the request's context (never the *gin.Context itself: Gin
// recycles it after the handler returns, while a database or broker call may
// still watch it) so log lines carry its ids:
//
//	func (h *handlers) createUser(c *gin.Context) {
//		var req struct {
//			Email string `json:"email" binding:"required,email"`
//		}
//		if !kit.BindJSON(c, &req) {
//			return
//		}
//		ctx := c.Request.Context()
//		if _, err := h.jobs.Publish(ctx, "emails", body); err != nil {
//			kit.WriteInternalError(c, err)
//			return
//		}
//		h.log.InfoContext(ctx, "user created")
//	}
//
// A consumer registers with svc.Consume("emails", handle, opts) before Run;
// a goroutine the service starts goes through svc.Go so a panic in it is
// logged, not fatal, and shutdown waits for it. Calls to other services go
// through NewHTTPClient (or InjectHeaders in a reverse proxy), so the next
// service logs the same trace id and request id.
//
// Subpackages: logging builds the JSON logger whose lines carry trace and
// request ids; tracing installs the process-wide W3C propagator and tracer
// provider (New calls it); messaging holds the broker drivers; contract
// holds the names shared with the operator.
package kit
