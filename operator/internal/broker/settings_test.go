package broker

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"gotest.tools/v3/golden"
	"sigs.k8s.io/yaml"
)

// blogTopology is the example app: users and posts publish e-mail jobs,
// mailer consumes them, gateway uses no queue.
func blogTopology() Topology {
	return Topology{
		App: "blog",
		Queues: []QueueSpec{{
			Name:           "emails",
			Type:           QueueQuorum,
			MaxDeliveries:  5,
			MessageTTL:     24 * time.Hour,
			MaxLength:      10000,
			DeletionPolicy: Retain,
		}},
		Services: []ServicePerms{
			{Name: "gateway"},
			{Name: "users", Publishes: []string{"emails"}},
			{Name: "posts", Publishes: []string{"emails"}},
			{Name: "mailer", Consumes: []string{"emails"}},
		},
	}
}

func TestGenerateGolden(t *testing.T) {
	tests := []struct {
		name     string
		topology Topology
	}{
		{name: "blog", topology: blogTopology()},
		{
			// Classic queues have no delivery limit in RabbitMQ 3.10: the
			// policy carries the TTL only, and an empty deletion policy
			// means retain.
			name: "classic-limits",
			topology: Topology{
				App: "blog",
				Queues: []QueueSpec{{
					Name: "emails", Type: QueueClassic, MaxDeliveries: 5, MessageTTL: 1500 * time.Millisecond,
				}},
				Services: []ServicePerms{
					{Name: "users", Publishes: []string{"emails"}},
					{Name: "mailer", Consumes: []string{"emails"}},
				},
			},
		},
		{
			// A queue without limits gets no policy at all.
			name: "no-limits",
			topology: Topology{
				App:    "blog",
				Queues: []QueueSpec{{Name: "emails", Type: QueueClassic, DeletionPolicy: Delete}},
				Services: []ServicePerms{
					{Name: "users", Publishes: []string{"emails"}},
					{Name: "mailer", Consumes: []string{"emails"}},
				},
			},
		},
		{
			// Several queues: alternations sorted and de-duplicated, a
			// service that both publishes and consumes, regex
			// metacharacters in the app name escaped, and the output
			// independent of the input order.
			name: "many-queues",
			topology: Topology{
				App: "shop.eu+1",
				Queues: []QueueSpec{
					{Name: "orders", Type: QueueQuorum, MaxDeliveries: 1, DeletionPolicy: Delete},
					{Name: "audit", Type: QueueClassic, MaxLength: 500},
				},
				Services: []ServicePerms{
					{Name: "checkout", Publishes: []string{"orders", "audit", "orders"}},
					{Name: "fulfilment", Consumes: []string{"orders"}, Publishes: []string{"audit"}},
					{Name: "auditor", Consumes: []string{"audit"}},
				},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Generate(tt.topology)
			if err != nil {
				t.Fatalf("Generate: %v", err)
			}
			got, err := yaml.Marshal(s)
			if err != nil {
				t.Fatalf("marshal settings: %v", err)
			}
			golden.Assert(t, string(got), "settings/"+tt.name+".yaml")
		})
	}
}

func TestGenerateIsIndependentOfInputOrder(t *testing.T) {
	a := blogTopology()
	b := blogTopology()
	b.Services[0], b.Services[3] = b.Services[3], b.Services[0]
	b.Queues = append(b.Queues, QueueSpec{Name: "audit", Type: QueueClassic})
	a.Queues = append([]QueueSpec{{Name: "audit", Type: QueueClassic}}, a.Queues...)
	sa, err := Generate(a)
	if err != nil {
		t.Fatal(err)
	}
	sb, err := Generate(b)
	if err != nil {
		t.Fatal(err)
	}
	ya, _ := yaml.Marshal(sa)
	yb, _ := yaml.Marshal(sb)
	if !bytes.Equal(ya, yb) {
		t.Errorf("settings depend on input order:\n%s\n---\n%s", ya, yb)
	}
}

func TestGenerateRejectsInvalidTopology(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Topology)
		want   string // a fragment of the error naming the field
	}{
		{"empty app", func(t *Topology) { t.App = "" }, "app: name is empty"},
		{"empty queue name", func(t *Topology) { t.Queues[0].Name = "" }, "queues[0].name: empty"},
		{"duplicate queue", func(t *Topology) { t.Queues = append(t.Queues, t.Queues[0]) }, `queues[1].name: duplicate queue "emails"`},
		{"unknown type", func(t *Topology) { t.Queues[0].Type = "stream" }, `queues[0].type: "stream"`},
		{"missing type", func(t *Topology) { t.Queues[0].Type = "" }, `queues[0].type: ""`},
		{"unknown deletion policy", func(t *Topology) { t.Queues[0].DeletionPolicy = "orphan" }, `queues[0].deletionPolicy: "orphan"`},
		{"negative deliveries", func(t *Topology) { t.Queues[0].MaxDeliveries = -1 }, "queues[0].maxDeliveries"},
		{"sub-millisecond TTL", func(t *Topology) { t.Queues[0].MessageTTL = time.Microsecond }, "queues[0].messageTTL"},
		{"negative length", func(t *Topology) { t.Queues[0].MaxLength = -1 }, "queues[0].maxLength"},
		{"dotted service", func(t *Topology) { t.Services[1].Name = "users.v2" }, `services[1].name: "users.v2" contains a dot`},
		{"duplicate service", func(t *Topology) { t.Services[2].Name = "users" }, `services[2].name: duplicate service "users"`},
		{"unknown published queue", func(t *Topology) { t.Services[1].Publishes = []string{"sms"} }, `services[1].publishes[0]: queue "sms" is not declared`},
		{"unknown consumed queue", func(t *Topology) { t.Services[3].Consumes = []string{"sms"} }, `services[3].consumes[0]: queue "sms" is not declared`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			topo := blogTopology()
			tt.mutate(&topo)
			_, err := Generate(topo)
			if !errors.Is(err, ErrInvalidTopology) {
				t.Fatalf("Generate error = %v, want ErrInvalidTopology", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not mention %q", err, tt.want)
			}
		})
	}
}
