// Package outbox makes "save a row and publish a job" atomic for the SQLite
// services: the job is written to an outbox table in the same transaction as
// the row that caused it, and a relay publishes it after the commit and
// deletes it once the broker confirmed it.
//
// Publishing inside the request instead would leave two bad choices when the
// broker is down: answer success and lose the e-mail, or answer an error for
// a user that was in fact created (a retry then gets 409). With the outbox
// the request succeeds as soon as the database commits and the job survives
// broker outages and restarts. A crash between the broker's confirmation and
// the delete republishes the job; consumers de-duplicate on the job id,
// which is part of the body and so the same on every republish.
//
// The relay publishes a page of rows at a time through the kit's batch API
// (messaging.PublishBatch), so a backlog drains at the broker's pipelined
// rate rather than one confirmation round trip per row, and deletes exactly
// the rows the broker confirmed: after a partial failure the rest are
// published again on the next pass.
package outbox

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v5"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"

	"github.com/courier-dev/courier/services/kit/messaging"
)

// Migration creates the outbox table; a service appends it to its own
// migrations. headers keeps the W3C trace context of the request that
// enqueued the message, so the published message continues that trace.
const Migration = `CREATE TABLE outbox (
	seq         INTEGER PRIMARY KEY AUTOINCREMENT,
	queue       TEXT NOT NULL,
	body        BLOB NOT NULL,
	headers     TEXT NOT NULL,
	enqueued_at TEXT NOT NULL
)`

// Publisher is what the relay needs from the broker; messaging.Broker has
// it. A Publisher that is also a messaging.BatchPublisher (the kit's
// drivers are) gets a page of rows in flight at once; any other gets one
// Publish call per row (see messaging.PublishBatch).
type Publisher interface {
	Publish(ctx context.Context, queue string, body []byte) (string, error)
}

// DefaultBatchSize is Relay.BatchSize unless set otherwise: as many rows as
// the kit's default confirm window keeps in flight.
const DefaultBatchSize = messaging.DefaultConfirmWindow

// Enqueue records a message for queue inside tx, with the trace context of
// ctx. Call Relay.Notify after tx commits.
func Enqueue(ctx context.Context, tx *sql.Tx, queue string, body []byte) error {
	carrier := propagation.MapCarrier{}
	otel.GetTextMapPropagator().Inject(ctx, carrier)
	headers, err := json.Marshal(carrier)
	if err != nil {
		return fmt.Errorf("outbox: encode headers: %w", err)
	}
	if _, err := tx.ExecContext(ctx,
		`INSERT INTO outbox (queue, body, headers, enqueued_at) VALUES (?, ?, ?, ?)`,
		queue, body, string(headers), time.Now().UTC().Format(time.RFC3339Nano)); err != nil {
		return fmt.Errorf("outbox: enqueue to %q: %w", queue, err)
	}
	return nil
}

// Relay publishes the outbox in the order rows were enqueued, a page at a
// time. Within a page, messages are in flight together and the broker may
// confirm them in any order; after a failure, the rows it did not confirm
// are published again after the ones it did. Consumers run concurrently and
// never relied on order.
type Relay struct {
	db  *sql.DB
	pub Publisher
	log *slog.Logger
	// wake has room for one signal: any number of Notify calls while the
	// relay is busy collapse into one more pass.
	wake chan struct{}
	// PollInterval is how often the relay looks without being notified,
	// which catches rows left by a previous process.
	PollInterval time.Duration
	// PublishTimeout bounds the publishing of one page; the rows not
	// confirmed by then are retried after it.
	PublishTimeout time.Duration
	// BatchSize is the number of rows read and published together.
	BatchSize int
}

// NewRelay returns a relay from db's outbox table to pub.
func NewRelay(db *sql.DB, pub Publisher, log *slog.Logger) *Relay {
	return &Relay{
		db: db, pub: pub, log: log,
		wake:           make(chan struct{}, 1),
		PollInterval:   5 * time.Second,
		PublishTimeout: 30 * time.Second,
		BatchSize:      DefaultBatchSize,
	}
}

// Notify tells the relay there is something to publish. It never blocks.
func (r *Relay) Notify() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Run publishes until ctx ends, then returns nil. Rows still in the outbox
// at that point are published by the next process.
func (r *Relay) Run(ctx context.Context) error {
	retry := backoff.NewExponentialBackOff()
	retry.InitialInterval = 200 * time.Millisecond
	retry.MaxInterval = 30 * time.Second
	poll := time.NewTimer(0) // first pass at once: rows may be left from before
	defer poll.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-r.wake:
		case <-poll.C:
		}
		wait := r.PollInterval
		if err := r.drain(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			wait = retry.NextBackOff()
			r.log.WarnContext(ctx, "outbox relay failed, retrying", slog.Any("error", err), slog.Duration("retry_in", wait))
			// Drop a pending wake so the backoff is honoured.
			select {
			case <-r.wake:
			default:
			}
		} else {
			retry.Reset()
		}
		poll.Reset(wait)
	}
}

type row struct {
	seq     int64
	queue   string
	body    []byte
	headers string
}

// drain publishes and deletes rows in order until the outbox is empty.
func (r *Relay) drain(ctx context.Context) error {
	for {
		rows, err := r.next(ctx, max(r.BatchSize, 1))
		if err != nil {
			return err
		}
		if len(rows) == 0 {
			return nil
		}
		// One batch per run of consecutive rows for the same queue.
		for len(rows) > 0 {
			n := 1
			for n < len(rows) && rows[n].queue == rows[0].queue {
				n++
			}
			if err := r.publish(ctx, rows[:n]); err != nil {
				return err
			}
			rows = rows[n:]
		}
	}
}

func (r *Relay) next(ctx context.Context, limit int) ([]row, error) {
	rs, err := r.db.QueryContext(ctx, `SELECT seq, queue, body, headers FROM outbox ORDER BY seq LIMIT ?`, limit)
	if err != nil {
		return nil, fmt.Errorf("outbox: read: %w", err)
	}
	defer func() { _ = rs.Close() }()
	var out []row
	for rs.Next() {
		var m row
		if err := rs.Scan(&m.seq, &m.queue, &m.body, &m.headers); err != nil {
			return nil, fmt.Errorf("outbox: read: %w", err)
		}
		out = append(out, m)
	}
	if err := rs.Err(); err != nil {
		return nil, fmt.Errorf("outbox: read: %w", err)
	}
	return out, nil
}

// publish publishes rows, all for one queue, as one batch, each message in
// the trace of the request that enqueued it, and deletes the rows the
// broker confirmed, even when others were not.
func (r *Relay) publish(ctx context.Context, rows []row) error {
	queue := rows[0].queue
	propagator := otel.GetTextMapPropagator()
	msgs := make([]messaging.Outgoing, len(rows))
	for i, m := range rows {
		carrier := propagation.MapCarrier{}
		if err := json.Unmarshal([]byte(m.headers), &carrier); err != nil {
			// Headers are ours; a bad value only costs the trace link.
			r.log.WarnContext(ctx, "outbox: dropping unreadable trace headers", slog.Int64("seq", m.seq), slog.Any("error", err))
		}
		msgs[i] = messaging.Outgoing{Body: m.body, Context: propagator.Extract(context.Background(), carrier)}
	}
	pctx, cancel := context.WithTimeout(ctx, r.PublishTimeout)
	defer cancel()
	ids, pubErr := messaging.PublishBatch(pctx, r.pub, queue, msgs)

	confirmed := make([]any, 0, len(rows))
	for i, id := range ids {
		if id == "" {
			continue
		}
		confirmed = append(confirmed, rows[i].seq)
		r.log.DebugContext(msgs[i].Context, "outbox: published",
			slog.String("queue", queue), slog.Int64("seq", rows[i].seq), slog.String("message_id", id))
	}
	// The delete uses ctx, not pctx: once confirmed, the rows must go even
	// if the publish deadline has passed.
	if err := r.delete(ctx, confirmed); err != nil {
		return errors.Join(err, pubErr)
	}
	if pubErr != nil {
		return fmt.Errorf("outbox: publish rows %d to %d to %q (%d of them confirmed and deleted): %w",
			rows[0].seq, rows[len(rows)-1].seq, queue, len(confirmed), pubErr)
	}
	return nil
}

// delete removes the rows with the given seqs in one statement (a page is
// far below SQLite's limit of 32766 parameters).
func (r *Relay) delete(ctx context.Context, seqs []any) error {
	if len(seqs) == 0 {
		return nil
	}
	query := `DELETE FROM outbox WHERE seq IN (?` + strings.Repeat(`, ?`, len(seqs)-1) + `)`
	if _, err := r.db.ExecContext(ctx, query, seqs...); err != nil {
		return fmt.Errorf("outbox: delete %d published rows (seq %v to %v): %w", len(seqs), seqs[0], seqs[len(seqs)-1], err)
	}
	return nil
}

// Pending counts the messages not yet published.
func (r *Relay) Pending(ctx context.Context) (int, error) {
	var n int
	if err := r.db.QueryRowContext(ctx, `SELECT count(*) FROM outbox`).Scan(&n); err != nil {
		return 0, fmt.Errorf("outbox: count: %w", err)
	}
	return n, nil
}
