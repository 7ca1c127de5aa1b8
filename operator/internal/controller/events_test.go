package controller

import (
	"fmt"
	"strings"
	"testing"
)

func TestChangeNote(t *testing.T) {
	t.Parallel()
	many := make([]change, 0, 100)
	for i := range 100 {
		many = append(many, change{"Deployment", fmt.Sprintf("app-service-%03d", i)})
	}
	tests := []struct {
		name string
		list []change
		want string
	}{{
		name: "one object",
		list: []change{{"Service", "blog-gateway"}},
		want: "Created Service blog-gateway",
	}, {
		name: "grouped by kind in order of first change",
		list: []change{
			{"NetworkPolicy", "blog-gateway"}, {"Service", "blog-gateway"},
			{"NetworkPolicy", "blog-users"}, {"Deployment", "blog-gateway"},
		},
		want: "Created NetworkPolicy blog-gateway, blog-users; Service blog-gateway; Deployment blog-gateway",
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := changeNote(eventCreated, tt.list); got != tt.want {
				t.Errorf("changeNote = %q, want %q", got, tt.want)
			}
		})
	}

	t.Run("a long list is cut and counted", func(t *testing.T) {
		t.Parallel()
		got := changeNote(eventCreated, many)
		if len(got) > maxEventNote+len("; and 100 more") {
			t.Errorf("note of %d bytes, want at most about %d", len(got), maxEventNote)
		}
		named := strings.Count(got, "app-service-")
		if want := fmt.Sprintf("; and %d more", 100-named); !strings.HasSuffix(got, want) {
			t.Errorf("note %q does not end in %q", got, want)
		}
	})
}
