// Package stack runs the blog's four services as processes on localhost,
// wired the way the operator wires them in a cluster: the contract's
// environment, a real broker (an embedded NATS JetStream server, or a
// private RabbitMQ node) and a real SMTP server (test/smtpsink).
//
// The local run (hack/local) and the process-level end-to-end test
// (test/e2e/local) both start the system through it, so what the test proves
// is what a developer runs.
package stack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/courier-dev/courier/services/kit/contract"
	"github.com/courier-dev/courier/test/brokertest"
	"github.com/courier-dev/courier/test/smtpsink"
)

// App is the MicroserviceApp name the local system runs as: the sample's.
var App = sample.Name

// Namespace is the namespace the local services are told they run in
// (POD_NAMESPACE), standing in for the cluster namespace a scrape labels
// their metrics with.
const Namespace = "local"

// Services are the sample app's services in start order: each comes up
// after the services it calls, so the gateway's first request finds them.
var Services = startOrder(sample)

// QueueEmails is the logical queue of e-mail jobs (mailjob.Queue, which is
// internal to services/ and so cannot be imported from here).
const QueueEmails = "emails"

// The mailer's SMTP settings, which locally point at the sink instead of
// the sample Secret's server. Spelled as the mailer reads them.
const (
	envSMTPHost     = "SMTP_HOST"
	envSMTPPort     = "SMTP_PORT"
	envSMTPFrom     = "SMTP_FROM"
	envSMTPStartTLS = "SMTP_STARTTLS"
)

// Ports are the ports each service's API and admin listeners bind, and the
// SMTP sink's.
type Ports struct {
	HTTP  map[string]int
	Admin map[string]int
	SMTP  int
}

// FixedPorts numbers the services from the bases in Services order, except
// that the gateway, the public edge, takes the bases themselves: for the
// blog, gateway 8080/9090, users 8081/9091, posts 8082/9092, mailer
// 8083/9093.
func FixedPorts(httpBase, adminBase, smtp int) Ports {
	p := Ports{HTTP: map[string]int{}, Admin: map[string]int{}, SMTP: smtp}
	p.HTTP["gateway"], p.Admin["gateway"] = httpBase, adminBase
	i := 1
	for _, name := range Services {
		if name == "gateway" {
			continue
		}
		p.HTTP[name], p.Admin[name] = httpBase+i, adminBase+i
		i++
	}
	return p
}

// FreePorts picks unused loopback ports for everything. The services must
// know each other's ports before they start, so the kit's port 0 cannot be
// used; the ports are free when picked, which is good enough on a test
// machine.
func FreePorts() (Ports, error) {
	n := 2*len(Services) + 1
	ports := make([]int, 0, n)
	var listeners []net.Listener
	defer func() {
		for _, l := range listeners {
			_ = l.Close()
		}
	}()
	// All listeners stay open until every port is picked, so no port is
	// handed out twice.
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return Ports{}, fmt.Errorf("pick a free port: %w", err)
		}
		listeners = append(listeners, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	p := Ports{HTTP: map[string]int{}, Admin: map[string]int{}, SMTP: ports[n-1]}
	for i, name := range Services {
		p.HTTP[name], p.Admin[name] = ports[2*i], ports[2*i+1]
	}
	return p, nil
}

// Options configures Start.
type Options struct {
	// Broker is contract.BrokerNATS (the default) or contract.BrokerRabbitMQ.
	Broker string
	// BinDir holds the service binaries built by Build.
	BinDir string
	// DataDir receives the databases, the NATS store and, with MailDir
	// unset, nothing else. It must exist.
	DataDir string
	// MailDir, when set, receives every e-mail as an .eml file.
	MailDir string
	// Ports are the listeners' ports; see FixedPorts and FreePorts.
	Ports Ports
	// Logs receives every service's output, each line prefixed with the
	// service's name; nil discards it (the tail is kept either way).
	Logs io.Writer
	// MailLog receives one line per e-mail the sink accepts.
	MailLog io.Writer
	// Env adds variables to every service, after the contract's.
	Env []string
	// Progress receives one line per step while starting; nil discards.
	Progress io.Writer
}

// Stack is the running system.
type Stack struct {
	// Sink is the SMTP server the mailer sends to.
	Sink *smtpsink.Sink
	// BrokerKind and BrokerURL are what the services were given.
	BrokerKind, BrokerURL string
	// RabbitMQ is the node when BrokerKind is RabbitMQ, for its management UI.
	RabbitMQ *brokertest.RabbitMQ

	opts    Options
	nats    *brokertest.NATS
	procs   []*Process
	byName  map[string]*Process
	stopped chan string
}

// Build compiles the four services into binDir with `go build`, run from
// moduleRoot. race adds the race detector, so an end-to-end test run with
// -race checks the services too.
func Build(ctx context.Context, moduleRoot, binDir string, race bool) error {
	args := []string{"build"}
	if race {
		args = append(args, "-race")
	}
	args = append(args, "-o", binDir+string(filepath.Separator))
	for _, name := range Services {
		args = append(args, "./services/"+name)
	}
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = moduleRoot
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

// ModuleRoot is the directory of the main module's go.mod, from `go env GOMOD`.
func ModuleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside the courier module: run from the repository")
	}
	return filepath.Dir(gomod), nil
}

// Start brings up the broker, the SMTP sink and the four services, and
// returns once every service reports ready on /readyz. On error everything
// it started is stopped again.
func Start(ctx context.Context, opts Options) (_ *Stack, err error) {
	if opts.Broker == "" {
		opts.Broker = contract.BrokerNATS
	}
	if opts.Progress == nil {
		opts.Progress = io.Discard
	}
	s := &Stack{opts: opts, BrokerKind: opts.Broker, byName: map[string]*Process{}, stopped: make(chan string, len(Services))}
	defer func() {
		if err != nil {
			_ = s.Stop(context.WithoutCancel(ctx))
		}
	}()

	switch opts.Broker {
	case contract.BrokerNATS:
		fmt.Fprintln(opts.Progress, "starting an embedded NATS server with JetStream")
		s.nats, err = brokertest.NewNATS(filepath.Join(opts.DataDir, "nats"))
		if err != nil {
			return nil, fmt.Errorf("start nats: %w", err)
		}
		s.BrokerURL = s.nats.URL
	case contract.BrokerRabbitMQ:
		fmt.Fprintln(opts.Progress, "starting RabbitMQ (Debian's rabbitmq-server; about 20 s)")
		s.RabbitMQ, err = brokertest.NewRabbitMQ()
		if err != nil {
			return nil, fmt.Errorf("start rabbitmq: %w", err)
		}
		s.BrokerURL = s.RabbitMQ.AMQPURL
	default:
		return nil, fmt.Errorf("unknown broker %q: want %q or %q", opts.Broker, contract.BrokerNATS, contract.BrokerRabbitMQ)
	}

	var mailLog io.Writer
	if opts.MailLog != nil {
		mailLog = newPrefixWriter(opts.MailLog, fmt.Sprintf("%-7s | ", "smtp"))
	}
	s.Sink, err = smtpsink.Start(smtpsink.Options{
		Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(opts.Ports.SMTP)),
		Dir:  opts.MailDir,
		Log:  mailLog,
	})
	if err != nil {
		return nil, fmt.Errorf("start smtp sink: %w", err)
	}

	for _, name := range Services {
		env, err := s.env(name)
		if err != nil {
			return nil, err
		}
		p, err := s.startService(name, env)
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(opts.Progress, "started %s (pid %d)\n", name, p.cmd.Process.Pid)
	}
	for _, p := range s.procs {
		if err := p.WaitReady(ctx); err != nil {
			return nil, err
		}
		fmt.Fprintf(opts.Progress, "%s is ready\n", p.Name)
	}
	return s, nil
}

// env is the environment a service gets: the contract's variables and what
// the sample app's spec wires, as the operator would set them, with local
// addresses, plus the sink for the mailer's e-mail.
func (s *Stack) env(name string) ([]string, error) {
	ports := s.opts.Ports
	url := func(svc string) string { return fmt.Sprintf("http://127.0.0.1:%d", ports.HTTP[svc]) }
	env := []string{
		contract.EnvAppName + "=" + App,
		contract.EnvServiceName + "=" + name,
		contract.EnvPodName + "=" + name + "-local",
		contract.EnvPodNamespace + "=" + Namespace,
		contract.EnvHTTPPort + "=" + strconv.Itoa(ports.HTTP[name]),
		contract.EnvAdminPort + "=" + strconv.Itoa(ports.Admin[name]),
		// Short enough that Ctrl-C feels immediate, long enough to drain.
		contract.EnvShutdownGrace + "=10s",
		// Binaries find nothing else in a clean environment; keep the few
		// variables the Go runtime and the race detector look at.
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + os.Getenv("HOME"),
		"TMPDIR=" + os.TempDir(),
		// A race-enabled binary otherwise sleeps 1s at exit to collect
		// late reports; 100ms keeps that while stopping in a blink.
		"GORACE=exitcode=66 atexit_sleep_ms=100",
	}
	spec, err := s.specEnv(sampleService(name), url, s.opts.DataDir)
	if err != nil {
		return nil, err
	}
	env = append(env, spec...)
	if name == "mailer" {
		// Later entries win: the sink replaces the sample's SMTP server.
		env = append(env,
			envSMTPHost+"="+s.Sink.Host(),
			envSMTPPort+"="+strconv.Itoa(s.Sink.Port()),
			envSMTPStartTLS+"=false",
			envSMTPFrom+"=Courier Blog <no-reply@blog.localhost>",
		)
	}
	return append(env, s.opts.Env...), nil
}

func (s *Stack) startService(name string, env []string) (*Process, error) {
	p := &Process{
		Name:     name,
		HTTPURL:  fmt.Sprintf("http://127.0.0.1:%d", s.opts.Ports.HTTP[name]),
		AdminURL: fmt.Sprintf("http://127.0.0.1:%d", s.opts.Ports.Admin[name]),
		done:     make(chan struct{}),
		tail:     newTailBuffer(64 << 10),
	}
	cmd := exec.Command(filepath.Join(s.opts.BinDir, name))
	cmd.Env = env
	cmd.Dir = s.opts.DataDir
	out := io.Writer(p.tail)
	if s.opts.Logs != nil {
		out = io.MultiWriter(p.tail, newPrefixWriter(s.opts.Logs, fmt.Sprintf("%-7s | ", name)))
	}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// Own process group: a terminal's Ctrl-C reaches only this program,
		// which then stops the services in order.
		Setpgid: true,
		// Die with this program even if it is killed without cleaning up.
		Pdeathsig: syscall.SIGKILL,
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p.cmd = cmd
	s.procs = append(s.procs, p)
	s.byName[name] = p
	go func() {
		p.err = cmd.Wait()
		close(p.done)
		s.stopped <- name
	}()
	return p, nil
}

// Service returns the named service's process.
func (s *Stack) Service(name string) *Process { return s.byName[name] }

// Processes returns the services in start order.
func (s *Stack) Processes() []*Process { return append([]*Process(nil), s.procs...) }

// NATS is the embedded NATS server when BrokerKind is NATS, for tests that
// stop and start the broker; nil otherwise.
func (s *Stack) NATS() *brokertest.NATS { return s.nats }

// GatewayURL is the public API's base URL.
func (s *Stack) GatewayURL() string { return s.byName["gateway"].HTTPURL }

// Exited delivers the name of each service whose process ends, whether
// asked to by Stop or not; a local run watches it to notice a crash.
func (s *Stack) Exited() <-chan string { return s.stopped }

// stopOrder is the order of Stop: the gateway first, so no new request
// arrives while the others drain; then the publishers together; the mailer
// last, so it can still take the jobs they published while draining.
var stopOrder = [][]string{{"gateway"}, {"users", "posts"}, {"mailer"}}

// Stop terminates the services in stopOrder, each with SIGTERM and, after
// its grace, SIGKILL; then it closes the SMTP sink and the broker. It
// returns an error naming every service that did not exit cleanly.
func (s *Stack) Stop(ctx context.Context) error {
	var (
		mu   sync.Mutex
		errs []error
	)
	for _, step := range stopOrder {
		var wg sync.WaitGroup
		for _, name := range step {
			p := s.byName[name]
			if p == nil {
				continue // Start failed before starting it
			}
			wg.Go(func() {
				if err := p.Stop(ctx, 15*time.Second); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			})
		}
		wg.Wait()
	}
	if s.Sink != nil {
		if err := s.Sink.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close smtp sink: %w", err))
		}
	}
	if s.nats != nil {
		s.nats.Close()
	}
	if s.RabbitMQ != nil {
		s.RabbitMQ.Close()
	}
	return errors.Join(errs...)
}

// Process is one running service.
type Process struct {
	// Name is the service's name.
	Name string
	// HTTPURL and AdminURL are the listeners' base URLs.
	HTTPURL, AdminURL string

	cmd  *exec.Cmd
	done chan struct{}
	err  error // valid after done is closed
	tail *tailBuffer
}

// Logs returns the last 64 KiB of the process's output.
func (p *Process) Logs() string { return p.tail.String() }

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// ExitErr is how the process ended; valid once Done is closed.
func (p *Process) ExitErr() error { return p.err }

// WaitReady polls /readyz until it answers 200, the process exits or ctx ends.
func (p *Process) WaitReady(ctx context.Context) error {
	client := &http.Client{Timeout: time.Second}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var last string
	for {
		resp, err := client.Get(p.AdminURL + contract.ReadyzPath)
		if err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Sprintf("%s: %s", resp.Status, body)
		} else {
			last = err.Error()
		}
		select {
		case <-p.done:
			return fmt.Errorf("%s exited before it was ready (%v); its output:\n%s", p.Name, p.err, p.Logs())
		case <-ctx.Done():
			return fmt.Errorf("%s not ready (last /readyz: %s): %w; its output:\n%s", p.Name, last, ctx.Err(), p.Logs())
		case <-tick.C:
		}
	}
}

// Stop sends SIGTERM and waits for the exit; after grace, or when ctx ends,
// it kills the process. A non-zero exit is an error: the services must shut
// down cleanly on SIGTERM.
func (p *Process) Stop(ctx context.Context, grace time.Duration) error {
	select {
	case <-p.done:
		return p.exitError()
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.done:
		return p.exitError()
	case <-t.C:
	case <-ctx.Done():
	}
	_ = p.cmd.Process.Kill()
	<-p.done
	return fmt.Errorf("%s did not exit within %s of SIGTERM and was killed", p.Name, grace)
}

func (p *Process) exitError() error {
	if p.err != nil {
		return fmt.Errorf("%s exited with %w", p.Name, p.err)
	}
	return nil
}
