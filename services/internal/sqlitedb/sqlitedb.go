// Package sqlitedb opens the SQLite databases of the blog services through
// the pure-Go modernc.org/sqlite driver (no cgo, so the images stay static)
// and brings their schema up to date with numbered migrations.
package sqlitedb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v5"
	"modernc.org/sqlite" // also registers the "sqlite" database/sql driver
	sqlite3 "modernc.org/sqlite/lib"
)

// BusyTimeout is how long a connection waits for another writer's lock
// before failing with SQLITE_BUSY. Replicas of a service never share a file,
// but the pool's own connections do.
const BusyTimeout = 5 * time.Second

// Open opens (creating if needed) the SQLite database at path and applies the
// migrations it has not applied yet. migrations[i] is version i+1; a
// migration is never edited once released, only appended to.
//
// Every connection of the pool runs in WAL mode (readers never block the
// writer), waits BusyTimeout for locks, enforces foreign keys, and starts
// transactions with BEGIN IMMEDIATE so two writers queue on the busy timeout
// instead of failing with a lock upgrade deadlock.
func Open(ctx context.Context, path string, migrations []string) (*sql.DB, error) {
	if path == "" {
		return nil, fmt.Errorf("open sqlite: empty path")
	}
	if strings.Contains(path, "?") {
		// The driver splits the DSN at the first '?'.
		return nil, fmt.Errorf("open sqlite %q: path must not contain '?'", path)
	}
	q := url.Values{}
	q.Set("_busy_timeout", fmt.Sprint(BusyTimeout.Milliseconds()))
	q.Set("_journal_mode", "WAL")
	q.Set("_foreign_keys", "1")
	q.Set("_synchronous", "NORMAL") // durable in WAL mode except on power loss, and much faster than FULL
	q.Set("_txlock", "immediate")
	db, err := sql.Open("sqlite", path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("open sqlite %q: %w", path, err)
	}
	if err := ping(ctx, db); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open sqlite %q: %w", path, err)
	}
	if err := Migrate(ctx, db, migrations); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open sqlite %q: %w", path, err)
	}
	return db, nil
}

// ping opens the first connection, retrying while another process (or
// another Open of the same file) holds the lock. SQLite answers SQLITE_BUSY
// to the connection's "PRAGMA journal_mode=WAL" at once, without calling the
// busy handler, while a second connection switches the same new file to WAL,
// so the busy timeout alone does not cover concurrent first opens.
func ping(ctx context.Context, db *sql.DB) error {
	_, err := backoff.Retry(ctx, func() (struct{}, error) {
		err := db.PingContext(ctx)
		if err != nil && !isBusy(err) {
			return struct{}{}, backoff.Permanent(err)
		}
		return struct{}{}, err
	}, backoff.WithBackOff(&backoff.ExponentialBackOff{
		InitialInterval:     5 * time.Millisecond,
		RandomizationFactor: 0.5,
		Multiplier:          2,
		MaxInterval:         250 * time.Millisecond,
	}), backoff.WithMaxElapsedTime(BusyTimeout))
	return err
}

// isBusy reports whether err is SQLITE_BUSY or one of its extended codes.
func isBusy(err error) bool {
	var e *sqlite.Error
	return errors.As(err, &e) && e.Code()&0xff == sqlite3.SQLITE_BUSY
}

// Migrate applies, in order and each in its own transaction, the migrations
// whose version (index+1) is not yet recorded in schema_migrations.
func Migrate(ctx context.Context, db *sql.DB, migrations []string) error {
	const create = `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    INTEGER PRIMARY KEY,
		applied_at TEXT NOT NULL
	)`
	if _, err := db.ExecContext(ctx, create); err != nil {
		return fmt.Errorf("create schema_migrations: %w", err)
	}
	for i, stmt := range migrations {
		if err := apply(ctx, db, i+1, stmt); err != nil {
			return err
		}
	}
	return nil
}

// apply runs one migration unless it is recorded already. The check and the
// migration share one immediate transaction, so two processes starting on
// the same file cannot both apply it.
func apply(ctx context.Context, db *sql.DB, version int, stmt string) error {
	err := InTx(ctx, db, func(tx *sql.Tx) error {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM schema_migrations WHERE version = ?`, version).Scan(&n); err != nil {
			return fmt.Errorf("check: %w", err)
		}
		if n > 0 {
			return nil
		}
		if _, err := tx.ExecContext(ctx, stmt); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)`,
			version, time.Now().UTC().Format(time.RFC3339Nano)); err != nil {
			return fmt.Errorf("record: %w", err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("migration %d: %w", version, err)
	}
	return nil
}

// InTx runs fn in a transaction on db and commits it if fn returns nil; if
// fn fails, the transaction is rolled back and fn's error returned as it
// is, so sentinel errors reach the caller unchanged. Every write that must
// not be seen half done (a row and its outbox job, a check and the write
// it allows) goes through one.
func InTx(ctx context.Context, db *sql.DB, fn func(tx *sql.Tx) error) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer func() { _ = tx.Rollback() }() // no-op after Commit
	if err := fn(tx); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// Version reports the highest applied migration, 0 for a fresh database.
func Version(ctx context.Context, db *sql.DB) (int, error) {
	var v sql.NullInt64
	if err := db.QueryRowContext(ctx, `SELECT max(version) FROM schema_migrations`).Scan(&v); err != nil {
		return 0, fmt.Errorf("read schema version: %w", err)
	}
	return int(v.Int64), nil
}

// IsUniqueViolation reports whether err is SQLite refusing a row that breaks
// a UNIQUE constraint, which services turn into 409 Conflict.
func IsUniqueViolation(err error) bool {
	var e *sqlite.Error
	return errors.As(err, &e) && e.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE
}
