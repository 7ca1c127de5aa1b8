// Package blogapi calls the blog's public API through the gateway, as a user
// would. The local end-to-end test (test/e2e/local) and the kind suite
// (test/e2e/kind) share it, so both drive the app the same way.
package blogapi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"
)

// Password is the password every user the tests register signs in with.
const Password = "correct horse battery staple"

// Client calls the gateway at Base; every call fails T on an unexpected
// answer.
type Client struct {
	T    testing.TB
	Ctx  context.Context
	Base string
	// HTTP is the client requests go through (default http.DefaultClient).
	HTTP *http.Client
}

// Register signs a user up and returns the new user's id.
func (c *Client) Register(name, email string) int64 {
	var out struct {
		ID int64 `json:"id"`
	}
	c.Expect(http.MethodPost, "/api/users", "", map[string]string{"name": name, "email": email, "password": Password}, http.StatusCreated, &out)
	return out.ID
}

// SignIn returns a bearer token for email.
func (c *Client) SignIn(email string) string {
	c.T.Helper()
	var out struct {
		Token string `json:"token"`
	}
	c.Expect(http.MethodPost, "/api/sessions", "", map[string]string{"email": email, "password": Password}, http.StatusCreated, &out)
	if out.Token == "" {
		c.T.Fatalf("sign-in of %s returned no token", email)
	}
	return out.Token
}

// CreatePost returns the new post's id and its author's.
func (c *Client) CreatePost(token, title, body string) (id, author int64) {
	var out struct {
		ID       int64 `json:"id"`
		AuthorID int64 `json:"author_id"`
	}
	c.Expect(http.MethodPost, "/api/posts", token, map[string]string{"title": title, "body": body}, http.StatusCreated, &out)
	return out.ID, out.AuthorID
}

// Comment comments on post as the holder of token.
func (c *Client) Comment(token string, post int64, body string) {
	c.Expect(http.MethodPost, fmt.Sprintf("/api/posts/%d/comments", post), token, map[string]string{"body": body}, http.StatusCreated, nil)
}

// Expect sends a JSON request and fails the test unless the status is want;
// out, when non-nil, receives the decoded response.
func (c *Client) Expect(method, path, token string, in any, want int, out any) {
	c.T.Helper()
	body, err := json.Marshal(in)
	if err != nil {
		c.T.Fatal(err)
	}
	req, err := http.NewRequestWithContext(c.Ctx, method, c.Base+path, bytes.NewReader(body))
	if err != nil {
		c.T.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		c.T.Fatalf("%s %s: %v", method, path, err)
	}
	defer func() { _ = resp.Body.Close() }()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		c.T.Fatalf("%s %s: %s %s, want %d", method, path, resp.Status, raw, want)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			c.T.Fatalf("%s %s: decode %s: %v", method, path, raw, err)
		}
	}
}
