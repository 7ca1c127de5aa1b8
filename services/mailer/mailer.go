package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/mail"
	"regexp"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v5"

	"github.com/courier-dev/courier/services/internal/mailjob"
	"github.com/courier-dev/courier/services/kit/messaging"
)

// Sender delivers one formatted e-mail.
type Sender interface {
	Send(ctx context.Context, e Email, raw []byte) error
}

// SentLog remembers which jobs were sent.
type SentLog interface {
	Sent(ctx context.Context, jobID string) (bool, error)
	MarkSent(ctx context.Context, r SentRecord) error
}

// Mailer turns e-mail jobs into e-mails, exactly one per job id.
//
// The order is: look the job up, send, record, and only then let the driver
// ack. A crash or lost ack after the record makes the redelivered job a
// no-op. The one window left, a crash between the SMTP server's 250 and the
// record, would send twice; closing it would need the SMTP server to take
// part in a transaction, which SMTP has no way to do. The Message-ID derived
// from the job id lets a receiving system spot that rare duplicate.
type Mailer struct {
	templates *Templates
	sender    Sender
	sent      SentLog
	from      *mail.Address
	log       *slog.Logger
	now       func() time.Time

	mu       sync.Mutex
	inFlight map[string]bool
}

// NewMailer wires a Mailer. from is the sender address of every e-mail.
func NewMailer(templates *Templates, sender Sender, sent SentLog, from *mail.Address, log *slog.Logger) *Mailer {
	return &Mailer{
		templates: templates,
		sender:    sender,
		sent:      sent,
		from:      from,
		log:       log,
		now:       time.Now,
		inFlight:  map[string]bool{},
	}
}

// messageIDLocalPart is what a job id may hold to become "<id@courier>":
// mailjob issues UUIDs; anything else, a CR or LF above all, would let a
// publisher write headers.
var messageIDLocalPart = regexp.MustCompile(`^[A-Za-z0-9._+-]{1,128}$`)

// errBusy makes the driver redeliver a job whose earlier delivery this
// process is still handling; by then the first one has been recorded.
var errBusy = errors.New("job is being handled by another delivery")

// Handle is the messaging.Handler of the emails queue.
func (m *Mailer) Handle(ctx context.Context, msg messaging.Message) error {
	job, err := mailjob.Decode(msg.Body)
	if err != nil {
		// A body that does not decode now never will: dead-letter it at once.
		return messaging.Permanent(fmt.Errorf("decode e-mail job (message %s): %w", msg.ID, err))
	}
	log := m.log.With("job_id", job.ID, "template", string(job.Template), "attempt", msg.Attempt)

	// A redelivery can arrive while the first delivery is still talking to
	// the SMTP server (an ack timeout, a reconnect). Both would find no
	// record and send; holding the id for the duration rules that out
	// within one process.
	if !m.claim(job.ID) {
		return fmt.Errorf("job %s: %w", job.ID, errBusy)
	}
	defer m.release(job.ID)

	sent, err := m.sent.Sent(ctx, job.ID)
	if err != nil {
		return err
	}
	if sent {
		log.InfoContext(ctx, "e-mail already sent; acknowledging the redelivered job")
		return nil
	}

	email, raw, err := m.compose(job)
	if err != nil {
		return messaging.Permanent(err)
	}
	if err := m.sender.Send(ctx, email, raw); err != nil {
		return fmt.Errorf("job %s: %w", job.ID, err)
	}
	log.InfoContext(ctx, "e-mail sent", "message_id", email.MessageID)

	if err := m.record(ctx, job, email); err != nil {
		// Returning the error would redeliver the job and send it again;
		// the e-mail is out, so the honest outcome is an ack and a loud log.
		log.ErrorContext(ctx, "e-mail sent but not recorded; a redelivery would send it again", "error", err)
	}
	return nil
}

// record writes the sent record, retrying briefly: SQLite errors here are
// lock contention, gone in milliseconds, and every failure costs a duplicate
// only if the job is then redelivered.
func (m *Mailer) record(ctx context.Context, job mailjob.Job, email Email) error {
	// Detached from ctx: a shutdown that cancels handling must not stop the
	// record of an e-mail that has already left.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	rec := SentRecord{
		JobID:     job.ID,
		MessageID: email.MessageID,
		Recipient: email.To.Address,
		Template:  string(job.Template),
		SentAt:    m.now(),
	}
	_, err := backoff.Retry(ctx, func() (struct{}, error) {
		return struct{}{}, m.sent.MarkSent(ctx, rec)
	}, backoff.WithBackOff(backoff.NewExponentialBackOff()), backoff.WithMaxElapsedTime(10*time.Second))
	return err
}

// compose renders the job into an e-mail and its wire form.
func (m *Mailer) compose(job mailjob.Job) (Email, []byte, error) {
	if !messageIDLocalPart.MatchString(job.ID) {
		return Email{}, nil, fmt.Errorf("job id %q cannot be a Message-ID: want 1-128 of [A-Za-z0-9._+-]", job.ID)
	}
	to, err := mail.ParseAddress(job.To)
	if err != nil {
		return Email{}, nil, fmt.Errorf("job %s: recipient %q: %w", job.ID, job.To, err)
	}
	subject, body, err := m.templates.Render(job.Template, job.Data)
	if err != nil {
		return Email{}, nil, fmt.Errorf("job %s: %w", job.ID, err)
	}
	e := Email{
		MessageID: MessageIDFor(job.ID),
		From:      m.from,
		To:        to,
		Subject:   subject,
		Body:      body,
		Date:      m.now(),
	}
	raw, err := e.Bytes()
	if err != nil {
		return Email{}, nil, fmt.Errorf("job %s: %w", job.ID, err)
	}
	return e, raw, nil
}

func (m *Mailer) claim(id string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.inFlight[id] {
		return false
	}
	m.inFlight[id] = true
	return true
}

func (m *Mailer) release(id string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.inFlight, id)
}
