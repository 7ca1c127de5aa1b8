package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"

	"github.com/courier-dev/courier/services/kit"
	"github.com/courier-dev/courier/services/kit/logging"
)

// user is what posts needs to know about an account.
type user struct {
	ID    int64  `json:"id"`
	Name  string `json:"name"`
	Email string `json:"email"`
}

// errUserNotFound means users answered 404 for the id.
var errUserNotFound = errors.New("user not found")

// usersClient looks users up over the users service's HTTP API.
type usersClient struct {
	base *url.URL
	http *http.Client
}

// newUsersClient returns a client of the users service at baseURL whose
// every call gives up after timeout.
func newUsersClient(baseURL string, timeout time.Duration) (*usersClient, error) {
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("users URL %q: want an absolute http(s) URL", baseURL)
	}
	return &usersClient{
		base: u,
		http: &http.Client{
			Timeout: timeout,
			Transport: &http.Transport{
				Proxy:                 http.ProxyFromEnvironment,
				DialContext:           (&net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}).DialContext,
				MaxIdleConnsPerHost:   16,
				IdleConnTimeout:       90 * time.Second,
				ResponseHeaderTimeout: timeout,
			},
		},
	}, nil
}

// User fetches one user, e-mail included, from users' internal look-up
// (never routed by the gateway). The request carries the caller's sign-in
// token, which users verifies, and the request id and trace context, so
// users logs it under the same ids.
func (c *usersClient) User(ctx context.Context, id int64, token string) (user, error) {
	endpoint := c.base.JoinPath("internal", "users", strconv.FormatInt(id, 10))
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, endpoint.String(), nil)
	if err != nil {
		return user{}, fmt.Errorf("look up user %d: %w", id, err)
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	if rid := logging.RequestID(ctx); rid != "" {
		req.Header.Set(kit.RequestIDHeader, rid)
	}
	otel.GetTextMapPropagator().Inject(ctx, propagation.HeaderCarrier(req.Header))

	resp, err := c.http.Do(req)
	if err != nil {
		return user{}, fmt.Errorf("look up user %d: %w", id, err)
	}
	defer func() { _ = resp.Body.Close() }()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound:
		return user{}, fmt.Errorf("look up user %d: %w", id, errUserNotFound)
	default:
		snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return user{}, fmt.Errorf("look up user %d: users answered %s: %s", id, resp.Status, snippet)
	}
	var u user
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&u); err != nil {
		return user{}, fmt.Errorf("look up user %d: decode: %w", id, err)
	}
	if u.ID != id || u.Email == "" {
		return user{}, fmt.Errorf("look up user %d: users answered an unexpected body %+v", id, u)
	}
	return u, nil
}

// isTimeout reports whether err is a deadline or network timeout.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}
