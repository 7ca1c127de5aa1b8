package brokertest

import (
	"fmt"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// NATS is an embedded NATS server with JetStream, backed by a file store in a
// temporary directory so messages survive Restart.
type NATS struct {
	// URL is the client URL, e.g. nats://127.0.0.1:4999.
	URL string

	opts *server.Options
	srv  *server.Server
}

// StartNATS starts an embedded NATS server for t and shuts it down when t ends.
func StartNATS(t testing.TB) *NATS {
	t.Helper()
	n, err := NewNATS(t.TempDir())
	if err != nil {
		t.Fatalf("start nats: %v", err)
	}
	t.Cleanup(n.Close)
	return n
}

// NewNATS starts an embedded JetStream server storing its data in dir; local
// runs use it outside of tests. Close shuts it down.
func NewNATS(dir string) (*NATS, error) {
	ports, err := freePorts(1)
	if err != nil {
		return nil, err
	}
	opts := &server.Options{
		ServerName: "courier-test",
		Host:       "127.0.0.1",
		Port:       ports[0],
		JetStream:  true,
		StoreDir:   dir,
		NoLog:      true,
		NoSigs:     true,
	}
	n := &NATS{opts: opts, URL: "nats://" + net.JoinHostPort(opts.Host, strconv.Itoa(opts.Port))}
	if err := n.start(); err != nil {
		return nil, err
	}
	return n, nil
}

func (n *NATS) start() error {
	srv, err := server.NewServer(n.opts)
	if err != nil {
		return fmt.Errorf("create nats server: %w", err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		return fmt.Errorf("nats server not ready on %s", n.URL)
	}
	n.srv = srv
	return nil
}

// Server is the running server, for tests that inspect JetStream state.
func (n *NATS) Server() *server.Server { return n.srv }

// Stop shuts the server down; its JetStream store stays for Start.
func (n *NATS) Stop(t testing.TB) {
	t.Helper()
	if n.srv != nil {
		n.srv.Shutdown()
		n.srv.WaitForShutdown()
		n.srv = nil
	}
}

// Start starts a stopped server again on the same port and store.
func (n *NATS) Start(t testing.TB) {
	t.Helper()
	if err := n.start(); err != nil {
		t.Fatalf("restart nats: %v", err)
	}
}

// Restart stops and starts the server, like a broker restart.
func (n *NATS) Restart(t testing.TB) {
	t.Helper()
	n.Stop(t)
	n.Start(t)
}

// Close shuts the server down.
func (n *NATS) Close() {
	if n.srv != nil {
		n.srv.Shutdown()
		n.srv.WaitForShutdown()
		n.srv = nil
	}
}
