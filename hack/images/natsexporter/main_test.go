package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// operatorArgs are the arguments the operator's StatefulSet gives the
// exporter (operator/internal/resource/nats exporterContainer).
var operatorArgs = []string{"-port=7777", "-varz", "-jsz=all", "-connz", "-routez", "-healthz", "http://localhost:8222"}

func TestParse(t *testing.T) {
	c, err := parse(operatorArgs, io.Discard)
	if err != nil {
		t.Fatalf("parse(%q): %v", operatorArgs, err)
	}
	want := endpoints{varz: true, connz: true, routez: true, healthz: true, jsz: "all"}
	if c.port != 7777 || c.server != "http://localhost:8222" || c.metrics != want {
		t.Errorf("parse(%q) = %+v, want port 7777, server http://localhost:8222, %+v", operatorArgs, c, want)
	}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"-varz"}, "want one argument"},
		{[]string{"-varz", "a", "b"}, "want one argument"},
		{[]string{"http://localhost:8222"}, "no metrics selected"},
		{[]string{"-jsz=everything", "http://localhost:8222"}, `-jsz "everything"`},
		{[]string{"-port=0", "-varz", "http://localhost:8222"}, "-port 0"},
		{[]string{"-nosuchflag", "http://localhost:8222"}, "not defined"},
	} {
		if _, err := parse(tt.args, io.Discard); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("parse(%q) = %v, want an error containing %q", tt.args, err, tt.want)
		}
	}
}

// TestCollect reads a real nats-server with JetStream: a stream holding two
// messages and a durable consumer that has not fetched them.
func TestCollect(t *testing.T) {
	srv, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: -1, HTTPHost: "127.0.0.1", HTTPPort: -1,
		JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	t.Cleanup(srv.Shutdown)

	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "COURIER_BLOG", Subjects: []string{"blog.>"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateOrUpdateConsumer(ctx, "COURIER_BLOG", jetstream.ConsumerConfig{
		Durable: "emails", FilterSubject: "blog.emails", AckPolicy: jetstream.AckExplicitPolicy,
	}); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := js.Publish(ctx, "blog.emails", []byte("job")); err != nil {
			t.Fatal(err)
		}
	}

	monitor := "http://" + srv.MonitorAddr().String()
	c, err := parse(append(operatorArgs[:len(operatorArgs)-1:len(operatorArgs)-1], monitor), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(newCollector(c.server, c.metrics, &http.Client{Timeout: 5 * time.Second}))

	id := srv.ID()
	want := `
# HELP gnatsd_connz_num_connections Client connections, as /connz counts them.
# TYPE gnatsd_connz_num_connections gauge
gnatsd_connz_num_connections{server_id="` + id + `"} 1
# HELP gnatsd_healthz_status 0 when /healthz reports the server healthy, 1 otherwise.
# TYPE gnatsd_healthz_status gauge
gnatsd_healthz_status{server_id="` + id + `"} 0
# HELP gnatsd_routez_num_routes Routes, as /routez counts them.
# TYPE gnatsd_routez_num_routes gauge
gnatsd_routez_num_routes{server_id="` + id + `"} 0
# HELP jetstream_consumer_num_pending Messages the consumer has not delivered yet.
# TYPE jetstream_consumer_num_pending gauge
jetstream_consumer_num_pending{account="$G",consumer_name="emails",server_id="` + id + `",stream_name="COURIER_BLOG"} 2
# HELP jetstream_stream_total_messages Messages in the stream.
# TYPE jetstream_stream_total_messages gauge
jetstream_stream_total_messages{account="$G",server_id="` + id + `",stream_name="COURIER_BLOG"} 2
# HELP jetstream_server_total_streams Streams on this server.
# TYPE jetstream_server_total_streams gauge
jetstream_server_total_streams{server_id="` + id + `"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"gnatsd_connz_num_connections", "gnatsd_healthz_status", "gnatsd_routez_num_routes",
		"jetstream_consumer_num_pending", "jetstream_stream_total_messages", "jetstream_server_total_streams"); err != nil {
		t.Error(err)
	}
	// Every /varz series is there, with the one client connected.
	if n, err := testutil.GatherAndCount(reg, "gnatsd_varz_connections", "gnatsd_varz_in_msgs", "gnatsd_varz_mem"); err != nil || n != 3 {
		t.Errorf("varz series: %d, %v; want 3", n, err)
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP gnatsd_varz_connections Current client connections.
# TYPE gnatsd_varz_connections gauge
gnatsd_varz_connections{server_id="`+id+`"} 1
`), "gnatsd_varz_connections"); err != nil {
		t.Error(err)
	}
}

// TestCollectServerDown: a server that does not answer fails the scrape
// with the endpoint's error, rather than serving no series.
func TestCollectServerDown(t *testing.T) {
	down := httptest.NewServer(http.NotFoundHandler())
	url := down.URL
	down.Close()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(newCollector(url, endpoints{varz: true, jsz: "all"}, &http.Client{Timeout: 2 * time.Second}))
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(reg, promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusInternalServerError || !strings.Contains(rec.Body.String(), "get /varz") {
		t.Errorf("scrape of a down server: %d %q, want 500 naming get /varz", rec.Code, rec.Body.String())
	}
}
