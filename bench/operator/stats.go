package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"sort"
	"strings"
	"time"
)

// percentile returns the p-th percentile (0 < p <= 100) of xs by the
// nearest-rank method: the smallest value at least p% of the samples are
// less than or equal to. With 50 samples p99 is the largest.
func percentile(xs []time.Duration, p float64) time.Duration {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	rank := int(math.Ceil(p / 100 * float64(len(s))))
	return s[min(max(rank, 1), len(s))-1]
}

// slope fits y = a + b*x by least squares and returns b: bytes per app
// when x is apps and y is RSS.
func slope(xs, ys []float64) (float64, error) {
	if len(xs) != len(ys) || len(xs) < 2 {
		return 0, fmt.Errorf("slope needs at least two points of x and y, got %d and %d", len(xs), len(ys))
	}
	var mx, my float64
	for i := range xs {
		mx += xs[i]
		my += ys[i]
	}
	mx /= float64(len(xs))
	my /= float64(len(ys))
	var num, den float64
	for i := range xs {
		num += (xs[i] - mx) * (ys[i] - my)
		den += (xs[i] - mx) * (xs[i] - mx)
	}
	if den == 0 {
		return 0, fmt.Errorf("slope needs two distinct x values")
	}
	return num / den, nil
}

// auditEvent is the part of a kube-apiserver audit event (audit.k8s.io/v1,
// JSON lines) the benchmark counts.
type auditEvent struct {
	Stage string `json:"stage"`
	Verb  string `json:"verb"`
	User  struct {
		Username string `json:"username"`
	} `json:"user"`
	ObjectRef *struct {
		Resource    string `json:"resource"`
		Subresource string `json:"subresource"`
	} `json:"objectRef"`
	RequestReceived time.Time `json:"requestReceivedTimestamp"`
}

// writeVerbs are the audit verbs that change state.
var writeVerbs = map[string]bool{"create": true, "update": true, "patch": true, "delete": true, "deletecollection": true}

// requestCounts are one user's API requests in a time window, from the
// API server's audit log.
type requestCounts struct {
	// ByRequest counts requests by "verb resource[/subresource]".
	ByRequest map[string]int
	// Writes and Reads count state-changing requests and get/list;
	// watches are counted apart, they are long-running.
	Writes, Reads, Watches int
	// FirstWrite and LastWrite bound the window's writes.
	FirstWrite, LastWrite time.Time
}

// countRequests reads an audit log and counts user's completed requests
// received in [from, to).
func countRequests(r io.Reader, user string, from, to time.Time) (requestCounts, error) {
	c := requestCounts{ByRequest: map[string]int{}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), 16*1024*1024)
	for sc.Scan() {
		var e auditEvent
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return c, fmt.Errorf("parse audit event %.80q: %w", sc.Text(), err)
		}
		// A watch also logs ResponseStarted; every request ends with one
		// ResponseComplete (or Panic).
		if e.User.Username != user || (e.Stage != "ResponseComplete" && e.Stage != "Panic") ||
			e.RequestReceived.Before(from) || !e.RequestReceived.Before(to) {
			continue
		}
		what := e.Verb
		if e.ObjectRef != nil {
			what += " " + e.ObjectRef.Resource
			if e.ObjectRef.Subresource != "" {
				what += "/" + e.ObjectRef.Subresource
			}
		}
		c.ByRequest[what]++
		switch {
		case e.Verb == "watch":
			c.Watches++
		case writeVerbs[e.Verb]:
			c.Writes++
			if c.FirstWrite.IsZero() || e.RequestReceived.Before(c.FirstWrite) {
				c.FirstWrite = e.RequestReceived
			}
			if e.RequestReceived.After(c.LastWrite) {
				c.LastWrite = e.RequestReceived
			}
		default:
			c.Reads++
		}
	}
	if err := sc.Err(); err != nil {
		return c, fmt.Errorf("read audit log: %w", err)
	}
	return c, nil
}

// format lists the counts by request, most frequent first, each divided by
// apps: "12.00 patch deployments, 1.00 patch microserviceapps/status".
func (c requestCounts) format(apps int) string {
	keys := make([]string, 0, len(c.ByRequest))
	for k := range c.ByRequest {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if c.ByRequest[keys[i]] != c.ByRequest[keys[j]] {
			return c.ByRequest[keys[i]] > c.ByRequest[keys[j]]
		}
		return keys[i] < keys[j]
	})
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%.2f %s", float64(c.ByRequest[k])/float64(max(apps, 1)), k))
	}
	return strings.Join(parts, ", ")
}

// verdict says "met" or "missed" for a value against a goal, lower or
// higher being better.
func verdict(value, goal float64, higherIsBetter bool) string {
	if (higherIsBetter && value >= goal) || (!higherIsBetter && value <= goal) {
		return "met"
	}
	return "missed"
}
