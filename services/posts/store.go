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

// migrations is the posts schema, one entry per version; append, never edit.
var migrations = []string{
	`CREATE TABLE posts (
		id         INTEGER PRIMARY KEY AUTOINCREMENT,
		author_id  INTEGER NOT NULL,
		title      TEXT NOT NULL,
		body       TEXT NOT NULL,
		created_at TEXT NOT NULL,
		updated_at TEXT NOT NULL
	);
	CREATE TABLE comments (
		id         INTEGER PRIMARY KEY AUTOINCREMENT,
		post_id    INTEGER NOT NULL REFERENCES posts (id) ON DELETE CASCADE,
		author_id  INTEGER NOT NULL,
		body       TEXT NOT NULL,
		created_at TEXT NOT NULL
	);
	CREATE INDEX comments_by_post ON comments (post_id, id)`,
	outbox.Migration,
}

// Post is a blog post. AuthorID is a user id of the users service; there is
// no foreign key because users live in another service's database.
type Post struct {
	ID        int64     `json:"id"`
	AuthorID  int64     `json:"author_id"`
	Title     string    `json:"title"`
	Body      string    `json:"body"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// Comment is a comment on a post.
type Comment struct {
	ID        int64     `json:"id"`
	PostID    int64     `json:"post_id"`
	AuthorID  int64     `json:"author_id"`
	Body      string    `json:"body"`
	CreatedAt time.Time `json:"created_at"`
}

// Errors the store returns, possibly wrapped, for the handlers to match with
// errors.Is and map to status codes.
var (
	errNotFound  = errors.New("post not found")
	errNotAuthor = errors.New("only the post's author may change it")
)

// store keeps posts and comments in SQLite.
type store struct{ db *sql.DB }

func now() time.Time { return time.Now().UTC() }

func formatTime(t time.Time) string { return t.Format(time.RFC3339Nano) }

// CreatePost saves a new post.
func (s *store) CreatePost(ctx context.Context, p Post) (Post, error) {
	p.CreatedAt = now()
	p.UpdatedAt = p.CreatedAt
	res, err := s.db.ExecContext(ctx,
		`INSERT INTO posts (author_id, title, body, created_at, updated_at) VALUES (?, ?, ?, ?, ?)`,
		p.AuthorID, p.Title, p.Body, formatTime(p.CreatedAt), formatTime(p.UpdatedAt))
	if err != nil {
		return Post{}, fmt.Errorf("create post: %w", err)
	}
	if p.ID, err = res.LastInsertId(); err != nil {
		return Post{}, fmt.Errorf("create post: read id: %w", err)
	}
	return p, nil
}

const postColumns = `id, author_id, title, body, created_at, updated_at`

type scanner interface{ Scan(dest ...any) error }

func scanPost(row scanner) (Post, error) {
	var p Post
	var created, updated string
	if err := row.Scan(&p.ID, &p.AuthorID, &p.Title, &p.Body, &created, &updated); err != nil {
		return Post{}, err
	}
	var err1, err2 error
	p.CreatedAt, err1 = time.Parse(time.RFC3339Nano, created)
	p.UpdatedAt, err2 = time.Parse(time.RFC3339Nano, updated)
	if err := errors.Join(err1, err2); err != nil {
		return Post{}, fmt.Errorf("post %d: %w", p.ID, err)
	}
	return p, nil
}

// Post returns the post with id, or errNotFound.
func (s *store) Post(ctx context.Context, id int64) (Post, error) {
	p, err := scanPost(s.db.QueryRowContext(ctx, `SELECT `+postColumns+` FROM posts WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Post{}, errNotFound
	}
	if err != nil {
		return Post{}, fmt.Errorf("read post %d: %w", id, err)
	}
	return p, nil
}

// Posts returns a page of posts, newest first.
func (s *store) Posts(ctx context.Context, limit, offset int) ([]Post, error) {
	rows, err := s.db.QueryContext(ctx,
		`SELECT `+postColumns+` FROM posts ORDER BY id DESC LIMIT ? OFFSET ?`, limit, offset)
	if err != nil {
		return nil, fmt.Errorf("list posts: %w", err)
	}
	defer func() { _ = rows.Close() }()
	posts := []Post{} // an empty page is [], not null
	for rows.Next() {
		p, err := scanPost(rows)
		if err != nil {
			return nil, fmt.Errorf("list posts: %w", err)
		}
		posts = append(posts, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list posts: %w", err)
	}
	return posts, nil
}

// authorOf reads a post's author inside tx: errNotFound if there is no
// such post, errNotAuthor if it is not callerID's. Checking inside the
// write's transaction means the answer cannot change before the write.
func authorOf(ctx context.Context, tx *sql.Tx, id, callerID int64) error {
	var author int64
	err := tx.QueryRowContext(ctx, `SELECT author_id FROM posts WHERE id = ?`, id).Scan(&author)
	if errors.Is(err, sql.ErrNoRows) {
		return errNotFound
	}
	if err != nil {
		return fmt.Errorf("read author of post %d: %w", id, err)
	}
	if author != callerID {
		return errNotAuthor
	}
	return nil
}

// UpdatePost replaces the title and body of post id if callerID wrote it.
func (s *store) UpdatePost(ctx context.Context, id, callerID int64, title, body string) (Post, error) {
	var p Post
	err := sqlitedb.InTx(ctx, s.db, func(tx *sql.Tx) error {
		if err := authorOf(ctx, tx, id, callerID); err != nil {
			return err
		}
		var err error
		p, err = scanPost(tx.QueryRowContext(ctx,
			`UPDATE posts SET title = ?, body = ?, updated_at = ? WHERE id = ? RETURNING `+postColumns,
			title, body, formatTime(now()), id))
		return err
	})
	if err != nil {
		return Post{}, fmt.Errorf("update post %d: %w", id, err)
	}
	return p, nil
}

// DeletePost deletes post id and its comments if callerID wrote it.
func (s *store) DeletePost(ctx context.Context, id, callerID int64) error {
	err := sqlitedb.InTx(ctx, s.db, func(tx *sql.Tx) error {
		if err := authorOf(ctx, tx, id, callerID); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `DELETE FROM posts WHERE id = ?`, id)
		return err
	})
	if err != nil {
		return fmt.Errorf("delete post %d: %w", id, err)
	}
	return nil
}

// AddComment saves a comment and, in the same transaction, puts the
// notification job in the outbox. It returns errNotFound if the post was
// deleted meanwhile.
func (s *store) AddComment(ctx context.Context, c Comment, notification mailjob.Job) (Comment, error) {
	body, err := mailjob.Encode(notification)
	if err != nil {
		return Comment{}, fmt.Errorf("comment on post %d: %w", c.PostID, err)
	}
	c.CreatedAt = now()
	err = sqlitedb.InTx(ctx, s.db, func(tx *sql.Tx) error {
		// INSERT ... SELECT inserts nothing when the post is gone, which tells
		// "deleted meanwhile" apart from a failure without parsing SQLite errors.
		res, err := tx.ExecContext(ctx,
			`INSERT INTO comments (post_id, author_id, body, created_at) SELECT id, ?, ?, ? FROM posts WHERE id = ?`,
			c.AuthorID, c.Body, formatTime(c.CreatedAt), c.PostID)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return errNotFound
		}
		if c.ID, err = res.LastInsertId(); err != nil {
			return fmt.Errorf("read id: %w", err)
		}
		return outbox.Enqueue(ctx, tx, mailjob.Queue, body)
	})
	if err != nil {
		return Comment{}, fmt.Errorf("comment on post %d: %w", c.PostID, err)
	}
	return c, nil
}

// Comments returns a post's comments, oldest first, or errNotFound.
func (s *store) Comments(ctx context.Context, postID int64) ([]Comment, error) {
	if _, err := s.Post(ctx, postID); err != nil {
		return nil, err
	}
	rows, err := s.db.QueryContext(ctx,
		`SELECT id, post_id, author_id, body, created_at FROM comments WHERE post_id = ? ORDER BY id`, postID)
	if err != nil {
		return nil, fmt.Errorf("list comments of post %d: %w", postID, err)
	}
	defer func() { _ = rows.Close() }()
	comments := []Comment{}
	for rows.Next() {
		var c Comment
		var created string
		if err := rows.Scan(&c.ID, &c.PostID, &c.AuthorID, &c.Body, &created); err != nil {
			return nil, fmt.Errorf("list comments of post %d: %w", postID, err)
		}
		if c.CreatedAt, err = time.Parse(time.RFC3339Nano, created); err != nil {
			return nil, fmt.Errorf("comment %d: %w", c.ID, err)
		}
		comments = append(comments, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list comments of post %d: %w", postID, err)
	}
	return comments, nil
}
