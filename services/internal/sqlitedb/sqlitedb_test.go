package sqlitedb_test

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/courier-dev/courier/services/internal/sqlitedb"
)

var migrations = []string{
	`CREATE TABLE parents (id INTEGER PRIMARY KEY);
	 CREATE TABLE children (id INTEGER PRIMARY KEY, parent_id INTEGER NOT NULL REFERENCES parents(id))`,
	`ALTER TABLE parents ADD COLUMN name TEXT NOT NULL DEFAULT ''`,
}

func TestOpenAppliesMigrationsOnce(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "test.db")

	db, err := sqlitedb.Open(ctx, path, migrations[:1])
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	if v, err := sqlitedb.Version(ctx, db); err != nil || v != 1 {
		t.Fatalf("version after first open = %d, %v; want 1", v, err)
	}
	if _, err := db.ExecContext(ctx, `INSERT INTO parents (id) VALUES (1)`); err != nil {
		t.Fatalf("insert: %v", err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	// Reopening with one more migration applies only the new one and keeps data.
	db, err = sqlitedb.Open(ctx, path, migrations)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	t.Cleanup(func() { _ = db.Close() })
	if v, err := sqlitedb.Version(ctx, db); err != nil || v != 2 {
		t.Fatalf("version after reopen = %d, %v; want 2", v, err)
	}
	var name string
	if err := db.QueryRowContext(ctx, `SELECT name FROM parents WHERE id = 1`).Scan(&name); err != nil {
		t.Fatalf("row written before the second migration is gone: %v", err)
	}
}

func TestOpenSetsPragmasOnEveryConnection(t *testing.T) {
	ctx := t.Context()
	db, err := sqlitedb.Open(ctx, filepath.Join(t.TempDir(), "test.db"), migrations)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { _ = db.Close() })

	// Hold two connections at once so the second is a fresh one from the pool.
	for i := range 2 {
		conn, err := db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = conn.Close() }()
		var mode string
		var fk, busy int
		if err := conn.QueryRowContext(ctx, `PRAGMA journal_mode`).Scan(&mode); err != nil {
			t.Fatal(err)
		}
		if err := conn.QueryRowContext(ctx, `PRAGMA foreign_keys`).Scan(&fk); err != nil {
			t.Fatal(err)
		}
		if err := conn.QueryRowContext(ctx, `PRAGMA busy_timeout`).Scan(&busy); err != nil {
			t.Fatal(err)
		}
		if mode != "wal" || fk != 1 || busy != int(sqlitedb.BusyTimeout.Milliseconds()) {
			t.Errorf("connection %d: journal_mode=%q foreign_keys=%d busy_timeout=%d", i, mode, fk, busy)
		}
	}

	if _, err := db.ExecContext(ctx, `INSERT INTO children (id, parent_id) VALUES (1, 42)`); err == nil ||
		!strings.Contains(err.Error(), "FOREIGN KEY") {
		t.Fatalf("insert with a dangling foreign key: err = %v, want a FOREIGN KEY constraint failure", err)
	}
}

func TestFailedMigrationIsNotRecorded(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "test.db")
	broken := append(append([]string{}, migrations...), `CREATE TABLE late (id INTEGER PRIMARY KEY); THIS IS NOT SQL`)

	if _, err := sqlitedb.Open(ctx, path, broken); err == nil {
		t.Fatal("open with a broken migration succeeded")
	}
	db, err := sqlitedb.Open(ctx, path, migrations)
	if err != nil {
		t.Fatalf("reopen with the good migrations: %v", err)
	}
	t.Cleanup(func() { _ = db.Close() })
	if v, err := sqlitedb.Version(ctx, db); err != nil || v != 2 {
		t.Fatalf("version = %d, %v; want 2 (the broken migration must not be recorded)", v, err)
	}
	var n int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_master WHERE name = 'late'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatal("the broken migration's first statement was not rolled back")
	}
}

func TestConcurrentOpenMigratesOnce(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "test.db")
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Go(func() {
			db, err := sqlitedb.Open(ctx, path, migrations)
			if err != nil {
				errs <- err
				return
			}
			errs <- db.Close()
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("concurrent open: %v", err)
		}
	}
}

func TestOpenRejectsBadPaths(t *testing.T) {
	for _, path := range []string{"", "a?b.db", filepath.Join(t.TempDir(), "missing-dir", "x.db")} {
		if db, err := sqlitedb.Open(context.Background(), path, migrations); err == nil {
			_ = db.Close()
			t.Errorf("Open(%q) succeeded, want an error", path)
		}
	}
}

func TestIsUniqueViolation(t *testing.T) {
	ctx := t.Context()
	db, err := sqlitedb.Open(ctx, filepath.Join(t.TempDir(), "test.db"),
		[]string{`CREATE TABLE u (id INTEGER PRIMARY KEY, email TEXT NOT NULL UNIQUE COLLATE NOCASE)`})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	if _, err := db.ExecContext(ctx, `INSERT INTO u (email) VALUES ('a@example.com')`); err != nil {
		t.Fatal(err)
	}
	_, err = db.ExecContext(ctx, `INSERT INTO u (email) VALUES ('A@example.com')`)
	if !sqlitedb.IsUniqueViolation(err) {
		t.Fatalf("duplicate insert: err = %v, want a unique violation", err)
	}
	_, err = db.ExecContext(ctx, `INSERT INTO u (id, email) VALUES (NULL, NULL)`)
	if err == nil || sqlitedb.IsUniqueViolation(err) {
		t.Fatalf("NOT NULL failure: err = %v, want an error that is not a unique violation", err)
	}
	if sqlitedb.IsUniqueViolation(nil) {
		t.Fatal("nil is a unique violation")
	}
}

func TestInTx(t *testing.T) {
	ctx := t.Context()
	db, err := sqlitedb.Open(ctx, filepath.Join(t.TempDir(), "test.db"), migrations)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	count := func() int {
		t.Helper()
		var n int
		if err := db.QueryRowContext(ctx, `SELECT count(*) FROM parents`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}

	// Both inserts or neither: the second fails, and fn's error comes back
	// unwrapped.
	errStop := errors.New("stop")
	err = sqlitedb.InTx(ctx, db, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO parents (id) VALUES (1)`); err != nil {
			return err
		}
		return errStop
	})
	if err != errStop { //nolint:errorlint // InTx promises fn's error itself
		t.Fatalf("InTx = %v, want fn's error as it is", err)
	}
	if n := count(); n != 0 {
		t.Fatalf("%d rows after a failed transaction, want 0", n)
	}

	if err := sqlitedb.InTx(ctx, db, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO parents (id) VALUES (1), (2)`)
		return err
	}); err != nil {
		t.Fatalf("InTx: %v", err)
	}
	if n := count(); n != 2 {
		t.Fatalf("%d rows after a committed transaction, want 2", n)
	}
}
