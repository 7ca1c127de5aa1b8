package kit

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/courier-dev/courier/services/kit/contract"
	"github.com/courier-dev/courier/services/kit/logging"
	"github.com/courier-dev/courier/services/kit/messaging"
	"github.com/courier-dev/courier/services/kit/tracing"
)

// Server timeouts that are not configurable: they protect the listener from
// slow clients and have no reason to differ between services.
const (
	readHeaderTimeout = 5 * time.Second
	idleTimeout       = 120 * time.Second
	// writeSlack lets a handler that hit its deadline still write its 503.
	writeSlack = 5 * time.Second
)

// Readiness defaults; see WithReadiness.
const (
	defaultReadinessInterval = 2 * time.Second
	defaultReadinessTimeout  = time.Second
)

// Option configures New.
type Option func(*options)

type options struct {
	logOutput        io.Writer
	apiLn, adminLn   net.Listener
	buildInfo        *BuildInfo
	readinessEvery   time.Duration
	readinessTimeout time.Duration
	brokerOptional   bool
}

// WithLogOutput sends the JSON logs to w (a service passes run's stdout);
// the default is os.Stdout.
func WithLogOutput(w io.Writer) Option { return func(o *options) { o.logOutput = w } }

// WithListeners serves the API and the admin endpoints on listeners the
// caller opened (tests pass 127.0.0.1:0) instead of the configured ports.
// Either may be nil to keep the configured port. Run closes them.
func WithListeners(api, admin net.Listener) Option {
	return func(o *options) { o.apiLn, o.adminLn = api, admin }
}

// WithBuildInfo overrides the version and revision build_info reports,
// which otherwise come from the binary's embedded build information.
func WithBuildInfo(bi BuildInfo) Option { return func(o *options) { o.buildInfo = &bi } }

// WithReadiness sets how often the readiness checks run and how long each
// may take (defaults 2s and 1s).
func WithReadiness(interval, timeout time.Duration) Option {
	return func(o *options) { o.readinessEvery, o.readinessTimeout = interval, timeout }
}

// WithBrokerOptional says the service serves all its traffic while the
// broker is down: its messages wait in an outbox (services/internal/outbox)
// and are published once the broker is back. /readyz still reports the
// broker check but stays 200 ("degraded"), so a broker outage is not an
// API outage. A service that cannot serve without the broker (a consumer,
// or one that publishes in the request) leaves it out and is unready while
// the broker is.
func WithBrokerOptional() Option { return func(o *options) { o.brokerOptional = true } }

// App is everything a service hands Run, at once: what it serves, what it
// consumes, what its readiness depends on and what runs beside them. A
// service builds it from the dependencies New gave it (Logger, Broker,
// Registry); there is no registration to do in the right order.
type App struct {
	// Handler serves the API on the HTTP port, inside the kit's middleware
	// (see APIHandler): the service's router, from a constructor taking
	// every dependency (NewRouter for Gin). Nil answers 404 to everything,
	// for a service that only consumes.
	Handler http.Handler
	// Consumers are the queues the service consumes. Run starts them and, on
	// shutdown, cancels them and waits until their in-flight handlers have
	// finished. The driver recovers a panic in a handler and treats it as a
	// failed attempt, and runs the handler under a span continuing the
	// publisher's trace.
	Consumers []Consumer
	// Checks are the service's readiness checks by name, for example
	// {"database": db.PingContext}; the broker's is added by the kit. They
	// run in the background every interval under a short timeout; /readyz
	// serves the last result.
	Checks map[string]CheckFunc
	// Workers run beside the API for the service's lifetime (an outbox
	// relay). Each one's context ends when Run shuts down, after the API and
	// the consumers have drained, and Run waits for it within the grace
	// period. A panic is recovered and logged with its stack; an error
	// other than the context's cancellation is logged.
	Workers []func(ctx context.Context) error
}

// Consumer is one consumed queue.
type Consumer struct {
	// Queue is the logical queue name, as given to LoadConfig.
	Queue string
	// Handler handles one message; an error retries it.
	Handler messaging.Handler
	// Options tune the consumer; MaxDeliveries defaults to the operator's
	// limit for the queue (contract.QueueMaxDeliveriesEnv), if it set one.
	Options messaging.ConsumeOptions
}

// Service is one service's kit: its logger, metrics registry, tracer
// provider, broker connection and listeners. Build it with New, build the
// service's handler and consumers from what it provides, and hand them to
// Run.
type Service struct {
	cfg            Config
	log            *slog.Logger
	registry       *prometheus.Registry
	metrics        *httpMetrics
	tracerProvider *sdktrace.TracerProvider
	// exporting: spans go to an OTLP endpoint, so otelhttp starts the
	// server spans; otherwise startServerSpan does, with serverTracer.
	exporting    bool
	serverTracer trace.Tracer
	traceHeaders []string
	ready        *readiness
	broker       messaging.Broker
	// pending is the broker while New's background connect runs; nil
	// without a broker.
	pending *pendingBroker

	apiLn, adminLn net.Listener

	running atomic.Bool
}

// New builds a Service from cfg and getenv's OpenTelemetry variables
// (tracing.NewProvider: spans are exported over OTLP/HTTP when
// OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is
// set): logger, tracer provider, metrics registry, admin endpoints, and,
// when cfg names a broker, a connection made in the background: Broker() can be used at
// once, its Publish and Consume wait for the connection, and /readyz reports
// "connecting to the broker" meanwhile. A broker that is down or slow is
// waited for as long as the process lives; only a configuration error
// (messaging.ErrConfig: a malformed BROKER_URL, credentials the broker
// keeps refusing) makes Run return, with a message naming the setting. New binds both listeners, so a port conflict fails
// here. ctx's values (not its cancellation; Run's shutdown stops
// connecting) are kept for the connection.
func New(ctx context.Context, cfg Config, getenv func(string) string, opts ...Option) (svc *Service, err error) {
	o := options{
		logOutput:        os.Stdout,
		readinessEvery:   defaultReadinessInterval,
		readinessTimeout: defaultReadinessTimeout,
	}
	for _, opt := range opts {
		opt(&o)
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}

	tracing.Install()

	log := logging.New(o.logOutput, cfg.LogLevel)
	if cfg.Service != "" {
		log = log.With(slog.String("service", cfg.Service))
	}

	bi := readBuildInfo()
	if o.buildInfo != nil {
		bi = *o.buildInfo
	}
	reg := prometheus.NewRegistry()
	registerStandard(reg, bi)

	s := &Service{
		cfg:      cfg,
		log:      log,
		registry: reg,
		metrics:  newHTTPMetrics(reg),
		ready: &readiness{
			log:      log,
			interval: o.readinessEvery,
			timeout:  o.readinessTimeout,
			poke:     make(chan struct{}, 1),
		},
	}
	s.tracerProvider, s.exporting, err = tracing.NewProvider(ctx, getenv, tracing.Resource{
		Service: cfg.Service, App: cfg.App, PodName: cfg.PodName, PodNamespace: cfg.PodNamespace,
	})
	if err != nil {
		return nil, err
	}
	s.serverTracer = s.tracerProvider.Tracer(serverSpanInstrumentation)
	s.traceHeaders = traceHeaderKeys()

	defer func() {
		if err != nil {
			_ = s.tracerProvider.Shutdown(context.WithoutCancel(ctx))
			closeListener(s.apiLn)
			closeListener(s.adminLn)
			if s.broker != nil {
				_ = s.broker.Close(context.WithoutCancel(ctx))
			}
		}
	}()

	s.apiLn, err = listen(o.apiLn, cfg.HTTPAddr())
	if err != nil {
		return nil, fmt.Errorf("kit: listen for the API: %w", err)
	}
	s.adminLn, err = listen(o.adminLn, cfg.AdminAddr())
	if err != nil {
		return nil, fmt.Errorf("kit: listen for admin endpoints: %w", err)
	}

	if cfg.BrokerKind != "" {
		// Registered now, so /metrics has the message series from the start.
		metricsReg, tp := reg, s.tracerProvider
		s.pending = connectInBackground(context.WithoutCancel(ctx), func(ctx context.Context) (messaging.Broker, error) {
			return connectBroker(ctx, cfg, log, metricsReg, tp)
		})
		s.broker = s.pending
	}
	if s.broker != nil {
		s.ready.add("broker", s.broker.Ready, o.brokerOptional)
	}

	return s, nil
}

func listen(given net.Listener, addr string) (net.Listener, error) {
	if given != nil {
		return given, nil
	}
	return net.Listen("tcp", addr)
}

func closeListener(l net.Listener) {
	if l != nil {
		_ = l.Close()
	}
}

// Logger is the service's JSON logger. Log with a request's context
// (InfoContext(c.Request.Context(), ...)) to get its trace id and request id in the line.
func (s *Service) Logger() *slog.Logger { return s.log }

// Registry is the service's private Prometheus registry, served on /metrics.
// Register the service's own collectors on it.
func (s *Service) Registry() *prometheus.Registry { return s.registry }

// Broker is the connected broker, or nil when the service has none
// (BROKER_KIND unset). Pass it to handlers as a messaging.Publisher.
func (s *Service) Broker() messaging.Broker { return s.broker }

// HTTPAddr is the address the API listener is bound to.
func (s *Service) HTTPAddr() net.Addr { return s.apiLn.Addr() }

// AdminAddr is the address the admin listener is bound to.
func (s *Service) AdminAddr() net.Addr { return s.adminLn.Addr() }

// safeGo runs fn under ctx, turning a panic into a logged error.
func (s *Service) safeGo(ctx context.Context, fn func(ctx context.Context) error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("panic in goroutine",
				slog.String("panic", fmt.Sprint(r)),
				slog.String("stack", string(debug.Stack())),
			)
			err = fmt.Errorf("goroutine panicked: %v", r)
		}
	}()
	return fn(ctx)
}

// Run serves app's handler on the API port and the admin endpoints, and
// runs app's consumers and workers, until ctx ends (signal.NotifyContext in the service's run) or a listener or
// consumer fails. It then shuts down within Config.ShutdownGrace: /readyz
// turns false first; after Config.ShutdownDelay the API stops accepting and
// finishes in-flight requests while consumers stop taking messages and
// finish their in-flight handlers; then the workers are cancelled and
// awaited, the broker is closed, the spans not yet exported are flushed, and
// last the admin listener goes. An App that cannot work (a consumer without
// a broker, a nameless check) is an error naming the field. Run returns nil after a clean shutdown caused by ctx.
func (s *Service) Run(ctx context.Context, app App) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("kit: Run called twice")
	}
	consumers, err := s.consumers(app)
	if err != nil {
		s.closeAll()
		return err
	}
	for name, check := range app.Checks {
		s.ready.add(name, check, false)
	}

	errLog := slog.NewLogLogger(s.log.Handler(), slog.LevelWarn)
	adminSrv := &http.Server{
		Handler:           adminHandler(s.ready, s.registry),
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleTimeout,
		// No WriteTimeout: /debug/pprof/profile streams for as long as asked.
		ErrorLog: errLog,
	}
	apiSrv := &http.Server{
		Handler:           s.APIHandler(app.Handler),
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       s.cfg.RequestTimeout,
		WriteTimeout:      s.cfg.RequestTimeout + writeSlack,
		IdleTimeout:       idleTimeout,
		ErrorLog:          errLog,
	}

	failed := make(chan error, 2+len(consumers))
	serve := func(name string, srv *http.Server, ln net.Listener) {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			failed <- fmt.Errorf("kit: serve %s: %w", name, err)
		}
	}
	go serve("admin endpoints", adminSrv, s.adminLn)

	readyCtx, stopReady := context.WithCancel(context.WithoutCancel(ctx))
	defer stopReady()
	s.ready.refresh(readyCtx)
	readyDone := make(chan struct{})
	go func() {
		defer close(readyDone)
		s.ready.loop(readyCtx)
	}()

	go serve("API", apiSrv, s.apiLn)

	workersCtx, stopWorkers := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWorkers()
	var workers sync.WaitGroup
	for _, fn := range app.Workers {
		workers.Go(func() {
			if err := s.safeGo(workersCtx, fn); err != nil && !errors.Is(err, context.Canceled) {
				s.log.Error("worker failed", slog.String("error", err.Error()))
			}
		})
	}

	consumeCtx, stopConsumers := context.WithCancel(context.WithoutCancel(ctx))
	defer stopConsumers()
	var consumersWG sync.WaitGroup
	for _, c := range consumers {
		consumersWG.Go(func() {
			err := s.broker.Consume(consumeCtx, c.Queue, c.Handler, c.Options)
			if consumeCtx.Err() == nil {
				// A consumer that ends on its own leaves the queue unserved;
				// fail the run so the pod restarts rather than idles.
				failed <- fmt.Errorf("kit: consumer of queue %q stopped: %w", c.Queue, errOrStopped(err))
			} else if err != nil && !errors.Is(err, context.Canceled) {
				s.log.Error("consumer ended with an error", slog.String("queue", c.Queue), slog.String("error", err.Error()))
			}
		})
	}
	s.log.Info("service started",
		slog.String("http_addr", s.apiLn.Addr().String()),
		slog.String("admin_addr", s.adminLn.Addr().String()),
		slog.Int("consumers", len(consumers)),
	)

	var brokerDone <-chan struct{}
	if s.pending != nil {
		brokerDone = s.pending.failed()
	}
	var cause error
	for cause == nil && ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case cause = <-failed:
		case <-brokerDone:
			brokerDone = nil // connected, or failed: look once
			if _, err := s.pending.wait(ctx); err != nil {
				cause = err
			} else {
				s.ready.refreshSoon()
			}
		}
	}
	if cause != nil {
		s.log.Error("shutting down after a failure", slog.String("error", cause.Error()))
	}
	err = s.shutdown(ctx, apiSrv, adminSrv, stopConsumers, &consumersWG, stopWorkers, &workers)
	stopReady()
	<-readyDone
	return errors.Join(cause, err)
}

func errOrStopped(err error) error {
	if err == nil {
		return errors.New("returned without an error")
	}
	return err
}

// shutdown runs the shutdown sequence described on Run.
func (s *Service) shutdown(ctx context.Context, apiSrv, adminSrv *http.Server,
	stopConsumers context.CancelFunc, consumers *sync.WaitGroup, stopWorkers context.CancelFunc, workers *sync.WaitGroup,
) error {
	start := time.Now()
	// First of all: probes see "not ready", so no new traffic is routed here.
	s.ready.shuttingDown.Store(true)
	s.log.Info("shutting down", slog.Duration("grace", s.cfg.ShutdownGrace))

	graceCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.ShutdownGrace)
	defer cancel()
	var errs []error

	if d := s.cfg.ShutdownDelay; d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-graceCtx.Done():
			t.Stop()
		}
	}

	// Consumers and the API drain in parallel: neither needs the other.
	stopConsumers()
	if err := apiSrv.Shutdown(graceCtx); err != nil {
		errs = append(errs, fmt.Errorf("drain API requests: %w", err))
		_ = apiSrv.Close()
	}

	if err := waitGroup(graceCtx, consumers); err != nil {
		errs = append(errs, fmt.Errorf("drain consumers: %w", err))
	}
	// Workers (an outbox relay) are cancelled only now that no request or
	// message can hand them more work.
	stopWorkers()
	if err := waitGroup(graceCtx, workers); err != nil {
		errs = append(errs, fmt.Errorf("wait for workers: %w", err))
	}
	if s.broker != nil {
		if err := s.broker.Close(graceCtx); err != nil {
			errs = append(errs, fmt.Errorf("close broker: %w", err))
		}
	}
	// Spans end with their requests and messages; flush what is left.
	if err := s.tracerProvider.Shutdown(graceCtx); err != nil {
		errs = append(errs, fmt.Errorf("flush spans: %w", err))
	}
	// The admin listener goes last so probes and scrapes answer throughout.
	_ = adminSrv.Close()

	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("kit: shutdown after %s (grace %s): %w", time.Since(start).Round(time.Millisecond), s.cfg.ShutdownGrace, err)
	}
	s.log.Info("shut down", slog.Duration("took", time.Since(start)))
	return nil
}

// waitGroup waits for wg or ctx, whichever comes first.
func waitGroup(ctx context.Context, wg *sync.WaitGroup) error {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// closeAll releases what New acquired when Run cannot start.
func (s *Service) closeAll() {
	_ = s.tracerProvider.Shutdown(context.Background())
	closeListener(s.apiLn)
	closeListener(s.adminLn)
	if s.broker != nil {
		_ = s.broker.Close(context.Background())
	}
}

// consumers checks app's consumers and fills in the operator's delivery
// limits; an App that cannot work is an error naming the field.
func (s *Service) consumers(app App) ([]Consumer, error) {
	for name, check := range app.Checks {
		if name == "" {
			return nil, errors.New("kit: invalid App.Checks: a check has an empty name")
		}
		if check == nil {
			return nil, fmt.Errorf("kit: invalid App.Checks[%q]: nil CheckFunc", name)
		}
	}
	for i, w := range app.Workers {
		if w == nil {
			return nil, fmt.Errorf("kit: invalid App.Workers[%d]: nil", i)
		}
	}
	if len(app.Consumers) > 0 && s.broker == nil {
		return nil, fmt.Errorf("kit: invalid App.Consumers: %d consumer(s) but no broker is configured (%s is empty)", len(app.Consumers), contract.EnvBrokerKind)
	}
	out := make([]Consumer, len(app.Consumers))
	for i, c := range app.Consumers {
		if c.Queue == "" || c.Handler == nil {
			return nil, fmt.Errorf("kit: invalid App.Consumers[%d]: Queue and Handler are required", i)
		}
		if c.Options.MaxDeliveries == 0 {
			c.Options.MaxDeliveries = s.cfg.MaxDeliveries[c.Queue] // the operator's spec.queues[].maxDeliveries, if set
		}
		out[i] = c
	}
	return out, nil
}
