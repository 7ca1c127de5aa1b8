// Package kit is the shared service kit: every Courier service is a kit
// Service, so it honours the operator's contract (package contract) without
// boilerplate.
//
// A Service brings OpenTelemetry's HTTP instrumentation (otelhttp: a server
// span per request, continuing W3C trace context, exported over OTLP when
// the standard OTEL_EXPORTER_OTLP_* variables are set), request ids
// (X-Request-ID), JSON access logs through log/slog (request id, route
// template, status, latency, trace id), panic recovery, a body limit (413)
// and a per-request deadline; an admin listener with /livez, cached
// /readyz, /metrics from a private Prometheus registry and pprof; the broker
// connection and its consumers; and a graceful shutdown within the grace
// period. A service's main only calls run, through Main, which adds the
// signal handling and the exit code. run builds the kit, builds its own
// router from its dependencies, and hands the router, consumers, checks and
// workers to Run at once:
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
//		db, err := openDB(own.DBPath)
//		if err != nil {
//			return err
//		}
//		svc, err := kit.New(ctx, cfg, getenv, kit.WithLogOutput(stdout))
//		if err != nil {
//			return err
//		}
//		return svc.Run(ctx, kit.App{
//			Handler: newRouter(db, svc.Broker(), svc.Logger()),
//			Checks:  map[string]kit.CheckFunc{"database": db.PingContext},
//		})
//	}
//
//	// newRouter returns the service's handler: every route in one place.
//	func newRouter(db *sql.DB, jobs messaging.Publisher, log *slog.Logger) http.Handler {
//		h := &handlers{db: db, jobs: jobs, log: log}
//		r := kit.NewRouter()
//		r.POST("/api/users", h.createUser)
//		return r
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
// A consumer is an App.Consumers entry ({Queue: "emails", Handler: handle});
// a long-running goroutine (an outbox relay) is an App.Workers entry, so a
// panic in it is logged, not fatal, and shutdown waits for it. A call to
// another service injects the request's trace context
// (otel.GetTextMapPropagator().Inject) and request id (RequestIDHeader,
// logging.RequestID), or uses otelhttp.NewTransport, so the next service
// logs the same trace id and request id.
//
// Subpackages: logging builds the JSON logger whose lines carry trace and
// request ids; tracing installs the process-wide W3C propagator and builds
// each service's tracer provider and OTLP exporter (New calls it);
// messaging holds the broker drivers; contract holds the names shared with
// the operator.
package kit
