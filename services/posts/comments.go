package main

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/courier-dev/courier/services/internal/mailjob"
	"github.com/courier-dev/courier/services/kit"
)

// commentStore is what the comments handler needs from storage.
type commentStore interface {
	Post(ctx context.Context, id int64) (Post, error)
	AddComment(ctx context.Context, c Comment, notification mailjob.Job) (Comment, error)
	Comments(ctx context.Context, postID int64) ([]Comment, error)
}

// userDirectory finds a user's name and address; the users service over
// HTTP in production.
type userDirectory interface {
	// User looks id up for the caller whose sign-in token is token.
	User(ctx context.Context, id int64, token string) (user, error)
}

// notifier wakes the outbox relay after a commit.
type notifier interface{ Notify() }

// commentsHandler serves /api/posts/:id/comments.
type commentsHandler struct {
	posts  commentStore
	users  userDirectory
	outbox notifier
	// perAccount limits comments per commenter: each one mails the post's
	// author, so an account must not be able to flood an inbox.
	perAccount *kit.Limiter
	log        *slog.Logger
}

// commentsPerAccount: ten comments at once, then one every ten seconds.
const (
	commentsPerAccountEvery = 10 * time.Second
	commentsPerAccountBurst = 10
)

type commentRequest struct {
	Body string `json:"body" binding:"required,max=5000"`
}

// create adds a comment by the signed-in user and queues an e-mail to the
// post's author. The author's address comes from users; if users cannot
// answer, the comment is not saved (502, or 504 on a timeout), so no
// comment ever lacks its notification.
func (h *commentsHandler) create(c *gin.Context) {
	id, ok := postID(c)
	if !ok {
		return
	}
	var req commentRequest
	if !kit.BindJSON(c, &req) {
		return
	}
	req.Body = strings.TrimSpace(req.Body)
	if req.Body == "" {
		badRequest(c, "body", "is required")
		return
	}
	ctx := c.Request.Context() // see postsHandler.create
	commenterID := caller(c)
	if !kit.AllowOrRefuse(c, h.perAccount, strconv.FormatInt(commenterID, 10)) {
		return
	}

	post, err := h.posts.Post(ctx, id)
	if err != nil {
		writeStoreError(c, err)
		return
	}
	author, err := h.users.User(ctx, post.AuthorID, callerToken(c))
	if err != nil {
		h.writeUsersError(c, err)
		return
	}
	commenter := author
	if commenterID != author.ID {
		if commenter, err = h.users.User(ctx, commenterID, callerToken(c)); err != nil {
			h.writeUsersError(c, err)
			return
		}
	}

	job := mailjob.New(mailjob.TemplateComment, author.Email, map[string]string{
		mailjob.DataName:          author.Name,
		mailjob.DataPostID:        strconv.FormatInt(post.ID, 10),
		mailjob.DataPostTitle:     post.Title,
		mailjob.DataCommenterName: commenter.Name,
		mailjob.DataComment:       req.Body,
	})
	comment, err := h.posts.AddComment(ctx, Comment{PostID: post.ID, AuthorID: commenterID, Body: req.Body}, job)
	if err != nil {
		writeStoreError(c, err)
		return
	}
	h.outbox.Notify()
	h.log.InfoContext(ctx, "comment added", slog.Int64("post_id", post.ID), slog.Int64("comment_id", comment.ID),
		slog.String("notification_job", job.ID))
	c.JSON(http.StatusCreated, comment)
}

// writeUsersError answers a failed user lookup: 504 on a timeout, 502
// otherwise, since the fault is the upstream's, not the client's.
func (h *commentsHandler) writeUsersError(c *gin.Context, err error) {
	_ = c.Error(err)
	switch {
	case isTimeout(err):
		kit.WriteError(c, http.StatusGatewayTimeout, "the users service did not answer in time")
	case errors.Is(err, errUserNotFound):
		kit.WriteError(c, http.StatusBadGateway, "the users service does not know the post's author or the commenter")
	default:
		kit.WriteError(c, http.StatusBadGateway, "the users service is unavailable")
	}
}

// list returns a post's comments, oldest first.
func (h *commentsHandler) list(c *gin.Context) {
	id, ok := postID(c)
	if !ok {
		return
	}
	comments, err := h.posts.Comments(c.Request.Context(), id)
	if err != nil {
		writeStoreError(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"comments": comments})
}
