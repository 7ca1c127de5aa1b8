// Command loopback serves the bare handler, Gin alone, the peer stack (what a
// Gin user would assemble) and the kit's stack on loopback ports for a load
// generator (run.sh uses wrk). It prints "bare=ADDR gin=ADDR peer=ADDR
// kit=ADDR kit-no-access-log=ADDR" once all listen and serves until SIGINT
// or SIGTERM. bare, gin and peer run in an http.Server with the kit's
// timeouts (BareServer); peer logs to io.Discard. The kits write their JSON logs to io.Discard, as
// in the in-process benchmark; kit-no-access-log runs at LOG_LEVEL=warn to
// show what the access log costs.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"

	httpbench "github.com/courier-dev/courier/bench/http"
	"github.com/courier-dev/courier/services/kit"
)

func main() {
	if err := run(context.Background(), os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "loopback:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, stdout io.Writer) error {
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()

	listen := func() (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") }
	bareLn, err := listen()
	if err != nil {
		return err
	}
	ginLn, err := listen()
	if err != nil {
		return err
	}
	peerLn, err := listen()
	if err != nil {
		return err
	}
	type kitServer struct {
		name  string
		level string
		addr  net.Addr
		done  chan error
	}
	kits := []*kitServer{{name: "kit", level: "info"}, {name: "kit-no-access-log", level: "warn"}}
	for _, k := range kits {
		apiLn, err := listen()
		if err != nil {
			return err
		}
		adminLn, err := listen()
		if err != nil {
			return err
		}
		svc, router, err := httpbench.Kit(io.Discard, k.level, apiLn, adminLn)
		if err != nil {
			return err
		}
		k.addr, k.done = svc.HTTPAddr(), make(chan error, 1)
		go func() { k.done <- svc.Run(ctx, kit.App{Handler: router}) }()
	}
	bare, ginSrv, peerSrv := httpbench.BareServer(), httpbench.BareServer(), httpbench.BareServer()
	ginSrv.Handler = httpbench.Gin()
	peerSrv.Handler = httpbench.Peer(io.Discard)
	serve := func(name string, srv *http.Server, ln net.Listener) {
		go func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				fmt.Fprintf(os.Stderr, "loopback: %s server: %v\n", name, err)
			}
		}()
	}
	serve("bare", bare, bareLn)
	serve("gin", ginSrv, ginLn)
	serve("peer", peerSrv, peerLn)
	fmt.Fprintf(stdout, "bare=%s gin=%s peer=%s", bareLn.Addr(), ginLn.Addr(), peerLn.Addr())
	for _, k := range kits {
		fmt.Fprintf(stdout, " %s=%s", k.name, k.addr)
	}
	fmt.Fprintln(stdout)
	<-ctx.Done()
	_ = bare.Close()
	_ = ginSrv.Close()
	_ = peerSrv.Close()
	var errs []error
	for _, k := range kits {
		errs = append(errs, <-k.done)
	}
	return errors.Join(errs...)
}
