package kit_test

import (
	"log/slog"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/courier-dev/courier/services/kit"
	"github.com/courier-dev/courier/services/kit/contract"
)

// envMap turns a map into the getenv a service's run receives.
func envMap(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// The env tags are literals (Go requires it); this keeps them equal to the
// contract's names, which the operator uses to set them.
func TestConfigTagsMatchContract(t *testing.T) {
	want := map[string]string{
		"App":                   contract.EnvAppName,
		"Service":               contract.EnvServiceName,
		"PodName":               contract.EnvPodName,
		"PodNamespace":          contract.EnvPodNamespace,
		"HTTPPort":              contract.EnvHTTPPort,
		"AdminPort":             contract.EnvAdminPort,
		"BrokerKind":            contract.EnvBrokerKind,
		"BrokerURL":             contract.EnvBrokerURL,
		"BrokerCredentialsFile": contract.EnvBrokerCredentialsFile,
		"DevDeclareTopology":    contract.EnvDevDeclareTopology,
		"RequestTimeout":        contract.EnvRequestTimeout,
		"BodyLimit":             contract.EnvBodyLimit,
		"ShutdownGrace":         contract.EnvShutdownGrace,
		"ShutdownDelay":         contract.EnvShutdownDelay,
		"LogLevel":              contract.EnvLogLevel,
		"Queues":                "-",
		"MaxDeliveries":         "-",
	}
	typ := reflect.TypeFor[kit.Config]()
	for i := range typ.NumField() {
		f := typ.Field(i)
		key, _, _ := strings.Cut(f.Tag.Get("env"), ",")
		w, ok := want[f.Name]
		if !ok {
			t.Errorf("field %s (env %q) has no contract name in this test", f.Name, key)
			continue
		}
		if key != w {
			t.Errorf("field %s reads %q, contract says %q", f.Name, key, w)
		}
	}
}

func TestLoadConfigDefaults(t *testing.T) {
	cfg, err := kit.LoadConfig(envMap(nil), nil)
	if err != nil {
		t.Fatalf("LoadConfig: %v", err)
	}
	if cfg.HTTPPort != int(contract.HTTPPort) || cfg.AdminPort != int(contract.AdminPort) {
		t.Errorf("ports = %d, %d; want the contract's %d, %d", cfg.HTTPPort, cfg.AdminPort, contract.HTTPPort, contract.AdminPort)
	}
	if cfg.RequestTimeout != 10*time.Second || cfg.ShutdownGrace != 25*time.Second || cfg.ShutdownDelay != 0 {
		t.Errorf("timeouts = %s, %s, %s", cfg.RequestTimeout, cfg.ShutdownGrace, cfg.ShutdownDelay)
	}
	if cfg.BodyLimit != 1<<20 || cfg.LogLevel != slog.LevelInfo || cfg.DevDeclareTopology || cfg.BrokerKind != "" {
		t.Errorf("unexpected defaults: %+v", cfg)
	}
}

func TestLoadConfigReadsEverything(t *testing.T) {
	type own struct {
		SMTPHost string `env:"SMTP_HOST,required"`
		SMTPPort int    `env:"SMTP_PORT" envDefault:"25"`
	}
	var o own
	cfg, err := kit.LoadConfig(envMap(map[string]string{
		"COURIER_APP": "blog", "COURIER_SERVICE": "mailer", "POD_NAME": "mailer-0", "POD_NAMESPACE": "apps",
		"HTTP_PORT": "8081", "ADMIN_PORT": "9091", "BROKER_KIND": "nats", "BROKER_URL": "nats://u:p@nats:4222",
		"COURIER_DEV_DECLARE_TOPOLOGY": "true", "REQUEST_TIMEOUT": "3s", "BODY_LIMIT_BYTES": "2048",
		"SHUTDOWN_GRACE": "20s", "SHUTDOWN_DELAY": "2s", "LOG_LEVEL": "debug",
		"QUEUE_EMAILS": "blog.emails", "QUEUE_EMAIL_JOBS": "blog.email-jobs", "QUEUE_EMAILS_MAX_DELIVERIES": "7",
		"SMTP_HOST": "smtp.local",
	}), &o, "emails", "email-jobs")
	if err != nil {
		t.Fatalf("LoadConfig: %v", err)
	}
	want := kit.Config{
		App: "blog", Service: "mailer", PodName: "mailer-0", PodNamespace: "apps",
		HTTPPort: 8081, AdminPort: 9091, BrokerKind: "nats", BrokerURL: "nats://u:p@nats:4222",
		DevDeclareTopology: true, RequestTimeout: 3 * time.Second, BodyLimit: 2048,
		ShutdownGrace: 20 * time.Second, ShutdownDelay: 2 * time.Second, LogLevel: slog.LevelDebug,
		Queues:        map[string]string{"emails": "blog.emails", "email-jobs": "blog.email-jobs"},
		MaxDeliveries: map[string]int{"emails": 7},
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("config =\n%+v\nwant\n%+v", cfg, want)
	}
	if o != (own{SMTPHost: "smtp.local", SMTPPort: 25}) {
		t.Errorf("service config = %+v", o)
	}
}

func TestLoadConfigErrorsNameTheVariable(t *testing.T) {
	broker := map[string]string{"COURIER_APP": "blog", "BROKER_KIND": "rabbitmq", "BROKER_URL": "amqp://u:p@mq:5672/blog"}
	with := func(base map[string]string, kv ...string) map[string]string {
		m := map[string]string{}
		for k, v := range base {
			m[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	type own struct {
		DBPath   string        `env:"USERS_DB_PATH,required"`
		Workers  int           `env:"USERS_WORKERS" envDefault:"2"`
		TokenTTL time.Duration `env:"USERS_TOKEN_TTL" envDefault:"1h"`
	}
	tests := []struct {
		name    string
		env     map[string]string
		service any
		queues  []string
		want    string
	}{
		{"malformed port", map[string]string{"HTTP_PORT": "http"}, nil, nil, "HTTP_PORT"},
		{"port out of range", map[string]string{"ADMIN_PORT": "70000"}, nil, nil, "ADMIN_PORT"},
		{"malformed timeout", map[string]string{"REQUEST_TIMEOUT": "10"}, nil, nil, "REQUEST_TIMEOUT"},
		{"zero grace", map[string]string{"SHUTDOWN_GRACE": "0s"}, nil, nil, "SHUTDOWN_GRACE"},
		{"delay past grace", map[string]string{"SHUTDOWN_GRACE": "5s", "SHUTDOWN_DELAY": "5s"}, nil, nil, "SHUTDOWN_DELAY"},
		{"malformed body limit", map[string]string{"BODY_LIMIT_BYTES": "1MB"}, nil, nil, "BODY_LIMIT_BYTES"},
		{"malformed log level", map[string]string{"LOG_LEVEL": "loud"}, nil, nil, "LOG_LEVEL"},
		{"malformed bool", map[string]string{"COURIER_DEV_DECLARE_TOPOLOGY": "yes please"}, nil, nil, "COURIER_DEV_DECLARE_TOPOLOGY"},
		{"unknown broker", map[string]string{"BROKER_KIND": "kafka"}, nil, nil, "BROKER_KIND"},
		{"broker without URL", map[string]string{"COURIER_APP": "blog", "BROKER_KIND": "nats"}, nil, nil, "BROKER_URL"},
		{"broker without app", map[string]string{"BROKER_KIND": "nats", "BROKER_URL": "nats://n:4222"}, nil, nil, "COURIER_APP"},
		{"queue unmapped", broker, nil, []string{"emails"}, "QUEUE_EMAILS"},
		{"one of two queues unmapped", with(broker, "QUEUE_EMAILS", "blog.emails"), nil, []string{"emails", "email-jobs"}, "QUEUE_EMAIL_JOBS"},
		{"malformed delivery limit", with(broker, "QUEUE_EMAILS", "blog.emails", "QUEUE_EMAILS_MAX_DELIVERIES", "five"), nil, []string{"emails"}, "QUEUE_EMAILS_MAX_DELIVERIES"},
		{"zero delivery limit", with(broker, "QUEUE_EMAILS", "blog.emails", "QUEUE_EMAILS_MAX_DELIVERIES", "0"), nil, []string{"emails"}, "QUEUE_EMAILS_MAX_DELIVERIES"},
		{"service required missing", nil, &own{}, nil, "USERS_DB_PATH"},
		{"service malformed int", map[string]string{"USERS_DB_PATH": "x.db", "USERS_WORKERS": "many"}, &own{}, nil, "USERS_WORKERS"},
		{"service malformed duration", map[string]string{"USERS_DB_PATH": "x.db", "USERS_TOKEN_TTL": "forever"}, &own{}, nil, "USERS_TOKEN_TTL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := kit.LoadConfig(envMap(tt.env), tt.service, tt.queues...)
			if err == nil {
				t.Fatalf("LoadConfig succeeded; want an error naming %s", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not name %s", err, tt.want)
			}
		})
	}
}

// Without a broker (a local run of a service that only serves HTTP, or its
// route tests) queue variables are optional.
func TestLoadConfigQueuesOptionalWithoutBroker(t *testing.T) {
	cfg, err := kit.LoadConfig(envMap(map[string]string{"QUEUE_EMAILS": "blog.emails"}), nil, "emails", "audit")
	if err != nil {
		t.Fatalf("LoadConfig: %v", err)
	}
	if want := map[string]string{"emails": "blog.emails"}; !reflect.DeepEqual(cfg.Queues, want) {
		t.Errorf("queues = %v, want %v", cfg.Queues, want)
	}
}
