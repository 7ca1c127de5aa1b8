package smtpsink_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/courier-dev/courier/test/smtpsink"
)

const msg = "From: a@example.com\r\nTo: b@example.com\r\nSubject: hi\r\nMessage-ID: <1@test>\r\n\r\nhello\r\n"

func TestSinkStoresMessagesInMemoryAndDirectory(t *testing.T) {
	dir := t.TempDir()
	var log strings.Builder
	sink := smtpsink.StartTest(t, smtpsink.Options{Dir: dir, Log: &log})

	if err := sendPlain(sink.Addr()); err != nil {
		t.Fatalf("send: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	msgs, err := sink.WaitCount(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	m := msgs[0]
	if m.From != "a@example.com" || len(m.To) != 1 || m.To[0] != "b@example.com" {
		t.Errorf("envelope = %q -> %q", m.From, m.To)
	}
	if got := m.Header.Get("Subject"); got != "hi" {
		t.Errorf("Subject = %q, want hi", got)
	}
	if m.Body != "hello\n" {
		t.Errorf("Body = %q", m.Body)
	}
	raw, err := os.ReadFile(m.File)
	if err != nil {
		t.Fatalf("read .eml: %v", err)
	}
	if string(raw) != msg {
		t.Errorf(".eml content = %q, want %q", raw, msg)
	}
	if !strings.Contains(log.String(), "b@example.com") || !strings.Contains(log.String(), m.File) {
		t.Errorf("log line = %q, want recipient and file", log.String())
	}
}

func TestSinkRequiresAuthAndOffersStartTLS(t *testing.T) {
	sink := smtpsink.StartTest(t, smtpsink.Options{Username: "u", Password: "p", TLS: true})
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(sink.CACertPEM()) {
		t.Fatal("CACertPEM is not a certificate")
	}

	send := func(password string) error {
		c, err := smtp.DialStartTLS(sink.Addr(), &tls.Config{RootCAs: roots})
		if err != nil {
			return err
		}
		defer func() { _ = c.Close() }()
		if err := c.Auth(sasl.NewPlainClient("", "u", password)); err != nil {
			return err
		}
		return c.SendMail("a@example.com", []string{"b@example.com"}, strings.NewReader(msg))
	}
	if err := send("wrong"); err == nil {
		t.Fatal("wrong password accepted")
	}
	if err := send("p"); err != nil {
		t.Fatalf("send with right password: %v", err)
	}
	// Without AUTH the sink refuses MAIL.
	if err := sendPlain(sink.Addr()); err == nil {
		t.Fatal("unauthenticated send accepted")
	}

	msgs := sink.Messages()
	if len(msgs) != 1 || !msgs[0].TLS || msgs[0].Username != "u" {
		t.Fatalf("messages = %+v, want one over TLS as u", msgs)
	}
}

func TestSinkFailureMode(t *testing.T) {
	sink := smtpsink.StartTest(t, smtpsink.Options{})
	sink.Fail(2)
	for i := range 3 {
		err := sendPlain(sink.Addr())
		var smtpErr *smtp.SMTPError
		switch {
		case i < 2 && (!errors.As(err, &smtpErr) || smtpErr.Code != 451):
			t.Fatalf("attempt %d: err = %v, want 451", i, err)
		case i == 2 && err != nil:
			t.Fatalf("attempt %d after failures: %v", i, err)
		}
	}
	if got := sink.Rejected(); got != 2 {
		t.Errorf("Rejected = %d, want 2", got)
	}
	if got := len(sink.Messages()); got != 1 {
		t.Errorf("stored %d messages, want 1", got)
	}
}

// sendPlain sends msg without TLS or AUTH; go-smtp's SendMail insists on
// STARTTLS, which the plain sink does not offer.
func sendPlain(addr string) error {
	c, err := smtp.Dial(addr)
	if err != nil {
		return err
	}
	defer func() { _ = c.Close() }()
	if err := c.SendMail("a@example.com", []string{"b@example.com"}, strings.NewReader(msg)); err != nil {
		return err
	}
	return c.Quit()
}
