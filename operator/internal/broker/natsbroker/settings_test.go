package natsbroker_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/courier-dev/courier/operator/internal/broker"
	"github.com/courier-dev/courier/operator/internal/broker/natsbroker"
)

// TestGeneratePermissions pins every subject each service of the blog may
// use: publishers their queue's subject, the consumer its consumer's
// JetStream API and ack subjects and its dead letters, each its own inbox.
func TestGeneratePermissions(t *testing.T) {
	s, err := natsbroker.Generate(blog("blog"))
	if err != nil {
		t.Fatal(err)
	}
	inbox := func(svc string) jwt.Permission { return jwt.Permission{Allow: []string{"_INBOX_" + svc + ".>"}} }
	want := []natsbroker.User{
		{Service: "mailer", Name: "blog.mailer", Permissions: jwt.Permissions{
			Pub: jwt.Permission{Allow: []string{
				"$JS.ACK.COURIER_BLOG.blog_emails.>",
				"$JS.API.CONSUMER.INFO.COURIER_BLOG.blog_emails",
				"$JS.API.CONSUMER.MSG.NEXT.COURIER_BLOG.blog_emails",
				"blog.emails.dead",
			}},
			Sub: inbox("mailer"),
		}},
		{Service: "posts", Name: "blog.posts", Permissions: jwt.Permissions{Pub: jwt.Permission{Allow: []string{"blog.emails"}}, Sub: inbox("posts")}},
		{Service: "users", Name: "blog.users", Permissions: jwt.Permissions{Pub: jwt.Permission{Allow: []string{"blog.emails"}}, Sub: inbox("users")}},
	}
	if diff := cmp.Diff(want, s.Users); diff != "" {
		t.Errorf("users (-want +got):\n%s", diff)
	}
	wantConsumer := jetstream.ConsumerConfig{
		Durable: "blog_emails", FilterSubject: "blog.emails", AckPolicy: jetstream.AckExplicitPolicy,
		AckWait: 30 * time.Second, MaxDeliver: 4, Replicas: 1,
	}
	if diff := cmp.Diff([]jetstream.ConsumerConfig{wantConsumer}, s.Consumers); diff != "" {
		t.Errorf("consumers (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"blog.emails", "blog.emails.dead"}, s.Stream.Subjects); diff != "" {
		t.Errorf("stream subjects (-want +got):\n%s", diff)
	}
}

// TestGenerateLimits maps TTL and max length onto the stream, and refuses
// per-queue values one stream cannot hold, naming the field.
func TestGenerateLimits(t *testing.T) {
	topo := blog("blog")
	topo.Queues = []broker.QueueSpec{
		{Name: "emails", Type: broker.QueueQuorum, MessageTTL: time.Hour, MaxLength: 1000},
		{Name: "pings", Type: broker.QueueQuorum, MessageTTL: time.Hour, MaxLength: 1000},
	}
	topo.Replicas = 3
	s, err := natsbroker.Generate(topo)
	if err != nil {
		t.Fatal(err)
	}
	st := s.Stream
	if st.MaxAge != time.Hour || st.MaxMsgsPerSubject != 1000 || st.Discard != jetstream.DiscardNew || !st.DiscardNewPerSubject || st.Replicas != 3 {
		t.Errorf("stream limits = maxAge %s, maxMsgsPerSubject %d, discard %v per subject %t, replicas %d",
			st.MaxAge, st.MaxMsgsPerSubject, st.Discard, st.DiscardNewPerSubject, st.Replicas)
	}
	if s.Consumers[0].MaxDeliver != 6 {
		t.Errorf("MaxDeliver without maxDeliveries = %d, want the kit's default 5 + 1", s.Consumers[0].MaxDeliver)
	}
	topo.Queues[1].MessageTTL = time.Minute
	topo.Queues[1].MaxLength = 10
	_, err = natsbroker.Generate(topo)
	if !errors.Is(err, broker.ErrInvalidTopology) {
		t.Fatalf("Generate = %v, want ErrInvalidTopology", err)
	}
	for _, field := range []string{"queues[1].messageTTL", "queues[1].maxLength"} {
		if !strings.Contains(err.Error(), field) {
			t.Errorf("error %q does not name %s", err, field)
		}
	}
}

// TestSecrets round-trips a managed system's admin Secret and names the key
// at fault in a broken one or in an external system's Secret.
func TestSecrets(t *testing.T) {
	m, err := natsbroker.GenerateManaged("blog")
	if err != nil {
		t.Fatal(err)
	}
	got, err := natsbroker.ParseManagedSecret(m.SecretData())
	if err != nil {
		t.Fatalf("ParseManagedSecret: %v", err)
	}
	if diff := cmp.Diff(m, got); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
	other, _ := natsbroker.GenerateManaged("other")
	broken := m.SecretData()
	broken[natsbroker.SecretKeySystemAccountJWT] = []byte(other.SystemAccountJWT)
	if _, err := natsbroker.ParseManagedSecret(broken); err == nil || !strings.Contains(err.Error(), natsbroker.SecretKeySystemAccountJWT) {
		t.Errorf("mismatched system account JWT: %v", err)
	}

	ext := map[string][]byte{
		natsbroker.SecretKeyURL:                []byte("nats://nats.messaging.svc:4222"),
		natsbroker.SecretKeyOperatorSigningKey: []byte(m.OperatorSeed),
		natsbroker.SecretKeySystemUserCreds:    m.SystemUserCreds,
	}
	if _, err := natsbroker.ParseExternalSecret(ext); err != nil {
		t.Errorf("ParseExternalSecret: %v", err)
	}
	ext[natsbroker.SecretKeyOperatorSigningKey] = []byte(m.SystemAccountSeed)
	delete(ext, natsbroker.SecretKeyURL)
	_, err = natsbroker.ParseExternalSecret(ext)
	for _, key := range []string{natsbroker.SecretKeyURL, natsbroker.SecretKeyOperatorSigningKey} {
		if err == nil || !strings.Contains(err.Error(), "secret key "+key) {
			t.Errorf("ParseExternalSecret = %v, want an error naming %s", err, key)
		}
	}
}
