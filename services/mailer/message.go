package main

import (
	"bytes"
	"fmt"
	"mime"
	"mime/quotedprintable"
	"net/mail"
	"strings"
	"time"
	"unicode"
)

// Email is one rendered message, ready for SMTP.
type Email struct {
	// MessageID is the Message-ID without angle brackets: "<job id>@courier".
	// It is derived from the job id, so a resend of the same job would carry
	// the same id and a receiving system could tell the two apart.
	MessageID string
	From      *mail.Address
	To        *mail.Address
	Subject   string
	Body      string
	Date      time.Time
}

// messageIDDomain is the right-hand side of every Message-ID.
const messageIDDomain = "courier"

// MessageIDFor is the Message-ID (without brackets) of the e-mail of a job.
func MessageIDFor(jobID string) string { return jobID + "@" + messageIDDomain }

// Bytes formats the message per RFC 5322 with a quoted-printable UTF-8 text
// body. The standard library has every piece (address and RFC 2047 header
// encoding, quoted-printable); a MIME library would add a dependency for
// four headers.
func (e Email) Bytes() ([]byte, error) {
	var b bytes.Buffer
	header := func(k, v string) { fmt.Fprintf(&b, "%s: %s\r\n", k, v) }
	header("From", e.From.String())
	header("To", e.To.String())
	header("Subject", mime.QEncoding.Encode("utf-8", headerText(e.Subject)))
	header("Date", e.Date.Format(time.RFC1123Z))
	header("Message-ID", "<"+e.MessageID+">")
	header("MIME-Version", "1.0")
	header("Content-Type", "text/plain; charset=utf-8")
	header("Content-Transfer-Encoding", "quoted-printable")
	b.WriteString("\r\n")

	// In text mode the writer turns "\n" into CRLF and wraps long lines, so
	// any template output is valid on the wire.
	qp := quotedprintable.NewWriter(&b)
	if _, err := qp.Write([]byte(strings.ReplaceAll(e.Body, "\r\n", "\n"))); err != nil {
		return nil, fmt.Errorf("encode body: %w", err)
	}
	if err := qp.Close(); err != nil {
		return nil, fmt.Errorf("encode body: %w", err)
	}
	return b.Bytes(), nil
}

// headerText makes s safe as a one-line header value: control characters
// (a newline in a user's name would otherwise inject headers) become spaces,
// runs of space collapse, and the value is capped.
func headerText(s string) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
	s = strings.Join(strings.Fields(s), " ")
	const maxRunes = 200
	if r := []rune(s); len(r) > maxRunes {
		s = string(r[:maxRunes-1]) + "…"
	}
	return s
}
