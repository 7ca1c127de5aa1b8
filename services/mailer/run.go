package main

import (
	"context"
	"fmt"
	"io"
	"net/mail"
	"path/filepath"
	"time"

	"github.com/courier-dev/courier/services/internal/mailjob"
	"github.com/courier-dev/courier/services/kit"
	"github.com/courier-dev/courier/services/kit/contract"
	"github.com/courier-dev/courier/services/kit/messaging"
)

// defaultMaxDeliveries is the mailer's delivery limit when neither
// MAILER_MAX_DELIVERIES nor the queue's limit is set.
const defaultMaxDeliveries = 8

// config is the mailer's own part of the environment; the kit reads the
// contract's part.
type config struct {
	// DataDir is the mailer's persistent volume, contract.EnvDataDir, set
	// by the operator for a service with storage.
	DataDir string `env:"COURIER_DATA_DIR"`
	// DatabasePath is the SQLite file that records sent jobs, which is what
	// keeps a redelivered job from going out twice; it must outlive the
	// process. Unset, it is mailer.db in DataDir; one of the two is
	// required.
	DatabasePath string `env:"DATABASE_PATH"`
	// Concurrency bounds the e-mails being sent at once.
	Concurrency int `env:"MAILER_CONCURRENCY" envDefault:"4"`
	// MaxDeliveries, RetryBackoff and MaxRetryBackoff shape the retries of
	// a failing send before the job is dead-lettered. MaxDeliveries, when
	// unset, is the queue's limit from the operator
	// (QUEUE_EMAILS_MAX_DELIVERIES), else defaultMaxDeliveries. The backoff
	// defaults ride out about two minutes of SMTP outage (1s, 2s, 4s ...
	// capped at 1m), longer than the kit's, which suit fast local failures.
	MaxDeliveries   int           `env:"MAILER_MAX_DELIVERIES"`
	RetryBackoff    time.Duration `env:"MAILER_RETRY_BACKOFF" envDefault:"1s"`
	MaxRetryBackoff time.Duration `env:"MAILER_MAX_RETRY_BACKOFF" envDefault:"1m"`
	// SMTP is the outgoing mail server.
	SMTP SMTPConfig
}

// run is the whole service: main only adds the signal handling and the exit
// code, so tests can run the real thing in-process.
func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer, opts ...kit.Option) error {
	usage := fmt.Sprintf("Configured from the environment: DATABASE_PATH (or %s), SMTP_HOST, SMTP_PORT, SMTP_USERNAME,\n"+
		"SMTP_PASSWORD, SMTP_STARTTLS, SMTP_CA_FILE, SMTP_FROM, SMTP_TIMEOUT, MAILER_CONCURRENCY,\n"+
		"MAILER_MAX_DELIVERIES, MAILER_RETRY_BACKOFF, MAILER_MAX_RETRY_BACKOFF,\n"+
		"%s, %s, %s and the kit's variables (see docs/contract.md).",
		contract.EnvDataDir, contract.EnvBrokerKind, contract.EnvBrokerURL, contract.QueueEnv(mailjob.Queue))
	if help, err := kit.ParseArgs(args, stdout, usage); help || err != nil {
		return err
	}

	var cfg config
	kcfg, err := kit.LoadConfig(getenv, &cfg, mailjob.Queue)
	if err != nil {
		return err
	}
	if kcfg.BrokerKind == "" {
		return fmt.Errorf("config: required environment variable %s is not set: the mailer consumes %q", contract.EnvBrokerKind, mailjob.Queue)
	}
	if cfg.DatabasePath == "" {
		// No silent default in the working directory: a record of sent
		// e-mails that dies with the pod would send redeliveries again.
		if cfg.DataDir == "" {
			return fmt.Errorf("config: required environment variable DATABASE_PATH is not set, nor %s to keep mailer.db in", contract.EnvDataDir)
		}
		cfg.DatabasePath = filepath.Join(cfg.DataDir, "mailer.db")
	}
	if cfg.Concurrency < 1 {
		return fmt.Errorf("config: invalid MAILER_CONCURRENCY %d: want at least 1", cfg.Concurrency)
	}
	if cfg.MaxDeliveries < 0 {
		return fmt.Errorf("config: invalid MAILER_MAX_DELIVERIES %d: want at least 1", cfg.MaxDeliveries)
	}
	if _, fromQueue := kcfg.MaxDeliveries[mailjob.Queue]; cfg.MaxDeliveries == 0 && !fromQueue {
		cfg.MaxDeliveries = defaultMaxDeliveries
	}
	if cfg.RetryBackoff <= 0 || cfg.MaxRetryBackoff < cfg.RetryBackoff {
		return fmt.Errorf("config: invalid MAILER_RETRY_BACKOFF %s or MAILER_MAX_RETRY_BACKOFF %s: want 0 < first <= max",
			cfg.RetryBackoff, cfg.MaxRetryBackoff)
	}
	from, err := mail.ParseAddress(cfg.SMTP.From)
	if err != nil {
		return fmt.Errorf("config: invalid SMTP_FROM %q: %w", cfg.SMTP.From, err)
	}
	sender, err := NewSMTPSender(cfg.SMTP)
	if err != nil {
		return err
	}
	templates, err := LoadTemplates()
	if err != nil {
		return err
	}
	store, err := OpenSentStore(ctx, cfg.DatabasePath)
	if err != nil {
		return err
	}
	defer func() { _ = store.Close() }()

	svc, err := kit.New(ctx, kcfg, getenv, append([]kit.Option{kit.WithLogOutput(stdout)}, opts...)...)
	if err != nil {
		return err
	}
	mailer := NewMailer(templates, sender, store, from, svc.Logger())
	// Run returns nil after a shutdown that ctx asked for.
	return svc.Run(ctx, newApp(store, mailer, cfg))
}

// newApp is the mailer as the kit runs it: no public routes (the API port
// answers 404; the admin endpoints are the kit's), a database readiness
// check and the one consumer.
func newApp(store *SentStore, mailer *Mailer, cfg config) kit.App {
	return kit.App{
		Checks: map[string]kit.CheckFunc{"database": store.Ping},
		Consumers: []kit.Consumer{{
			Queue:   mailjob.Queue,
			Handler: mailer.Handle,
			Options: messaging.ConsumeOptions{
				Concurrency:     cfg.Concurrency,
				MaxDeliveries:   cfg.MaxDeliveries,
				RetryBackoff:    cfg.RetryBackoff,
				MaxRetryBackoff: cfg.MaxRetryBackoff,
			},
		}},
	}
}
