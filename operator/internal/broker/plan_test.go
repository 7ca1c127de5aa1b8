package broker

import (
	"errors"
	"slices"
	"testing"

	rh "github.com/michaelklishin/rabbit-hole/v2"
)

// observedFrom is the broker state Declare would leave behind for want, as
// the HTTP API reports it: numbers decoded as float64, tags as a list.
func observedFrom(t *testing.T, want Settings, passwords map[string]string, admin string) observed {
	t.Helper()
	o := observed{
		vhost:            true,
		vhostDescription: vhostDescription(want.Owner),
		exchanges:        map[string]rh.ExchangeInfo{},
		queues:           map[string]rh.QueueInfo{},
		bindings:         map[Binding]bool{},
		policies:         map[string]rh.Policy{},
		users:            map[string]rh.UserInfo{},
		permissions:      map[string]rh.PermissionInfo{admin: {User: admin, Configure: ".*", Write: ".*", Read: ".*"}},
	}
	for _, e := range want.Exchanges {
		o.exchanges[e.Name] = rh.ExchangeInfo{Name: e.Name, Type: e.Type, Durable: e.Durable, Arguments: map[string]any{}}
	}
	for _, q := range want.Queues {
		args := map[string]any{}
		for k, v := range q.Arguments {
			args[k] = v
		}
		o.queues[q.Name] = rh.QueueInfo{Name: q.Name, Durable: q.Durable, Arguments: args}
	}
	for _, b := range want.Bindings {
		o.bindings[b] = true
	}
	for _, p := range want.Policies {
		def := rh.PolicyDefinition{}
		for k, v := range p.Definition {
			if n, ok := v.(int64); ok {
				def[k] = float64(n)
			} else {
				def[k] = v
			}
		}
		o.policies[p.Name] = rh.Policy{Name: p.Name, Pattern: p.Pattern, ApplyTo: p.ApplyTo, Definition: def}
	}
	for _, u := range want.Users {
		o.users[u.Name] = rh.UserInfo{
			Name: u.Name, Tags: rh.UserTags(u.Tags), HashingAlgorithm: rh.HashingAlgorithmSHA256,
			PasswordHash: rh.Base64EncodedSaltedPasswordHashSHA256(passwords[u.Name]),
		}
	}
	for _, p := range want.Permissions {
		o.permissions[p.User] = rh.PermissionInfo{User: p.User, Vhost: want.VHost, Configure: p.Configure, Write: p.Write, Read: p.Read}
	}
	return o
}

func TestPlan(t *testing.T) {
	topo := blogTopology()
	topo.Owner = "apps/blog"
	want, err := Generate(topo)
	if err != nil {
		t.Fatal(err)
	}
	passwords := map[string]string{}
	for _, u := range want.Users {
		passwords[u.Name] = GeneratePassword()
	}
	tests := []struct {
		name   string
		mutate func(*observed)
		want   []Change
	}{
		{name: "in sync", mutate: func(*observed) {}},
		{
			name:   "empty broker",
			mutate: func(o *observed) { *o = observed{} },
			want: []Change{
				{ActionCreate, KindVHost, "blog", ""},
				{ActionCreate, KindPermissions, "admin", ""},
				{ActionCreate, KindPolicy, "blog.emails", ""},
				{ActionCreate, KindExchange, "blog.emails.dlx", ""},
				{ActionCreate, KindExchange, "blog.emails.exchange", ""},
				{ActionCreate, KindQueue, "blog.emails.dlq", ""},
				{ActionCreate, KindQueue, "blog.emails", ""},
				{ActionCreate, KindBinding, "blog.emails.dlx -> blog.emails.dlq", ""},
				{ActionCreate, KindBinding, "blog.emails.exchange -> blog.emails", ""},
				{ActionCreate, KindUser, "blog.mailer", ""},
				{ActionCreate, KindUser, "blog.posts", ""},
				{ActionCreate, KindUser, "blog.users", ""},
				{ActionCreate, KindUser, "blog._monitoring", ""},
				{ActionCreate, KindPermissions, "blog.mailer", ""},
				{ActionCreate, KindPermissions, "blog.posts", ""},
				{ActionCreate, KindPermissions, "blog.users", ""},
				{ActionCreate, KindPermissions, "blog._monitoring", ""},
			},
		},
		{
			name: "password and tags changed by hand",
			mutate: func(o *observed) {
				u := o.users["blog.users"]
				u.PasswordHash = rh.Base64EncodedSaltedPasswordHashSHA256("by hand")
				u.Tags = rh.UserTags{"administrator"}
				o.users["blog.users"] = u
			},
			want: []Change{{ActionUpdate, KindUser, "blog.users", "tags, password"}},
		},
		{
			name: "limit changed and an extra argument on the queue",
			mutate: func(o *observed) {
				o.policies["blog.emails"].Definition["max-length"] = float64(5)
				o.queues["blog.emails"].Arguments["x-max-priority"] = float64(3)
			},
			want: []Change{{ActionUpdate, KindPolicy, "blog.emails", ""}},
		},
		{
			name: "queue type differs",
			mutate: func(o *observed) {
				o.queues["blog.emails"].Arguments[argQueueType] = "classic"
			},
			want: []Change{{ActionUpdate, KindQueue, "blog.emails", ""}},
		},
		{
			name: "stale Courier user removed, hand-made user kept",
			mutate: func(o *observed) {
				o.users["blog.old"] = rh.UserInfo{Name: "blog.old", Tags: rh.UserTags{ManagedTag}}
				o.permissions["blog.old"] = rh.PermissionInfo{User: "blog.old", Read: ".*"}
				o.users["blog.debug"] = rh.UserInfo{Name: "blog.debug", Tags: rh.UserTags{""}}
				o.permissions["blog.debug"] = rh.PermissionInfo{User: "blog.debug", Read: ".*"}
			},
			want: []Change{{ActionDelete, KindUser, "blog.old", ""}},
		},
		{
			name:   "vhost made by an earlier version, without its owner",
			mutate: func(o *observed) { o.vhostDescription = "Managed by Courier" },
			want:   []Change{{ActionUpdate, KindVHost, "blog", ""}},
		},
		{
			name: "policy on a queue that should have none",
			mutate: func(o *observed) {
				o.policies["blog.emails.dlq"] = rh.Policy{Name: "blog.emails.dlq", Pattern: "^blog\\.emails\\.dlq$"}
			},
			want: []Change{{ActionDelete, KindPolicy, "blog.emails.dlq", ""}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			have := observedFrom(t, want, passwords, "admin")
			tt.mutate(&have)
			var got []Change
			for _, s := range plan(want, passwords, "admin", have) {
				got = append(got, s.Change)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("plan:\ngot  %v\nwant %v", got, tt.want)
			}
		})
	}
}

func TestPasswordMatches(t *testing.T) {
	const password = "s3cret"
	tests := []struct {
		name string
		user rh.UserInfo
		want bool
	}{
		{"sha256", rh.UserInfo{HashingAlgorithm: rh.HashingAlgorithmSHA256, PasswordHash: rh.Base64EncodedSaltedPasswordHashSHA256(password)}, true},
		{"sha512", rh.UserInfo{HashingAlgorithm: rh.HashingAlgorithmSHA512, PasswordHash: rh.Base64EncodedSaltedPasswordHashSHA512(password)}, true},
		{"other password", rh.UserInfo{HashingAlgorithm: rh.HashingAlgorithmSHA256, PasswordHash: rh.Base64EncodedSaltedPasswordHashSHA256("other")}, false},
		{"md5 is never trusted", rh.UserInfo{HashingAlgorithm: rh.HashingAlgorithmMD5, PasswordHash: rh.Base64EncodedSaltedPasswordHashSHA256(password)}, false},
		{"no password", rh.UserInfo{HashingAlgorithm: rh.HashingAlgorithmSHA256}, false},
		{"garbage", rh.UserInfo{HashingAlgorithm: rh.HashingAlgorithmSHA256, PasswordHash: "!!"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := passwordMatches(tt.user, password); got != tt.want {
				t.Errorf("passwordMatches = %t, want %t", got, tt.want)
			}
		})
	}
}

// TestCheckOwner: a vhost naming another owner is refused; one naming the
// same owner, none, or not existing yet is fine.
func TestCheckOwner(t *testing.T) {
	tests := []struct {
		name, owner string
		have        observed
		wantErr     bool
	}{
		{"no vhost yet", "a/blog", observed{}, false},
		{"same owner", "a/blog", observed{vhost: true, vhostDescription: "Managed by Courier for a/blog"}, false},
		{"another namespace's app", "b/blog", observed{vhost: true, vhostDescription: "Managed by Courier for a/blog"}, true},
		{"no owner recorded", "b/blog", observed{vhost: true, vhostDescription: "Managed by Courier"}, false},
		{"made by hand", "b/blog", observed{vhost: true, vhostDescription: "team vhost"}, false},
		{"no check asked", "", observed{vhost: true, vhostDescription: "Managed by Courier for a/blog"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkOwner("blog", tt.owner, tt.have)
			if got := errors.Is(err, ErrOwnedElsewhere); got != tt.wantErr {
				t.Errorf("checkOwner = %v, want ErrOwnedElsewhere %t", err, tt.wantErr)
			}
		})
	}
}
