package stack

import (
	"bytes"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/courier-dev/courier/config/samples"
	"github.com/courier-dev/courier/operator/api/v1alpha1"
	"github.com/courier-dev/courier/services/kit/contract"
)

// sample is the blog as config/samples declares it; the local stack derives
// its services, their order and their environment from it, as the operator
// derives a cluster's.
var sample = mustParseSample()

// sampleSecrets are the demo Secrets the sample's env refers to, by name
// and key.
var sampleSecrets = mustParseSecrets()

func mustParseSample() *v1alpha1.MicroserviceApp {
	app := &v1alpha1.MicroserviceApp{}
	if err := yaml.UnmarshalStrict(samples.App, app); err != nil {
		panic(fmt.Sprintf("config/samples: the sample app does not parse: %v", err))
	}
	return app
}

func mustParseSecrets() map[string]map[string]string {
	out := map[string]map[string]string{}
	for doc := range bytes.SplitSeq(samples.Secrets, []byte("\n---\n")) {
		var s corev1.Secret
		if err := yaml.Unmarshal(doc, &s); err != nil {
			panic(fmt.Sprintf("config/samples: a sample Secret does not parse: %v", err))
		}
		data := map[string]string{}
		for k, v := range s.Data {
			data[k] = string(v)
		}
		maps.Copy(data, s.StringData)
		out[s.Name] = data
	}
	return out
}

// startOrder lists the sample's services so that each starts after the
// services it calls (spec order among equals): the gateway's first request
// finds users and posts up.
func startOrder(app *v1alpha1.MicroserviceApp) []string {
	var order []string
	started := map[string]bool{}
	for len(order) < len(app.Spec.Services) {
		progress := false
		for _, svc := range app.Spec.Services {
			if started[svc.Name] || !allStarted(svc.Calls, started) {
				continue
			}
			started[svc.Name] = true
			order = append(order, svc.Name)
			progress = true
		}
		if !progress {
			panic("config/samples: the sample's calls form a cycle")
		}
	}
	return order
}

func allStarted(names []string, started map[string]bool) bool {
	for _, n := range names {
		if !started[n] {
			return false
		}
	}
	return true
}

// sampleService returns the sample's service name.
func sampleService(name string) v1alpha1.Service {
	i := slices.IndexFunc(sample.Spec.Services, func(s v1alpha1.Service) bool { return s.Name == name })
	if i < 0 {
		panic("local stack: no service " + name + " in the sample app")
	}
	return sample.Spec.Services[i]
}

// specEnv is what the operator wires from the service's spec: a variable per
// queue it uses (with the consumer's delivery limit), a URL per service it
// calls, the data directory of its volume, and its own env and envFrom with
// the sample Secrets' values. url gives a service's local base URL; dataDir
// is where volumes live locally.
func (s *Stack) specEnv(svc v1alpha1.Service, url func(string) string, dataDir string) ([]string, error) {
	var env []string
	queues := slices.Concat(svc.Publishes, svc.Consumes)
	if len(queues) > 0 {
		env = append(env,
			contract.EnvBrokerKind+"="+s.BrokerKind,
			contract.EnvBrokerURL+"="+s.BrokerURL,
			// No operator here to declare the topology.
			contract.EnvDevDeclareTopology+"=true",
		)
	}
	for _, q := range slices.Compact(slices.Sorted(slices.Values(queues))) {
		env = append(env, contract.QueueEnv(q)+"="+contract.QueueName(sample.Name, q))
	}
	for _, q := range svc.Consumes {
		for _, spec := range sample.Spec.Queues {
			if spec.Name == q && spec.MaxDeliveries != nil {
				env = append(env, contract.QueueMaxDeliveriesEnv(q)+"="+strconv.Itoa(int(*spec.MaxDeliveries)))
			}
		}
	}
	for _, callee := range svc.Calls {
		env = append(env, contract.ServiceURLEnv(callee)+"="+url(callee))
	}
	if svc.Storage != nil {
		dir := filepath.Join(dataDir, svc.Name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("data directory of %s: %w", svc.Name, err)
		}
		env = append(env, contract.EnvDataDir+"="+dir)
	}
	for _, from := range svc.EnvFrom {
		if from.SecretRef == nil {
			return nil, fmt.Errorf("%s: only envFrom secretRef is supported locally", svc.Name)
		}
		data, ok := sampleSecrets[from.SecretRef.Name]
		if !ok {
			return nil, fmt.Errorf("%s: envFrom Secret %q is not in config/samples", svc.Name, from.SecretRef.Name)
		}
		for _, k := range slices.Sorted(maps.Keys(data)) {
			env = append(env, k+"="+data[k])
		}
	}
	for _, e := range svc.Env {
		switch {
		case e.ValueFrom == nil:
			env = append(env, e.Name+"="+e.Value)
		case e.ValueFrom.SecretKeyRef != nil:
			ref := e.ValueFrom.SecretKeyRef
			v, ok := sampleSecrets[ref.Name][ref.Key]
			if !ok {
				return nil, fmt.Errorf("%s: %s: Secret %s key %s is not in config/samples", svc.Name, e.Name, ref.Name, ref.Key)
			}
			env = append(env, e.Name+"="+v)
		default:
			return nil, fmt.Errorf("%s: %s: only values and secretKeyRef are supported locally", svc.Name, e.Name)
		}
	}
	return env, nil
}
