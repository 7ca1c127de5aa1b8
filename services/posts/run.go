package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/courier-dev/courier/services/internal/auth"
	"github.com/courier-dev/courier/services/internal/mailjob"
	"github.com/courier-dev/courier/services/internal/outbox"
	"github.com/courier-dev/courier/services/internal/sqlitedb"
	"github.com/courier-dev/courier/services/kit"
	"github.com/courier-dev/courier/services/kit/contract"
)

// config is the posts service's own configuration; the kit reads the rest
// (ports, broker, queues, timeouts) from the contract's variables.
type config struct {
	// DataDir is the service's persistent volume, contract.EnvDataDir,
	// set by the operator for a service with storage; the working directory
	// when unset.
	DataDir string `env:"COURIER_DATA_DIR" envDefault:"."`
	// DatabasePath is the SQLite file; its directory must exist. Unset, it
	// is posts.db in DataDir, so the posts outlive the pod.
	DatabasePath string `env:"DATABASE_PATH,expand" envDefault:"${COURIER_DATA_DIR}/posts.db"`
	// UsersURL is the users service's base URL, set by the operator as
	// contract.ServiceURLEnv("users").
	UsersURL string `env:"SERVICE_USERS_URL,required"`
	// UsersTimeout bounds one call to the users service.
	UsersTimeout time.Duration `env:"USERS_TIMEOUT" envDefault:"2s"`
}

// run starts the posts service and blocks until ctx ends.
func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	usage := fmt.Sprintf("Configured from the environment: DATABASE_PATH, %s, USERS_TIMEOUT,\n"+
		"%s, %s, %s and the kit's variables (see docs/contract.md).",
		contract.ServiceURLEnv("users"), contract.EnvBrokerKind, contract.EnvBrokerURL, contract.QueueEnv(mailjob.Queue))
	if help, err := kit.ParseArgs(args, stdout, usage); help || err != nil {
		return err
	}

	var own config
	cfg, err := kit.LoadConfig(getenv, &own, mailjob.Queue)
	if err != nil {
		return err
	}
	if cfg.BrokerKind == "" {
		return fmt.Errorf("config: required environment variable %s is not set (posts publishes comment e-mails)", contract.EnvBrokerKind)
	}
	if own.UsersTimeout <= 0 {
		return fmt.Errorf("config: invalid USERS_TIMEOUT %s: want a positive duration", own.UsersTimeout)
	}
	users, err := newUsersClient(own.UsersURL, own.UsersTimeout)
	if err != nil {
		return fmt.Errorf("config: invalid %s: %w", contract.ServiceURLEnv("users"), err)
	}

	// The database first: it is local and quick, and failing here leaves no
	// listener or broker connection to clean up.
	db, err := sqlitedb.Open(ctx, own.DatabasePath, migrations)
	if err != nil {
		return err
	}
	defer func() { _ = db.Close() }()

	svc, err := kit.New(ctx, cfg, getenv, kit.WithLogOutput(stdout), kit.WithBrokerOptional())
	if err != nil {
		return err
	}
	relay := outbox.NewRelay(db, svc.Broker(), svc.Logger())
	// Every write verifies the caller's token itself, with the keys users
	// publishes: an identity header from the network is never trusted.
	tokens, err := auth.NewRemoteVerifier(ctx, users.base.JoinPath(auth.JWKSPath).String())
	if err != nil {
		return err
	}

	// Run returns nil after a shutdown that ctx asked for.
	return svc.Run(ctx, kit.App{
		Handler: newRouter(&store{db: db}, users, tokens, relay, svc.Logger()),
		Checks:  map[string]kit.CheckFunc{"database": db.PingContext},
		Workers: []func(context.Context) error{relay.Run},
	})
}
