package main

import (
	"strings"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	ms := func(ns ...int) []time.Duration {
		out := make([]time.Duration, len(ns))
		for i, n := range ns {
			out[i] = time.Duration(n) * time.Millisecond
		}
		return out
	}
	hundred := make([]int, 100)
	for i := range hundred {
		hundred[i] = 100 - i // unsorted on purpose
	}
	tests := []struct {
		name string
		xs   []time.Duration
		p    float64
		want time.Duration
	}{
		{"empty", nil, 50, 0},
		{"one", ms(7), 99, 7 * time.Millisecond},
		{"median of odd", ms(3, 1, 2), 50, 2 * time.Millisecond},
		{"median of even takes the lower", ms(4, 1, 3, 2), 50, 2 * time.Millisecond},
		{"p99 of 100", ms(hundred...), 99, 99 * time.Millisecond},
		{"p100 is the max", ms(hundred...), 100, 100 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := percentile(tt.xs, tt.p); got != tt.want {
				t.Errorf("percentile(%v, %v) = %v, want %v", tt.xs, tt.p, got, tt.want)
			}
		})
	}
}

func TestSlope(t *testing.T) {
	got, err := slope([]float64{0, 100, 500, 1000}, []float64{50, 60, 100, 150})
	if err != nil {
		t.Fatal(err)
	}
	if got != 0.1 {
		t.Errorf("slope of y = 50 + 0.1x = %v, want 0.1", got)
	}
	if _, err := slope([]float64{1}, []float64{1}); err == nil {
		t.Error("slope of one point: no error")
	}
	if _, err := slope([]float64{5, 5}, []float64{1, 2}); err == nil {
		t.Error("slope of one distinct x: no error")
	}
}

func TestCountRequests(t *testing.T) {
	const log = `{"stage":"ResponseComplete","verb":"patch","user":{"username":"op"},"objectRef":{"resource":"deployments"},"requestReceivedTimestamp":"2026-01-01T00:00:01.000000Z"}
{"stage":"ResponseComplete","verb":"patch","user":{"username":"op"},"objectRef":{"resource":"microserviceapps","subresource":"status"},"requestReceivedTimestamp":"2026-01-01T00:00:02.000000Z"}
{"stage":"ResponseComplete","verb":"get","user":{"username":"op"},"objectRef":{"resource":"deployments"},"requestReceivedTimestamp":"2026-01-01T00:00:03.000000Z"}
{"stage":"ResponseStarted","verb":"watch","user":{"username":"op"},"objectRef":{"resource":"deployments"},"requestReceivedTimestamp":"2026-01-01T00:00:03.000000Z"}
{"stage":"ResponseComplete","verb":"watch","user":{"username":"op"},"objectRef":{"resource":"deployments"},"requestReceivedTimestamp":"2026-01-01T00:00:03.000000Z"}
{"stage":"ResponseComplete","verb":"create","user":{"username":"someone-else"},"objectRef":{"resource":"deployments"},"requestReceivedTimestamp":"2026-01-01T00:00:04.000000Z"}
{"stage":"ResponseComplete","verb":"create","user":{"username":"op"},"objectRef":{"resource":"events"},"requestReceivedTimestamp":"2026-01-01T00:00:09.000000Z"}
`
	from := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c, err := countRequests(strings.NewReader(log), "op", from, from.Add(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if c.Writes != 2 || c.Reads != 1 || c.Watches != 1 {
		t.Errorf("writes, reads, watches = %d, %d, %d, want 2, 1, 1", c.Writes, c.Reads, c.Watches)
	}
	if want := from.Add(time.Second); !c.FirstWrite.Equal(want) {
		t.Errorf("first write %v, want %v", c.FirstWrite, want)
	}
	if want := from.Add(2 * time.Second); !c.LastWrite.Equal(want) {
		t.Errorf("last write %v, want %v", c.LastWrite, want)
	}
	if got, want := c.format(2), "0.50 get deployments, 0.50 patch deployments, 0.50 patch microserviceapps/status, 0.50 watch deployments"; got != want {
		t.Errorf("format = %q, want %q", got, want)
	}
	if _, err := countRequests(strings.NewReader("not json\n"), "op", from, from); err == nil {
		t.Error("malformed line: no error")
	}
}

func TestVerdict(t *testing.T) {
	if verdict(0.96, 0.95, true) != "met" || verdict(0.9, 0.95, true) != "missed" ||
		verdict(40, 50, false) != "met" || verdict(60, 50, false) != "missed" {
		t.Error("verdict disagrees with its goal")
	}
}
