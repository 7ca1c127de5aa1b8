package broker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"regexp"
	"syscall"
)

// unreachableError is a broker that did not answer. Its text is the same
// for the same cause, whatever the attempt: the app's status shows it, and
// a text that changed with every attempt (an ephemeral port, a request
// timer) would rewrite status on every retry and, since a status write
// brings the app back into reconcile, turn the retry interval into a hot
// loop. The original error stays in the chain for errors.Is and errors.As.
type unreachableError struct {
	what  string
	cause string
	err   error
}

func (e *unreachableError) Error() string {
	return fmt.Sprintf("%s: %s: %s", e.what, ErrUnreachable, e.cause)
}

func (e *unreachableError) Unwrap() []error { return []error{ErrUnreachable, e.err} }

// unreachable wraps err, a failure to get any answer while doing what.
func unreachable(what string, err error) error {
	return &unreachableError{what: what, cause: netCause(err), err: err}
}

// addrPair matches the "local->remote" address pair net.OpError puts in
// its text, the local side an ephemeral port.
var addrPair = regexp.MustCompile(`\S+->\S+`)

// netCause names why a connection failed, in words that do not change from
// one attempt to the next.
func netCause(err error) string {
	var dnsErr *net.DNSError
	var urlErr *url.Error
	target := ""
	if errors.As(err, &urlErr) {
		target = " (" + urlErr.Op + " " + redactedURL(urlErr.URL) + ")"
	}
	switch {
	case errors.As(err, &dnsErr):
		return "no such host " + dnsErr.Name + target
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused" + target
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset by the broker" + target
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "connection closed by the broker" + target
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded), isTimeout(err):
		return "no answer in time" + target
	default:
		return addrPair.ReplaceAllString(err.Error(), "")
	}
}

func isTimeout(err error) bool {
	var netErr net.Error
	return errors.As(err, &netErr) && netErr.Timeout()
}

// redactedURL drops the query and credentials from raw, if it parses.
func redactedURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return raw
	}
	u.User, u.RawQuery = nil, ""
	return u.String()
}
