package rabbitmq_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"

	"github.com/courier-dev/courier/operator/internal/metadata"
	"github.com/courier-dev/courier/operator/internal/resource/rabbitmq"
)

// rabbitmqLib is where Debian's rabbitmq-server package installs RabbitMQ,
// the same installation test/brokertest runs as a real node.
const rabbitmqLib = "/usr/lib/rabbitmq/lib"

// translateConf is Erlang, run by erl with RabbitMQ's own libraries: it turns
// rabbitmq.conf into application settings through every configuration
// schema of the installed RabbitMQ, with the cuttlefish library RabbitMQ
// itself uses at boot, and prints the settings the operator relies on as
// key=value lines. An unknown key or a value of the wrong type is an error,
// as it would be when a node boots.
const translateConf = `
[ConfFile, PluginsFile, PluginsDir] = init:get_plain_arguments(),
Schemas = filelib:wildcard(filename:join([PluginsDir, "*", "priv", "schema", "*.schema"])),
case cuttlefish_generator:map(cuttlefish_schema:files(Schemas), cuttlefish_conf:files([ConfFile])) of
    {error, Phase, Errors} ->
        io:format("error=~p ~p~n", [Phase, Errors]),
        halt(1);
    Config ->
        Str = fun([]) -> "[]";
                 (V) when is_list(V) ->
                      case io_lib:printable_list(V) of
                          true -> V;
                          false -> io_lib:format("~w", [V])
                      end;
                 (V) -> io_lib:format("~w", [V])
              end,
        P = fun(K, V) -> io:format("~s=~s~n", [K, Str(V)]) end,
        Rabbit = proplists:get_value(rabbit, Config),
        CF = proplists:get_value(cluster_formation, Rabbit),
        K8s = proplists:get_value(peer_discovery_k8s, CF),
        P("peer_discovery_backend", proplists:get_value(peer_discovery_backend, CF)),
        P("k8s_host", proplists:get_value(k8s_host, K8s)),
        P("k8s_address_type", proplists:get_value(k8s_address_type, K8s)),
        P("k8s_service_name", proplists:get_value(k8s_service_name, K8s)),
        P("k8s_hostname_suffix", proplists:get_value(k8s_hostname_suffix, K8s)),
        P("cleanup_only_log_warning", proplists:get_value(cleanup_only_log_warning, proplists:get_value(node_cleanup, CF))),
        P("cluster_name", proplists:get_value(cluster_name, Rabbit)),
        P("cluster_partition_handling", proplists:get_value(cluster_partition_handling, Rabbit)),
        P("loopback_users", proplists:get_value(loopback_users, Rabbit)),
        P("tcp_listeners", proplists:get_value(tcp_listeners, Rabbit)),
        P("vm_memory_high_watermark", proplists:get_value(vm_memory_high_watermark, Rabbit)),
        P("total_memory_available_override_value", proplists:get_value(total_memory_available_override_value, Rabbit)),
        P("default_user", proplists:get_value(default_user, Rabbit)),
        Port = fun(App) -> proplists:get_value(port, proplists:get_value(tcp_config, proplists:get_value(App, Config, []), [])) end,
        P("management_port", Port(rabbitmq_management)),
        P("prometheus_port", Port(rabbitmq_prometheus)),
        {ok, [Plugins]} = file:consult(PluginsFile),
        P("plugins", Plugins),
        P("missing_plugins", [Pl || Pl <- Plugins,
                                    filelib:wildcard(filename:join(PluginsDir, atom_to_list(Pl) ++ "-*")) =:= []]),
        halt(0)
end.
`

// TestConfigAcceptedByRabbitMQ renders the broker's ConfigMap for every
// golden case and has the installed RabbitMQ's configuration schemas
// translate it, then checks the settings that matter: peer discovery finds
// nodes by exactly the names the pods give themselves, no loopback-only
// users, the listeners, the memory budget and the plugins, all of which must
// ship with RabbitMQ.
func TestConfigAcceptedByRabbitMQ(t *testing.T) {
	pluginsDir := installedPlugins(t)
	erl, err := exec.LookPath("erl")
	if err != nil {
		t.Fatalf("erl not found (it comes with Debian's rabbitmq-server package): %v", err)
	}

	for _, tt := range builderCases {
		t.Run(tt.name, func(t *testing.T) {
			b := tt.broker
			data := rabbitmq.ConfigMap(b).Data
			dir := t.TempDir()
			conf := filepath.Join(dir, "rabbitmq.conf")
			plugins := filepath.Join(dir, "enabled_plugins")
			writeFile(t, conf, data[rabbitmq.ConfigKeyRabbitMQConf])
			writeFile(t, plugins, data[rabbitmq.ConfigKeyEnabledPlugins])

			got := runErl(t, erl, pluginsDir, conf, plugins)

			n := metadata.BrokerNamesFor(b.App)
			domain := b.ClusterDomain
			if domain == "" {
				domain = rabbitmq.DefaultClusterDomain
			}
			suffix := "." + n.Headless + "." + b.Namespace + ".svc." + domain
			want := map[string]string{
				"peer_discovery_backend":     "rabbit_peer_discovery_k8s",
				"k8s_host":                   "kubernetes.default.svc." + domain,
				"k8s_address_type":           "hostname",
				"k8s_service_name":           n.Headless,
				"k8s_hostname_suffix":        suffix,
				"cleanup_only_log_warning":   "true",
				"cluster_name":               b.App,
				"cluster_partition_handling": "pause_minority",
				"loopback_users":             "[]",
				"tcp_listeners":              "[5672]",
				"vm_memory_high_watermark":   "0.4",
				// The default user comes from the environment, never from
				// the ConfigMap, which anyone with read access sees.
				"default_user":                          "undefined",
				"total_memory_available_override_value": wantAvailableMemory(b),
				"management_port":                       "15672",
				"prometheus_port":                       "15692",
				"plugins":                               "[" + strings.Join(rabbitmq.Plugins, ",") + "]",
				"missing_plugins":                       "[]",
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("settings RabbitMQ derives from the ConfigMap (-want +got):\n%s", diff)
			}
			// Peer discovery names a node "rabbit@" + its endpoint hostname
			// (the pod name) + the suffix; the pod must call itself the same.
			if node := "rabbit@" + n.StatefulSet + "-0" + got["k8s_hostname_suffix"]; node != b.NodeName(0) {
				t.Errorf("peer discovery would look for %s, but the node calls itself %s", node, b.NodeName(0))
			}
		})
	}
}

// wantAvailableMemory is the memory RabbitMQ should be told about: the
// container's memory limit less min(20%, 2 GiB), or nothing without a limit.
func wantAvailableMemory(b rabbitmq.Broker) string {
	r := b.Resources
	if len(r.Requests)+len(r.Limits)+len(r.Claims) == 0 {
		r = rabbitmq.DefaultResources()
	}
	limit, ok := r.Limits[corev1.ResourceMemory]
	if !ok {
		return "undefined"
	}
	v := limit.Value()
	return fmt.Sprint(v - min(v/5, 2<<30))
}

func installedPlugins(t *testing.T) string {
	t.Helper()
	dirs, err := filepath.Glob(filepath.Join(rabbitmqLib, "rabbitmq_server-*", "plugins"))
	if err != nil || len(dirs) != 1 {
		t.Fatalf("want one RabbitMQ installation under %s (apt-get install rabbitmq-server; the broker tests need it too), found %v (%v)", rabbitmqLib, dirs, err)
	}
	return dirs[0]
}

func runErl(t *testing.T, erl, pluginsDir, conf, plugins string) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ebins, err := filepath.Glob(filepath.Join(pluginsDir, "*", "ebin"))
	if err != nil {
		t.Fatalf("find RabbitMQ's libraries: %v", err)
	}
	args := append([]string{"-noshell", "-pa"}, ebins...)
	args = append(args, "-eval", translateConf, "-extra", conf, plugins, pluginsDir)
	cmd := exec.CommandContext(ctx, erl, args...)
	// The schemas log what they reject to stderr; keep it for the failure.
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("RabbitMQ rejected the configuration: %v\n%s\n%s", err, out, stderr.String())
	}
	got := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			got[k] = v
		}
	}
	return got
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatalf("write %s: %v", path, err)
	}
}
