package kit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strings"
	"sync"

	"github.com/gin-gonic/gin"
	"github.com/gin-gonic/gin/binding"
	"github.com/go-playground/validator/v10"
)

// ErrorResponse is the JSON body of every error the kit writes:
// {"error":"invalid request","fields":{"email":"must be a valid e-mail"}}.
type ErrorResponse struct {
	// Error says what went wrong, for a person.
	Error string `json:"error"`
	// Fields maps each failing input field (by its JSON name) to what is
	// wrong with it.
	Fields map[string]string `json:"fields,omitempty"`
}

// WriteError aborts the request with status and {"error": msg}.
func WriteError(c *gin.Context, status int, msg string) {
	c.AbortWithStatusJSON(status, ErrorResponse{Error: msg})
}

// WriteInternalError records err for the access log and aborts with a 500
// that does not leak it, or with 503 if the request's deadline passed, since
// then err is most likely the deadline's doing.
func WriteInternalError(c *gin.Context, err error) {
	_ = c.Error(err)
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(c.Request.Context().Err(), context.DeadlineExceeded) {
		WriteError(c, http.StatusServiceUnavailable, "request timed out")
		return
	}
	WriteError(c, http.StatusInternalServerError, "internal error")
}

// BindJSON decodes and validates the JSON body into dst (gin binding with
// `binding:"required,email"` tags). On failure it writes the error response
// and returns false; the handler just returns: 415 unless the body is
// declared JSON (application/json or a +json type), 400 with the failing
// fields (an unknown field included: a typo must not be silently
// ignored), or 413.
func BindJSON(c *gin.Context, dst any) bool {
	useJSONNames()
	// An empty body is answered below as such, whatever its type.
	if ct := c.ContentType(); c.Request.ContentLength != 0 && ct != "application/json" && !strings.HasSuffix(ct, "+json") {
		_ = c.Error(fmt.Errorf("content type %q", ct))
		WriteError(c, http.StatusUnsupportedMediaType, "Content-Type must be application/json")
		return false
	}
	if err := c.ShouldBindJSON(dst); err != nil {
		WriteBindError(c, err)
		return false
	}
	return true
}

// WriteBindError answers a binding error from gin: validation failures as
// 400 with the failing fields, an oversized body as 413, malformed JSON as 400.
func WriteBindError(c *gin.Context, err error) {
	_ = c.Error(err)
	var tooLarge *http.MaxBytesError
	var typeErr *json.UnmarshalTypeError
	switch {
	case errors.As(err, &tooLarge):
		WriteError(c, http.StatusRequestEntityTooLarge, "request body too large")
	case errors.As(err, &typeErr) && typeErr.Field != "":
		c.AbortWithStatusJSON(http.StatusBadRequest, ErrorResponse{
			Error:  "invalid request",
			Fields: map[string]string{typeErr.Field: "must be " + article(typeErr.Type.Kind())},
		})
	case unknownField(err) != "":
		c.AbortWithStatusJSON(http.StatusBadRequest, ErrorResponse{
			Error:  "invalid request",
			Fields: map[string]string{unknownField(err): "is not a known field"},
		})
	default:
		if fields := ValidationFields(err); fields != nil {
			c.AbortWithStatusJSON(http.StatusBadRequest, ErrorResponse{Error: "invalid request", Fields: fields})
			return
		}
		if errors.Is(err, io.EOF) {
			WriteError(c, http.StatusBadRequest, "request body is empty")
			return
		}
		WriteError(c, http.StatusBadRequest, "malformed request body")
	}
}

// unknownField returns the field encoding/json refused under
// DisallowUnknownFields, or "". encoding/json has no error type for it, so
// its message is the only place the name is.
func unknownField(err error) string {
	rest, ok := strings.CutPrefix(err.Error(), `json: unknown field "`)
	if !ok {
		return ""
	}
	name, _, _ := strings.Cut(rest, `"`)
	return name
}

func article(k reflect.Kind) string {
	switch k {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Map, reflect.Struct:
		return "an object"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	default:
		return "of type " + k.String()
	}
}

// ValidationFields turns validator.ValidationErrors in err into a map from
// field (its JSON name, dotted for nested structs) to a message, or nil if
// err holds none.
func ValidationFields(err error) map[string]string {
	var verrs validator.ValidationErrors
	if !errors.As(err, &verrs) {
		return nil
	}
	fields := make(map[string]string, len(verrs))
	for _, fe := range verrs {
		name := fe.Namespace()
		// Drop the top-level struct's type name: "createUser.email" -> "email".
		if _, rest, ok := strings.Cut(name, "."); ok {
			name = rest
		}
		if _, dup := fields[name]; !dup {
			fields[name] = fieldMessage(fe)
		}
	}
	return fields
}

func fieldMessage(fe validator.FieldError) string {
	p := fe.Param()
	kind := fe.Kind()
	length := kind == reflect.String
	items := kind == reflect.Slice || kind == reflect.Map || kind == reflect.Array
	switch fe.Tag() {
	case "required", "required_if", "required_unless", "required_with", "required_without":
		return "is required"
	case "email":
		return "must be a valid e-mail"
	case "url", "http_url":
		return "must be a valid URL"
	case "uuid", "uuid4":
		return "must be a valid UUID"
	case "alphanum":
		return "must contain only letters and digits"
	case "oneof":
		return "must be one of: " + strings.Join(strings.Fields(p), ", ")
	case "len":
		switch {
		case length:
			return "must be exactly " + p + " characters long"
		case items:
			return "must have exactly " + p + " items"
		}
		return "must be " + p
	case "min", "gte":
		switch {
		case length:
			return "must be at least " + p + " characters long"
		case items:
			return "must have at least " + p + " items"
		}
		return "must be at least " + p
	case "max", "lte":
		switch {
		case length:
			return "must be at most " + p + " characters long"
		case items:
			return "must have at most " + p + " items"
		}
		return "must be at most " + p
	case "gt":
		return "must be greater than " + p
	case "lt":
		return "must be less than " + p
	}
	if p != "" {
		return fmt.Sprintf("failed the %q check (%s)", fe.Tag(), p)
	}
	return fmt.Sprintf("failed the %q check", fe.Tag())
}

var jsonNamesOnce sync.Once

// useJSONNames makes gin's validator report fields by their JSON (or form)
// name, which is what the client sent. The validator caches names per struct
// type on first use, so this runs before the first bind.
func useJSONNames() {
	jsonNamesOnce.Do(func() {
		// Process-wide in gin: every kit service refuses unknown fields.
		binding.EnableDecoderDisallowUnknownFields = true
		v, ok := binding.Validator.Engine().(*validator.Validate)
		if !ok {
			return
		}
		v.RegisterTagNameFunc(func(f reflect.StructField) string {
			for _, tag := range []string{"json", "form", "uri"} {
				name, _, _ := strings.Cut(f.Tag.Get(tag), ",")
				if name == "-" {
					return ""
				}
				if name != "" {
					return name
				}
			}
			return ""
		})
	})
}
