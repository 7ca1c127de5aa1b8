// Package brokertest starts real brokers for tests: Debian's rabbitmq-server
// as a private node on free ports in a temporary directory, and an embedded
// NATS server with JetStream. Nothing here is a fake; tests that need a broker
// talk to a real one.
package brokertest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// RabbitMQServerBin is the Debian package's server script; it execs the
// Erlang VM when RUNNING_UNDER_SYSTEMD is set, so the process we start is the
// broker itself and a signal reaches it directly.
const RabbitMQServerBin = "/usr/lib/rabbitmq/bin/rabbitmq-server"

// rabbitStartTimeout bounds one start; a cold start takes about 17 s here.
const rabbitStartTimeout = 90 * time.Second

// RabbitMQ is a running RabbitMQ node owned by the test binary.
type RabbitMQ struct {
	// AMQPURL dials the default vhost "/" as the administrator.
	AMQPURL string
	// ManagementURL is the base URL of the HTTP API, e.g. http://127.0.0.1:15999.
	ManagementURL string
	// AdminUser and AdminPassword are the administrator's credentials.
	AdminUser, AdminPassword string
	// Host is the address every listener binds.
	Host string
	// AMQPPort and ManagementPort are the listeners' ports.
	AMQPPort, ManagementPort int

	dir      string
	distPort int
	// prometheusPort is taken from the free ports too: the plugin's fixed
	// default (15692) would clash between nodes running side by side.
	prometheusPort int
	node           string
	mu             sync.Mutex
	cmd            *exec.Cmd
	exited         chan struct{}
	cred           *syscall.Credential
	uid, gid       int
}

// StartRabbitMQ starts a private RabbitMQ node for t and stops it when t ends.
// Use SharedRabbitMQ when many tests of one binary can share a node.
func StartRabbitMQ(t testing.TB) *RabbitMQ {
	t.Helper()
	r, err := NewRabbitMQ()
	if err != nil {
		t.Fatalf("start rabbitmq: %v", err)
	}
	t.Cleanup(r.Close)
	return r
}

var shared struct {
	once sync.Once
	r    *RabbitMQ
	err  error
}

// SharedRabbitMQ returns one node per test binary, started on first use.
// Call it from tests whose package's TestMain runs brokertest.Main(m), which
// stops the node after the last test; the node also dies with the test
// process (parent-death signal) if TestMain is not used.
func SharedRabbitMQ(t testing.TB) *RabbitMQ {
	t.Helper()
	shared.once.Do(func() { shared.r, shared.err = NewRabbitMQ() })
	if shared.err != nil {
		t.Fatalf("start shared rabbitmq: %v", shared.err)
	}
	return shared.r
}

// Main runs the tests and then stops the brokers shared by SharedRabbitMQ.
// Use it as `func TestMain(m *testing.M) { brokertest.Main(m) }`.
func Main(m *testing.M) {
	code := m.Run()
	if shared.r != nil {
		shared.r.Close()
	}
	os.Exit(code)
}

// NewRabbitMQ starts a node outside of a test's lifetime; Close stops it and
// removes its data. Local runs and tests use it alike.
func NewRabbitMQ() (*RabbitMQ, error) {
	if _, err := os.Stat(RabbitMQServerBin); err != nil {
		return nil, fmt.Errorf("rabbitmq-server is not installed (apt-get install rabbitmq-server): %w", err)
	}
	ports, err := freePorts(4)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "courier-rabbitmq-*")
	if err != nil {
		return nil, fmt.Errorf("create rabbitmq dir: %w", err)
	}
	r := &RabbitMQ{
		AdminUser:      "courier-admin",
		AdminPassword:  "courier-admin-secret",
		Host:           "127.0.0.1",
		AMQPPort:       ports[0],
		ManagementPort: ports[1],
		distPort:       ports[2],
		prometheusPort: ports[3],
		dir:            dir,
		node:           fmt.Sprintf("courier-%d-%d@localhost", os.Getpid(), ports[0]),
		uid:            -1,
		gid:            -1,
	}
	r.AMQPURL = fmt.Sprintf("amqp://%s:%s@%s:%d/", url.PathEscape(r.AdminUser), url.PathEscape(r.AdminPassword), r.Host, r.AMQPPort)
	r.ManagementURL = fmt.Sprintf("http://%s:%d", r.Host, r.ManagementPort)
	if err := r.prepare(); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	if err := r.start(); err != nil {
		r.Close()
		return nil, err
	}
	return r, nil
}

// prepare writes the node's configuration. Erlang refuses to run as root in
// a way RabbitMQ supports, so as root the node runs as the package's
// "rabbitmq" user and owns its directory.
func (r *RabbitMQ) prepare() error {
	conf := fmt.Sprintf(`listeners.tcp.1 = %[1]s:%[2]d
management.tcp.ip = %[1]s
management.tcp.port = %[3]d
prometheus.tcp.ip = %[1]s
prometheus.tcp.port = %[6]d
loopback_users = none
default_user = %[4]s
default_pass = %[5]s
default_user_tags.administrator = true
default_permissions.configure = .*
default_permissions.read = .*
default_permissions.write = .*
log.file.level = warning
log.console = false
`, r.Host, r.AMQPPort, r.ManagementPort, r.AdminUser, r.AdminPassword, r.prometheusPort)
	files := map[string]string{
		"rabbitmq.conf":   conf,
		"enabled_plugins": "[rabbitmq_management,rabbitmq_prometheus].\n",
		".erlang.cookie":  "COURIERTESTCOOKIE" + strconv.Itoa(r.AMQPPort),
	}
	for _, sub := range []string{"mnesia", "log"} {
		if err := os.MkdirAll(filepath.Join(r.dir, sub), 0o755); err != nil {
			return fmt.Errorf("create rabbitmq dir: %w", err)
		}
	}
	for name, content := range files {
		mode := os.FileMode(0o644)
		if name == ".erlang.cookie" {
			mode = 0o400
		}
		if err := os.WriteFile(filepath.Join(r.dir, name), []byte(content), mode); err != nil {
			return fmt.Errorf("write %s: %w", name, err)
		}
	}
	if os.Geteuid() != 0 {
		return nil
	}
	u, err := user.Lookup("rabbitmq")
	if err != nil {
		return fmt.Errorf("running as root needs the rabbitmq user from the Debian package: %w", err)
	}
	r.uid, _ = strconv.Atoi(u.Uid)
	r.gid, _ = strconv.Atoi(u.Gid)
	r.cred = &syscall.Credential{Uid: uint32(r.uid), Gid: uint32(r.gid)}
	if err := os.Chmod(r.dir, 0o755); err != nil {
		return fmt.Errorf("chmod rabbitmq dir: %w", err)
	}
	return filepath.Walk(r.dir, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, r.uid, r.gid)
	})
}

func (r *RabbitMQ) env() []string {
	return append(os.Environ(),
		"HOME="+r.dir,
		"RUNNING_UNDER_SYSTEMD=true",
		"RABBITMQ_NODENAME="+r.node,
		"RABBITMQ_NODE_IP_ADDRESS="+r.Host,
		"RABBITMQ_NODE_PORT="+strconv.Itoa(r.AMQPPort),
		"RABBITMQ_DIST_PORT="+strconv.Itoa(r.distPort),
		"RABBITMQ_CONFIG_FILE="+filepath.Join(r.dir, "rabbitmq.conf"),
		"RABBITMQ_ENABLED_PLUGINS_FILE="+filepath.Join(r.dir, "enabled_plugins"),
		"RABBITMQ_MNESIA_BASE="+filepath.Join(r.dir, "mnesia"),
		"RABBITMQ_LOG_BASE="+filepath.Join(r.dir, "log"),
		"RABBITMQ_PID_FILE="+filepath.Join(r.dir, "rabbitmq.pid"),
	)
}

func (r *RabbitMQ) start() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	cmd := exec.Command(RabbitMQServerBin)
	cmd.Dir = r.dir
	cmd.Env = r.env()
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid:    true,
		Pdeathsig:  syscall.SIGKILL,
		Credential: r.cred,
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start rabbitmq-server: %w", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	r.cmd, r.exited = cmd, exited

	ctx, cancel := context.WithTimeout(context.Background(), rabbitStartTimeout)
	defer cancel()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		if r.managementUp(ctx) && portOpen(r.Host, r.AMQPPort) {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("rabbitmq-server exited during start: %s", tail(out.Bytes(), 2000))
		case <-ctx.Done():
			return fmt.Errorf("rabbitmq-server not ready within %s: %s", rabbitStartTimeout, tail(out.Bytes(), 2000))
		case <-tick.C:
		}
	}
}

func (r *RabbitMQ) managementUp(ctx context.Context) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.ManagementURL+"/api/overview", nil)
	if err != nil {
		return false
	}
	req.SetBasicAuth(r.AdminUser, r.AdminPassword)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	_ = resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// Stop shuts the node down (SIGTERM, as an orchestrator would) and waits
// until it has exited; its data stays for Start.
func (r *RabbitMQ) Stop(t testing.TB) {
	t.Helper()
	if err := r.stop(30 * time.Second); err != nil {
		t.Fatalf("stop rabbitmq: %v", err)
	}
}

// Kill stops the node abruptly (SIGKILL), like a crashed broker.
func (r *RabbitMQ) Kill(t testing.TB) {
	t.Helper()
	r.mu.Lock()
	cmd, exited := r.cmd, r.exited
	r.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	<-exited
}

func (r *RabbitMQ) stop(grace time.Duration) error {
	r.mu.Lock()
	cmd, exited := r.cmd, r.exited
	r.cmd = nil
	r.mu.Unlock()
	if cmd == nil {
		return nil
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(grace):
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	}
	// The listener must be gone before a restart can bind the same port.
	deadline := time.Now().Add(10 * time.Second)
	for portOpen(r.Host, r.AMQPPort) {
		if time.Now().After(deadline) {
			return errors.New("amqp port still open after the node exited")
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}

// Start starts a stopped node again on the same ports and data directory.
func (r *RabbitMQ) Start(t testing.TB) {
	t.Helper()
	if err := r.start(); err != nil {
		t.Fatalf("restart rabbitmq: %v", err)
	}
}

// Close stops the node and removes its data.
func (r *RabbitMQ) Close() {
	_ = r.stop(15 * time.Second)
	_ = os.RemoveAll(r.dir)
}

// URL returns an AMQP URL for user and password on vhost.
func (r *RabbitMQ) URL(user, password, vhost string) string {
	u := url.URL{
		Scheme: "amqp",
		User:   url.UserPassword(user, password),
		Host:   net.JoinHostPort(r.Host, strconv.Itoa(r.AMQPPort)),
		Path:   "/" + vhost,
	}
	u.RawPath = "/" + url.PathEscape(vhost)
	return u.String()
}

func portOpen(host string, port int) bool {
	c, err := net.DialTimeout("tcp", net.JoinHostPort(host, strconv.Itoa(port)), 200*time.Millisecond)
	if err != nil {
		return false
	}
	_ = c.Close()
	return true
}

// freePorts asks the kernel for n distinct free ports. A port may in theory
// be taken again before the broker binds it; the start then fails loudly
// instead of flaking silently.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find a free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
