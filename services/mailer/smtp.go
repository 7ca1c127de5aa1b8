package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/courier-dev/courier/services/kit/messaging"
)

// SMTPConfig is how the mailer reaches its SMTP server.
type SMTPConfig struct {
	// Host and Port of the SMTP server (587 is the submission port).
	Host string `env:"SMTP_HOST,required"`
	Port int    `env:"SMTP_PORT" envDefault:"587"`
	// Username and Password, when Username is set, authenticate with AUTH PLAIN.
	Username string `env:"SMTP_USERNAME"`
	Password string `env:"SMTP_PASSWORD"`
	// StartTLS upgrades the connection before authenticating or sending, and
	// fails the send if the server does not offer it.
	StartTLS bool `env:"SMTP_STARTTLS" envDefault:"false"`
	// CAFile is an optional PEM bundle trusted in addition to the system
	// roots, for a relay with a private CA.
	CAFile string `env:"SMTP_CA_FILE"`
	// From is the sender address, "Name <addr>" or a bare address.
	From string `env:"SMTP_FROM" envDefault:"Courier Blog <no-reply@courier.localhost>"`
	// Timeout bounds one whole SMTP conversation.
	Timeout time.Duration `env:"SMTP_TIMEOUT" envDefault:"15s"`
}

// SMTPSender sends one e-mail per SMTP connection. Mail volume here is one
// message per sign-up or comment, so a pooled connection would only add a
// reconnect path to get wrong.
type SMTPSender struct {
	addr     string
	host     string
	auth     bool
	username string
	password string
	tls      *tls.Config // nil without STARTTLS
	timeout  time.Duration
}

// NewSMTPSender checks cfg and prepares the TLS settings.
func NewSMTPSender(cfg SMTPConfig) (*SMTPSender, error) {
	if cfg.Port <= 0 || cfg.Port > 65535 {
		return nil, fmt.Errorf("config: invalid SMTP_PORT %d: want 1-65535", cfg.Port)
	}
	if cfg.Timeout <= 0 {
		return nil, fmt.Errorf("config: invalid SMTP_TIMEOUT %s: want a positive duration", cfg.Timeout)
	}
	s := &SMTPSender{
		addr:     net.JoinHostPort(cfg.Host, strconv.Itoa(cfg.Port)),
		host:     cfg.Host,
		auth:     cfg.Username != "",
		username: cfg.Username,
		password: cfg.Password,
		timeout:  cfg.Timeout,
	}
	// Like net/smtp's PlainAuth: a password never crosses the network in the
	// clear; only a loopback relay may take it without TLS.
	if s.auth && !cfg.StartTLS && !isLoopback(cfg.Host) {
		return nil, fmt.Errorf("config: SMTP_USERNAME is set but SMTP_STARTTLS is false: refusing to send a password in the clear to %s", cfg.Host)
	}
	if cfg.StartTLS {
		s.tls = &tls.Config{ServerName: cfg.Host, MinVersion: tls.VersionTLS12}
		if cfg.CAFile != "" {
			pemBytes, err := os.ReadFile(cfg.CAFile)
			if err != nil {
				return nil, fmt.Errorf("config: read SMTP_CA_FILE: %w", err)
			}
			roots, err := x509.SystemCertPool()
			if err != nil {
				roots = x509.NewCertPool()
			}
			if !roots.AppendCertsFromPEM(pemBytes) {
				return nil, fmt.Errorf("config: SMTP_CA_FILE %s holds no PEM certificate", cfg.CAFile)
			}
			s.tls.RootCAs = roots
		}
	}
	return s, nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Send delivers raw, the formatted e, to e's recipient. A 5xx reply to the
// message comes back marked messaging.Permanent; every other failure
// (network, timeout, 4xx) is worth a retry.
func (s *SMTPSender) Send(ctx context.Context, e Email, raw []byte) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()

	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", s.addr)
	if err != nil {
		return fmt.Errorf("dial smtp %s: %w", s.addr, err)
	}
	// The client has per-command timeouts but no context; closing the
	// connection when ctx ends interrupts whatever command is waiting.
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()
	if deadline, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(deadline)
	}

	var c *smtp.Client
	if s.tls != nil {
		c, err = smtp.NewClientStartTLS(conn, s.tls)
		if err != nil {
			_ = conn.Close()
			return ctxErr(ctx, fmt.Errorf("starttls with %s: %w", s.addr, err))
		}
	} else {
		c = smtp.NewClient(conn)
	}
	defer func() { _ = c.Close() }()
	c.CommandTimeout, c.SubmissionTimeout = s.timeout, s.timeout

	if s.auth {
		if err := c.Auth(sasl.NewPlainClient("", s.username, s.password)); err != nil {
			return ctxErr(ctx, fmt.Errorf("authenticate to %s: %w", s.addr, err))
		}
	}
	if err := c.SendMail(e.From.Address, []string{e.To.Address}, bytes.NewReader(raw)); err != nil {
		err = ctxErr(ctx, fmt.Errorf("send to %s via %s: %w", e.To.Address, s.addr, err))
		if rejectedForGood(err) {
			return messaging.Permanent(err)
		}
		return err
	}
	// The message is accepted once DATA got its 250; a failing QUIT changes
	// nothing about that, so it must not make the job look unsent.
	_ = c.Quit()
	return nil
}

// ctxErr prefers the context's error when it ended the conversation, so a
// timeout reads as one instead of as "use of closed network connection".
func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%w (%w)", ctx.Err(), err)
	}
	return err
}

// rejectedForGood reports a 5xx reply to MAIL, RCPT or DATA: the server
// refused this message for good (unknown mailbox, bad address, content
// rejected), so retrying cannot help. Authentication failures are left
// retryable on purpose: they are a configuration fault that a credential
// rotation fixes, not a property of the message.
func rejectedForGood(err error) bool {
	var smtpErr *smtp.SMTPError
	return errors.As(err, &smtpErr) && smtpErr.Code >= 500 && smtpErr.Code < 600
}
