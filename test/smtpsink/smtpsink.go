// Package smtpsink is a real SMTP server that keeps every message it receives:
// in memory for tests to assert on, and optionally as .eml files in a
// directory with one printed line per message, for the local run.
//
// It is built on emersion/go-smtp's server, so clients under test speak the
// real protocol (EHLO, optional STARTTLS and AUTH PLAIN, MAIL, RCPT, DATA)
// rather than calling a fake. A failure mode rejects transactions with a
// temporary 451 reply, so tests can exercise retries and dead-lettering.
package smtpsink

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// Message is one accepted e-mail.
type Message struct {
	// From is the envelope sender (MAIL FROM).
	From string
	// To holds the envelope recipients (RCPT TO).
	To []string
	// Raw is the message exactly as received after DATA.
	Raw []byte
	// Header is Raw's parsed header.
	Header mail.Header
	// Body is Raw's body, decoded when its Content-Transfer-Encoding is
	// quoted-printable or base64, with CRLF line endings turned into LF.
	Body string
	// TLS reports whether the message arrived over a STARTTLS session.
	TLS bool
	// Username is the authenticated user, empty without AUTH.
	Username string
	// Received is when the sink accepted the message.
	Received time.Time
	// File is the .eml path the message was written to, empty without Dir.
	File string
}

// Options configures a Sink. The zero value listens on a free loopback port,
// accepts any message without authentication and keeps messages in memory only.
type Options struct {
	// Addr is the listen address (default "127.0.0.1:0").
	Addr string
	// Dir, when set, receives every message as <n>-<message-id>.eml.
	Dir string
	// Log, when set, gets one line per accepted message.
	Log io.Writer
	// Username and Password, when set, make AUTH PLAIN mandatory before MAIL.
	Username, Password string
	// TLS offers STARTTLS with a freshly generated self-signed certificate for
	// 127.0.0.1 and localhost; clients trust it through CACertPEM.
	TLS bool
	// RejectRecipients are answered "550 5.1.1 no such mailbox" at RCPT, so
	// tests can exercise a permanent refusal.
	RejectRecipients []string
}

// Sink is a running SMTP server. Its methods are safe for concurrent use.
type Sink struct {
	opts      Options
	server    *smtp.Server
	listener  net.Listener
	caCertPEM []byte
	served    chan struct{}

	mu       sync.Mutex
	messages []Message
	changed  chan struct{} // closed and replaced whenever messages changes
	failNext int           // transactions still to reject; negative: all
	rejected int
	seq      int // numbers .eml files in arrival order
}

// Start listens and serves until Close.
func Start(opts Options) (*Sink, error) {
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1:0"
	}
	if opts.Dir != "" {
		if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
			return nil, fmt.Errorf("create sink directory: %w", err)
		}
	}
	s := &Sink{opts: opts, changed: make(chan struct{}), served: make(chan struct{})}
	if opts.Dir != "" {
		// Number on from a previous run's files, so the names keep sorting
		// in arrival order.
		old, err := filepath.Glob(filepath.Join(opts.Dir, "*.eml"))
		if err != nil {
			return nil, fmt.Errorf("list sink directory: %w", err)
		}
		s.seq = len(old)
	}

	srv := smtp.NewServer(smtp.BackendFunc(s.newSession))
	srv.Domain = "courier-smtpsink"
	srv.MaxMessageBytes = 10 << 20
	srv.MaxRecipients = 50
	srv.ReadTimeout = 30 * time.Second
	srv.WriteTimeout = 30 * time.Second
	// go-smtp logs every closed connection error; a sink that tests open and
	// close constantly would flood the output with them.
	srv.ErrorLog = log.New(io.Discard, "", 0)
	if opts.TLS {
		cfg, caPEM, err := selfSignedTLS()
		if err != nil {
			return nil, err
		}
		srv.TLSConfig = cfg
		s.caCertPEM = caPEM
	}

	l, err := net.Listen("tcp", opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", opts.Addr, err)
	}
	s.server, s.listener = srv, l
	go func() {
		defer close(s.served)
		_ = srv.Serve(l)
	}()
	return s, nil
}

// StartTest starts a sink that is closed when the test ends.
func StartTest(t testing.TB, opts Options) *Sink {
	t.Helper()
	s, err := Start(opts)
	if err != nil {
		t.Fatalf("start SMTP sink: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// Addr is the host:port the sink listens on.
func (s *Sink) Addr() string { return s.listener.Addr().String() }

// Host is the IP the sink listens on.
func (s *Sink) Host() string {
	host, _, _ := net.SplitHostPort(s.Addr())
	return host
}

// Port is the port the sink listens on.
func (s *Sink) Port() int {
	_, port, _ := net.SplitHostPort(s.Addr())
	n, _ := strconv.Atoi(port)
	return n
}

// CACertPEM is the PEM certificate clients must trust for STARTTLS; nil
// unless Options.TLS is set.
func (s *Sink) CACertPEM() []byte { return s.caCertPEM }

// Close stops the server and drops open connections.
func (s *Sink) Close() error {
	err := s.server.Close()
	// go-smtp's Close only closes listeners Serve has already registered; a
	// Close that wins the race against the Serve goroutine would leave Serve
	// accepting forever. Closing the listener ourselves ends Serve either way.
	_ = s.listener.Close()
	<-s.served
	if errors.Is(err, smtp.ErrServerClosed) {
		return nil
	}
	return err
}

// Messages returns a copy of the messages accepted so far, oldest first.
func (s *Sink) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.messages...)
}

// Wait blocks until cond holds for the accepted messages or ctx ends, and
// returns the messages it last saw. It wakes on every new message instead of
// polling, so a test waits exactly as long as delivery takes.
func (s *Sink) Wait(ctx context.Context, cond func([]Message) bool) ([]Message, error) {
	for {
		s.mu.Lock()
		msgs := append([]Message(nil), s.messages...)
		changed := s.changed
		s.mu.Unlock()
		if cond(msgs) {
			return msgs, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return msgs, fmt.Errorf("wait for messages (have %d): %w", len(msgs), ctx.Err())
		}
	}
}

// WaitCount waits until at least n messages were accepted.
func (s *Sink) WaitCount(ctx context.Context, n int) ([]Message, error) {
	return s.Wait(ctx, func(m []Message) bool { return len(m) >= n })
}

// Fail makes the sink reject the next n transactions at the end of DATA with
// a temporary "451 4.3.0" reply; a negative n rejects every transaction until
// Fail(0) is called.
func (s *Sink) Fail(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failNext = n
}

// Rejected counts the transactions refused by the failure mode so far.
func (s *Sink) Rejected() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rejected
}

// errTemporary is what a failing sink answers; 4xx tells a client to retry.
var errTemporary = &smtp.SMTPError{
	Code:         451,
	EnhancedCode: smtp.EnhancedCode{4, 3, 0},
	Message:      "smtpsink: failing on purpose",
}

func (s *Sink) newSession(c *smtp.Conn) (smtp.Session, error) {
	return &session{sink: s, conn: c}, nil
}

// accept stores a message, or rejects it when the failure mode is on.
func (s *Sink) accept(m Message) error {
	s.mu.Lock()
	if s.failNext != 0 {
		if s.failNext > 0 {
			s.failNext--
		}
		s.rejected++
		s.mu.Unlock()
		return errTemporary
	}
	s.seq++
	n := s.seq
	s.mu.Unlock()

	// Write outside the lock; the sequence number only orders the files.
	if s.opts.Dir != "" {
		name := fmt.Sprintf("%04d-%s.eml", n, fileSafe(m.Header.Get("Message-Id")))
		m.File = filepath.Join(s.opts.Dir, name)
		if err := os.WriteFile(m.File, m.Raw, 0o644); err != nil {
			return &smtp.SMTPError{
				Code:         451,
				EnhancedCode: smtp.EnhancedCode{4, 3, 0},
				Message:      "smtpsink: cannot store message: " + err.Error(),
			}
		}
	}

	// Log before the message becomes visible, so whoever waited for it also
	// sees its line.
	if s.opts.Log != nil {
		where := ""
		if m.File != "" {
			where = " -> " + m.File
		}
		fmt.Fprintf(s.opts.Log, "smtpsink: mail to %s: %q%s\n",
			strings.Join(m.To, ", "), m.Header.Get("Subject"), where)
	}

	s.mu.Lock()
	s.messages = append(s.messages, m)
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
	return nil
}

// fileSafe keeps letters, digits, dots, dashes and @ of a Message-ID, so it
// can be part of a file name.
func fileSafe(id string) string {
	id = strings.Trim(id, "<> ")
	var b strings.Builder
	for _, r := range id {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9',
			r == '.', r == '-', r == '@', r == '_':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	if b.Len() == 0 {
		return "no-message-id"
	}
	return b.String()
}

// session is one SMTP connection's state.
type session struct {
	sink     *Sink
	conn     *smtp.Conn
	username string
	from     string
	to       []string
}

var _ smtp.AuthSession = (*session)(nil)

// AuthMechanisms offers PLAIN only when credentials are configured; go-smtp
// then advertises AUTH only over TLS unless AllowInsecureAuth is set.
func (ss *session) AuthMechanisms() []string {
	if ss.sink.opts.Username == "" {
		return nil
	}
	return []string{sasl.Plain}
}

func (ss *session) Auth(mech string) (sasl.Server, error) {
	if mech != sasl.Plain || ss.sink.opts.Username == "" {
		return nil, smtp.ErrAuthUnknownMechanism
	}
	return sasl.NewPlainServer(func(_, username, password string) error {
		if username != ss.sink.opts.Username || password != ss.sink.opts.Password {
			return smtp.ErrAuthFailed
		}
		ss.username = username
		return nil
	}), nil
}

func (ss *session) Mail(from string, _ *smtp.MailOptions) error {
	if ss.sink.opts.Username != "" && ss.username == "" {
		return smtp.ErrAuthRequired
	}
	ss.from = from
	return nil
}

func (ss *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	if slices.Contains(ss.sink.opts.RejectRecipients, to) {
		return &smtp.SMTPError{
			Code:         550,
			EnhancedCode: smtp.EnhancedCode{5, 1, 1},
			Message:      "smtpsink: no such mailbox",
		}
	}
	ss.to = append(ss.to, to)
	return nil
}

func (ss *session) Data(r io.Reader) error {
	raw, err := io.ReadAll(r)
	if err != nil {
		return fmt.Errorf("read message: %w", err)
	}
	parsed, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		return &smtp.SMTPError{
			Code:         554,
			EnhancedCode: smtp.EnhancedCode{5, 6, 0},
			Message:      "smtpsink: malformed message: " + err.Error(),
		}
	}
	bodyReader := parsed.Body // an io.Reader; the switch below wraps it in a decoder
	switch strings.ToLower(strings.TrimSpace(parsed.Header.Get("Content-Transfer-Encoding"))) {
	case "quoted-printable":
		bodyReader = quotedprintable.NewReader(bodyReader)
	case "base64":
		bodyReader = base64.NewDecoder(base64.StdEncoding, bodyReader) // ignores line breaks
	}
	body, err := io.ReadAll(bodyReader)
	if err != nil {
		return fmt.Errorf("read message body: %w", err)
	}
	_, isTLS := ss.conn.TLSConnectionState()
	return ss.sink.accept(Message{
		From:     ss.from,
		To:       append([]string(nil), ss.to...),
		Raw:      raw,
		Header:   parsed.Header,
		Body:     strings.ReplaceAll(string(body), "\r\n", "\n"),
		TLS:      isTLS,
		Username: ss.username,
		Received: time.Now(),
	})
}

func (ss *session) Reset() {
	ss.from, ss.to = "", nil
}

func (ss *session) Logout() error { return nil }

// selfSignedTLS makes a server certificate for loopback and returns it with
// its PEM, which doubles as the CA clients must trust.
func selfSignedTLS() (*tls.Config, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return nil, nil, fmt.Errorf("generate serial: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "courier smtpsink"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("create certificate: %w", err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("marshal key: %w", err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("load key pair: %w", err)
	}
	return &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}, certPEM, nil
}
