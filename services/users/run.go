package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/courier-dev/courier/services/internal/auth"
	"github.com/courier-dev/courier/services/internal/mailjob"
	"github.com/courier-dev/courier/services/internal/outbox"
	"github.com/courier-dev/courier/services/internal/sqlitedb"
	"github.com/courier-dev/courier/services/kit"
	"github.com/courier-dev/courier/services/kit/contract"
)

// config is the users service's own configuration; the kit reads the rest
// (ports, broker, queues, timeouts) from the contract's variables.
type config struct {
	// DataDir is the service's persistent volume, contract.EnvDataDir,
	// set by the operator for a service with storage; the working directory
	// when unset.
	DataDir string `env:"COURIER_DATA_DIR" envDefault:"."`
	// DatabasePath is the SQLite file; its directory must exist. Unset, it
	// is users.db in DataDir, so the accounts outlive the pod.
	DatabasePath string `env:"DATABASE_PATH,expand" envDefault:"${COURIER_DATA_DIR}/users.db"`
	// TokenPrivateKey signs sign-in tokens: an Ed25519 key in PKCS #8 PEM.
	// Only users holds it; the others verify with the public keys users
	// serves at auth.JWKSPath.
	TokenPrivateKey string `env:"TOKEN_PRIVATE_KEY,required"`
	// TokenPreviousPublicKeys are the public keys (PKIX PEM, concatenated)
	// of earlier private keys, still published and accepted until the
	// tokens they signed have expired: how a key rotates.
	TokenPreviousPublicKeys string `env:"TOKEN_PREVIOUS_PUBLIC_KEYS"`
	// TokenTTL is how long a sign-in token is valid.
	TokenTTL time.Duration `env:"TOKEN_TTL" envDefault:"1h"`
}

// run starts the users service and blocks until ctx ends.
func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	usage := fmt.Sprintf("Configured from the environment: DATABASE_PATH, TOKEN_PRIVATE_KEY,\n"+
		"TOKEN_PREVIOUS_PUBLIC_KEYS, TOKEN_TTL, "+
		"%s, %s, %s and the kit's variables (see docs/contract.md).",
		contract.EnvBrokerKind, contract.EnvBrokerURL, contract.QueueEnv(mailjob.Queue))
	if help, err := kit.ParseArgs(args, stdout, usage); help || err != nil {
		return err
	}

	var own config
	cfg, err := kit.LoadConfig(getenv, &own, mailjob.Queue)
	if err != nil {
		return err
	}
	if cfg.BrokerKind == "" {
		return fmt.Errorf("config: required environment variable %s is not set (users publishes welcome e-mails)", contract.EnvBrokerKind)
	}
	key, err := auth.ParsePrivateKey([]byte(own.TokenPrivateKey))
	if err != nil {
		return fmt.Errorf("config: invalid TOKEN_PRIVATE_KEY: %w", err)
	}
	previous, err := auth.ParsePublicKeys([]byte(own.TokenPreviousPublicKeys))
	if err != nil {
		return fmt.Errorf("config: invalid TOKEN_PREVIOUS_PUBLIC_KEYS: %w", err)
	}
	tokens, err := auth.New(key, own.TokenTTL, previous)
	if err != nil {
		return fmt.Errorf("config: invalid TOKEN_TTL: %w", err)
	}
	passwords, err := newBcryptHasher(bcrypt.DefaultCost)
	if err != nil {
		return err
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

	// Run returns nil after a shutdown that ctx asked for.
	return svc.Run(ctx, kit.App{
		Handler: newRouter(&store{db: db}, passwords, tokens, relay, svc.Logger()),
		Checks:  map[string]kit.CheckFunc{"database": db.PingContext},
		Workers: []func(context.Context) error{relay.Run},
	})
}
