//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"
)

// httpClient bounds every call the suite makes through a port-forward, so a
// stuck tunnel fails a request rather than the whole run's timeout.
var httpClient = &http.Client{Timeout: 30 * time.Second}

// mailpit is Mailpit's HTTP API (hack/kind/mailpit), the inbox of every
// e-mail the mailer sends in the cluster.
type mailpit struct{ base string }

// mailAddress is an address as Mailpit's API shows it.
type mailAddress struct {
	Name    string `json:"Name"`
	Address string `json:"Address"`
}

// mailMessage is a message as Mailpit's API shows it: the summary of
// GET /api/v1/messages, and Text from GET /api/v1/message/{ID}.
type mailMessage struct {
	ID        string        `json:"ID"`
	MessageID string        `json:"MessageID"`
	From      mailAddress   `json:"From"`
	To        []mailAddress `json:"To"`
	Subject   string        `json:"Subject"`
	Text      string        `json:"Text"`
}

// deleteAll empties the inbox: Mailpit deletes every message when the
// request names none.
func (m mailpit) deleteAll(ctx context.Context) error {
	return m.call(ctx, http.MethodDelete, "/api/v1/messages", map[string][]string{}, nil)
}

// messages lists the inbox, newest first.
func (m mailpit) messages(ctx context.Context) ([]mailMessage, error) {
	var out struct {
		Messages []mailMessage `json:"messages"`
	}
	if err := m.call(ctx, http.MethodGet, "/api/v1/messages?limit=100", nil, &out); err != nil {
		return nil, err
	}
	return out.Messages, nil
}

// message returns one message with its plain-text body.
func (m mailpit) message(ctx context.Context, id string) (mailMessage, error) {
	var out mailMessage
	err := m.call(ctx, http.MethodGet, "/api/v1/message/"+url.PathEscape(id), nil, &out)
	return out, err
}

func (m mailpit) call(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		raw, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(raw)
	}
	req, err := http.NewRequestWithContext(ctx, method, m.base+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return fmt.Errorf("mailpit %s %s: %w", method, path, err)
	}
	defer func() { _ = resp.Body.Close() }()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("mailpit %s %s: read: %w", method, path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("mailpit %s %s: %s %s", method, path, resp.Status, raw)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return fmt.Errorf("mailpit %s %s: decode %s: %w", method, path, raw, err)
		}
	}
	return nil
}
