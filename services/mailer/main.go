// Command mailer consumes e-mail jobs from the "emails" queue and sends each
// over SMTP exactly once, even when the broker redelivers it.
package main

import (
	"context"
	"io"

	"github.com/courier-dev/courier/services/kit"
)

func main() {
	// run's options are for tests; the real service takes the defaults.
	kit.Main(func(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
		return run(ctx, args, getenv, stdout)
	})
}
