package kit

import (
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/caarlos0/env/v11"

	"github.com/courier-dev/courier/services/kit/contract"
)

// Config is the kit's part of a service's configuration, read from the
// environment the operator sets (see package contract). The env tags repeat
// contract's names because Go tags must be literals; a test checks that they
// match.
type Config struct {
	// App is the MicroserviceApp's name.
	App string `env:"COURIER_APP"`
	// Service is the service's name within the app.
	Service string `env:"COURIER_SERVICE"`
	// PodName and PodNamespace come from the downward API.
	PodName      string `env:"POD_NAME"`
	PodNamespace string `env:"POD_NAMESPACE"`

	// HTTPPort is the public API's port.
	HTTPPort int `env:"HTTP_PORT" envDefault:"8080"`
	// AdminPort is the port of /livez, /readyz, /metrics and pprof.
	AdminPort int `env:"ADMIN_PORT" envDefault:"9090"`

	// BrokerKind is contract.BrokerRabbitMQ, contract.BrokerNATS or empty for
	// no broker.
	BrokerKind string `env:"BROKER_KIND"`
	// BrokerURL is the service's own broker URL, credentials included.
	BrokerURL string `env:"BROKER_URL"`
	// BrokerCredentialsFile is the path of the service's NATS credentials
	// file (contract.EnvBrokerCredentialsFile); empty for RabbitMQ.
	BrokerCredentialsFile string `env:"BROKER_CREDENTIALS_FILE"`
	// DevDeclareTopology lets the messaging driver declare its own queues.
	// Development and tests only; off by default.
	DevDeclareTopology bool `env:"COURIER_DEV_DECLARE_TOPOLOGY" envDefault:"false"`

	// RequestTimeout bounds one API request through its context.
	RequestTimeout time.Duration `env:"REQUEST_TIMEOUT" envDefault:"10s"`
	// BodyLimit caps a request body in bytes; more is answered with 413.
	BodyLimit int64 `env:"BODY_LIMIT_BYTES" envDefault:"1048576"`
	// ShutdownGrace bounds the whole graceful shutdown.
	ShutdownGrace time.Duration `env:"SHUTDOWN_GRACE" envDefault:"25s"`
	// ShutdownDelay is how long /readyz reports false before the API
	// listener stops accepting, so load balancers stop sending first.
	ShutdownDelay time.Duration `env:"SHUTDOWN_DELAY" envDefault:"0s"`
	// LogLevel is debug, info, warn or error.
	LogLevel slog.Level `env:"LOG_LEVEL" envDefault:"info"`

	// Queues maps each logical queue the service named in LoadConfig to its
	// physical name, read from contract.QueueEnv(logical).
	Queues map[string]string `env:"-"`
	// MaxDeliveries holds the delivery limit the operator set for a queue
	// (contract.QueueMaxDeliveriesEnv); Consume uses it when the service
	// sets none of its own.
	MaxDeliveries map[string]int `env:"-"`
}

// LoadConfig reads the kit's Config and, when service is a non-nil pointer to
// a struct with env tags (caarlos0/env syntax: `env:"SMTP_HOST,required"`),
// the service's own settings, from getenv. queues are the logical queue names
// the service publishes to or consumes from; each is mapped through
// contract.QueueEnv, and a missing mapping is an error while a broker is
// configured. An empty value counts as unset, since getenv cannot tell the
// two apart. Every error names the variable at fault.
func LoadConfig(getenv func(string) string, service any, queues ...string) (Config, error) {
	var cfg Config
	targets := []any{&cfg}
	if service != nil {
		targets = append(targets, service)
	}
	for _, t := range targets {
		if err := parseEnv(getenv, t); err != nil {
			return Config{}, err
		}
	}
	if err := cfg.validate(); err != nil {
		return Config{}, err
	}
	cfg.Queues = make(map[string]string, len(queues))
	cfg.MaxDeliveries = make(map[string]int)
	var missing []string
	for _, q := range queues {
		if v := getenv(contract.QueueMaxDeliveriesEnv(q)); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 {
				return Config{}, fmt.Errorf("config: invalid %s %q: want a whole number of at least 1", contract.QueueMaxDeliveriesEnv(q), v)
			}
			cfg.MaxDeliveries[q] = n
		}
		name := contract.QueueEnv(q)
		physical := getenv(name)
		if physical == "" {
			missing = append(missing, name)
			continue
		}
		cfg.Queues[q] = physical
	}
	if len(missing) > 0 && cfg.BrokerKind != "" {
		verb := "variable %s is"
		if len(missing) > 1 {
			verb = "variables %s are"
		}
		return Config{}, fmt.Errorf("config: required environment "+verb+" not set (physical queue names, needed while %s is set)",
			strings.Join(missing, ", "), contract.EnvBrokerKind)
	}
	return cfg, nil
}

func (c Config) validate() error {
	switch c.BrokerKind {
	case "":
	case contract.BrokerRabbitMQ, contract.BrokerNATS:
		if c.App == "" {
			// The app names the RabbitMQ vhost's queues and the NATS stream.
			return fmt.Errorf("config: required environment variable %s is not set (%s is %q)",
				contract.EnvAppName, contract.EnvBrokerKind, c.BrokerKind)
		}
		if c.BrokerURL == "" {
			return fmt.Errorf("config: required environment variable %s is not set (%s is %q)",
				contract.EnvBrokerURL, contract.EnvBrokerKind, c.BrokerKind)
		}
	default:
		return fmt.Errorf("config: invalid %s %q: want %q, %q or empty",
			contract.EnvBrokerKind, c.BrokerKind, contract.BrokerRabbitMQ, contract.BrokerNATS)
	}
	for _, p := range []struct {
		name string
		port int
	}{{contract.EnvHTTPPort, c.HTTPPort}, {contract.EnvAdminPort, c.AdminPort}} {
		// 0 picks a free port, which tests and local runs use.
		if p.port < 0 || p.port > 65535 {
			return fmt.Errorf("config: invalid %s %d: want 0-65535", p.name, p.port)
		}
	}
	for _, d := range []struct {
		name string
		d    time.Duration
	}{{contract.EnvRequestTimeout, c.RequestTimeout}, {contract.EnvShutdownGrace, c.ShutdownGrace}} {
		if d.d <= 0 {
			return fmt.Errorf("config: invalid %s %s: want a positive duration", d.name, d.d)
		}
	}
	if c.ShutdownDelay < 0 || c.ShutdownDelay >= c.ShutdownGrace {
		return fmt.Errorf("config: invalid %s %s: want at least 0 and less than %s (%s)",
			contract.EnvShutdownDelay, c.ShutdownDelay, contract.EnvShutdownGrace, c.ShutdownGrace)
	}
	if c.BodyLimit <= 0 {
		return fmt.Errorf("config: invalid %s %d: want a positive number of bytes", contract.EnvBodyLimit, c.BodyLimit)
	}
	return nil
}

// parseEnv fills target from getenv. caarlos0/env reads a map, so the map is
// built from the keys target's tags declare; nothing else of the environment
// is looked at.
func parseEnv(getenv func(string) string, target any) error {
	params, err := env.GetFieldParams(target)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	environment := make(map[string]string, len(params))
	for _, p := range params {
		if v := getenv(p.Key); v != "" {
			environment[p.Key] = v
		}
	}
	if err := env.ParseWithOptions(target, env.Options{Environment: environment}); err != nil {
		return fmt.Errorf("config: %w", nameVariables(err, target))
	}
	return nil
}

// nameVariables rewrites env's parse errors, which name the Go field, into
// errors that name the environment variable, because that is what an
// operator can fix. Other errors (required, not empty) already name it.
func nameVariables(err error, target any) error {
	var agg env.AggregateError
	if !errors.As(err, &agg) {
		return err
	}
	keys := fieldKeys(reflect.TypeOf(target).Elem(), "")
	msgs := make([]string, 0, len(agg.Errors))
	for _, e := range agg.Errors {
		var pe env.ParseError
		if errors.As(e, &pe) {
			names := keys[pe.Name]
			sort.Strings(names)
			if len(names) > 0 {
				msgs = append(msgs, fmt.Sprintf("invalid %s: %v", strings.Join(names, " or "), pe.Err))
				continue
			}
		}
		msgs = append(msgs, e.Error())
	}
	return &namedError{msg: strings.Join(msgs, "; "), err: err}
}

// namedError keeps env's error for errors.As while printing variable names.
type namedError struct {
	msg string
	err error
}

func (e *namedError) Error() string { return e.msg }
func (e *namedError) Unwrap() error { return e.err }

// fieldKeys maps Go field names to the variables they read, following nested
// structs and envPrefix the way env does.
func fieldKeys(t reflect.Type, prefix string) map[string][]string {
	out := map[string][]string{}
	for i := range t.NumField() {
		f := t.Field(i)
		ft := f.Type
		if ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		key, _, _ := strings.Cut(f.Tag.Get("env"), ",")
		if ft.Kind() == reflect.Struct && key == "" {
			for name, ks := range fieldKeys(ft, prefix+f.Tag.Get("envPrefix")) {
				out[name] = append(out[name], ks...)
			}
			continue
		}
		if key != "" && key != "-" {
			out[f.Name] = append(out[f.Name], prefix+key)
		}
	}
	return out
}

// HTTPAddr is the API listener's address.
func (c Config) HTTPAddr() string { return fmt.Sprintf(":%d", c.HTTPPort) }

// AdminAddr is the admin listener's address.
func (c Config) AdminAddr() string { return fmt.Sprintf(":%d", c.AdminPort) }
