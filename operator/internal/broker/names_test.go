package broker

import (
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"
)

func TestConnectionURL(t *testing.T) {
	tests := []struct {
		name                        string
		host                        string
		port                        int
		vhost, user, password, want string
	}{
		{
			name: "plain", host: "blog-broker.apps.svc", port: 5672, vhost: "blog", user: "blog.users", password: "secret",
			want: "amqp://blog.users:secret@blog-broker.apps.svc:5672/blog",
		},
		{
			name: "default vhost", host: "127.0.0.1", port: 5672, vhost: "/", user: "u", password: "p",
			want: "amqp://u:p@127.0.0.1:5672/%2F",
		},
		{
			name: "reserved characters", host: "::1", port: 5671, vhost: "team/blog?x#y", user: "a:b@c", password: "p@ss:w/rd%",
			want: "amqp://a%3Ab%40c:p%40ss%3Aw%2Frd%25@[::1]:5671/team%2Fblog%3Fx%23y",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ConnectionURL(tt.host, tt.port, tt.vhost, tt.user, tt.password)
			if got != tt.want {
				t.Errorf("ConnectionURL = %s, want %s", got, tt.want)
			}
			// The URL must round-trip through the parser services use.
			uri, err := amqp.ParseURI(got)
			if err != nil {
				t.Fatalf("amqp091 cannot parse %s: %v", got, err)
			}
			if uri.Vhost != tt.vhost || uri.Username != tt.user || uri.Password != tt.password || uri.Port != tt.port {
				t.Errorf("parsed %+v, want vhost %q user %q password %q port %d", uri, tt.vhost, tt.user, tt.password, tt.port)
			}
		})
	}
}

func TestGeneratePassword(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		p := GeneratePassword()
		if len(p) < 26 {
			t.Fatalf("password %q is shorter than 26 characters", p)
		}
		if seen[p] {
			t.Fatalf("password %q generated twice", p)
		}
		seen[p] = true
	}
}

func TestUserNamesNeverCollide(t *testing.T) {
	// Service names are DNS labels without dots; the monitoring user's
	// underscore cannot occur in one.
	if UserName("blog", "monitoring") == MonitoringUserName("blog") {
		t.Fatal("a service named monitoring collides with the monitoring user")
	}
}
