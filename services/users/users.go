package main

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/courier-dev/courier/services/internal/auth"
	"github.com/courier-dev/courier/services/internal/mailjob"
	"github.com/courier-dev/courier/services/kit"
)

// userRegistry is what the users handler needs from storage.
type userRegistry interface {
	Register(ctx context.Context, u User, welcome mailjob.Job) (User, error)
	UserByID(ctx context.Context, id int64) (User, error)
}

// passwordHasher hashes new passwords.
type passwordHasher interface {
	Hash(password string) ([]byte, error)
}

// notifier wakes the outbox relay after a commit.
type notifier interface{ Notify() }

// usersHandler serves /api/users.
type usersHandler struct {
	users     userRegistry
	passwords passwordHasher
	outbox    notifier
	tokens    interface{ Verify(string) (int64, error) }
	log       *slog.Logger
}

// userResponse is a user as the API shows it: never the password hash, and
// the e-mail address only to its owner.
type userResponse struct {
	ID    int64  `json:"id"`
	Name  string `json:"name"`
	Email string `json:"email,omitempty"`
}

func toResponse(u User) userResponse { return userResponse{ID: u.ID, Name: u.Name, Email: u.Email} }

type registerRequest struct {
	Name     string `json:"name" binding:"required,max=100"`
	Email    string `json:"email" binding:"required,email,max=254"`
	Password string `json:"password" binding:"required,min=8"`
}

// register creates an account and queues its welcome e-mail.
func (h *usersHandler) register(c *gin.Context) {
	var req registerRequest
	if !kit.BindJSON(c, &req) {
		return
	}
	// Not the *gin.Context: gin recycles it when the handler returns, while
	// database/sql may still watch the context from another goroutine.
	ctx := c.Request.Context()
	req.Name = strings.TrimSpace(req.Name)
	fields := map[string]string{}
	if req.Name == "" {
		fields["name"] = "is required"
	}
	// The validator counts characters; bcrypt's limit is in bytes.
	if len(req.Password) > maxPasswordBytes {
		fields["password"] = "must be at most 72 bytes long"
	}
	if len(fields) > 0 {
		c.AbortWithStatusJSON(http.StatusBadRequest, kit.ErrorResponse{Error: "invalid request", Fields: fields})
		return
	}

	hash, err := h.passwords.Hash(req.Password)
	if err != nil {
		kit.WriteInternalError(c, err)
		return
	}
	welcome := mailjob.New(mailjob.TemplateWelcome, req.Email, map[string]string{mailjob.DataName: req.Name})
	u, err := h.users.Register(ctx, User{Name: req.Name, Email: req.Email, PasswordHash: hash}, welcome)
	if errors.Is(err, errDuplicateEmail) {
		c.AbortWithStatusJSON(http.StatusConflict, kit.ErrorResponse{
			Error:  "e-mail already registered",
			Fields: map[string]string{"email": "is already registered"},
		})
		return
	}
	if err != nil {
		kit.WriteInternalError(c, err)
		return
	}
	h.outbox.Notify()
	h.log.InfoContext(ctx, "user registered", slog.Int64("user_id", u.ID), slog.String("welcome_job", welcome.ID))
	c.Header("Location", "/api/users/"+formatID(u.ID))
	c.JSON(http.StatusCreated, toResponse(u))
}

// get returns one user.
func (h *usersHandler) get(c *gin.Context) {
	u, ok := h.lookUp(c)
	if !ok {
		return
	}
	resp := toResponse(u)
	if id, err := h.tokens.Verify(auth.BearerToken(c.GetHeader("Authorization"))); err != nil || id != u.ID {
		resp.Email = "" // only the user sees their own address
	}
	c.JSON(http.StatusOK, resp)
}

// getInternal answers posts' look-up of a post's author, e-mail included,
// for a request made with a valid sign-in token (posts forwards its
// caller's).
func (h *usersHandler) getInternal(c *gin.Context) {
	if _, err := h.tokens.Verify(auth.BearerToken(c.GetHeader("Authorization"))); err != nil {
		_ = c.Error(err)
		kit.WriteError(c, http.StatusUnauthorized, "sign-in required")
		return
	}
	if u, ok := h.lookUp(c); ok {
		c.JSON(http.StatusOK, toResponse(u))
	}
}

// lookUp reads the user of the :id parameter, answering 400 or 404 itself.
func (h *usersHandler) lookUp(c *gin.Context) (User, bool) {
	id, err := auth.ParseUserID(c.Param("id"))
	if err != nil {
		c.AbortWithStatusJSON(http.StatusBadRequest, kit.ErrorResponse{
			Error: "invalid request", Fields: map[string]string{"id": "must be a positive integer"},
		})
		return User{}, false
	}
	u, err := h.users.UserByID(c.Request.Context(), id)
	if errors.Is(err, errNotFound) {
		kit.WriteError(c, http.StatusNotFound, "user not found")
		return User{}, false
	}
	if err != nil {
		kit.WriteInternalError(c, err)
		return User{}, false
	}
	return u, true
}

func formatID(id int64) string { return strconv.FormatInt(id, 10) }
