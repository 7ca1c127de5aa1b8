package main

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/courier-dev/courier/services/internal/sqlitedb"
)

// migrations is the mailer's schema; append only, never edit a released one.
var migrations = []string{
	// sent_emails remembers every job whose e-mail the SMTP server accepted,
	// keyed by job id: the record that makes a redelivered job a no-op.
	`CREATE TABLE sent_emails (
		job_id     TEXT PRIMARY KEY,
		message_id TEXT NOT NULL,
		recipient  TEXT NOT NULL,
		template   TEXT NOT NULL,
		sent_at    TEXT NOT NULL
	)`,
}

// SentRecord describes one sent e-mail.
type SentRecord struct {
	JobID     string
	MessageID string
	Recipient string
	Template  string
	SentAt    time.Time
}

// SentStore records which jobs have been sent, in SQLite.
type SentStore struct {
	db *sql.DB
}

// OpenSentStore opens (creating and migrating) the database at path.
func OpenSentStore(ctx context.Context, path string) (*SentStore, error) {
	db, err := sqlitedb.Open(ctx, path, migrations)
	if err != nil {
		return nil, err
	}
	return &SentStore{db: db}, nil
}

// Sent reports whether the job's e-mail was sent already.
func (s *SentStore) Sent(ctx context.Context, jobID string) (bool, error) {
	var n int
	if err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM sent_emails WHERE job_id = ?`, jobID).Scan(&n); err != nil {
		return false, fmt.Errorf("look up job %s: %w", jobID, err)
	}
	return n > 0, nil
}

// MarkSent records r. Recording a job twice keeps the first record: the
// first send is the one that reached the server.
func (s *SentStore) MarkSent(ctx context.Context, r SentRecord) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO sent_emails (job_id, message_id, recipient, template, sent_at)
		VALUES (?, ?, ?, ?, ?) ON CONFLICT (job_id) DO NOTHING`,
		r.JobID, r.MessageID, r.Recipient, r.Template, r.SentAt.UTC().Format(time.RFC3339Nano))
	if err != nil {
		return fmt.Errorf("record job %s as sent: %w", r.JobID, err)
	}
	return nil
}

// Ping checks the database for readiness.
func (s *SentStore) Ping(ctx context.Context) error {
	if err := s.db.PingContext(ctx); err != nil {
		return fmt.Errorf("ping sqlite: %w", err)
	}
	return nil
}

// Close closes the database.
func (s *SentStore) Close() error { return s.db.Close() }
