package v1alpha1_test

import (
	"reflect"
	"regexp"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/courier-dev/courier/operator/api/v1alpha1"
)

// TestEnvVarNamePattern checks the pattern the env name and envFrom prefix
// markers repeat against the API server's own check of a Pod's env names,
// for every character up to U+00FF in every position.
func TestEnvVarNamePattern(t *testing.T) {
	pattern := regexp.MustCompile(v1alpha1.EnvVarNamePattern)
	for r := rune(0); r <= 0xFF; r++ {
		for _, name := range []string{string(r), "A" + string(r), string(r) + "A", "A" + string(r) + "B"} {
			want := len(validation.IsRelaxedEnvVarName(name)) == 0
			if got := pattern.MatchString(name); got != want {
				t.Errorf("pattern matches %q: %v, IsRelaxedEnvVarName accepts it: %v", name, got, want)
			}
		}
	}
	if pattern.MatchString("") {
		t.Error("pattern matches the empty name")
	}
}

// TestEnvTypesFollowCore keeps EnvVar and EnvFromSource field for field
// equal to corev1's, which the builders rely on when they copy them into a
// container.
func TestEnvTypesFollowCore(t *testing.T) {
	for _, pair := range [][2]any{{v1alpha1.EnvVar{}, corev1.EnvVar{}}, {v1alpha1.EnvFromSource{}, corev1.EnvFromSource{}}} {
		ours, core := reflect.TypeOf(pair[0]), reflect.TypeOf(pair[1])
		if !ours.ConvertibleTo(core) {
			t.Errorf("%s does not convert to %s", ours, core)
			continue
		}
		for i := range core.NumField() {
			c, o := core.Field(i), ours.Field(i)
			if c.Name != o.Name || c.Type != o.Type || c.Tag.Get("json") != o.Tag.Get("json") {
				t.Errorf("%s field %d is %s %s %q, %s has %s %s %q", ours, i, o.Name, o.Type, o.Tag.Get("json"), core, c.Name, c.Type, c.Tag.Get("json"))
			}
		}
	}
}
