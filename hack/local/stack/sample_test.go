package stack

import (
	"slices"
	"strings"
	"testing"

	"github.com/courier-dev/courier/services/kit/contract"
)

// TestStartOrderFollowsCalls: every service starts after the services it
// calls, and all of the sample's services start.
func TestStartOrderFollowsCalls(t *testing.T) {
	if len(Services) != len(sample.Spec.Services) {
		t.Fatalf("start order %v, want all %d services of the sample", Services, len(sample.Spec.Services))
	}
	for _, svc := range sample.Spec.Services {
		at := slices.Index(Services, svc.Name)
		for _, callee := range svc.Calls {
			if slices.Index(Services, callee) > at {
				t.Errorf("%s starts before %s, which it calls (order %v)", svc.Name, callee, Services)
			}
		}
	}
}

// TestEnvFollowsTheSample: the local environment of each service carries
// what the sample's spec wires (queues, calls, volumes, env from Secrets),
// so a service added to the sample runs locally with no change here.
func TestEnvFollowsTheSample(t *testing.T) {
	s := &Stack{BrokerKind: contract.BrokerNATS, BrokerURL: "nats://127.0.0.1:4222"}
	url := func(svc string) string { return "http://" + svc }
	for _, svc := range sample.Spec.Services {
		env, err := s.specEnv(svc, url, t.TempDir())
		if err != nil {
			t.Fatalf("%s: %v", svc.Name, err)
		}
		has := func(prefix string) bool {
			return slices.ContainsFunc(env, func(e string) bool { return strings.HasPrefix(e, prefix) })
		}
		for _, q := range slices.Concat(svc.Publishes, svc.Consumes) {
			if !has(contract.QueueEnv(q) + "=" + contract.QueueName(sample.Name, q)) {
				t.Errorf("%s: no %s in %v", svc.Name, contract.QueueEnv(q), env)
			}
		}
		for _, c := range svc.Calls {
			if !has(contract.ServiceURLEnv(c) + "=http://" + c) {
				t.Errorf("%s: no %s in %v", svc.Name, contract.ServiceURLEnv(c), env)
			}
		}
		if got := has(contract.EnvDataDir + "="); got != (svc.Storage != nil) {
			t.Errorf("%s: %s set %v, want %v (storage)", svc.Name, contract.EnvDataDir, got, svc.Storage != nil)
		}
		for _, e := range svc.Env {
			if !has(e.Name + "=") {
				t.Errorf("%s: spec env %s missing", svc.Name, e.Name)
			}
		}
	}
}
