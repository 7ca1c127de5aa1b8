package kit

import (
	"context"
	"net/http"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"

	"github.com/courier-dev/courier/services/kit/logging"
)

// InjectHeaders writes ctx's trace context (traceparent, tracestate,
// baggage) and request id into h, so the service called next continues the
// same trace and logs the same request id. Use it when building an outgoing
// request by hand or in a reverse proxy's Rewrite; NewHTTPClient does it for
// every request.
func InjectHeaders(ctx context.Context, h http.Header) {
	otel.GetTextMapPropagator().Inject(ctx, propagation.HeaderCarrier(h))
	if id := logging.RequestID(ctx); id != "" {
		h[requestIDKey] = []string{id}
	}
}

// NewHTTPClient returns a client for calling other services: every request
// carries the trace context and request id of its context (InjectHeaders),
// and the whole exchange is bounded by timeout. Create one per upstream and
// reuse it; pass the handler's context (the *gin.Context works) to
// http.NewRequestWithContext so the request's deadline applies too.
func NewHTTPClient(timeout time.Duration) *http.Client {
	base := http.DefaultTransport.(*http.Transport).Clone()
	// The default keeps 2 idle connections per host; a service calling one
	// upstream under load would otherwise open and close connections
	// constantly.
	base.MaxIdleConnsPerHost = 64
	return &http.Client{
		Timeout:   timeout,
		Transport: propagatingTransport{base: base},
	}
}

// propagatingTransport injects the headers on a clone of each request, as a
// RoundTripper must not modify the request it is given.
type propagatingTransport struct {
	base http.RoundTripper
}

func (t propagatingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	out := req.Clone(req.Context())
	InjectHeaders(req.Context(), out.Header)
	return t.base.RoundTrip(out)
}
