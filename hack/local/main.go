// Command local runs the blog on this machine with one command:
//
//	go run ./hack/local                    # embedded NATS JetStream
//	go run ./hack/local -broker rabbitmq   # Debian's rabbitmq-server
//
// It builds the four services, starts a broker and an SMTP sink, runs the
// services as processes with the environment the operator would give them,
// prints where everything is, and streams the services' logs prefixed with
// their names. Every e-mail the mailer sends lands in the sink's directory
// as an .eml file. Ctrl-C stops everything in order.
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/courier-dev/courier/hack/local/stack"
	"github.com/courier-dev/courier/services/kit/contract"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args, os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		fmt.Fprintln(os.Stderr, "local:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	broker := fs.String("broker", contract.BrokerNATS, "broker: nats (embedded JetStream server) or rabbitmq (Debian's rabbitmq-server)")
	dataDir := fs.String("data", "", "directory for binaries, databases, broker data and e-mails (default: a new temporary directory, kept on exit)")
	httpPort := fs.Int("http-port", 8080, "the gateway's port; the other services take the next ones")
	adminPort := fs.Int("admin-port", 9090, "the gateway's admin port (/livez, /readyz, /metrics); the others take the next ones")
	smtpPort := fs.Int("smtp-port", 2525, "the SMTP sink's port")
	quiet := fs.Bool("quiet", false, "do not stream the services' logs")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}

	dir := *dataDir
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "courier-local-"); err != nil {
			return fmt.Errorf("create data directory: %w", err)
		}
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create data directory: %w", err)
	}

	ports := stack.FixedPorts(*httpPort, *adminPort, *smtpPort)
	if err := checkPortsFree(ports); err != nil {
		return err
	}

	root, err := stack.ModuleRoot(ctx)
	if err != nil {
		return err
	}
	binDir := filepath.Join(dir, "bin")
	fmt.Fprintf(stderr, "building gateway, users, posts and mailer into %s\n", binDir)
	start := time.Now()
	if err := stack.Build(ctx, root, binDir, false); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "built in %s\n", time.Since(start).Round(100*time.Millisecond))

	mailDir := filepath.Join(dir, "mail")
	logs := stdout
	if *quiet {
		logs = nil
	}
	startCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	st, err := stack.Start(startCtx, stack.Options{
		Broker:   *broker,
		BinDir:   binDir,
		DataDir:  dir,
		MailDir:  mailDir,
		Ports:    ports,
		Logs:     logs,
		MailLog:  stdout,
		Progress: stderr,
	})
	if err != nil {
		return err
	}
	printSummary(stdout, st, dir, mailDir)

	var cause error
	select {
	case <-ctx.Done():
		fmt.Fprintln(stderr, "\nstopping (gateway first, then the others, then the broker)")
	case name := <-st.Exited():
		p := st.Service(name)
		cause = fmt.Errorf("%s stopped unexpectedly (%v); stopping the rest", name, p.ExitErr())
		fmt.Fprintln(stderr, cause)
	}
	stopCtx, cancelStop := context.WithTimeout(context.Background(), time.Minute)
	defer cancelStop()
	if err := st.Stop(stopCtx); err != nil {
		cause = errors.Join(cause, err)
	}
	fmt.Fprintf(stderr, "stopped; databases and e-mails are kept in %s\n", dir)
	return cause
}

// checkPortsFree fails early, naming the port, instead of letting a service
// die at start with "address already in use" in its log.
func checkPortsFree(p stack.Ports) error {
	check := func(what string, port int) error {
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			return fmt.Errorf("port %d for %s is taken (pick others with -http-port, -admin-port, -smtp-port): %w", port, what, err)
		}
		return l.Close()
	}
	for _, name := range stack.Services {
		if err := check(name+" API", p.HTTP[name]); err != nil {
			return err
		}
		if err := check(name+" admin", p.Admin[name]); err != nil {
			return err
		}
	}
	return check("the SMTP sink", p.SMTP)
}

func printSummary(w io.Writer, st *stack.Stack, dir, mailDir string) {
	fmt.Fprintf(w, "\nThe blog is running (app %q, broker %s at %s).\n\n", stack.App, st.BrokerKind, st.BrokerURL)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  service\tAPI\tadmin (/livez /readyz /metrics)")
	// The gateway first: it is the one to talk to.
	procs := st.Processes()
	rank := func(p *stack.Process) int {
		if p.Name == "gateway" {
			return 0
		}
		return 1
	}
	slices.SortStableFunc(procs, func(a, b *stack.Process) int { return cmp.Compare(rank(a), rank(b)) })
	for _, p := range procs {
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", p.Name, p.HTTPURL, p.AdminURL)
	}
	_ = tw.Flush()
	if st.RabbitMQ != nil {
		fmt.Fprintf(w, "\n  RabbitMQ management UI: %s (user %s, password %s)\n",
			st.RabbitMQ.ManagementURL, st.RabbitMQ.AdminUser, st.RabbitMQ.AdminPassword)
	}
	gw := st.GatewayURL()
	fmt.Fprintf(w, `
  SMTP sink:  smtp://%s, every e-mail saved as .eml in
              %s
  databases:  %s

Try it: register a user, and a welcome e-mail lands in the sink.

  curl -s -X POST %s/api/users -H 'Content-Type: application/json' \
    -d '{"name":"Ada","email":"ada@example.com","password":"correct horse battery"}'
  ls %s

Ctrl-C stops everything.

`, st.Sink.Addr(), mailDir, dir, gw, mailDir)
}
