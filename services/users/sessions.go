package main

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/courier-dev/courier/services/kit"
)

// credentialStore finds the account a login names.
type credentialStore interface {
	UserByEmail(ctx context.Context, email string) (User, error)
}

// passwordChecker checks a login's password; a nil hash means the account
// does not exist and must still cost a comparison.
type passwordChecker interface {
	Matches(hash []byte, password string) (bool, error)
}

// tokenIssuer signs sign-in tokens.
type tokenIssuer interface {
	Issue(userID int64) (string, time.Time, error)
}

// tokenService is users' side of auth.Tokens: it signs tokens, verifies
// the ones requests carry and publishes its public keys.
type tokenService interface {
	tokenIssuer
	Verify(token string) (int64, error)
	JWKS() json.RawMessage
}

// sessionsHandler serves /api/sessions.
type sessionsHandler struct {
	users     credentialStore
	passwords passwordChecker
	tokens    tokenIssuer
	// perAccount limits sign-in attempts per e-mail address, whoever
	// makes them: password guessing spread over many clients still meets
	// it (the gateway limits each client).
	perAccount *kit.Limiter
	log        *slog.Logger
}

// signInsPerAccount: five attempts at once, then one a minute.
const (
	signInsPerAccountEvery = time.Minute
	signInsPerAccountBurst = 5
)

type loginRequest struct {
	Email    string `json:"email" binding:"required"`
	Password string `json:"password" binding:"required"`
}

// sessionResponse is a signed-in session.
type sessionResponse struct {
	Token     string    `json:"token"`
	TokenType string    `json:"token_type"`
	ExpiresAt time.Time `json:"expires_at"`
	UserID    int64     `json:"user_id"`
}

// create signs a user in. Unknown e-mail and wrong password get the same
// answer, so the endpoint does not reveal who has an account.
func (h *sessionsHandler) create(c *gin.Context) {
	var req loginRequest
	if !kit.BindJSON(c, &req) {
		return
	}
	email := strings.TrimSpace(req.Email)
	if !kit.AllowOrRefuse(c, h.perAccount, strings.ToLower(email)) {
		return
	}
	ctx := c.Request.Context() // see usersHandler.register
	u, err := h.users.UserByEmail(ctx, email)
	if err != nil && !errors.Is(err, errNotFound) {
		kit.WriteInternalError(c, err)
		return
	}
	ok, err := h.passwords.Matches(u.PasswordHash, req.Password)
	if err != nil {
		kit.WriteInternalError(c, err)
		return
	}
	if !ok {
		kit.WriteError(c, http.StatusUnauthorized, "wrong e-mail or password")
		return
	}
	token, exp, err := h.tokens.Issue(u.ID)
	if err != nil {
		kit.WriteInternalError(c, err)
		return
	}
	h.log.InfoContext(ctx, "user signed in", slog.Int64("user_id", u.ID))
	c.Header("Cache-Control", "no-store") // RFC 6749 section 5.1: never cache a token
	c.JSON(http.StatusCreated, sessionResponse{Token: token, TokenType: "Bearer", ExpiresAt: exp.UTC(), UserID: u.ID})
}
