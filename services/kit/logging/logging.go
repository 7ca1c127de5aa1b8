// Package logging builds the kit's structured JSON logger. Every line logged
// with a context carries that context's trace id, span id and request id, so
// a request's lines and the lines of the jobs it caused can be joined.
package logging

import (
	"context"
	"io"
	"log/slog"

	"go.opentelemetry.io/otel/trace"
)

// Keys of the attributes the Handler adds from the context.
const (
	TraceIDKey   = "trace_id"
	SpanIDKey    = "span_id"
	RequestIDKey = "request_id"
)

// contextKey is the type of IDsContextKey. The key is a pointer (net/http's
// ServerContextKey pattern), so matching it in a Value method is one pointer
// comparison.
type contextKey struct{ name string }

// IDsContextKey is the context key under which a request's *IDs live.
// WithRequestID and WithIDs store them with context.WithValue; a custom
// context.Context (the kit's per-request context) may instead answer this
// key from its Value method, which saves an allocation per request.
var IDsContextKey = &contextKey{"courier-log-ids"}

// IDs are what a context tells the Handler about its request besides the
// span: for now the request id. A pointer to a struct, rather than the bare
// string, so that a context answering IDsContextKey from its own fields
// returns it without boxing (an allocation) on every lookup.
type IDs struct {
	// RequestID is the request id, or "".
	RequestID string
}

// WithIDs returns a copy of ctx carrying ids.
func WithIDs(ctx context.Context, ids *IDs) context.Context {
	return context.WithValue(ctx, IDsContextKey, ids)
}

// IDsFromContext returns the ids ctx carries, or nil.
func IDsFromContext(ctx context.Context) *IDs {
	ids, _ := ctx.Value(IDsContextKey).(*IDs)
	return ids
}

// WithRequestID returns a copy of ctx carrying the request id.
func WithRequestID(ctx context.Context, id string) context.Context {
	return WithIDs(ctx, &IDs{RequestID: id})
}

// RequestID returns the request id carried by ctx, or "".
func RequestID(ctx context.Context) string {
	if ids := IDsFromContext(ctx); ids != nil {
		return ids.RequestID
	}
	return ""
}

// New returns a JSON logger writing to w at the given level, with a Handler
// that adds trace and request ids from the context. Its handler also knows
// how to write LogRequest's access line without going through slog's JSON
// encoder (see access.go).
func New(w io.Writer, level slog.Leveler) *slog.Logger {
	out := &lockedWriter{w: w}
	h := NewHandler(slog.NewJSONHandler(out, &slog.HandlerOptions{Level: level}))
	h.access = &accessEncoder{out: out}
	return slog.New(h)
}

// Handler wraps another slog.Handler and adds trace_id, span_id and
// request_id from the record's context. Attributes are added to the record,
// so inside a WithGroup they are qualified by that group like any other.
type Handler struct {
	inner slog.Handler
	// access writes LogRequest's line directly when the inner handler is
	// the JSONHandler New built, with attributes from WithAttrs it can
	// encode the same way; nil otherwise.
	access *accessEncoder
}

// NewHandler wraps inner.
func NewHandler(inner slog.Handler) *Handler { return &Handler{inner: inner} }

// Enabled reports whether the inner handler handles level.
func (h *Handler) Enabled(ctx context.Context, level slog.Level) bool {
	return h.inner.Enabled(ctx, level)
}

// Handle adds the context's ids to r and passes it on. The ids are added
// in one AddAttrs call, so a record that already overflowed its inline
// attributes grows once, not once per id.
func (h *Handler) Handle(ctx context.Context, r slog.Record) error {
	if ctx != nil {
		var attrs [3]slog.Attr
		n := 0
		if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
			attrs[0] = slog.String(TraceIDKey, sc.TraceID().String())
			attrs[1] = slog.String(SpanIDKey, sc.SpanID().String())
			n = 2
		}
		if id := RequestID(ctx); id != "" {
			attrs[n] = slog.String(RequestIDKey, id)
			n++
		}
		if n > 0 {
			r.AddAttrs(attrs[:n]...)
		}
	}
	return h.inner.Handle(ctx, r)
}

// WithAttrs returns a Handler whose inner handler has attrs.
func (h *Handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &Handler{inner: h.inner.WithAttrs(attrs), access: h.access.withAttrs(attrs)}
}

// WithGroup returns a Handler whose inner handler opens group name. Its
// access lines go through slog: the direct encoder does no groups.
func (h *Handler) WithGroup(name string) slog.Handler {
	return &Handler{inner: h.inner.WithGroup(name)}
}
