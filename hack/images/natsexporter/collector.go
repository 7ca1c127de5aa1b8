package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/prometheus/client_golang/prometheus"
)

// endpoints are the monitoring endpoints to export.
type endpoints struct {
	varz, connz, routez, healthz bool
	// jsz is the detail of /jsz: "" (none), "accounts", "streams",
	// "consumers" or "all" (consumers and everything above them).
	jsz string
}

func (e endpoints) any() bool { return e.varz || e.connz || e.routez || e.healthz || e.jsz != "" }

// Labels, as the upstream exporter names them.
const (
	labelServerID = "server_id"
	labelAccount  = "account"
	labelStream   = "stream_name"
	labelConsumer = "consumer_name"
)

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, append([]string{labelServerID}, labels...), nil)
}

var (
	varzConnections      = desc("gnatsd_varz_connections", "Current client connections.")
	varzTotalConnections = desc("gnatsd_varz_total_connections", "Client connections since the server started.")
	varzRoutes           = desc("gnatsd_varz_routes", "Connected routes to other servers of the cluster.")
	varzSubscriptions    = desc("gnatsd_varz_subscriptions", "Active subscriptions.")
	varzSlowConsumers    = desc("gnatsd_varz_slow_consumers", "Clients disconnected for being slow consumers since the server started.")
	varzInMsgs           = desc("gnatsd_varz_in_msgs", "Messages received since the server started.")
	varzOutMsgs          = desc("gnatsd_varz_out_msgs", "Messages sent since the server started.")
	varzInBytes          = desc("gnatsd_varz_in_bytes", "Bytes received since the server started.")
	varzOutBytes         = desc("gnatsd_varz_out_bytes", "Bytes sent since the server started.")
	varzMem              = desc("gnatsd_varz_mem", "Resident memory of the server, in bytes.")
	varzCPU              = desc("gnatsd_varz_cpu", "CPU use of the server, in percent of one core.")
	connzConnections     = desc("gnatsd_connz_num_connections", "Client connections, as /connz counts them.")
	routezRoutes         = desc("gnatsd_routez_num_routes", "Routes, as /routez counts them.")
	healthzStatus        = desc("gnatsd_healthz_status", "0 when /healthz reports the server healthy, 1 otherwise.")
	jsMemory             = desc("jetstream_server_total_memory_bytes", "Memory JetStream uses on this server, in bytes.")
	jsStorage            = desc("jetstream_server_total_storage_bytes", "Storage JetStream uses on this server, in bytes.")
	jsStreams            = desc("jetstream_server_total_streams", "Streams on this server.")
	jsConsumers          = desc("jetstream_server_total_consumers", "Consumers on this server.")
	jsMessages           = desc("jetstream_server_total_messages", "Messages stored by JetStream on this server.")
	jsBytes              = desc("jetstream_server_total_message_bytes", "Bytes of the messages stored by JetStream on this server.")
	streamMessages       = desc("jetstream_stream_total_messages", "Messages in the stream.", labelAccount, labelStream)
	streamBytes          = desc("jetstream_stream_total_bytes", "Bytes of the messages in the stream.", labelAccount, labelStream)
	streamConsumers      = desc("jetstream_stream_consumer_count", "Consumers of the stream.", labelAccount, labelStream)
	consumerPending      = desc("jetstream_consumer_num_pending", "Messages the consumer has not delivered yet.", labelAccount, labelStream, labelConsumer)
	consumerAckPending   = desc("jetstream_consumer_num_ack_pending", "Messages delivered and not acknowledged yet.", labelAccount, labelStream, labelConsumer)
	consumerRedelivered  = desc("jetstream_consumer_num_redelivered", "Messages delivered more than once.", labelAccount, labelStream, labelConsumer)
	consumerWaiting      = desc("jetstream_consumer_num_waiting", "Pull requests waiting for messages.", labelAccount, labelStream, labelConsumer)
	consumerDelivered    = desc("jetstream_consumer_delivered_consumer_seq", "The consumer's sequence of its last delivered message.", labelAccount, labelStream, labelConsumer)
)

// collector reads the server's monitoring endpoint at every scrape.
type collector struct {
	base   string
	what   endpoints
	client *http.Client
}

func newCollector(base string, what endpoints, client *http.Client) *collector {
	return &collector{base: strings.TrimSuffix(base, "/"), what: what, client: client}
}

// Describe sends the descriptors of what is exported.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	if c.what.varz {
		for _, d := range []*prometheus.Desc{varzConnections, varzTotalConnections, varzRoutes, varzSubscriptions,
			varzSlowConsumers, varzInMsgs, varzOutMsgs, varzInBytes, varzOutBytes, varzMem, varzCPU} {
			ch <- d
		}
	}
	if c.what.connz {
		ch <- connzConnections
	}
	if c.what.routez {
		ch <- routezRoutes
	}
	if c.what.healthz {
		ch <- healthzStatus
	}
	if c.what.jsz != "" {
		for _, d := range []*prometheus.Desc{jsMemory, jsStorage, jsStreams, jsConsumers, jsMessages, jsBytes,
			streamMessages, streamBytes, streamConsumers,
			consumerPending, consumerAckPending, consumerRedelivered, consumerWaiting, consumerDelivered} {
			ch <- d
		}
	}
}

// Collect reads each selected endpoint. An endpoint that cannot be read
// fails the scrape with its error rather than leaving its series out
// silently.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	if c.what.varz {
		c.collectVarz(ch)
	}
	if c.what.connz {
		var z server.Connz
		if c.get(ch, connzConnections, "/connz?limit=1", &z) {
			ch <- gauge(connzConnections, float64(z.NumConns), z.ID)
		}
	}
	if c.what.routez {
		var z server.Routez
		if c.get(ch, routezRoutes, "/routez", &z) {
			ch <- gauge(routezRoutes, float64(z.NumRoutes), z.ID)
		}
	}
	if c.what.healthz {
		c.collectHealthz(ch)
	}
	if c.what.jsz != "" {
		c.collectJsz(ch)
	}
}

func (c *collector) collectVarz(ch chan<- prometheus.Metric) {
	var v server.Varz
	if !c.get(ch, varzConnections, "/varz", &v) {
		return
	}
	id := v.ID
	ch <- gauge(varzConnections, float64(v.Connections), id)
	ch <- counter(varzTotalConnections, float64(v.TotalConnections), id)
	ch <- gauge(varzRoutes, float64(v.Routes), id)
	ch <- gauge(varzSubscriptions, float64(v.Subscriptions), id)
	ch <- counter(varzSlowConsumers, float64(v.SlowConsumers), id)
	ch <- counter(varzInMsgs, float64(v.InMsgs), id)
	ch <- counter(varzOutMsgs, float64(v.OutMsgs), id)
	ch <- counter(varzInBytes, float64(v.InBytes), id)
	ch <- counter(varzOutBytes, float64(v.OutBytes), id)
	ch <- gauge(varzMem, float64(v.Mem), id)
	ch <- gauge(varzCPU, v.CPU, id)
}

// collectHealthz reads /healthz, which answers 503 with its JSON body when
// the server is unhealthy: that is a value (1), not a failed scrape. The
// server's ID comes from /varz, which /healthz does not carry.
func (c *collector) collectHealthz(ch chan<- prometheus.Metric) {
	var v server.Varz
	if !c.get(ch, healthzStatus, "/varz", &v) {
		return
	}
	resp, err := c.client.Get(c.base + "/healthz")
	if err != nil {
		ch <- prometheus.NewInvalidMetric(healthzStatus, fmt.Errorf("get /healthz: %w", err))
		return
	}
	defer func() { _ = resp.Body.Close() }()
	var h server.HealthStatus
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&h); err != nil {
		ch <- prometheus.NewInvalidMetric(healthzStatus, fmt.Errorf("decode /healthz (%s): %w", resp.Status, err))
		return
	}
	status := 1.0
	if resp.StatusCode == http.StatusOK && h.Status == "ok" {
		status = 0
	}
	ch <- gauge(healthzStatus, status, v.ID)
}

func (c *collector) collectJsz(ch chan<- prometheus.Metric) {
	query := "/jsz?accounts=true"
	switch c.what.jsz {
	case "streams":
		query += "&streams=true"
	case "consumers", "all":
		query += "&streams=true&consumers=true"
	}
	var z server.JSInfo
	if !c.get(ch, jsStreams, query, &z) {
		return
	}
	id := z.ID
	ch <- gauge(jsMemory, float64(z.Memory), id)
	ch <- gauge(jsStorage, float64(z.Store), id)
	ch <- gauge(jsStreams, float64(z.Streams), id)
	ch <- gauge(jsConsumers, float64(z.Consumers), id)
	ch <- gauge(jsMessages, float64(z.Messages), id)
	ch <- gauge(jsBytes, float64(z.Bytes), id)
	for _, a := range z.AccountDetails {
		for _, s := range a.Streams {
			ch <- gauge(streamMessages, float64(s.State.Msgs), id, a.Name, s.Name)
			ch <- gauge(streamBytes, float64(s.State.Bytes), id, a.Name, s.Name)
			ch <- gauge(streamConsumers, float64(s.State.Consumers), id, a.Name, s.Name)
			for _, ci := range s.Consumer {
				labels := []string{id, a.Name, s.Name, ci.Name}
				ch <- gauge(consumerPending, float64(ci.NumPending), labels...)
				ch <- gauge(consumerAckPending, float64(ci.NumAckPending), labels...)
				ch <- counter(consumerRedelivered, float64(ci.NumRedelivered), labels...)
				ch <- gauge(consumerWaiting, float64(ci.NumWaiting), labels...)
				ch <- counter(consumerDelivered, float64(ci.Delivered.Consumer), labels...)
			}
		}
	}
}

// get decodes the endpoint at path into out; on failure it sends an
// invalid metric for d, which fails the scrape with the error, and returns
// false.
func (c *collector) get(ch chan<- prometheus.Metric, d *prometheus.Desc, path string, out any) bool {
	resp, err := c.client.Get(c.base + path)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(d, fmt.Errorf("get %s: %w", path, err))
		return false
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		ch <- prometheus.NewInvalidMetric(d, fmt.Errorf("get %s: %s", path, resp.Status))
		return false
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(out); err != nil {
		ch <- prometheus.NewInvalidMetric(d, fmt.Errorf("decode %s: %w", path, err))
		return false
	}
	return true
}

func gauge(d *prometheus.Desc, v float64, labels ...string) prometheus.Metric {
	return prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
}

func counter(d *prometheus.Desc, v float64, labels ...string) prometheus.Metric {
	return prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
}
