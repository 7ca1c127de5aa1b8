package logging

import (
	"context"
	"encoding/hex"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"go.opentelemetry.io/otel/trace"
)

// Request is one HTTP request as its access line reports it.
type Request struct {
	Method string
	// Route is the route template ("/api/users/:id"), never the raw path.
	Route    string
	Path     string
	Status   int
	Latency  time.Duration
	Bytes    int
	ClientIP string
	// Error is what the handlers recorded as going wrong, or "".
	Error string
}

// AccessMessage is the msg of every access line.
const AccessMessage = "request"

// LogRequest writes req's access line through l at level, timestamped t,
// with the ids of ctx like every other line: one JSON object with msg
// "request", then l's own attributes (With), then method, route, path,
// status, latency_ms, bytes, client_ip, error (when set), trace_id, span_id
// and request_id.
//
// When l comes from New (with plain With attributes), the line is encoded
// here, into a pooled buffer, and written in one Write under the same lock
// as every other line. Why not slog's JSONHandler: the access line is the
// one line logged on every request, and the JSONHandler spent about a
// microsecond per line on it (a closure call and an escape pass per
// attribute, a json.Marshal for the latency float, a slice allocation past
// five attributes), the largest single cost of the kit's request path
// (bench/http). The fixed shape of this line makes a direct encoder short;
// TestLogRequestMatchesSlog and TestLogRequestTimes check it writes exactly
// the bytes the JSONHandler would (except for a year outside 0-9999, where
// slog writes an error and invalid JSON). Any other logger gets the same
// line through slog.
func LogRequest(ctx context.Context, l *slog.Logger, level slog.Level, t time.Time, req *Request) {
	h := l.Handler()
	if !h.Enabled(ctx, level) {
		return
	}
	if kh, ok := h.(*Handler); ok && kh.access != nil {
		kh.access.write(ctx, level, t, req)
		return
	}
	r := slog.NewRecord(t, level, AccessMessage, 0)
	r.AddAttrs(
		slog.String("method", req.Method),
		slog.String("route", req.Route),
		slog.String("path", req.Path),
		slog.Int("status", req.Status),
		slog.Float64("latency_ms", latencyMillis(req.Latency)),
		slog.Int("bytes", req.Bytes),
		slog.String("client_ip", req.ClientIP),
	)
	if req.Error != "" {
		r.AddAttrs(slog.String("error", req.Error))
	}
	_ = h.Handle(ctx, r)
}

// latencyMillis is the latency in milliseconds at microsecond resolution.
func latencyMillis(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// lockedWriter serialises writes to the logger's output, so the JSONHandler
// (which locks only its own writes) and the access encoder never interleave
// lines.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w.Write(p)
}

// accessEncoder writes access lines the way New's JSONHandler would.
type accessEncoder struct {
	out *lockedWriter
	// attrs is the JSON of the With attributes, each with a leading comma.
	attrs []byte
}

// withAttrs returns an encoder that also writes attrs, or nil if one of
// them is of a kind it does not encode like the JSONHandler (groups, Any,
// times, floats), so LogRequest falls back to slog.
func (e *accessEncoder) withAttrs(attrs []slog.Attr) *accessEncoder {
	if e == nil {
		return nil
	}
	b := append([]byte(nil), e.attrs...)
	for _, a := range attrs {
		v := a.Value.Resolve()
		if a.Key == "" {
			return nil // slog drops or keeps these by rules not worth copying
		}
		b = append(b, ',')
		b = appendJSONString(b, a.Key)
		b = append(b, ':')
		switch v.Kind() {
		case slog.KindString:
			b = appendJSONString(b, v.String())
		case slog.KindInt64:
			b = strconv.AppendInt(b, v.Int64(), 10)
		case slog.KindUint64:
			b = strconv.AppendUint(b, v.Uint64(), 10)
		case slog.KindBool:
			b = strconv.AppendBool(b, v.Bool())
		case slog.KindDuration:
			b = strconv.AppendInt(b, int64(v.Duration()), 10)
		default:
			return nil
		}
	}
	return &accessEncoder{out: e.out, attrs: b}
}

// maxPooledLine bounds the buffers kept for reuse, so one huge line (a long
// error) does not pin its buffer forever.
const maxPooledLine = 16 << 10

var linePool = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

func (e *accessEncoder) write(ctx context.Context, level slog.Level, t time.Time, req *Request) {
	bp := linePool.Get().(*[]byte)
	b := (*bp)[:0]

	b = append(b, `{"time":"`...)
	b = appendTime(b, t)
	b = append(b, `","level":`...)
	b = appendJSONString(b, level.String())
	b = append(b, `,"msg":"`+AccessMessage+`"`...)
	b = append(b, e.attrs...)
	b = append(b, `,"method":`...)
	b = appendJSONString(b, req.Method)
	b = append(b, `,"route":`...)
	b = appendJSONString(b, req.Route)
	b = append(b, `,"path":`...)
	b = appendJSONString(b, req.Path)
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(req.Status), 10)
	b = append(b, `,"latency_ms":`...)
	b = appendLatencyMillis(b, req.Latency)
	b = append(b, `,"bytes":`...)
	b = strconv.AppendInt(b, int64(req.Bytes), 10)
	b = append(b, `,"client_ip":`...)
	b = appendJSONString(b, req.ClientIP)
	if req.Error != "" {
		b = append(b, `,"error":`...)
		b = appendJSONString(b, req.Error)
	}
	b = appendContextIDs(b, ctx)
	b = append(b, "}\n"...)

	_, _ = e.out.Write(b)
	if cap(b) <= maxPooledLine {
		*bp = b
		linePool.Put(bp)
	}
}

// appendContextIDs appends what Handler.Handle adds: trace_id, span_id,
// request_id. The hex ids are encoded straight into the line: most requests
// log nothing else, so formatting them as strings once per request to share
// with other lines would cost more than it saves.
func appendContextIDs(b []byte, ctx context.Context) []byte {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		tid, sid := sc.TraceID(), sc.SpanID()
		b = append(b, `,"`+TraceIDKey+`":"`...)
		b = hex.AppendEncode(b, tid[:])
		b = append(b, `","`+SpanIDKey+`":"`...)
		b = hex.AppendEncode(b, sid[:])
		b = append(b, '"')
	}
	if id := RequestID(ctx); id != "" {
		b = append(b, `,"`+RequestIDKey+`":`...)
		b = appendJSONString(b, id)
	}
	return b
}

// secondStamp is the part of an RFC 3339 timestamp that is the same for a
// whole second in one location: the date and time of day, and the zone.
type secondStamp struct {
	unix int64
	loc  *time.Location
	date []byte // "2006-01-02T15:04:05"
	zone string // "Z" or "+05:30"
}

// lastStamp caches the second most lines of a busy service share, so a
// line formats only its fraction; formatting the whole time was about a
// quarter of the line's cost. Immutable once stored, replaced when the
// second changes.
var lastStamp atomic.Pointer[secondStamp]

// appendTime appends t as slog's JSONHandler does: time.RFC3339Nano.
func appendTime(b []byte, t time.Time) []byte {
	sec, loc := t.Unix(), t.Location()
	s := lastStamp.Load()
	if s == nil || s.unix != sec || s.loc != loc {
		full := t.AppendFormat(nil, time.RFC3339)
		const dateLen = len("2006-01-02T15:04:05")
		if len(full) < dateLen || full[dateLen] != 'Z' && full[dateLen] != '+' && full[dateLen] != '-' {
			// A year outside 0-9999 (which slog flags as an error; a
			// clock reading never has one): no cache.
			return t.AppendFormat(b, time.RFC3339Nano)
		}
		s = &secondStamp{unix: sec, loc: loc, date: full[:dateLen], zone: string(full[dateLen:])}
		lastStamp.Store(s)
	}
	b = append(b, s.date...)
	if ns := t.Nanosecond(); ns != 0 {
		// RFC3339Nano's ".999999999": nine digits, trailing zeros dropped.
		var frac [10]byte
		frac[0] = '.'
		for i := 9; i >= 1; i-- {
			frac[i] = byte('0' + ns%10)
			ns /= 10
		}
		n := 10
		for frac[n-1] == '0' {
			n--
		}
		b = append(b, frac[:n]...)
	}
	return append(b, s.zone...)
}

// appendLatencyMillis appends latencyMillis(d) as the JSONHandler writes a
// float64: json.Marshal's shortest 'f' formatting for values in [1e-6, 1e21)
// or 0. Below a million seconds a whole number of microseconds over 1000 is
// exactly the decimal with at most three fractional digits, so it is
// written from integers; anything else goes through strconv as slog would.
func appendLatencyMillis(b []byte, d time.Duration) []byte {
	us := d.Microseconds()
	if us < 0 || us >= 1e12 {
		return strconv.AppendFloat(b, latencyMillis(d), 'f', -1, 64)
	}
	b = strconv.AppendInt(b, us/1000, 10)
	frac := us % 1000
	if frac == 0 {
		return b
	}
	digits := [3]byte{byte('0' + frac/100), byte('0' + frac/10%10), byte('0' + frac%10)}
	n := 3
	for digits[n-1] == '0' {
		n--
	}
	b = append(b, '.')
	return append(b, digits[:n]...)
}

const hexDigits = "0123456789abcdef"

// jsonSafe marks the ASCII bytes a JSON string holds unescaped.
var jsonSafe = func() (safe [utf8.RuneSelf]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		safe[c] = c != '"' && c != '\\'
	}
	return safe
}()

// appendJSONString appends s as a JSON string escaped exactly as log/slog
// escapes it: quotes, backslashes and control characters; invalid UTF-8 as
// U+FFFD; U+2028 and U+2029; but not <, > and & (slog, unlike
// encoding/json, does not escape HTML).
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if jsonSafe[c] {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
