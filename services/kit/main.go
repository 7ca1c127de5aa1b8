package kit

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
)

// Main is a service's whole main function: `func main() { kit.Main(run) }`.
//
// main only calls run, which takes the process's arguments, environment and
// output as parameters so tests can run the real service in-process. Main
// supplies them, cancels run's context on SIGINT or SIGTERM (the kubelet's
// stop signal; Service.Run then shuts down gracefully), and exits with
// status 1 and the error on stderr when run fails.
func Main(run func(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args, os.Getenv, os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", filepath.Base(os.Args[0]), err)
		os.Exit(1)
	}
}

// ParseArgs parses a service's command line, args as run receives them. A
// kit service takes no flags, since the operator configures it through the
// environment only, but it answers -h with "usage: <name>" and then usage,
// which should say which variables the service reads.
//
// help reports that -h was given and the usage printed: run then returns nil.
// An undefined flag is an error (flag prints it with the usage).
func ParseArgs(args []string, stdout io.Writer, usage string) (help bool, err error) {
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	fs.SetOutput(stdout)
	fs.Usage = func() { fmt.Fprintf(stdout, "usage: %s\n\n%s\n", args[0], usage) }
	if err := fs.Parse(args[1:]); errors.Is(err, flag.ErrHelp) {
		return true, nil
	} else if err != nil {
		return false, err
	}
	return false, nil
}
