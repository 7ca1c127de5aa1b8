package controller

import (
	"fmt"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"

	"github.com/courier-dev/courier/operator/api/v1alpha1"
)

// maxEventNote is how long a summarising event's note may grow before the
// rest of its objects are counted rather than named; events.k8s.io/v1
// refuses notes over 1 kB.
const maxEventNote = 900

// changes are the objects one reconcile created, updated and deleted, by
// event reason, in the order it changed them. A reconcile records one event
// per reason that names them all, rather than one event per object: an
// app's first reconcile creates 13 or more objects, and events are written
// through the same rate-limited client as the objects, so one per object
// made events half of the operator's writes (bench/operator). Failures
// (ApplyFailed, DeleteFailed, NameConflict) are still recorded one by one
// as they happen, since each wants a person's attention.
type changes struct {
	mu sync.Mutex
	// byReason holds "Kind name" entries per reason.
	byReason map[string][]change
}

type change struct{ kind, name string }

// add records that the object kind/name was changed for reason; an empty
// reason (nothing written) records nothing. Safe for concurrent use.
func (c *changes) add(reason, kind, name string) {
	if reason == "" {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.byReason == nil {
		c.byReason = map[string][]change{}
	}
	c.byReason[reason] = append(c.byReason[reason], change{kind, name})
}

// recordChanges records one Normal event on the app per reason with
// changes: Created, Updated, Deleted, in that order.
func (r *MicroserviceAppReconciler) recordChanges(app *v1alpha1.MicroserviceApp, c *changes) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, reason := range []string{eventCreated, eventUpdated, eventDeleted} {
		if list := c.byReason[reason]; len(list) > 0 {
			action := "Apply"
			if reason == eventDeleted {
				action = "Delete"
			}
			r.Recorder.Eventf(app, nil, corev1.EventTypeNormal, reason, action, "%s", changeNote(reason, list))
		}
	}
}

// changeNote names the changed objects grouped by kind, in the order of
// the first change of each kind: "Created NetworkPolicy blog-gateway,
// blog-users; Service blog-gateway", counting those beyond maxEventNote.
func changeNote(reason string, list []change) string {
	var kinds []string
	names := map[string][]string{}
	for _, c := range list {
		if names[c.kind] == nil {
			kinds = append(kinds, c.kind)
		}
		names[c.kind] = append(names[c.kind], c.name)
	}
	var b strings.Builder
	b.WriteString(reason)
	left := len(list)
	for i, k := range kinds {
		sep := " "
		if i > 0 {
			sep = "; "
		}
		for j, n := range names[k] {
			entry := ", " + n
			if j == 0 {
				entry = sep + k + " " + n
			}
			if b.Len()+len(entry) > maxEventNote {
				fmt.Fprintf(&b, "; and %d more", left)
				return b.String()
			}
			b.WriteString(entry)
			left--
		}
	}
	return b.String()
}
