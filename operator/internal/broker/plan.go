package broker

import (
	"bytes"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"hash"
	"maps"
	"net/http"
	"slices"
	"strings"

	rh "github.com/michaelklishin/rabbit-hole/v2"
)

// Action is what Declare did to one broker entity.
type Action string

// Actions.
const (
	ActionCreate Action = "create"
	ActionUpdate Action = "update"
	ActionDelete Action = "delete"
)

// Kind names a broker entity.
type Kind string

// Kinds of broker entities.
const (
	KindVHost       Kind = "vhost"
	KindPermissions Kind = "permissions"
	KindPolicy      Kind = "policy"
	KindExchange    Kind = "exchange"
	KindQueue       Kind = "queue"
	KindBinding     Kind = "binding"
	KindUser        Kind = "user"
)

// Change is one write Declare made because the broker differed from the
// settings. A Declare that finds nothing to repair returns no changes and
// writes nothing, so a resync costs only reads: three, and one per user.
type Change struct {
	Action Action `json:"action"`
	Kind   Kind   `json:"kind"`
	// Name is the entity's name; for permissions the user's, for a binding
	// "source -> destination".
	Name string `json:"name"`
	// Reason says what differed, for updates: "password", "tags", ...
	Reason string `json:"reason,omitempty"`
}

// String reads like "update user blog.users (password)".
func (c Change) String() string {
	s := string(c.Action) + " " + string(c.Kind) + " " + c.Name
	if c.Reason != "" {
		s += " (" + c.Reason + ")"
	}
	return s
}

// observed is the broker state Declare compares the settings with.
type observed struct {
	vhost bool
	// vhostDescription records the vhost's owner (vhostDescription).
	vhostDescription string
	exchanges        map[string]rh.ExchangeInfo
	queues           map[string]rh.QueueInfo
	bindings         map[Binding]bool
	policies         map[string]rh.Policy
	users            map[string]rh.UserInfo
	// permissions holds the permissions in the app's vhost, by user.
	permissions map[string]rh.PermissionInfo
}

// step is one write: what it changes and the call that makes it.
type step struct {
	Change
	apply func(api *rh.Client) (*http.Response, error)
}

// fullAccess is what the admin user needs in the vhost: the HTTP API
// declares through an internal AMQP connection as that user. RabbitMQ grants
// it to the user who creates a vhost; Declare restores it if someone took it
// away.
var fullAccess = rh.Permissions{Configure: ".*", Write: ".*", Read: ".*"}

// plan computes the writes that make the broker match want, in order:
// vhost, the admin's access to it, policies (so no queue ever runs without
// its limits), exchanges, queues, bindings, users, permissions, and last the
// removal of Courier's users the topology no longer has. It is pure.
//
// Entities that are in the vhost but not in the settings are left alone,
// except users Courier created (ManagedTag) and Courier's per-queue policies:
// a queue dropped from the spec keeps its messages until the app is deleted,
// and a binding an operator added by hand to tap a queue stays.
func plan(want Settings, passwords map[string]string, admin string, have observed) []step {
	var steps []step
	add := func(c Change, apply func(api *rh.Client) (*http.Response, error)) {
		steps = append(steps, step{Change: c, apply: apply})
	}
	vhost := want.VHost

	if desc := vhostDescription(want.Owner); !have.vhost || have.vhostDescription != desc {
		add(Change{Action: actionFor(have.vhost), Kind: KindVHost, Name: vhost}, func(api *rh.Client) (*http.Response, error) {
			return api.PutVhost(vhost, rh.VhostSettings{Description: desc})
		})
	}
	if p, ok := have.permissions[admin]; !ok || permissionsOf(p) != fullAccess {
		add(Change{Action: actionFor(ok), Kind: KindPermissions, Name: admin}, func(api *rh.Client) (*http.Response, error) {
			return api.UpdatePermissionsIn(vhost, admin, fullAccess)
		})
	}

	wantPolicy := map[string]bool{}
	for _, p := range want.Policies {
		wantPolicy[p.Name] = true
		got, ok := have.policies[p.Name]
		if ok && got.Pattern == p.Pattern && got.ApplyTo == p.ApplyTo && got.Priority == p.Priority &&
			sameJSON(got.Definition, p.Definition) {
			continue
		}
		add(Change{Action: actionFor(ok), Kind: KindPolicy, Name: p.Name}, func(api *rh.Client) (*http.Response, error) {
			return api.PutPolicy(vhost, p.Name, rh.Policy{
				Vhost: vhost, Pattern: p.Pattern, ApplyTo: p.ApplyTo, Name: p.Name, Priority: p.Priority,
				Definition: rh.PolicyDefinition(p.Definition),
			})
		})
	}
	// A queue whose limits were all removed keeps no stale policy. Only
	// policies named after one of our queues are ours to delete.
	for _, q := range want.Queues {
		if _, ok := have.policies[q.Name]; ok && !wantPolicy[q.Name] {
			add(Change{Action: ActionDelete, Kind: KindPolicy, Name: q.Name}, func(api *rh.Client) (*http.Response, error) {
				return api.DeletePolicy(vhost, q.Name)
			})
		}
	}

	for _, e := range want.Exchanges {
		got, ok := have.exchanges[e.Name]
		if ok && got.Type == e.Type && got.Durable == e.Durable && !bool(got.AutoDelete) && !got.Internal {
			continue
		}
		// An existing exchange cannot change; RabbitMQ refuses the
		// redeclaration and Declare reports ErrConflict.
		add(Change{Action: actionFor(ok), Kind: KindExchange, Name: e.Name}, func(api *rh.Client) (*http.Response, error) {
			return api.DeclareExchange(vhost, e.Name, rh.ExchangeSettings{Type: e.Type, Durable: e.Durable})
		})
	}
	for _, q := range want.Queues {
		got, ok := have.queues[q.Name]
		if ok && got.Durable == q.Durable && !bool(got.AutoDelete) && hasArguments(got.Arguments, q.Arguments) {
			continue
		}
		add(Change{Action: actionFor(ok), Kind: KindQueue, Name: q.Name}, func(api *rh.Client) (*http.Response, error) {
			// A copy, because rabbit-hole adds to the arguments it gets.
			return api.DeclareQueue(vhost, q.Name, rh.QueueSettings{Durable: q.Durable, Arguments: maps.Clone(q.Arguments)})
		})
	}
	for _, b := range want.Bindings {
		if have.bindings[b] {
			continue
		}
		add(Change{Action: ActionCreate, Kind: KindBinding, Name: b.Source + " -> " + b.Destination}, func(api *rh.Client) (*http.Response, error) {
			return api.DeclareBinding(vhost, rh.BindingInfo{
				Source: b.Source, Destination: b.Destination, DestinationType: "queue", RoutingKey: b.RoutingKey,
			})
		})
	}

	wantUser := map[string]bool{}
	for _, u := range want.Users {
		wantUser[u.Name] = true
		got, ok := have.users[u.Name]
		var reasons []string
		if ok && !sameTags(got.Tags, u.Tags) {
			reasons = append(reasons, "tags")
		}
		if ok && !passwordMatches(got, passwords[u.Name]) {
			reasons = append(reasons, "password")
		}
		if ok && len(reasons) == 0 {
			continue
		}
		password, tags := passwords[u.Name], slices.Clone(u.Tags)
		add(Change{Action: actionFor(ok), Kind: KindUser, Name: u.Name, Reason: strings.Join(reasons, ", ")},
			func(api *rh.Client) (*http.Response, error) {
				// RabbitMQ hashes with a fresh salt on every PUT, so writing
				// an unchanged password is not a no-op; the hash check above
				// avoids it.
				return api.PutUser(u.Name, rh.UserSettings{Name: u.Name, Password: password, Tags: tags})
			})
	}
	for _, p := range want.Permissions {
		perm := rh.Permissions{Configure: p.Configure, Write: p.Write, Read: p.Read}
		got, ok := have.permissions[p.User]
		if ok && permissionsOf(got) == perm {
			continue
		}
		add(Change{Action: actionFor(ok), Kind: KindPermissions, Name: p.User}, func(api *rh.Client) (*http.Response, error) {
			return api.UpdatePermissionsIn(vhost, p.User, perm)
		})
	}
	for _, user := range staleUsers(want, admin, have) {
		add(Change{Action: ActionDelete, Kind: KindUser, Name: user}, func(api *rh.Client) (*http.Response, error) {
			return api.DeleteUser(user)
		})
	}
	return steps
}

// staleUsers are Courier's users with access to the vhost that the settings
// no longer have, sorted: a service removed from the app, or one that stopped
// using queues. Hand-made users (no ManagedTag) are never touched.
func staleUsers(want Settings, admin string, have observed) []string {
	keep := map[string]bool{admin: true}
	for _, u := range want.Users {
		keep[u.Name] = true
	}
	var stale []string
	for user := range have.permissions {
		if u, ok := have.users[user]; ok && !keep[user] && slices.Contains(u.Tags, ManagedTag) {
			stale = append(stale, user)
		}
	}
	slices.Sort(stale)
	return stale
}

func actionFor(exists bool) Action {
	if exists {
		return ActionUpdate
	}
	return ActionCreate
}

func permissionsOf(p rh.PermissionInfo) rh.Permissions {
	return rh.Permissions{Configure: p.Configure, Write: p.Write, Read: p.Read}
}

// sameJSON compares two JSON-like values by their encoding, so the int64
// of a generated policy equals the float64 the HTTP API decodes to, and a nil
// map equals an empty one.
func sameJSON(a, b map[string]any) bool {
	if len(a) == 0 && len(b) == 0 {
		return true
	}
	ja, errA := json.Marshal(a)
	jb, errB := json.Marshal(b)
	return errA == nil && errB == nil && bytes.Equal(ja, jb)
}

// hasArguments reports whether got holds every argument of want with the
// same value. Arguments Courier does not set are not compared: RabbitMQ
// ignores most of them when checking a redeclaration, so a difference there
// would make Declare rewrite the queue on every resync without effect.
func hasArguments(got, want map[string]any) bool {
	for k, v := range want {
		if !sameJSON(map[string]any{k: got[k]}, map[string]any{k: v}) {
			return false
		}
	}
	return true
}

func sameTags(got rh.UserTags, want []string) bool {
	a, b := slices.Clone([]string(got)), slices.Clone(want)
	// RabbitMQ returns "" for a user without tags.
	a = slices.DeleteFunc(a, func(s string) bool { return s == "" })
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// passwordMatches checks password against the user's stored hash, so Declare
// resets a password changed by hand without rewriting an unchanged one.
// RabbitMQ's internal backend stores base64(salt ++ H(salt ++ password))
// with a 4-byte salt (rabbit_password); rabbit-hole can compute such hashes
// but not verify one, hence this function. A hash it cannot verify (an
// unknown algorithm, say) counts as a mismatch and gets rewritten.
func passwordMatches(u rh.UserInfo, password string) bool {
	if password == "" {
		return false
	}
	raw, err := base64.StdEncoding.DecodeString(u.PasswordHash)
	if err != nil || len(raw) <= 4 {
		return false
	}
	var h hash.Hash
	switch u.HashingAlgorithm {
	case rh.HashingAlgorithmSHA256, "":
		h = sha256.New()
	case rh.HashingAlgorithmSHA512:
		h = sha512.New()
	default:
		return false
	}
	salt, sum := raw[:4], raw[4:]
	h.Write(salt)
	h.Write([]byte(password))
	return subtle.ConstantTimeCompare(h.Sum(nil), sum) == 1
}
