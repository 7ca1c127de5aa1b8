// Command natsexporter serves a nats-server's monitoring endpoint as
// Prometheus metrics. It is the exporter of the image hack/images/build.sh
// builds for the managed NATS StatefulSet's "metrics" sidecar.
//
// Why it is written here: the upstream exporter
// (github.com/nats-io/prometheus-nats-exporter, the image the operator
// defaults to) is not served by the Go module proxy this project builds its
// images from, in any version, and nothing else here packages it. This
// command takes the same command line as the upstream one for the flags the
// operator passes (-port, -addr, -varz, -connz, -routez, -healthz, -jsz and
// the server's monitoring URL), so the operator's pods run either image
// unchanged, and names its metrics as the upstream one does (gnatsd_varz_*,
// gnatsd_connz_*, gnatsd_routez_*, gnatsd_healthz_status, jetstream_*).
// It decodes the monitoring endpoint with nats-server's own types, and reads
// the server at every scrape, as the upstream exporter does, so a value is
// never older than the scrape.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

func main() {
	if err := run(os.Args[1:], os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "natsexporter:", err)
		os.Exit(1)
	}
}

// config is the command line.
type config struct {
	addr    string
	port    int
	metrics endpoints
	server  string
}

func parse(args []string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("natsexporter", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.addr, "addr", "0.0.0.0", "address to serve /metrics on")
	fs.IntVar(&c.port, "port", 7777, "port to serve /metrics on")
	fs.BoolVar(&c.metrics.varz, "varz", false, "export the server's /varz (general statistics)")
	fs.BoolVar(&c.metrics.connz, "connz", false, "export the number of client connections (/connz)")
	fs.BoolVar(&c.metrics.routez, "routez", false, "export the number of routes (/routez)")
	fs.BoolVar(&c.metrics.healthz, "healthz", false, "export the server's health (/healthz)")
	fs.StringVar(&c.metrics.jsz, "jsz", "", "export JetStream statistics (/jsz): all, accounts, streams or consumers")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	switch c.metrics.jsz {
	case "", "all", "accounts", "streams", "consumers":
	default:
		return c, fmt.Errorf("-jsz %q: want all, accounts, streams or consumers", c.metrics.jsz)
	}
	if c.port < 1 || c.port > 65535 {
		return c, fmt.Errorf("-port %d: want 1 to 65535", c.port)
	}
	if fs.NArg() != 1 {
		return c, fmt.Errorf("want one argument, the server's monitoring URL (http://localhost:8222), got %d", fs.NArg())
	}
	c.server = fs.Arg(0)
	if !c.metrics.any() {
		return c, errors.New("no metrics selected: set at least one of -varz, -connz, -routez, -healthz, -jsz")
	}
	return c, nil
}

func run(args []string, stderr io.Writer) error {
	c, err := parse(args, stderr)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(newCollector(c.server, c.metrics, &http.Client{Timeout: 5 * time.Second})); err != nil {
		return fmt.Errorf("register collector: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelError)}))
	srv := &http.Server{
		Addr:              net.JoinHostPort(c.addr, strconv.Itoa(c.port)),
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	log.Info("serving metrics", "addr", srv.Addr, "server", c.server)
	select {
	case err := <-errc:
		return fmt.Errorf("serve %s: %w", srv.Addr, err)
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdown); err != nil {
		return fmt.Errorf("shut down: %w", err)
	}
	return nil
}
