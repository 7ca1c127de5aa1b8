package main

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/courier-dev/courier/services/kit"
)

// postStore is what the posts handler needs from storage.
type postStore interface {
	CreatePost(ctx context.Context, p Post) (Post, error)
	Post(ctx context.Context, id int64) (Post, error)
	Posts(ctx context.Context, limit, offset int) ([]Post, error)
	UpdatePost(ctx context.Context, id, callerID int64, title, body string) (Post, error)
	DeletePost(ctx context.Context, id, callerID int64) error
}

// postsHandler serves /api/posts and /api/posts/:id.
type postsHandler struct {
	posts postStore
	log   *slog.Logger
}

// postRequest is the body of create and update.
type postRequest struct {
	Title string `json:"title" binding:"required,max=200"`
	Body  string `json:"body" binding:"required,max=20000"`
}

// bindPost binds and validates a post body, answering 400 itself.
func bindPost(c *gin.Context) (postRequest, bool) {
	var req postRequest
	if !kit.BindJSON(c, &req) {
		return req, false
	}
	req.Title = strings.TrimSpace(req.Title)
	if req.Title == "" {
		badRequest(c, "title", "is required")
		return req, false
	}
	return req, true
}

func badRequest(c *gin.Context, field, msg string) {
	c.AbortWithStatusJSON(http.StatusBadRequest, kit.ErrorResponse{Error: "invalid request", Fields: map[string]string{field: msg}})
}

// postID parses the :id parameter, answering 400 itself.
func postID(c *gin.Context) (int64, bool) {
	id, err := strconv.ParseInt(c.Param("id"), 10, 64)
	if err != nil || id <= 0 {
		badRequest(c, "id", "must be a positive integer")
		return 0, false
	}
	return id, true
}

// writeStoreError answers a store error: 404, 403 or 500.
func writeStoreError(c *gin.Context, err error) {
	switch {
	case errors.Is(err, errNotFound):
		kit.WriteError(c, http.StatusNotFound, "post not found")
	case errors.Is(err, errNotAuthor):
		kit.WriteError(c, http.StatusForbidden, "only the post's author may change it")
	default:
		kit.WriteInternalError(c, err)
	}
}

// create publishes a post by the signed-in user.
func (h *postsHandler) create(c *gin.Context) {
	req, ok := bindPost(c)
	if !ok {
		return
	}
	// Not the *gin.Context: gin recycles it when the handler returns, while
	// database/sql may still watch the context from another goroutine.
	ctx := c.Request.Context()
	p, err := h.posts.CreatePost(ctx, Post{AuthorID: caller(c), Title: req.Title, Body: req.Body})
	if err != nil {
		kit.WriteInternalError(c, err)
		return
	}
	h.log.InfoContext(ctx, "post created", slog.Int64("post_id", p.ID), slog.Int64("author_id", p.AuthorID))
	c.Header("Location", "/api/posts/"+strconv.FormatInt(p.ID, 10))
	c.JSON(http.StatusCreated, p)
}

// listQuery is the paging of list. Pointers tell "absent" (take the
// default) from an explicit 0, which is invalid for limit.
type listQuery struct {
	Limit  *int `form:"limit" binding:"omitempty,min=1,max=100"`
	Offset *int `form:"offset" binding:"omitempty,min=0"`
}

// defaultPageSize is the page size when the client names none.
const defaultPageSize = 20

// list returns a page of posts, newest first.
func (h *postsHandler) list(c *gin.Context) {
	var q listQuery
	if err := c.ShouldBindQuery(&q); err != nil {
		kit.WriteBindError(c, err)
		return
	}
	limit, offset := defaultPageSize, 0
	if q.Limit != nil {
		limit = *q.Limit
	}
	if q.Offset != nil {
		offset = *q.Offset
	}
	posts, err := h.posts.Posts(c.Request.Context(), limit, offset)
	if err != nil {
		kit.WriteInternalError(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"posts": posts})
}

// get returns one post.
func (h *postsHandler) get(c *gin.Context) {
	id, ok := postID(c)
	if !ok {
		return
	}
	p, err := h.posts.Post(c.Request.Context(), id)
	if err != nil {
		writeStoreError(c, err)
		return
	}
	c.JSON(http.StatusOK, p)
}

// update replaces a post's title and body; only its author may.
func (h *postsHandler) update(c *gin.Context) {
	id, ok := postID(c)
	if !ok {
		return
	}
	req, ok := bindPost(c)
	if !ok {
		return
	}
	ctx := c.Request.Context()
	p, err := h.posts.UpdatePost(ctx, id, caller(c), req.Title, req.Body)
	if err != nil {
		writeStoreError(c, err)
		return
	}
	h.log.InfoContext(ctx, "post updated", slog.Int64("post_id", p.ID))
	c.JSON(http.StatusOK, p)
}

// delete removes a post and its comments; only its author may.
func (h *postsHandler) delete(c *gin.Context) {
	id, ok := postID(c)
	if !ok {
		return
	}
	ctx := c.Request.Context()
	if err := h.posts.DeletePost(ctx, id, caller(c)); err != nil {
		writeStoreError(c, err)
		return
	}
	h.log.InfoContext(ctx, "post deleted", slog.Int64("post_id", id))
	c.Status(http.StatusNoContent)
}
