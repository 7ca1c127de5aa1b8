package main

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestLabelsFlag checks --monitoring-labels: pairs parsed and checked as
// label keys and values, the empty value meaning no labels.
func TestLabelsFlag(t *testing.T) {
	tests := []struct {
		in      string
		want    labelsFlag
		wantErr bool
	}{
		{in: "release=kube-prometheus-stack", want: labelsFlag{"release": "kube-prometheus-stack"}},
		{in: "release=prom, team=shop ,", want: labelsFlag{"release": "prom", "team": "shop"}},
		{in: "example.org/tier=", want: labelsFlag{"example.org/tier": ""}},
		{in: "", want: labelsFlag{}},
		{in: "release", wantErr: true},
		{in: "bad key=x", wantErr: true},
		{in: "k=bad value", wantErr: true},
	}
	for _, tt := range tests {
		l := labelsFlag{"old": "x"}
		err := l.Set(tt.in)
		if (err != nil) != tt.wantErr {
			t.Errorf("Set(%q) error = %v, want error %v", tt.in, err, tt.wantErr)
			continue
		}
		if tt.wantErr {
			continue
		}
		if diff := cmp.Diff(tt.want, l); diff != "" {
			t.Errorf("Set(%q) (-want +got):\n%s", tt.in, diff)
		}
	}
	if got := (labelsFlag{"b": "2", "a": "1"}).String(); got != "a=1,b=2" {
		t.Errorf("String() = %q", got)
	}
}
