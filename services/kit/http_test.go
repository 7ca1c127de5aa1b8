package kit_test

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"

	"github.com/courier-dev/courier/services/kit"
	"github.com/courier-dev/courier/services/kit/logging"
)

func serve(h http.Handler, req *http.Request) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func decodeError(t *testing.T, rec *httptest.ResponseRecorder) kit.ErrorResponse {
	t.Helper()
	var e kit.ErrorResponse
	if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil {
		t.Fatalf("body %q is not an error response: %v", rec.Body, err)
	}
	return e
}

func TestRequestID(t *testing.T) {
	svc, logs := newService(t, nil)
	router := kit.NewRouter()
	router.GET("/ping", func(c *gin.Context) { c.String(http.StatusOK, "pong") })

	long := strings.Repeat("a", 129)
	tests := []struct {
		name     string
		incoming string
		keep     bool
	}{
		{"minted when absent", "", false},
		{"kept when sane", "gw-7f3a.42", true},
		{"replaced when it has spaces", "a b", false},
		{"replaced when too long", long, false},
		{"replaced when not ASCII", "id-é", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodGet, "/ping", nil)
			if tt.incoming != "" {
				req.Header.Set(kit.RequestIDHeader, tt.incoming)
			}
			rec := serve(svc.APIHandler(router), req)
			got := rec.Header().Get(kit.RequestIDHeader)
			if tt.keep {
				if got != tt.incoming {
					t.Errorf("response id = %q, want the incoming %q", got, tt.incoming)
				}
			} else if _, err := uuid.Parse(got); err != nil {
				t.Errorf("response id = %q, want a minted UUID: %v", got, err)
			}
			lines := logs.find(t, "request")
			if last := lines[len(lines)-1]; last["request_id"] != got {
				t.Errorf("access log request_id = %v, want %q", last["request_id"], got)
			}
		})
	}
}

func TestLogsCarryRouteTemplateAndTraceID(t *testing.T) {
	const (
		traceID     = "4bf92f3577b34da6a3ce929d0e0e4736"
		traceparent = "00-" + traceID + "-00f067aa0ba902b7-01"
	)
	hex32 := regexp.MustCompile(`^[0-9a-f]{32}$`)
	tests := []struct {
		name        string
		traceparent string
		wantTrace   string // "" means: some valid trace id
	}{
		{"incoming traceparent honoured", traceparent, traceID},
		{"trace minted without one", "", ""},
		{"malformed traceparent ignored", "00-nothex-00f067aa0ba902b7-01", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			svc, logs := newService(t, nil)
			router := kit.NewRouter()
			var injected string
			router.GET("/users/:id", func(c *gin.Context) {
				svc.Logger().InfoContext(c, "looking up user", "id", c.Param("id"))
				// What the messaging driver does when it publishes a job.
				carrier := propagation.MapCarrier{}
				otel.GetTextMapPropagator().Inject(c, carrier)
				injected = carrier["traceparent"]
				c.JSON(http.StatusOK, gin.H{"id": c.Param("id")})
			})
			req := httptest.NewRequest(http.MethodGet, "/users/42?x=1", nil)
			if tt.traceparent != "" {
				req.Header.Set("traceparent", tt.traceparent)
			}
			rec := serve(svc.APIHandler(router), req)
			if rec.Code != http.StatusOK {
				t.Fatalf("status = %d", rec.Code)
			}

			access := logs.one(t, "request")
			for k, want := range map[string]any{
				"route": "/users/:id", "path": "/users/42", "method": "GET", "status": float64(200),
				"level": "INFO", "request_id": rec.Header().Get(kit.RequestIDHeader),
			} {
				if access[k] != want {
					t.Errorf("access log %s = %v, want %v", k, access[k], want)
				}
			}
			if _, ok := access["latency_ms"].(float64); !ok {
				t.Errorf("access log has no latency_ms: %v", access)
			}
			trace, _ := access["trace_id"].(string)
			if tt.wantTrace != "" && trace != tt.wantTrace {
				t.Errorf("access log trace_id = %q, want %q", trace, tt.wantTrace)
			}
			if !hex32.MatchString(trace) || trace == strings.Repeat("0", 32) {
				t.Errorf("access log trace_id = %q, want a valid trace id", trace)
			}

			own := logs.one(t, "looking up user")
			if own["trace_id"] != trace || own["request_id"] != access["request_id"] {
				t.Errorf("handler line ids = %v/%v, want the access line's %v/%v",
					own["trace_id"], own["request_id"], trace, access["request_id"])
			}
			if !strings.HasPrefix(injected, "00-"+trace+"-") {
				t.Errorf("traceparent injected downstream = %q, want trace %s", injected, trace)
			}
		})
	}
}

func TestPanicBecomes500(t *testing.T) {
	svc, logs := newService(t, nil)
	router := kit.NewRouter()
	router.GET("/boom", func(*gin.Context) { panic("kaboom") })
	router.GET("/ok", func(c *gin.Context) { c.Status(http.StatusNoContent) })

	rec := serve(svc.APIHandler(router), httptest.NewRequest(http.MethodGet, "/boom", nil))
	if rec.Code != http.StatusInternalServerError {
		t.Fatalf("status = %d, want 500", rec.Code)
	}
	if e := decodeError(t, rec); e.Error != "internal error" {
		t.Errorf("body = %+v, want a bare internal error", e)
	}
	p := logs.one(t, "panic in handler")
	if p["panic"] != "kaboom" || !strings.Contains(p["stack"].(string), "TestPanicBecomes500") {
		t.Errorf("panic line = %v, want the value and a stack through the handler", p)
	}
	if p["request_id"] != rec.Header().Get(kit.RequestIDHeader) {
		t.Errorf("panic line request_id = %v, want the request's", p["request_id"])
	}
	access := logs.one(t, "request")
	if access["status"] != float64(500) || access["level"] != "ERROR" {
		t.Errorf("access line = %v, want status 500 at ERROR", access)
	}

	if rec := serve(svc.APIHandler(router), httptest.NewRequest(http.MethodGet, "/ok", nil)); rec.Code != http.StatusNoContent {
		t.Errorf("after a panic, status = %d, want 204", rec.Code)
	}
}

// TestBindJSONRefusesWhatItCannotRead: a body that is not declared JSON
// answers 415, and a field the request type does not have answers 400
// naming it, rather than being silently dropped.
func TestBindJSONRefusesWhatItCannotRead(t *testing.T) {
	svc, _ := newService(t, nil)
	router := kit.NewRouter()
	router.POST("/notes", func(c *gin.Context) {
		var req struct {
			Text string `json:"text"`
		}
		if !kit.BindJSON(c, &req) {
			return
		}
		c.Status(http.StatusCreated)
	})
	for _, tt := range []struct {
		name, contentType, body string
		want                    int
		wantFields              map[string]string
	}{
		{"json", "application/json", `{"text":"hi"}`, http.StatusCreated, nil},
		{"json with charset", "application/json; charset=utf-8", `{"text":"hi"}`, http.StatusCreated, nil},
		{"a +json type", "application/merge-patch+json", `{"text":"hi"}`, http.StatusCreated, nil},
		{"text/plain", "text/plain", `{"text":"hi"}`, http.StatusUnsupportedMediaType, nil},
		{"no content type", "", `{"text":"hi"}`, http.StatusUnsupportedMediaType, nil},
		{"form", "application/x-www-form-urlencoded", `text=hi`, http.StatusUnsupportedMediaType, nil},
		{"unknown field", "application/json", `{"text":"hi","txet":"typo"}`, http.StatusBadRequest, map[string]string{"txet": "is not a known field"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodPost, "/notes", strings.NewReader(tt.body))
			if tt.contentType != "" {
				req.Header.Set("Content-Type", tt.contentType)
			}
			rec := serve(svc.APIHandler(router), req)
			if rec.Code != tt.want {
				t.Fatalf("status = %d, want %d (body %s)", rec.Code, tt.want, rec.Body)
			}
			if tt.wantFields != nil {
				if e := decodeError(t, rec); !maps.Equal(e.Fields, tt.wantFields) {
					t.Errorf("fields = %v, want %v", e.Fields, tt.wantFields)
				}
			}
		})
	}
}

func TestBodyLimit(t *testing.T) {
	svc, _ := newService(t, map[string]string{"BODY_LIMIT_BYTES": "64"})
	router := kit.NewRouter()
	called := 0
	router.POST("/notes", func(c *gin.Context) {
		called++
		var req struct {
			Text string `json:"text"`
		}
		if !kit.BindJSON(c, &req) {
			return
		}
		c.Status(http.StatusCreated)
	})
	body := func(n int) string { return `{"text":"` + strings.Repeat("x", n) + `"}` }
	tests := []struct {
		name       string
		body       string
		chunked    bool
		want       int
		wantCalled bool
	}{
		{"under the limit", body(10), false, http.StatusCreated, true},
		{"declared length over the limit", body(100), false, http.StatusRequestEntityTooLarge, false},
		{"chunked body over the limit", body(100), true, http.StatusRequestEntityTooLarge, true},
		{"chunked body under the limit", body(10), true, http.StatusCreated, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			called = 0
			req := httptest.NewRequest(http.MethodPost, "/notes", strings.NewReader(tt.body))
			req.Header.Set("Content-Type", "application/json")
			if tt.chunked {
				req.ContentLength = -1 // unknown length, as with Transfer-Encoding: chunked
			}
			rec := serve(svc.APIHandler(router), req)
			if rec.Code != tt.want {
				t.Fatalf("status = %d, want %d (body %s)", rec.Code, tt.want, rec.Body)
			}
			if tt.want == http.StatusRequestEntityTooLarge {
				if e := decodeError(t, rec); e.Error != "request body too large" {
					t.Errorf("body = %+v", e)
				}
			}
			if (called == 1) != tt.wantCalled {
				t.Errorf("handler called %d times, want called=%v", called, tt.wantCalled)
			}
		})
	}
}

func TestRequestTimeout(t *testing.T) {
	svc, logs := newService(t, map[string]string{"REQUEST_TIMEOUT": "50ms"})
	router := kit.NewRouter()
	router.GET("/deadline", func(c *gin.Context) {
		dl, ok := c.Request.Context().Deadline()
		if !ok {
			c.String(http.StatusOK, "none")
			return
		}
		c.String(http.StatusOK, time.Until(dl).String())
	})
	// A handler that waits for its context and writes nothing: the kit answers.
	router.GET("/silent", func(c *gin.Context) { <-c.Done() })
	// A handler whose downstream call failed with the deadline.
	router.GET("/downstream", func(c *gin.Context) {
		<-c.Request.Context().Done()
		kit.WriteInternalError(c, c.Request.Context().Err())
	})

	rec := serve(svc.APIHandler(router), httptest.NewRequest(http.MethodGet, "/deadline", nil))
	left, err := time.ParseDuration(rec.Body.String())
	if err != nil || left <= 0 || left > 50*time.Millisecond {
		t.Errorf("deadline left in handler = %q (%v), want within 50ms", rec.Body, err)
	}
	for _, path := range []string{"/silent", "/downstream"} {
		t.Run(path, func(t *testing.T) {
			start := time.Now()
			rec := serve(svc.APIHandler(router), httptest.NewRequest(http.MethodGet, path, nil))
			if rec.Code != http.StatusServiceUnavailable {
				t.Fatalf("status = %d, want 503", rec.Code)
			}
			if e := decodeError(t, rec); e.Error != "request timed out" {
				t.Errorf("body = %+v", e)
			}
			if took := time.Since(start); took < 50*time.Millisecond {
				t.Errorf("answered after %s, before the 50ms deadline", took)
			}
		})
	}
	for _, l := range logs.find(t, "request") {
		if l["route"] != "/deadline" && l["status"] != float64(503) {
			t.Errorf("access line %v, want status 503 logged", l)
		}
	}
}

// TestRequestContextEndsWithRequest checks what context.WithTimeout's
// deferred cancel gave handlers: a goroutine left holding the request's
// context sees it end when the request does.
func TestRequestContextEndsWithRequest(t *testing.T) {
	svc, _ := newService(t, nil)
	router := kit.NewRouter()
	kept := make(chan context.Context, 1)
	router.GET("/leave", func(c *gin.Context) {
		kept <- c.Request.Context()
		c.Status(http.StatusNoContent)
	})
	if rec := serve(svc.APIHandler(router), httptest.NewRequest(http.MethodGet, "/leave", nil)); rec.Code != http.StatusNoContent {
		t.Fatalf("status = %d", rec.Code)
	}
	ctx := <-kept
	select {
	case <-ctx.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("request context still live after the request")
	}
	if !errors.Is(ctx.Err(), context.Canceled) {
		t.Errorf("Err = %v, want canceled", ctx.Err())
	}
}

func TestValidationErrors(t *testing.T) {
	type signup struct {
		Email   string   `json:"email" binding:"required,email"`
		Name    string   `json:"name" binding:"required,min=2,max=40"`
		Age     int      `json:"age" binding:"omitempty,gte=13"`
		Tags    []string `json:"tags" binding:"max=2"`
		Role    string   `json:"role" binding:"omitempty,oneof=reader author"`
		Address struct {
			City string `json:"city" binding:"required"`
		} `json:"address"`
	}
	svc, _ := newService(t, nil)
	router := kit.NewRouter()
	router.POST("/signup", func(c *gin.Context) {
		var req signup
		if !kit.BindJSON(c, &req) {
			return
		}
		c.JSON(http.StatusCreated, req)
	})
	tests := []struct {
		name       string
		body       string
		want       int
		wantError  string
		wantFields map[string]string
	}{
		{
			name: "every rule broken",
			body: `{"email":"nope","name":"A","age":5,"tags":["a","b","c"],"role":"admin"}`,
			want: 400, wantError: "invalid request",
			wantFields: map[string]string{
				"email":        "must be a valid e-mail",
				"name":         "must be at least 2 characters long",
				"age":          "must be at least 13",
				"tags":         "must have at most 2 items",
				"role":         "must be one of: reader, author",
				"address.city": "is required",
			},
		},
		{
			name: "empty object", body: `{}`, want: 400, wantError: "invalid request",
			wantFields: map[string]string{"email": "is required", "name": "is required", "address.city": "is required"},
		},
		{
			name: "wrong type", body: `{"email":5}`, want: 400, wantError: "invalid request",
			wantFields: map[string]string{"email": "must be a string"},
		},
		{name: "malformed JSON", body: `{"email":`, want: 400, wantError: "malformed request body"},
		{name: "empty body", body: ``, want: 400, wantError: "request body is empty"},
		{name: "valid", body: `{"email":"ada@example.com","name":"Ada","address":{"city":"London"}}`, want: 201},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodPost, "/signup", strings.NewReader(tt.body))
			req.Header.Set("Content-Type", "application/json")
			rec := serve(svc.APIHandler(router), req)
			if rec.Code != tt.want {
				t.Fatalf("status = %d, want %d (body %s)", rec.Code, tt.want, rec.Body)
			}
			if tt.want < 400 {
				return
			}
			e := decodeError(t, rec)
			if e.Error != tt.wantError {
				t.Errorf("error = %q, want %q", e.Error, tt.wantError)
			}
			if len(e.Fields) != len(tt.wantFields) {
				t.Errorf("fields = %v, want %v", e.Fields, tt.wantFields)
			}
			for k, v := range tt.wantFields {
				if e.Fields[k] != v {
					t.Errorf("fields[%q] = %q, want %q", k, e.Fields[k], v)
				}
			}
		})
	}
}

func TestValidationFieldsOfOtherErrors(t *testing.T) {
	if f := kit.ValidationFields(errors.New("plain")); f != nil {
		t.Errorf("ValidationFields(plain error) = %v, want nil", f)
	}
}

func TestNotFoundIsJSONAndUnmatched(t *testing.T) {
	svc, logs := newService(t, nil)
	router := kit.NewRouter()
	rec := serve(svc.APIHandler(router), httptest.NewRequest(http.MethodGet, "/no/such/path", nil))
	if rec.Code != http.StatusNotFound || decodeError(t, rec).Error != "not found" {
		t.Errorf("got %d %s, want 404 not found", rec.Code, rec.Body)
	}
	// Raw paths never become a route label or log route.
	if l := logs.one(t, "request"); l["route"] != "unmatched" || l["path"] != "/no/such/path" {
		t.Errorf("access line = %v", l)
	}
}

func TestOutgoingCallsCarryTraceAndRequestID(t *testing.T) {
	type seen struct{ traceparent, requestID string }
	got := make(chan seen, 1)
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- seen{r.Header.Get("traceparent"), r.Header.Get(kit.RequestIDHeader)}
	}))
	defer upstream.Close()

	svc, _ := newService(t, nil)
	router := kit.NewRouter()
	// As posts calls users: the request's context carries the server span
	// and the request id, which the caller injects.
	users := &http.Client{Timeout: 2 * time.Second}
	router.GET("/posts/:id", func(c *gin.Context) {
		ctx := c.Request.Context()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, upstream.URL+"/users/7", nil)
		if err != nil {
			kit.WriteInternalError(c, err)
			return
		}
		otel.GetTextMapPropagator().Inject(ctx, propagation.HeaderCarrier(req.Header))
		req.Header.Set(kit.RequestIDHeader, logging.RequestID(ctx))
		resp, err := users.Do(req)
		if err != nil {
			kit.WriteInternalError(c, err)
			return
		}
		_ = resp.Body.Close()
		c.Status(http.StatusOK)
	})

	const traceID = "11112222333344445555666677778888"
	req := httptest.NewRequest(http.MethodGet, "/posts/1", nil)
	req.Header.Set("traceparent", "00-"+traceID+"-1111222233334444-01")
	req.Header.Set(kit.RequestIDHeader, "edge-1")
	if rec := serve(svc.APIHandler(router), req); rec.Code != http.StatusOK {
		t.Fatalf("status = %d %s", rec.Code, rec.Body)
	}
	s := <-got
	parts := strings.Split(s.traceparent, "-")
	if len(parts) != 4 || parts[1] != traceID || parts[2] == "1111222233334444" || parts[3] != "01" {
		t.Errorf("upstream traceparent = %q, want trace %s, still sampled, with this service's span as parent", s.traceparent, traceID)
	}
	if s.requestID != "edge-1" {
		t.Errorf("upstream request id = %q, want edge-1", s.requestID)
	}
}

func TestWrongMethodIs405(t *testing.T) {
	svc, _ := newService(t, nil)
	router := kit.NewRouter()
	router.GET("/posts", func(c *gin.Context) { c.Status(http.StatusOK) })
	rec := serve(svc.APIHandler(router), httptest.NewRequest(http.MethodDelete, "/posts", nil))
	if rec.Code != http.StatusMethodNotAllowed || decodeError(t, rec).Error != "method not allowed" {
		t.Errorf("got %d %s, want 405", rec.Code, rec.Body)
	}
}
