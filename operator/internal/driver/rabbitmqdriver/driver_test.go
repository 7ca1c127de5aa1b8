package rabbitmqdriver

import (
	"regexp"
	"testing"

	"github.com/courier-dev/courier/operator/api/v1alpha1"
	"github.com/courier-dev/courier/operator/internal/fixture"
	"github.com/courier-dev/courier/operator/internal/resource/rabbitmq"
)

// TestNewQuorumQueueWaitsForEveryNode: a quorum queue not declared yet
// makes the declare wait for all broker nodes; a declared one, or a classic
// one, does not.
func TestNewQuorumQueueWaitsForEveryNode(t *testing.T) {
	three := func(observed ...v1alpha1.QueueStatus) *v1alpha1.MicroserviceApp {
		app := fixture.BlogWithQueues("ns", fixture.ManagedBroker(3))
		app.Status.Queues = observed
		return app
	}
	tests := []struct {
		name string
		app  *v1alpha1.MicroserviceApp
		want string
	}{
		{"new quorum queue", three(), "emails"},
		{"listed in status but not declared yet (no type)", three(v1alpha1.QueueStatus{Name: "emails"}), "emails"},
		{"declared quorum queue", three(v1alpha1.QueueStatus{Name: "emails", Type: v1alpha1.QueueQuorum}), ""},
		{"new quorum queue on one node", fixture.BlogWithQueues("ns", fixture.ManagedBroker(1)), "emails"},
		{"declared classic queue, scaled to three", three(v1alpha1.QueueStatus{Name: "emails", Type: v1alpha1.QueueClassic}), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := newQuorumQueue(tt.app); got != tt.want {
				t.Errorf("newQuorumQueue = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestGenerateAdminCredentials(t *testing.T) {
	a, b := generateAdminCredentials(), generateAdminCredentials()
	if a.Username == b.Username || a.Password == b.Password || a.ErlangCookie == b.ErlangCookie {
		t.Errorf("two generations share a value: %+v and %+v", a, b)
	}
	for _, c := range []rabbitmq.Credentials{a, b} {
		// Safe in a URL's userinfo and an environment variable unescaped.
		if !regexp.MustCompile(`^admin-[a-z2-7]{10}$`).MatchString(c.Username) {
			t.Errorf("username %q is not admin- and ten base32 letters", c.Username)
		}
		if !regexp.MustCompile(`^[A-Z2-7]{26}$`).MatchString(c.Password) {
			t.Errorf("password %q is not 26 base32 letters (130 bits)", c.Password)
		}
		// Erlang accepts up to 255 characters; 52 base32 letters are 260 bits.
		if !regexp.MustCompile(`^[A-Z2-7]{52}$`).MatchString(c.ErlangCookie) {
			t.Errorf("cookie %q is not 52 base32 letters", c.ErlangCookie)
		}
	}
}
