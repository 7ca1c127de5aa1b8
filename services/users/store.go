package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/courier-dev/courier/services/internal/mailjob"
	"github.com/courier-dev/courier/services/internal/outbox"
	"github.com/courier-dev/courier/services/internal/sqlitedb"
)

// migrations is the users schema, one entry per version; append, never edit.
var migrations = []string{
	// E-mail addresses are unique regardless of case: nobody expects
	// Ada@example.com and ada@example.com to be two accounts.
	`CREATE TABLE users (
		id            INTEGER PRIMARY KEY AUTOINCREMENT,
		name          TEXT NOT NULL,
		email         TEXT NOT NULL UNIQUE COLLATE NOCASE,
		password_hash BLOB NOT NULL,
		created_at    TEXT NOT NULL
	)`,
	outbox.Migration,
}

// User is an account.
type User struct {
	ID           int64
	Name         string
	Email        string
	PasswordHash []byte
	CreatedAt    time.Time
}

// Errors the store returns, possibly wrapped, for the handlers to match with
// errors.Is and map to status codes.
var (
	errNotFound       = errors.New("user not found")
	errDuplicateEmail = errors.New("e-mail already registered")
)

// store keeps users in SQLite.
type store struct{ db *sql.DB }

// Register creates the user and, in the same transaction, puts the welcome
// job in the outbox, so a user is never created without their e-mail
// being on its way (or the other way round).
func (s *store) Register(ctx context.Context, u User, welcome mailjob.Job) (User, error) {
	body, err := mailjob.Encode(welcome)
	if err != nil {
		return User{}, fmt.Errorf("register %q: %w", u.Email, err)
	}
	u.CreatedAt = time.Now().UTC()
	err = sqlitedb.InTx(ctx, s.db, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx,
			`INSERT INTO users (name, email, password_hash, created_at) VALUES (?, ?, ?, ?)`,
			u.Name, u.Email, u.PasswordHash, u.CreatedAt.Format(time.RFC3339Nano))
		if sqlitedb.IsUniqueViolation(err) {
			return errDuplicateEmail
		}
		if err != nil {
			return fmt.Errorf("insert: %w", err)
		}
		if u.ID, err = res.LastInsertId(); err != nil {
			return fmt.Errorf("read id: %w", err)
		}
		return outbox.Enqueue(ctx, tx, mailjob.Queue, body)
	})
	if err != nil {
		return User{}, fmt.Errorf("register %q: %w", u.Email, err)
	}
	return u, nil
}

// UserByID returns the user with id, or errNotFound.
func (s *store) UserByID(ctx context.Context, id int64) (User, error) {
	return s.one(ctx, `WHERE id = ?`, id)
}

// UserByEmail returns the user with the address, compared without regard to
// case, or errNotFound.
func (s *store) UserByEmail(ctx context.Context, email string) (User, error) {
	return s.one(ctx, `WHERE email = ?`, email)
}

func (s *store) one(ctx context.Context, where string, arg any) (User, error) {
	var u User
	var created string
	err := s.db.QueryRowContext(ctx,
		`SELECT id, name, email, password_hash, created_at FROM users `+where, arg,
	).Scan(&u.ID, &u.Name, &u.Email, &u.PasswordHash, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return User{}, errNotFound
	}
	if err != nil {
		return User{}, fmt.Errorf("read user: %w", err)
	}
	if u.CreatedAt, err = time.Parse(time.RFC3339Nano, created); err != nil {
		return User{}, fmt.Errorf("read user %d: created_at: %w", u.ID, err)
	}
	return u, nil
}
