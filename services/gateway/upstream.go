package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"time"

	"github.com/gin-gonic/gin"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"

	"github.com/courier-dev/courier/services/internal/auth"
	"github.com/courier-dev/courier/services/kit"
	"github.com/courier-dev/courier/services/kit/logging"
)

// upstream forwards requests to one backing service.
type upstream struct {
	name    string
	timeout time.Duration
	proxy   *httputil.ReverseProxy
	log     *slog.Logger
}

// parseBaseURL parses an upstream's base URL.
func parseBaseURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%q is not an absolute http(s) URL", raw)
	}
	return u, nil
}

// newUpstream returns a reverse proxy to the service named name at target.
// Every forwarded request must be answered within timeout: a connection
// that cannot be made answers 502, a slow answer 504.
func newUpstream(name string, target *url.URL, timeout time.Duration, log *slog.Logger) *upstream {
	u := &upstream{name: name, timeout: timeout, log: log}
	u.proxy = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.SetXForwarded()
			// The caller's bearer token goes on as it came: each service
			// verifies it with users' public keys. No identity header is
			// added, and a client's is dropped: none is trusted.
			pr.Out.Header.Del(auth.HeaderUserID)
			// The upstream logs under the same request id and trace.
			if rid := logging.RequestID(pr.In.Context()); rid != "" {
				pr.Out.Header.Set(kit.RequestIDHeader, rid)
			}
			otel.GetTextMapPropagator().Inject(pr.In.Context(), propagation.HeaderCarrier(pr.Out.Header))
		},
		// The gateway already answers with the request id it gave the
		// upstream, which the upstream logged and echoes: one header, not two.
		ModifyResponse: func(resp *http.Response) error {
			resp.Header.Del(kit.RequestIDHeader)
			return nil
		},
		Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: min(timeout, 2*time.Second), KeepAlive: 30 * time.Second}).DialContext,
			TLSHandshakeTimeout:   timeout,
			ResponseHeaderTimeout: timeout,
			ExpectContinueTimeout: time.Second,
			MaxIdleConns:          256,
			MaxIdleConnsPerHost:   64,
			IdleConnTimeout:       90 * time.Second,
		},
		ErrorHandler: u.fail,
		ErrorLog:     slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	return u
}

// forward proxies the request under the upstream's timeout.
func (u *upstream) forward(c *gin.Context) {
	ctx, cancel := context.WithTimeout(c.Request.Context(), u.timeout)
	defer cancel()
	u.proxy.ServeHTTP(c.Writer, c.Request.WithContext(ctx))
}

// fail answers a request the upstream could not: 504 when it was too slow,
// 413 when the client's body was over the limit, 502 otherwise.
func (u *upstream) fail(w http.ResponseWriter, r *http.Request, err error) {
	status, msg := http.StatusBadGateway, fmt.Sprintf("the %s service is unavailable", u.name)
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		status, msg = http.StatusRequestEntityTooLarge, "request body too large"
	case isTimeout(err):
		status, msg = http.StatusGatewayTimeout, fmt.Sprintf("the %s service did not answer in time", u.name)
	}
	u.log.WarnContext(r.Context(), "upstream request failed",
		slog.String("upstream", u.name), slog.Int("status", status), slog.String("error", err.Error()))
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(kit.ErrorResponse{Error: msg})
}

// isTimeout reports whether err is a deadline or network timeout.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}
