package kit_test

import (
	"context"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/gin-gonic/gin"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/courier-dev/courier/services/kit"
	"github.com/courier-dev/courier/services/kit/contract"
	"github.com/courier-dev/courier/services/kit/messaging"
	"github.com/courier-dev/courier/test/brokertest"
	"github.com/courier-dev/courier/test/poll"
)

// otlpReceiver is an in-process OTLP/HTTP traces endpoint: it decodes each
// export request's protobuf and keeps its spans with their service name.
type otlpReceiver struct {
	mu    sync.Mutex
	spans []receivedSpan
	bad   []string
}

type receivedSpan struct {
	service string
	span    *tracepb.Span
}

func (o *otlpReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	var req coltracepb.ExportTraceServiceRequest
	if err == nil {
		err = proto.Unmarshal(body, &req)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if r.Method != http.MethodPost || r.URL.Path != "/v1/traces" || r.Header.Get("Content-Type") != "application/x-protobuf" || err != nil {
		o.bad = append(o.bad, r.Method+" "+r.URL.Path+" "+r.Header.Get("Content-Type")+" "+errString(err))
		http.Error(w, "bad export", http.StatusBadRequest)
		return
	}
	for _, rs := range req.GetResourceSpans() {
		service := ""
		for _, a := range rs.GetResource().GetAttributes() {
			if a.GetKey() == "service.name" {
				service = a.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				o.spans = append(o.spans, receivedSpan{service: service, span: s})
			}
		}
	}
	out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(out)
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// byKind returns the received spans of kind.
func (o *otlpReceiver) byKind(kind tracepb.Span_SpanKind) []receivedSpan {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []receivedSpan
	for _, s := range o.spans {
		if s.span.GetKind() == kind {
			out = append(out, s)
		}
	}
	return out
}

// TestTracesExportedOverOTLP: with OTEL_EXPORTER_OTLP_ENDPOINT set, one
// request that publishes a job and the consumer that handles it arrive at
// an OTLP receiver as one trace: the request's server span (from
// otelhttp, named by its route), the publish span under it and the process
// span under that, all from service "users".
func TestTracesExportedOverOTLP(t *testing.T) {
	receiver := &otlpReceiver{}
	collector := httptest.NewServer(receiver)
	defer collector.Close()

	n := brokertest.StartNATS(t)
	svc, _ := newServiceWithQueues(t, map[string]string{
		"COURIER_APP": "blog", "COURIER_SERVICE": "users",
		"BROKER_KIND": contract.BrokerNATS, "BROKER_URL": n.URL,
		"QUEUE_EMAILS": "blog.emails", "COURIER_DEV_DECLARE_TOPOLOGY": "true",
		"OTEL_EXPORTER_OTLP_ENDPOINT": collector.URL,
	}, []string{"emails"})
	router := kit.NewRouter()
	router.POST("/signup", func(c *gin.Context) {
		if _, err := svc.Broker().Publish(c.Request.Context(), "emails", []byte(`{}`)); err != nil {
			kit.WriteInternalError(c, err)
			return
		}
		c.Status(http.StatusAccepted)
	})
	handled := make(chan struct{}, 1)
	r := start(t, svc, kit.App{Handler: router, Consumers: []kit.Consumer{{
		Queue: "emails",
		Handler: func(context.Context, messaging.Message) error {
			handled <- struct{}{}
			return nil
		},
	}}})
	poll.Until(t, "ready with the broker connected", func() bool {
		code, body := get(t, r.adminURL("/readyz"))
		return code == http.StatusOK && strings.Contains(body, `"broker":"ok"`)
	})

	resp, err := client.Post(r.apiURL("/signup"), "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST /signup = %d", resp.StatusCode)
	}
	<-handled
	// Shutdown flushes the batch of spans not yet exported.
	if err := r.stop(t); err != nil {
		t.Fatalf("Run = %v", err)
	}

	receiver.mu.Lock()
	if len(receiver.bad) > 0 {
		t.Errorf("malformed exports: %v", receiver.bad)
	}
	receiver.mu.Unlock()
	server := receiver.byKind(tracepb.Span_SPAN_KIND_SERVER)
	producer := receiver.byKind(tracepb.Span_SPAN_KIND_PRODUCER)
	consumer := receiver.byKind(tracepb.Span_SPAN_KIND_CONSUMER)
	if len(server) != 1 || len(producer) != 1 || len(consumer) != 1 {
		t.Fatalf("got %d server, %d producer and %d consumer spans, want one of each", len(server), len(producer), len(consumer))
	}
	req, pub, proc := server[0].span, producer[0].span, consumer[0].span
	if req.GetName() != "POST /signup" {
		t.Errorf("server span name = %q, want the route, POST /signup", req.GetName())
	}
	if len(req.GetParentSpanId()) != 0 {
		t.Errorf("server span has parent %x, want a root", req.GetParentSpanId())
	}
	for _, s := range []*tracepb.Span{pub, proc} {
		if hex.EncodeToString(s.GetTraceId()) != hex.EncodeToString(req.GetTraceId()) {
			t.Errorf("span %q is in trace %x, want the request's %x", s.GetName(), s.GetTraceId(), req.GetTraceId())
		}
	}
	if string(pub.GetParentSpanId()) != string(req.GetSpanId()) {
		t.Errorf("publish span's parent = %x, want the server span %x", pub.GetParentSpanId(), req.GetSpanId())
	}
	if string(proc.GetParentSpanId()) != string(pub.GetSpanId()) {
		t.Errorf("process span's parent = %x, want the publish span %x", proc.GetParentSpanId(), pub.GetSpanId())
	}
	for _, s := range append(append(server, producer...), consumer...) {
		if s.service != "users" {
			t.Errorf("span %q from service %q, want users", s.span.GetName(), s.service)
		}
	}
}
