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

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"

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
	logger           *slog.Logger
	broker           messaging.Broker
	apiLn, adminLn   net.Listener
	buildInfo        *BuildInfo
	readinessEvery   time.Duration
	readinessTimeout time.Duration
	brokerOptional   bool
}

// WithLogOutput sends the JSON logs to w (a service passes run's stdout);
// the default is os.Stdout.
func WithLogOutput(w io.Writer) Option { return func(o *options) { o.logOutput = w } }

// WithLogger replaces the kit's logger altogether. Wrap its handler with
// logging.NewHandler to keep trace and request ids in the lines.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// WithBroker uses b instead of connecting to the configured broker. The
// service takes ownership: Run closes b during shutdown.
func WithBroker(b messaging.Broker) Option { return func(o *options) { o.broker = b } }

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

type consumer struct {
	queue   string
	handler messaging.Handler
	opts    messaging.ConsumeOptions
}

// Service is one running service: the Gin engine serving its API, the admin
// listener, its broker connection, consumers and background goroutines.
// Build it with New, register routes, checks and consumers, then call Run.
type Service struct {
	cfg      Config
	log      *slog.Logger
	engine   *gin.Engine
	registry *prometheus.Registry
	metrics  *httpMetrics
	ready    *readiness
	broker   messaging.Broker
	// pending is the broker while New's background connect runs; nil with
	// WithBroker or without a broker.
	pending *pendingBroker

	apiLn, adminLn net.Listener

	mu        sync.Mutex
	consumers []consumer
	started   bool
	stopping  bool

	// bgCtx is the context of goroutines started with Go; Run cancels it
	// once the API and the consumers have drained.
	bgCtx    context.Context
	bgCancel context.CancelFunc
	bg       sync.WaitGroup

	running atomic.Bool
}

var ginModeOnce sync.Once

// New builds a Service from cfg: logger, tracing, metrics registry, Gin
// engine with the kit's middleware, admin endpoints, and, when cfg names a
// broker, a connection made in the background: Broker() can be used at
// once, its Publish and Consume wait for the connection, and /readyz reports
// "connecting to the broker" meanwhile. A broker that is down or slow is
// waited for as long as the process lives; only a configuration error
// (messaging.ErrConfig: a malformed BROKER_URL, credentials the broker
// keeps refusing) makes Run return, with a message naming the setting. New binds both listeners, so a port conflict fails
// here. ctx's values (not its cancellation; Run's shutdown stops
// connecting) are kept for the connection.
func New(ctx context.Context, cfg Config, opts ...Option) (svc *Service, err error) {
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
	useJSONNames()
	// Gin's mode is process-wide; release mode drops its debug route dump.
	ginModeOnce.Do(func() { gin.SetMode(gin.ReleaseMode) })

	log := o.logger
	if log == nil {
		log = logging.New(o.logOutput, cfg.LogLevel)
	}
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
	s.bgCtx, s.bgCancel = context.WithCancel(context.Background())

	defer func() {
		if err != nil {
			s.bgCancel()
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

	s.broker = o.broker
	if s.broker == nil && cfg.BrokerKind != "" {
		// Registered now, so /metrics has the message series from the start.
		metricsReg := reg
		s.pending = connectInBackground(context.WithoutCancel(ctx), func(ctx context.Context) (messaging.Broker, error) {
			return connectBroker(ctx, cfg, log, metricsReg)
		})
		s.broker = s.pending
	}
	if s.broker != nil {
		s.ready.add("broker", s.broker.Ready, o.brokerOptional)
	}

	e := gin.New()
	// Handlers may pass *gin.Context as a context.Context and get the
	// request's deadline and trace.
	e.ContextWithFallback = true
	// Services sit behind the gateway or a Service; client IPs come from the
	// connection, never from a header a client can forge.
	if err := e.SetTrustedProxies(nil); err != nil {
		return nil, fmt.Errorf("kit: configure trusted proxies: %w", err)
	}
	e.Use(s.observe(), s.recovery(), s.bodyLimit())
	e.HandleMethodNotAllowed = true
	e.NoRoute(func(c *gin.Context) { WriteError(c, http.StatusNotFound, "not found") })
	e.NoMethod(func(c *gin.Context) { WriteError(c, http.StatusMethodNotAllowed, "method not allowed") })
	s.engine = e
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

// Engine is the Gin engine serving the API; register the service's routes
// on it before Run. It already carries the kit's middleware.
func (s *Service) Engine() *gin.Engine { return s.engine }

// Logger is the service's JSON logger. Log with a request's context
// (InfoContext(c.Request.Context(), ...)) to get its trace id and request id in the line.
func (s *Service) Logger() *slog.Logger { return s.log }

// Registry is the service's private Prometheus registry, served on /metrics.
// Register the service's own collectors on it.
func (s *Service) Registry() *prometheus.Registry { return s.registry }

// Config is the configuration the service was built with.
func (s *Service) Config() Config { return s.cfg }

// Broker is the connected broker, or nil when the service has none
// (BROKER_KIND unset). Pass it to handlers as a messaging.Publisher.
func (s *Service) Broker() messaging.Broker { return s.broker }

// AdminHandler serves /livez, /readyz, /metrics and pprof, as the admin
// listener does during Run; tests can drive it through httptest.
func (s *Service) AdminHandler() http.Handler { return adminHandler(s.ready, s.registry) }

// HTTPAddr is the address the API listener is bound to.
func (s *Service) HTTPAddr() net.Addr { return s.apiLn.Addr() }

// AdminAddr is the address the admin listener is bound to.
func (s *Service) AdminAddr() net.Addr { return s.adminLn.Addr() }

// AddReadinessCheck adds a dependency check to /readyz, for example the
// database's PingContext. The broker's check is added by New. Checks run in
// the background every interval under a short timeout; /readyz serves the
// last result.
func (s *Service) AddReadinessCheck(name string, check CheckFunc) {
	s.ready.add(name, check, false)
}

// Consume registers a consumer of the logical queue; Run starts it and, on
// shutdown, cancels it and waits until its in-flight handlers have finished.
// The driver recovers a panic in handler and treats it as a failed attempt,
// and runs handler under a span continuing the publisher's trace. Consume
// must be called before Run.
func (s *Service) Consume(queue string, handler messaging.Handler, opts messaging.ConsumeOptions) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		panic("kit: Consume called after Run")
	}
	if opts.MaxDeliveries == 0 {
		opts.MaxDeliveries = s.cfg.MaxDeliveries[queue] // the operator's spec.queues[].maxDeliveries, if set
	}
	s.consumers = append(s.consumers, consumer{queue: queue, handler: handler, opts: opts})
}

// Go runs fn in a goroutine the service tracks. Its context ends when Run
// shuts down (after the API has drained), and Run waits for fn to return
// within the grace period. A panic in fn is recovered and logged with its
// stack instead of crashing the process; an error other than the context's
// cancellation is logged. Go may be called before or during Run, from
// handlers included; after shutdown has begun it logs and does nothing.
func (s *Service) Go(fn func(ctx context.Context) error) {
	s.mu.Lock()
	if s.stopping {
		s.mu.Unlock()
		s.log.Warn("goroutine not started: service is shutting down")
		return
	}
	s.bg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.bg.Done()
		err := s.safeGo(fn)
		if err != nil && !errors.Is(err, context.Canceled) {
			s.log.Error("goroutine failed", slog.String("error", err.Error()))
		}
	}()
}

func (s *Service) safeGo(fn func(ctx context.Context) error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("panic in goroutine",
				slog.String("panic", fmt.Sprint(r)),
				slog.String("stack", string(debug.Stack())),
			)
			err = fmt.Errorf("goroutine panicked: %v", r)
		}
	}()
	return fn(s.bgCtx)
}

// Run serves the API and the admin endpoints and runs the consumers until
// ctx ends (signal.NotifyContext in the service's run) or a listener or
// consumer fails. It then shuts down within Config.ShutdownGrace: /readyz
// turns false first; after Config.ShutdownDelay the API stops accepting and
// finishes in-flight requests while consumers stop taking messages and
// finish their in-flight handlers; then goroutines from Go are cancelled and
// awaited, the broker is closed, and last the admin listener goes. Run returns nil after a clean shutdown caused by ctx.
func (s *Service) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("kit: Run called twice")
	}
	s.mu.Lock()
	s.started = true
	consumers := s.consumers
	s.mu.Unlock()

	if len(consumers) > 0 && s.broker == nil {
		s.closeAll()
		return fmt.Errorf("kit: %d consumer(s) registered but no broker is configured (BROKER_KIND is empty)", len(consumers))
	}

	errLog := slog.NewLogLogger(s.log.Handler(), slog.LevelWarn)
	adminSrv := &http.Server{
		Handler:           s.AdminHandler(),
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleTimeout,
		// No WriteTimeout: /debug/pprof/profile streams for as long as asked.
		ErrorLog: errLog,
	}
	apiSrv := &http.Server{
		Handler:           s.engine,
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

	consumeCtx, stopConsumers := context.WithCancel(context.WithoutCancel(ctx))
	defer stopConsumers()
	var consumersWG sync.WaitGroup
	for _, c := range consumers {
		consumersWG.Go(func() {
			err := s.broker.Consume(consumeCtx, c.queue, c.handler, c.opts)
			if consumeCtx.Err() == nil {
				// A consumer that ends on its own leaves the queue unserved;
				// fail the run so the pod restarts rather than idles.
				failed <- fmt.Errorf("kit: consumer of queue %q stopped: %w", c.queue, errOrStopped(err))
			} else if err != nil && !errors.Is(err, context.Canceled) {
				s.log.Error("consumer ended with an error", slog.String("queue", c.queue), slog.String("error", err.Error()))
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
	err := s.shutdown(ctx, apiSrv, adminSrv, stopConsumers, &consumersWG)
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
func (s *Service) shutdown(ctx context.Context, apiSrv, adminSrv *http.Server, stopConsumers context.CancelFunc, consumers *sync.WaitGroup) error {
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
	// Goroutines started by handlers and message handlers get their
	// cancellation only now that neither can start new ones.
	s.mu.Lock()
	s.stopping = true
	s.mu.Unlock()
	s.bgCancel()
	if err := waitGroup(graceCtx, &s.bg); err != nil {
		errs = append(errs, fmt.Errorf("wait for goroutines: %w", err))
	}
	if s.broker != nil {
		if err := s.broker.Close(graceCtx); err != nil {
			errs = append(errs, fmt.Errorf("close broker: %w", err))
		}
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
	s.bgCancel()
	closeListener(s.apiLn)
	closeListener(s.adminLn)
	if s.broker != nil {
		_ = s.broker.Close(context.Background())
	}
}
