package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/mail"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/courier-dev/courier/services/internal/mailjob"
	"github.com/courier-dev/courier/services/kit/messaging"
	"github.com/courier-dev/courier/test/smtpsink"
)

// fixture is a Mailer wired to a real SMTP server and a real SQLite file.
type fixture struct {
	sink   *smtpsink.Sink
	dbPath string
	store  *SentStore
	mailer *Mailer
}

func newFixture(t *testing.T, opts smtpsink.Options, cfg SMTPConfig) *fixture {
	t.Helper()
	sink := smtpsink.StartTest(t, opts)
	cfg.Host = sink.Host()
	cfg.Port = sink.Port()
	if cfg.Timeout == 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.From == "" {
		cfg.From = "Courier Blog <no-reply@courier.test>"
	}
	f := &fixture{sink: sink, dbPath: filepath.Join(t.TempDir(), "mailer.db")}
	f.open(t, cfg)
	return f
}

// open builds a fresh Mailer over the fixture's database file, like a
// restarted process.
func (f *fixture) open(t *testing.T, cfg SMTPConfig) {
	t.Helper()
	if cfg.Host == "" {
		cfg.Host, cfg.Port, cfg.Timeout = f.sink.Host(), f.sink.Port(), 5*time.Second
		cfg.From = "Courier Blog <no-reply@courier.test>"
	}
	store, err := OpenSentStore(context.Background(), f.dbPath)
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { _ = store.Close() })
	sender, err := NewSMTPSender(cfg)
	if err != nil {
		t.Fatalf("new sender: %v", err)
	}
	templates, err := LoadTemplates()
	if err != nil {
		t.Fatalf("load templates: %v", err)
	}
	from, err := mail.ParseAddress(cfg.From)
	if err != nil {
		t.Fatalf("parse from: %v", err)
	}
	f.store = store
	f.mailer = NewMailer(templates, sender, store, from, slog.New(slog.NewTextHandler(io.Discard, nil)))
}

func welcomeJob(to, name string) mailjob.Job {
	return mailjob.New(mailjob.TemplateWelcome, to, map[string]string{mailjob.DataName: name})
}

func message(t *testing.T, job mailjob.Job, attempt int) messaging.Message {
	t.Helper()
	body, err := mailjob.Encode(job)
	if err != nil {
		t.Fatalf("encode job: %v", err)
	}
	return messaging.Message{ID: "msg-" + job.ID, Queue: mailjob.Queue, Body: body, Attempt: attempt}
}

func TestMailerSendsRenderedWelcome(t *testing.T) {
	f := newFixture(t, smtpsink.Options{}, SMTPConfig{})
	job := welcomeJob("Ada Lovelace <ada@example.com>", "Ada")

	if err := f.mailer.Handle(t.Context(), message(t, job, 1)); err != nil {
		t.Fatalf("Handle: %v", err)
	}

	msgs := f.sink.Messages()
	if len(msgs) != 1 {
		t.Fatalf("sink has %d messages, want 1", len(msgs))
	}
	m := msgs[0]
	if m.From != "no-reply@courier.test" || len(m.To) != 1 || m.To[0] != "ada@example.com" {
		t.Errorf("envelope %q -> %q, want no-reply@courier.test -> [ada@example.com]", m.From, m.To)
	}
	for header, want := range map[string]string{
		"To":         `"Ada Lovelace" <ada@example.com>`,
		"From":       `"Courier Blog" <no-reply@courier.test>`,
		"Subject":    "Welcome to the blog, Ada",
		"Message-Id": "<" + job.ID + "@courier>",
	} {
		if got := m.Header.Get(header); got != want {
			t.Errorf("%s = %q, want %q", header, got, want)
		}
	}
	if !strings.HasPrefix(m.Body, "Hello Ada,\n") {
		t.Errorf("body = %q, want it to greet Ada", m.Body)
	}
	if ok, err := f.store.Sent(t.Context(), job.ID); err != nil || !ok {
		t.Errorf("Sent(%s) = %v, %v; want recorded", job.ID, ok, err)
	}
}

func TestMailerRendersCommentNotification(t *testing.T) {
	f := newFixture(t, smtpsink.Options{}, SMTPConfig{})
	job := mailjob.New(mailjob.TemplateComment, "ada@example.com", map[string]string{
		mailjob.DataName:          "Ada",
		mailjob.DataPostID:        "42",
		mailjob.DataPostTitle:     "Engines, analytical",
		mailjob.DataCommenterName: "Grace",
		mailjob.DataComment:       "Lovely notes — non-ASCII survives.",
	})
	if err := f.mailer.Handle(t.Context(), message(t, job, 1)); err != nil {
		t.Fatalf("Handle: %v", err)
	}
	m := f.sink.Messages()[0]
	if got, want := m.Header.Get("Subject"), `New comment on "Engines, analytical"`; got != want {
		t.Errorf("Subject = %q, want %q", got, want)
	}
	for _, want := range []string{"Hello Ada,", "Grace commented on your post \"Engines, analytical\" (post 42)", "Lovely notes — non-ASCII survives."} {
		if !strings.Contains(m.Body, want) {
			t.Errorf("body %q lacks %q", m.Body, want)
		}
	}
}

// The job is handled, the ack is lost (the handler's caller never acks), and
// the broker redelivers it, once to the same process and once to a
// restarted one: exactly one e-mail reaches the server.
func TestMailerRedeliveredJobSendsOnce(t *testing.T) {
	f := newFixture(t, smtpsink.Options{}, SMTPConfig{})
	job := welcomeJob("ada@example.com", "Ada")

	for attempt := 1; attempt <= 2; attempt++ {
		if err := f.mailer.Handle(t.Context(), message(t, job, attempt)); err != nil {
			t.Fatalf("attempt %d: %v", attempt, err)
		}
	}
	_ = f.store.Close()
	f.open(t, SMTPConfig{}) // a new process over the same database
	if err := f.mailer.Handle(t.Context(), message(t, job, 3)); err != nil {
		t.Fatalf("attempt 3 after restart: %v", err)
	}

	if n := len(f.sink.Messages()); n != 1 {
		t.Fatalf("sink has %d messages after 3 deliveries of one job, want 1", n)
	}
}

// Overlapping deliveries of one job (an ack timeout while the first is still
// sending) must not both send.
func TestMailerConcurrentDeliveriesSendOnce(t *testing.T) {
	f := newFixture(t, smtpsink.Options{}, SMTPConfig{})
	msg := message(t, welcomeJob("ada@example.com", "Ada"), 1)

	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			// A delivery turned away as busy is redelivered by the broker;
			// model that by retrying until it is acked.
			for {
				err := f.mailer.Handle(t.Context(), msg)
				if err == nil {
					return
				}
				if !errors.Is(err, errBusy) {
					t.Errorf("Handle: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	if n := len(f.sink.Messages()); n != 1 {
		t.Fatalf("sink has %d messages after 8 concurrent deliveries, want 1", n)
	}
}

func TestMailerSMTPFailureIsRetryable(t *testing.T) {
	f := newFixture(t, smtpsink.Options{}, SMTPConfig{})
	msg := message(t, welcomeJob("ada@example.com", "Ada"), 1)
	f.sink.Fail(1)

	err := f.mailer.Handle(t.Context(), msg)
	if err == nil || messaging.IsPermanent(err) {
		t.Fatalf("Handle with a failing server = %v, want a retryable error", err)
	}
	if !strings.Contains(err.Error(), "451") {
		t.Errorf("error %q does not carry the server's reply", err)
	}
	// Nothing was recorded, so the redelivery sends.
	if err := f.mailer.Handle(t.Context(), msg); err != nil {
		t.Fatalf("redelivery after the server recovered: %v", err)
	}
	if n := len(f.sink.Messages()); n != 1 {
		t.Fatalf("sink has %d messages, want 1", n)
	}
}

func TestMailerUnreachableServerIsRetryable(t *testing.T) {
	f := newFixture(t, smtpsink.Options{}, SMTPConfig{})
	_ = f.sink.Close()
	err := f.mailer.Handle(t.Context(), message(t, welcomeJob("ada@example.com", "Ada"), 1))
	if err == nil || messaging.IsPermanent(err) {
		t.Fatalf("Handle with no server = %v, want a retryable error", err)
	}
}

func TestMailerPermanentFailures(t *testing.T) {
	f := newFixture(t, smtpsink.Options{RejectRecipients: []string{"gone@example.com"}}, SMTPConfig{})
	badID := welcomeJob("ada@example.com", "Ada")
	badID.ID = "x\r\nBcc: eve@example.com"

	for name, body := range map[string][]byte{
		"not JSON":          []byte("{not json"),
		"unknown template":  []byte(`{"id":"1","to":"a@example.com","template":"nope","data":{}}`),
		"missing data":      []byte(`{"id":"1","to":"a@example.com","template":"welcome","data":{}}`),
		"bad recipient":     []byte(`{"id":"1","to":"not an address","template":"welcome","data":{"name":"A"}}`),
		"header in job id":  mustJSON(t, badID),
		"mailbox not found": message(t, welcomeJob("gone@example.com", "Gone"), 1).Body,
	} {
		t.Run(name, func(t *testing.T) {
			err := f.mailer.Handle(t.Context(), messaging.Message{ID: "m", Queue: mailjob.Queue, Body: body, Attempt: 1})
			if !messaging.IsPermanent(err) {
				t.Fatalf("Handle = %v, want a permanent error", err)
			}
		})
	}
	if n := len(f.sink.Messages()); n != 0 {
		t.Fatalf("sink has %d messages, want 0", n)
	}
}

// A display name is user input; a newline in it must not become a header.
func TestMailerSubjectCannotInjectHeaders(t *testing.T) {
	f := newFixture(t, smtpsink.Options{}, SMTPConfig{})
	job := welcomeJob("ada@example.com", "Ada\r\nBcc: eve@example.com")
	if err := f.mailer.Handle(t.Context(), message(t, job, 1)); err != nil {
		t.Fatalf("Handle: %v", err)
	}
	m := f.sink.Messages()[0]
	if bcc := m.Header.Get("Bcc"); bcc != "" {
		t.Fatalf("injected Bcc header %q", bcc)
	}
	if got, want := m.Header.Get("Subject"), "Welcome to the blog, Ada Bcc: eve@example.com"; got != want {
		t.Errorf("Subject = %q, want %q", got, want)
	}
}

func TestMailerStartTLSAndAuth(t *testing.T) {
	sink := smtpsink.StartTest(t, smtpsink.Options{TLS: true, Username: "mailer", Password: "s3cret"})
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, sink.CACertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := SMTPConfig{
		Host: sink.Host(), Port: sink.Port(), Username: "mailer", Password: "s3cret",
		StartTLS: true, CAFile: caFile, From: "no-reply@courier.test", Timeout: 5 * time.Second,
	}
	sender, err := NewSMTPSender(cfg)
	if err != nil {
		t.Fatalf("NewSMTPSender: %v", err)
	}
	e := Email{
		MessageID: "tls@courier", From: &mail.Address{Address: cfg.From},
		To: &mail.Address{Address: "ada@example.com"}, Subject: "s", Body: "b\n", Date: time.Now(),
	}
	raw, err := e.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	if err := sender.Send(t.Context(), e, raw); err != nil {
		t.Fatalf("Send: %v", err)
	}
	m := sink.Messages()
	if len(m) != 1 || !m[0].TLS || m[0].Username != "mailer" {
		t.Fatalf("messages = %+v, want one over TLS authenticated as mailer", m)
	}

	cfg.Password = "wrong"
	sender, err = NewSMTPSender(cfg)
	if err != nil {
		t.Fatal(err)
	}
	err = sender.Send(t.Context(), e, raw)
	if err == nil || messaging.IsPermanent(err) {
		t.Fatalf("Send with a wrong password = %v, want a retryable error", err)
	}
}

func TestNewSMTPSenderRefusesPasswordInClear(t *testing.T) {
	_, err := NewSMTPSender(SMTPConfig{Host: "smtp.example.com", Port: 587, Username: "u", Password: "p", Timeout: time.Second})
	if err == nil || !strings.Contains(err.Error(), "SMTP_STARTTLS") {
		t.Fatalf("NewSMTPSender = %v, want a refusal naming SMTP_STARTTLS", err)
	}
	if _, err := NewSMTPSender(SMTPConfig{Host: "127.0.0.1", Port: 2525, Username: "u", Password: "p", Timeout: time.Second}); err != nil {
		t.Fatalf("loopback relay without TLS: %v", err)
	}
}

// Every template a publisher may name exists and renders with exactly the
// data mailjob requires, and every embedded template is one a publisher can
// name.
func TestTemplatesMatchMailjob(t *testing.T) {
	tmpls, err := LoadTemplates()
	if err != nil {
		t.Fatal(err)
	}
	for name, keys := range mailjob.RequiredData {
		data := map[string]string{}
		for _, k := range keys {
			data[k] = "v-" + k
		}
		subject, body, err := tmpls.Render(name, data)
		if err != nil {
			t.Errorf("render %s with its required data: %v", name, err)
			continue
		}
		if subject == "" || body == "" {
			t.Errorf("render %s: empty subject or body", name)
		}
		for _, k := range keys {
			if !strings.Contains(subject+body, "v-"+k) {
				t.Errorf("template %s does not use required data %q", name, k)
			}
		}
	}
	for _, name := range tmpls.Names() {
		if _, ok := mailjob.RequiredData[name]; !ok {
			t.Errorf("embedded template %q is unknown to mailjob", name)
		}
	}
}

func mustJSON(t *testing.T, j mailjob.Job) []byte {
	t.Helper()
	b, err := mailjob.Encode(j)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
