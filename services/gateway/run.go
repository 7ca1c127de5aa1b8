package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/courier-dev/courier/services/internal/auth"
	"github.com/courier-dev/courier/services/kit"
	"github.com/courier-dev/courier/services/kit/contract"
)

// config is the gateway's own configuration; the kit reads the rest (ports,
// timeouts) from the contract's variables.
type config struct {
	// UsersURL and PostsURL are the upstreams' base URLs, set by the operator
	// as contract.ServiceURLEnv("users") and contract.ServiceURLEnv("posts").
	UsersURL string `env:"SERVICE_USERS_URL,required"`
	PostsURL string `env:"SERVICE_POSTS_URL,required"`
	// UpstreamTimeout bounds one forwarded request; it must be shorter than
	// the kit's REQUEST_TIMEOUT so the client gets the gateway's 504.
	UpstreamTimeout time.Duration `env:"UPSTREAM_TIMEOUT" envDefault:"5s"`
	// TrustedProxies are the addresses or CIDRs of the load balancer or
	// ingress in front of the gateway, whose X-Forwarded-For names the
	// client. The per-client rate limits key on that address; behind an
	// ingress and without this, every client shares the ingress's limit.
	// Empty: the connection's address is the client's.
	TrustedProxies []string `env:"TRUSTED_PROXIES" envSeparator:","`
}

// run starts the gateway and blocks until ctx ends.
func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	usage := fmt.Sprintf("Configured from the environment: %s, %s,\n"+
		"UPSTREAM_TIMEOUT, TRUSTED_PROXIES and the kit's variables (see docs/contract.md).",
		contract.ServiceURLEnv("users"), contract.ServiceURLEnv("posts"))
	if help, err := kit.ParseArgs(args, stdout, usage); help || err != nil {
		return err
	}

	var own config
	cfg, err := kit.LoadConfig(getenv, &own)
	if err != nil {
		return err
	}
	if own.UpstreamTimeout <= 0 || own.UpstreamTimeout >= cfg.RequestTimeout {
		return fmt.Errorf("config: invalid UPSTREAM_TIMEOUT %s: want a positive duration below %s (%s)",
			own.UpstreamTimeout, contract.EnvRequestTimeout, cfg.RequestTimeout)
	}
	for _, p := range own.TrustedProxies {
		if _, _, err := net.ParseCIDR(p); err != nil && net.ParseIP(p) == nil {
			return fmt.Errorf("config: invalid TRUSTED_PROXIES: %q is neither an IP address nor a CIDR", p)
		}
	}
	usersURL, err := parseBaseURL(own.UsersURL)
	if err != nil {
		return fmt.Errorf("config: invalid %s: %w", contract.ServiceURLEnv("users"), err)
	}
	postsURL, err := parseBaseURL(own.PostsURL)
	if err != nil {
		return fmt.Errorf("config: invalid %s: %w", contract.ServiceURLEnv("posts"), err)
	}

	svc, err := kit.New(ctx, cfg, getenv, kit.WithLogOutput(stdout))
	if err != nil {
		return err
	}
	// Tokens are verified with the keys users publishes, never a shared
	// secret: the gateway cannot mint one.
	tokens, err := auth.NewRemoteVerifier(ctx, usersURL.JoinPath(auth.JWKSPath).String())
	if err != nil {
		return err
	}
	log := svc.Logger()
	router, err := newRouter(own.TrustedProxies,
		newUpstream("users", usersURL, own.UpstreamTimeout, log),
		newUpstream("posts", postsURL, own.UpstreamTimeout, log),
		tokens)
	if err != nil {
		return err
	}

	// Run returns nil after a shutdown that ctx asked for.
	return svc.Run(ctx, kit.App{Handler: router})
}
