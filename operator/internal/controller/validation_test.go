package controller

import (
	"context"
	"fmt"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/courier-dev/courier/operator/api/v1alpha1"
	"github.com/courier-dev/courier/operator/internal/resource/rabbitmq"
	"github.com/courier-dev/courier/services/kit/contract"
)

// svc is a service as a user writes it in YAML, before defaulting.
type svc = map[string]any

// appObject is an app as kubectl would send it: untyped, so zero values and
// wrong types reach the API server as written.
func appObject(ns, name string, services ...svc) *unstructured.Unstructured {
	list := make([]any, len(services))
	for i, s := range services {
		list[i] = s
	}
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": v1alpha1.GroupVersion.String(),
		"kind":       "MicroserviceApp",
		"metadata":   map[string]any{"name": name, "namespace": ns},
		"spec":       map[string]any{"services": list},
	}}
	return u
}

// appSpec is an app as kubectl would send it, with the whole spec given.
func appSpec(ns, name string, spec map[string]any) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": v1alpha1.GroupVersion.String(),
		"kind":       "MicroserviceApp",
		"metadata":   map[string]any{"name": name, "namespace": ns},
		"spec":       spec,
	}}
}

// queueApp is a valid app with a managed broker and a queue emails that
// users publishes to and mailer consumes, with change applied to its spec.
func queueApp(ns, name string, change func(spec map[string]any)) *unstructured.Unstructured {
	spec := map[string]any{
		"broker": map[string]any{"kind": "rabbitmq", "managed": map[string]any{}},
		"queues": []any{map[string]any{"name": "emails"}},
		"services": []any{
			with("users", svc{"publishes": []any{"emails"}}),
			with("mailer", svc{"consumes": []any{"emails"}}),
		},
	}
	if change != nil {
		change(spec)
	}
	return appSpec(ns, name, spec)
}

// service returns the i-th service of a spec built by queueApp.
func service(spec map[string]any, i int) svc { return spec["services"].([]any)[i].(svc) }

// queue returns the first queue of a spec built by queueApp.
func queue(spec map[string]any) map[string]any { return spec["queues"].([]any)[0].(map[string]any) }

// with returns a valid service named name with the given fields added.
func with(name string, fields svc) svc {
	s := svc{"name": name, "image": "ghcr.io/courier-dev/" + name + ":1"}
	for k, v := range fields {
		s[k] = v
	}
	return s
}

// TestValidation sends invalid apps to the API server and expects each
// rejected with a message naming the offending field; valid ones pass.
// Requests are dry runs, so the controller never sees them.
func TestValidation(t *testing.T) {
	t.Parallel()
	ns := namespace(t)

	invalid := []struct {
		name     string
		app      *unstructured.Unstructured
		wantText []string // every string must appear in the error
	}{
		{"no services", appObject(ns, "a"),
			[]string{"spec.services", "at least 1"}},
		{"duplicate service names", appObject(ns, "a", with("users", nil), with("users", nil)),
			[]string{"spec.services[1]", "Duplicate value"}},
		{"service name not a DNS label", appObject(ns, "a", with("Users_1", nil)),
			[]string{"spec.services[0].name", "should match"}},
		{"missing image", appObject(ns, "a", svc{"name": "users"}),
			[]string{"spec.services[0].image", "Required value"}},
		{"empty image", appObject(ns, "a", with("users", svc{"image": ""})),
			[]string{"spec.services[0].image", "at least 1 chars"}},
		{"negative replicas", appObject(ns, "a", with("users", svc{"replicas": -1})),
			[]string{"spec.services[0].replicas", "greater than or equal to 0"}},
		{"http port zero", appObject(ns, "a", with("users", svc{"httpPort": 0})),
			[]string{"spec.services[0].httpPort", "greater than or equal to 1"}},
		{"admin port out of range", appObject(ns, "a", with("users", svc{"adminPort": 70000})),
			[]string{"spec.services[0].adminPort", "less than or equal to 65535"}},
		{"ports not distinct", appObject(ns, "a", with("users", svc{"httpPort": 9090})),
			[]string{"spec.services[0].adminPort", "adminPort must differ from httpPort"}},
		{"calls an unknown service", appObject(ns, "a", with("gateway", svc{"calls": []any{"users", "nope"}}), with("users", nil)),
			[]string{"spec.services", "spec.services[].calls must name services of this app"}},
		{"calls itself", appObject(ns, "a", with("users", svc{"calls": []any{"users"}})),
			[]string{"spec.services[0].calls", "calls must not name the service itself"}},
		{"calls a service twice", appObject(ns, "a", with("gateway", svc{"calls": []any{"users", "users"}}), with("users", nil)),
			[]string{"spec.services[0].calls[1]", "Duplicate value"}},
		{"duplicate env names", appObject(ns, "a", with("users", svc{"env": []any{
			map[string]any{"name": "A", "value": "1"}, map[string]any{"name": "A", "value": "2"},
		}})),
			[]string{"spec.services[0].env[1]", "Duplicate value"}},
		{"probe on an unknown port", appObject(ns, "a", with("users", svc{"probes": map[string]any{
			"liveness": map[string]any{"port": "metrics"},
		}})),
			[]string{"spec.services[0].probes.liveness.port", "Unsupported value"}},
		{"probe path not absolute", appObject(ns, "a", with("users", svc{"probes": map[string]any{
			"readiness": map[string]any{"path": "readyz"},
		}})),
			[]string{"spec.services[0].probes.readiness.path", "should match"}},
		{"probe period zero", appObject(ns, "a", with("users", svc{"probes": map[string]any{
			"startup": map[string]any{"periodSeconds": 0},
		}})),
			[]string{"spec.services[0].probes.startup.periodSeconds", "greater than or equal to 1"}},
		{"metrics path not absolute", appObject(ns, "a", with("users", svc{"metrics": map[string]any{"path": "metrics"}})),
			[]string{"spec.services[0].metrics.path", "should match"}},
		{"object names too long", appObject(ns, strings.Repeat("a", 40), with(strings.Repeat("b", 30), nil)),
			[]string{"metadata.name and each spec.services[].name together must be at most 62 characters"}},
		{"unknown pull policy", appObject(ns, "a", with("users", svc{"imagePullPolicy": "Sometimes"})),
			[]string{"spec.services[0].imagePullPolicy", "Unsupported value"}},
		{"storage with two replicas", appObject(ns, "a", with("users", svc{"replicas": 2, "storage": map[string]any{"size": "1Gi"}})),
			[]string{"spec.services[0].replicas", "spec.services[].replicas must be 0 or 1 with spec.services[].storage"}},
		{"storage without a size", appObject(ns, "a", with("users", svc{"storage": map[string]any{}})),
			[]string{"spec.services[0].storage.size", "Required value"}},
		{"storage of size zero", appObject(ns, "a", with("users", svc{"storage": map[string]any{"size": "0"}})),
			[]string{"spec.services[0].storage.size", "spec.services[].storage.size must be greater than zero"}},
		{"storage of a negative size", appObject(ns, "a", with("users", svc{"storage": map[string]any{"size": "-1Gi"}})),
			[]string{"spec.services[0].storage.size", "spec.services[].storage.size must be greater than zero"}},
		{"storage mounted at a relative path", appObject(ns, "a", with("users", svc{"storage": map[string]any{"size": "1Gi", "mountPath": "data"}})),
			[]string{"spec.services[0].storage.mountPath", "should match"}},
		{"storage mounted over /tmp", appObject(ns, "a", with("users", svc{"storage": map[string]any{"size": "1Gi", "mountPath": "/tmp"}})),
			[]string{"spec.services[0].storage.mountPath", "cannot be / or /tmp"}},
		{"storage with an empty class", appObject(ns, "a", with("users", svc{"storage": map[string]any{"size": "1Gi", "storageClassName": ""}})),
			[]string{"spec.services[0].storage.storageClassName", "at least 1 chars"}},

		// Queues and the broker.
		{"publishes to an unknown queue", queueApp(ns, "a", func(spec map[string]any) {
			service(spec, 0)["publishes"] = []any{"emails", "sms"}
		}), []string{"spec.services", "spec.services[].publishes must name queues in spec.queues"}},
		{"consumes an unknown queue", queueApp(ns, "a", func(spec map[string]any) {
			service(spec, 1)["consumes"] = []any{"sms", "emails"}
		}), []string{"spec.services", "spec.services[].consumes must name queues in spec.queues"}},
		{"a queue nobody publishes to", queueApp(ns, "a", func(spec map[string]any) {
			delete(service(spec, 0), "publishes")
		}), []string{"spec.queues", "every queue in spec.queues needs a service that publishes to it"}},
		{"a queue nobody consumes", queueApp(ns, "a", func(spec map[string]any) {
			delete(service(spec, 1), "consumes")
		}), []string{"spec.queues", "every queue in spec.queues needs a service that consumes it"}},
		{"queues without a broker", queueApp(ns, "a", func(spec map[string]any) { delete(spec, "broker") }),
			[]string{"spec.queues", "spec.queues needs spec.broker"}},
		{"duplicate queue names", queueApp(ns, "a", func(spec map[string]any) {
			spec["queues"] = []any{map[string]any{"name": "emails"}, map[string]any{"name": "emails"}}
		}), []string{"spec.queues[1]", "Duplicate value"}},
		{"queue name not a DNS label", queueApp(ns, "a", func(spec map[string]any) { queue(spec)["name"] = "E_mails" }),
			[]string{"spec.queues[0].name", "should match"}},
		{"unknown queue type", queueApp(ns, "a", func(spec map[string]any) { queue(spec)["type"] = "stream" }),
			[]string{"spec.queues[0].type", "Unsupported value"}},
		{"max deliveries zero", queueApp(ns, "a", func(spec map[string]any) { queue(spec)["maxDeliveries"] = 0 }),
			[]string{"spec.queues[0].maxDeliveries", "greater than or equal to 1"}},
		{"message TTL below a millisecond", queueApp(ns, "a", func(spec map[string]any) { queue(spec)["messageTTL"] = "500us" }),
			[]string{"spec.queues[0].messageTTL", "messageTTL must be at least 1ms"}},
		{"max length zero", queueApp(ns, "a", func(spec map[string]any) { queue(spec)["maxLength"] = 0 }),
			[]string{"spec.queues[0].maxLength", "greater than or equal to 1"}},
		{"unknown deletion policy", queueApp(ns, "a", func(spec map[string]any) { queue(spec)["deletionPolicy"] = "Orphan" }),
			[]string{"spec.queues[0].deletionPolicy", "Unsupported value"}},
		{"unknown broker kind", queueApp(ns, "a", func(spec map[string]any) {
			spec["broker"].(map[string]any)["kind"] = "kafka"
		}), []string{"spec.broker.kind", "Unsupported value"}},
		{"queue type with nats", queueApp(ns, "a", func(spec map[string]any) {
			spec["broker"].(map[string]any)["kind"] = "nats"
			queue(spec)["type"] = "quorum"
		}), []string{"spec.queues", "spec.queues[].type (classic or quorum) is only for kind rabbitmq"}},
		{"differing messageTTL with nats", queueApp(ns, "a", func(spec map[string]any) {
			spec["broker"].(map[string]any)["kind"] = "nats"
			queue(spec)["messageTTL"] = "1h"
			spec["queues"] = append(spec["queues"].([]any), map[string]any{"name": "pings", "messageTTL": "2h"})
			service(spec, 0)["publishes"] = []any{"emails", "pings"}
			service(spec, 1)["consumes"] = []any{"emails", "pings"}
		}), []string{"spec.queues", "spec.queues[].messageTTL must be the same on every queue with kind nats"}},
		{"differing maxLength with nats", queueApp(ns, "a", func(spec map[string]any) {
			spec["broker"].(map[string]any)["kind"] = "nats"
			queue(spec)["maxLength"] = 10
			spec["queues"] = append(spec["queues"].([]any), map[string]any{"name": "pings"})
			service(spec, 0)["publishes"] = []any{"emails", "pings"}
			service(spec, 1)["consumes"] = []any{"emails", "pings"}
		}), []string{"spec.queues", "spec.queues[].maxLength must be the same on every queue with kind nats"}},
		{"two NATS servers", queueApp(ns, "a", func(spec map[string]any) {
			spec["broker"] = map[string]any{"kind": "nats", "managed": map[string]any{"replicas": 2}}
		}), []string{"spec.broker.managed.replicas", "cannot be 2 with kind nats"}},
		{"exporter image with rabbitmq", queueApp(ns, "a", func(spec map[string]any) {
			spec["broker"].(map[string]any)["managed"].(map[string]any)["exporterImage"] = "exporter:1"
		}), []string{"spec.broker.managed.exporterImage", "only for kind nats"}},
		{"broker both managed and external", queueApp(ns, "a", func(spec map[string]any) {
			spec["broker"].(map[string]any)["external"] = map[string]any{"secretRef": map[string]any{"name": "s"}, "host": "mq"}
		}), []string{"spec.broker", "spec.broker must set exactly one of managed and external"}},
		{"broker neither managed nor external", queueApp(ns, "a", func(spec map[string]any) {
			spec["broker"] = map[string]any{"kind": "rabbitmq"}
		}), []string{"spec.broker", "spec.broker must set exactly one of managed and external"}},
		{"external broker without host", queueApp(ns, "a", func(spec map[string]any) {
			spec["broker"] = map[string]any{"kind": "rabbitmq", "external": map[string]any{"secretRef": map[string]any{"name": "s"}}}
		}), []string{"spec.broker.external.host", "Required value"}},
		{"external broker without secret", queueApp(ns, "a", func(spec map[string]any) {
			spec["broker"] = map[string]any{"kind": "rabbitmq", "external": map[string]any{"host": "mq"}}
		}), []string{"spec.broker.external.secretRef", "Required value"}},
		{"managed broker with negative replicas", queueApp(ns, "a", func(spec map[string]any) {
			spec["broker"].(map[string]any)["managed"] = map[string]any{"replicas": -1}
		}), []string{"spec.broker.managed.replicas", "greater than or equal to 0"}},
		{"service named broker", queueApp(ns, "a", func(spec map[string]any) { service(spec, 0)["name"] = "broker" }),
			[]string{"spec.services[0].name", "broker and broker-nodes are reserved"}},
		{"service named broker-nodes", queueApp(ns, "a", func(spec map[string]any) { service(spec, 1)["name"] = "broker-nodes" }),
			[]string{"spec.services[1].name", "broker and broker-nodes are reserved"}},
		{"app name too long for a managed broker", queueApp(ns, strings.Repeat("a", 46), nil),
			[]string{"metadata.name must be at most 45 characters with a managed broker"}},

		// Names the operator derives others from.
		{"app name with a dot", appObject(ns, "blog.prod", with("users", nil)),
			[]string{"metadata.name must be a DNS-1035 label"}},
		{"app name starting with a digit", appObject(ns, "1blog", with("users", nil)),
			[]string{"metadata.name must be a DNS-1035 label"}},
		{"queues whose variables collide", queueApp(ns, "a", func(spec map[string]any) {
			spec["queues"] = []any{
				map[string]any{"name": "jobs", "maxDeliveries": 5},
				map[string]any{"name": "jobs-max-deliveries"},
			}
			service(spec, 0)["publishes"] = []any{"jobs", "jobs-max-deliveries"}
			service(spec, 1)["consumes"] = []any{"jobs", "jobs-max-deliveries"}
		}), []string{"spec.queues", "spec.queues[].name cannot be another queue's name followed by -max-deliveries"}},
		{"queues whose variables collide once a limit is set", queueApp(ns, "a", func(spec map[string]any) {
			spec["queues"] = []any{map[string]any{"name": "jobs-max-deliveries"}, map[string]any{"name": "jobs"}}
			service(spec, 0)["publishes"] = []any{"jobs", "jobs-max-deliveries"}
			service(spec, 1)["consumes"] = []any{"jobs", "jobs-max-deliveries"}
		}), []string{"spec.queues", "spec.queues[].name cannot be another queue's name followed by -max-deliveries"}},
		{"empty env name", appObject(ns, "a", with("users", svc{"env": []any{map[string]any{"name": "", "value": "1"}}})),
			[]string{"spec.services[0].env[0].name", "should match"}},
		{"env name with =", appObject(ns, "a", with("users", svc{"env": []any{map[string]any{"name": "A=B", "value": "1"}}})),
			[]string{"spec.services[0].env[0].name", "should match"}},
		{"env name with a tab", appObject(ns, "a", with("users", svc{"env": []any{map[string]any{"name": "A\tB", "value": "1"}}})),
			[]string{"spec.services[0].env[0].name", "should match"}},
		{"env name beyond ASCII", appObject(ns, "a", with("users", svc{"env": []any{map[string]any{"name": "CAFÉ", "value": "1"}}})),
			[]string{"spec.services[0].env[0].name", "should match"}},
		{"envFrom prefix with =", appObject(ns, "a", with("users", svc{"envFrom": []any{
			map[string]any{"prefix": "DB=", "secretRef": map[string]any{"name": "s"}},
		}})),
			[]string{"spec.services[0].envFrom[0].prefix", "should match"}},

		// Pod options.
		{"pod label replacing the name selector", appObject(ns, "a", with("users", svc{"podLabels": map[string]any{"app.kubernetes.io/name": "posts"}})),
			[]string{"spec.services[0].podLabels", "spec.services[].podLabels cannot set app.kubernetes.io/name"}},
		{"pod label replacing the instance selector", appObject(ns, "a", with("users", svc{"podLabels": map[string]any{"team": "a", "app.kubernetes.io/instance": "b"}})),
			[]string{"spec.services[0].podLabels", "the operator's selector labels"}},
		{"pod label replacing managed-by", appObject(ns, "a", with("users", svc{"podLabels": map[string]any{"app.kubernetes.io/managed-by": "helm"}})),
			[]string{"spec.services[0].podLabels", "the operator's selector labels"}},
		{"pod annotation replacing the scrape port", appObject(ns, "a", with("users", svc{"podAnnotations": map[string]any{"prometheus.io/port": "1"}})),
			[]string{"spec.services[0].podAnnotations", "spec.services[].podAnnotations cannot set prometheus.io/ or courier.dev/ keys"}},
		{"pod annotation replacing the connection hash", appObject(ns, "a", with("users", svc{"podAnnotations": map[string]any{contract.AnnotationConnectionHash: "x"}})),
			[]string{"spec.services[0].podAnnotations", "cannot set prometheus.io/ or courier.dev/ keys"}},
		{"empty pull Secret name", appObject(ns, "a", with("users", svc{"imagePullSecrets": []any{map[string]any{"name": ""}}})),
			[]string{"spec.services[0].imagePullSecrets[0].name", "at least 1 chars"}},
		{"pull Secret named twice", appObject(ns, "a", with("users", svc{"imagePullSecrets": []any{map[string]any{"name": "r"}, map[string]any{"name": "r"}}})),
			[]string{"spec.services[0].imagePullSecrets[1]", "Duplicate value"}},
		{"service account not a DNS name", appObject(ns, "a", with("users", svc{"serviceAccountName": "Users_SA"})),
			[]string{"spec.services[0].serviceAccountName", "should match"}},
		{"empty priority class", appObject(ns, "a", with("users", svc{"priorityClassName": ""})),
			[]string{"spec.services[0].priorityClassName", "at least 1 chars"}},
		{"unknown toleration field type", appObject(ns, "a", with("users", svc{"tolerations": []any{map[string]any{"key": "k", "tolerationSeconds": "soon"}}})),
			[]string{"spec.services[0].tolerations[0].tolerationSeconds"}},
		{"broker pod label replacing a selector", queueApp(ns, "a", func(spec map[string]any) {
			spec["broker"].(map[string]any)["managed"] = map[string]any{"podLabels": map[string]any{"app.kubernetes.io/instance": "other"}}
		}), []string{"spec.broker.managed.podLabels", "spec.broker.managed.podLabels cannot set app.kubernetes.io/name"}},
		{"broker pod annotation replacing the config hash", queueApp(ns, "a", func(spec map[string]any) {
			spec["broker"].(map[string]any)["managed"] = map[string]any{"podAnnotations": map[string]any{rabbitmq.AnnotationConfigHash: "x"}}
		}), []string{"spec.broker.managed.podAnnotations", "spec.broker.managed.podAnnotations cannot set prometheus.io/ or courier.dev/ keys"}},
		{"tracing endpoint without a scheme", appSpec(ns, "a", map[string]any{
			"services": []any{with("users", nil)},
			"tracing":  map[string]any{"otlpEndpoint": "otel-collector:4318"},
		}), []string{"spec.tracing.otlpEndpoint", "should match"}},
		{"tracing without an endpoint", appSpec(ns, "a", map[string]any{
			"services": []any{with("users", nil)},
			"tracing":  map[string]any{},
		}), []string{"spec.tracing.otlpEndpoint", "Required value"}},
		{"broker topology spread without a key", queueApp(ns, "a", func(spec map[string]any) {
			spec["broker"].(map[string]any)["managed"] = map[string]any{"topologySpreadConstraints": []any{map[string]any{"maxSkew": 1, "whenUnsatisfiable": "ScheduleAnyway"}}}
		}), []string{"spec.broker.managed.topologySpreadConstraints[0].topologyKey", "Required value"}},
	}
	for _, tt := range invalid {
		t.Run("rejects "+tt.name, func(t *testing.T) {
			err := k8s.Create(context.Background(), tt.app, client.DryRunAll)
			if !apierrors.IsInvalid(err) {
				t.Fatalf("create: %v, want an Invalid error", err)
			}
			for _, want := range tt.wantText {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err.Error(), want)
				}
			}
		})
	}

	valid := []struct {
		name string
		app  *unstructured.Unstructured
	}{
		{"nats managed, equal limits, an exporter image", queueApp(ns, "a", func(spec map[string]any) {
			spec["broker"] = map[string]any{"kind": "nats", "managed": map[string]any{"replicas": 3, "exporterImage": "exporter:1"}}
			queue(spec)["messageTTL"] = "1h"
			queue(spec)["maxLength"] = 10
			spec["queues"] = append(spec["queues"].([]any), map[string]any{"name": "pings", "messageTTL": "60m", "maxLength": 10})
			service(spec, 0)["publishes"] = []any{"emails", "pings"}
			service(spec, 1)["consumes"] = []any{"emails", "pings"}
		})},
		{"nats external on its default port", queueApp(ns, "a", func(spec map[string]any) {
			spec["broker"] = map[string]any{"kind": "nats", "external": map[string]any{"secretRef": map[string]any{"name": "s"}, "host": "nats.messaging.svc"}}
		})},
		{"minimal", appObject(ns, "a", with("users", nil))},
		{"scaled to zero with custom ports", appObject(ns, "a", with("users", svc{"replicas": 0, "httpPort": 1, "adminPort": 65535}))},
		{"calls other services", appObject(ns, "a",
			with("gateway", svc{"calls": []any{"users", "posts"}}), with("users", nil), with("posts", svc{"calls": []any{"users"}}))},
		{"every override", appObject(ns, "a", with("users", svc{
			"imagePullPolicy": "IfNotPresent",
			"command":         []any{"/users"},
			"args":            []any{"--verbose"},
			"env":             []any{map[string]any{"name": "LOG_LEVEL", "value": "debug"}},
			"envFrom":         []any{map[string]any{"secretRef": map[string]any{"name": "s"}}},
			"resources":       map[string]any{"limits": map[string]any{"memory": "1Gi"}},
			"probes": map[string]any{
				"liveness":  map[string]any{"path": "/healthz", "port": "http", "periodSeconds": 30},
				"readiness": map[string]any{"timeoutSeconds": 5, "failureThreshold": 1},
				"startup":   map[string]any{"initialDelaySeconds": 0},
			},
			"metrics": map[string]any{"path": "/internal/metrics", "port": "http"},
		}))},
		{"names exactly at the limit", appObject(ns, strings.Repeat("a", 31), with(strings.Repeat("b", 31), nil))},
		{"storage", appObject(ns, "a", with("users", svc{"storage": map[string]any{"size": "1Gi"}}))},
		{"storage with every field and one replica", appObject(ns, "a", with("users", svc{"replicas": 1, "storage": map[string]any{
			"size": 1073741824, "storageClassName": "fast", "mountPath": "/var/lib/users",
		}}))},
		{"storage scaled to zero", appObject(ns, "a", with("users", svc{"replicas": 0, "storage": map[string]any{"size": "500M"}}))},
		{"a queue with a managed broker", queueApp(ns, "a", nil)},
		{"every queue and broker field", queueApp(ns, strings.Repeat("a", 45), func(spec map[string]any) {
			spec["broker"] = map[string]any{"kind": "rabbitmq", "managed": map[string]any{
				"image": "rabbitmq:3.13.7-management", "replicas": 3, "storageSize": "1Gi", "storageClassName": "fast",
				"resources": map[string]any{"limits": map[string]any{"memory": "2Gi"}},
			}}
			spec["queues"] = []any{
				map[string]any{"name": "emails", "type": "quorum", "maxDeliveries": 5, "messageTTL": "24h",
					"maxLength": 10000, "deletionPolicy": "delete"},
				map[string]any{"name": "audit-log", "type": "classic", "messageTTL": "1ms"},
			}
			service(spec, 0)["publishes"] = []any{"emails", "audit-log"}
			service(spec, 1)["consumes"] = []any{"emails", "audit-log"}
		})},
		{"an external broker", queueApp(ns, "a", func(spec map[string]any) {
			spec["broker"] = map[string]any{"kind": "rabbitmq", "external": map[string]any{
				"secretRef": map[string]any{"name": "rabbitmq-admin"}, "host": "rabbitmq.messaging.svc", "port": 5671,
			}}
		})},
		{"a service that publishes and consumes the same queue", queueApp(ns, "a", func(spec map[string]any) {
			service(spec, 0)["consumes"] = []any{"emails"}
		})},
		{"an app name with digits and dashes", appObject(ns, "blog-2-eu", with("users", nil))},
		{"queue names that only look alike", queueApp(ns, "a", func(spec map[string]any) {
			spec["queues"] = []any{
				map[string]any{"name": "jobs", "maxDeliveries": 5},
				map[string]any{"name": "jobs-max"},
				map[string]any{"name": "max-deliveries-jobs"},
				map[string]any{"name": "jobs-max-deliveries-dlq"},
			}
			names := []any{"jobs", "jobs-max", "max-deliveries-jobs", "jobs-max-deliveries-dlq"}
			service(spec, 0)["publishes"] = names
			service(spec, 1)["consumes"] = names
		})},
		{"env names Kubernetes 1.34 takes", appObject(ns, "a", with("users", svc{
			"env": []any{
				map[string]any{"name": "LOG_LEVEL", "value": "debug"},
				map[string]any{"name": "1ST", "value": "1"},
				map[string]any{"name": "my.env-name", "value": "1"},
				map[string]any{"name": "A B~!", "value": "1"},
			},
			"envFrom": []any{map[string]any{"prefix": "DB_", "secretRef": map[string]any{"name": "s"}}},
		}))},
		{"every pod option, on a service and on the broker", queueApp(ns, "a", func(spec map[string]any) {
			opts := map[string]any{
				"imagePullSecrets": []any{map[string]any{"name": "registry"}, map[string]any{"name": "mirror"}},
				"nodeSelector":     map[string]any{"kubernetes.io/arch": "arm64"},
				"tolerations":      []any{map[string]any{"key": "dedicated", "operator": "Equal", "value": "apps", "effect": "NoSchedule"}},
				"affinity": map[string]any{"nodeAffinity": map[string]any{"requiredDuringSchedulingIgnoredDuringExecution": map[string]any{
					"nodeSelectorTerms": []any{map[string]any{"matchExpressions": []any{
						map[string]any{"key": "topology.kubernetes.io/zone", "operator": "In", "values": []any{"a", "b"}},
					}}},
				}}},
				"topologySpreadConstraints": []any{map[string]any{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule"}},
				"priorityClassName":         "business-critical",
				"podLabels":                 map[string]any{"team": "mail", "app.kubernetes.io/part-of": "blog"},
				"podAnnotations":            map[string]any{"example.org/owner": "mail", "prometheus.io.example/other": "x"},
			}
			for k, v := range opts {
				service(spec, 0)[k] = v
			}
			service(spec, 0)["serviceAccountName"] = "users-identity"
			spec["broker"].(map[string]any)["managed"] = opts
		})},
		{"tracing to a collector", appSpec(ns, "a", map[string]any{
			"services": []any{with("users", nil)},
			"tracing":  map[string]any{"otlpEndpoint": "https://otel.example.org:4318/prefix"},
		})},
		{"a broker without queues", appSpec(ns, "a", map[string]any{
			"broker":   map[string]any{"kind": "rabbitmq", "managed": map[string]any{}},
			"services": []any{with("users", nil)},
		})},
	}
	for _, tt := range valid {
		t.Run("accepts "+tt.name, func(t *testing.T) {
			if err := k8s.Create(context.Background(), tt.app, client.DryRunAll); err != nil {
				t.Fatalf("create: %v", err)
			}
		})
	}
}

// TestDefaultsFollowContract checks that the API server fills in the
// contract's ports and paths; the CRD's markers can only hold them as
// literals.
func TestDefaultsFollowContract(t *testing.T) {
	t.Parallel()
	ns := namespace(t)
	u := appObject(ns, "defaults", with("users", svc{"metrics": map[string]any{}}))
	if err := k8s.Create(context.Background(), u, client.DryRunAll); err != nil {
		t.Fatalf("create: %v", err)
	}
	app := &v1alpha1.MicroserviceApp{}
	if err := k8s.Scheme().Convert(u, app, nil); err != nil {
		t.Fatalf("convert: %v", err)
	}
	s := app.Spec.Services[0]
	if s.HTTPPort != contract.HTTPPort || s.AdminPort != contract.AdminPort {
		t.Errorf("ports defaulted to %d/%d, want the contract's %d/%d", s.HTTPPort, s.AdminPort, contract.HTTPPort, contract.AdminPort)
	}
	if s.Replicas == nil || *s.Replicas != 1 {
		t.Errorf("replicas defaulted to %v, want 1", s.Replicas)
	}
	if s.Metrics.Path != contract.MetricsPath || string(s.Metrics.Port) != contract.AdminPortName {
		t.Errorf("metrics defaulted to %s on %s, want the contract's %s on %s", s.Metrics.Path, s.Metrics.Port, contract.MetricsPath, contract.AdminPortName)
	}
}

// TestBrokerDefaultsFollowBuilders checks that the API server fills in the
// managed broker's image and storage and the external broker's port with the
// values the rabbitmq builders use, which the markers can only hold as
// literals. Stored defaults keep a broker's version and volume size from
// changing when a new operator changes its own defaults.
func TestBrokerDefaultsFollowBuilders(t *testing.T) {
	t.Parallel()
	ns := namespace(t)
	decode := func(u *unstructured.Unstructured) *v1alpha1.MicroserviceApp {
		t.Helper()
		if err := k8s.Create(context.Background(), u, client.DryRunAll); err != nil {
			t.Fatalf("create: %v", err)
		}
		app := &v1alpha1.MicroserviceApp{}
		if err := k8s.Scheme().Convert(u, app, nil); err != nil {
			t.Fatalf("convert: %v", err)
		}
		return app
	}

	managed := decode(queueApp(ns, "managed", nil))
	m := managed.Spec.Broker.Managed
	// The image and the external port depend on the kind, so the API
	// leaves them unset and the kind's builders and driver default them
	// (rabbitmq.DefaultImage, nats.DefaultImage; 5672, 4222).
	if m.Image != "" {
		t.Errorf("image defaulted to %q, want it left to the kind's builders", m.Image)
	}
	if m.StorageSize == nil || m.StorageSize.Cmp(rabbitmq.DefaultStorageSize) != 0 {
		t.Errorf("storageSize defaulted to %v, want rabbitmq.DefaultStorageSize %s", m.StorageSize, rabbitmq.DefaultStorageSize.String())
	}
	if m.Replicas == nil || *m.Replicas != 1 {
		t.Errorf("replicas defaulted to %v, want 1", m.Replicas)
	}
	if p := managed.Spec.Queues[0].DeletionPolicy; p != v1alpha1.DeletionRetain {
		t.Errorf("deletionPolicy defaulted to %q, want %q", p, v1alpha1.DeletionRetain)
	}

	external := decode(queueApp(ns, "external", func(spec map[string]any) {
		spec["broker"] = map[string]any{"kind": "rabbitmq", "external": map[string]any{
			"secretRef": map[string]any{"name": "s"}, "host": "mq",
		}}
	}))
	if p := external.Spec.Broker.External.Port; p != 0 {
		t.Errorf("external port defaulted to %d, want it left to the kind's driver", p)
	}
}

// TestBrokerIsImmutable updates a stored app in ways the transition rules
// forbid: the broker and its storage stay as they were created. The rule
// that keeps spec.broker.kind is not exercised: with rabbitmq the only kind
// the enum accepts, no update can reach it yet.
func TestBrokerIsImmutable(t *testing.T) {
	t.Parallel()
	ns := namespace(t)
	create(t, queueApp(ns, "frozen", func(spec map[string]any) {
		spec["broker"].(map[string]any)["managed"] = map[string]any{"storageSize": "1Gi", "storageClassName": "fast"}
	}))
	managed := func(spec map[string]any) map[string]any {
		return spec["broker"].(map[string]any)["managed"].(map[string]any)
	}
	update := func(change func(spec map[string]any)) error { return dryRunUpdate(t, ns, "frozen", change) }

	rejected := []struct {
		name   string
		change func(spec map[string]any)
		want   string
	}{
		{"removing the broker", func(spec map[string]any) {
			delete(spec, "broker")
			delete(spec, "queues")
			for _, s := range spec["services"].([]any) {
				delete(s.(map[string]any), "publishes")
				delete(s.(map[string]any), "consumes")
			}
		}, "spec.broker cannot be removed once set"},
		{"switching to an external broker", func(spec map[string]any) {
			spec["broker"] = map[string]any{"kind": "rabbitmq", "external": map[string]any{
				"secretRef": map[string]any{"name": "s"}, "host": "mq",
			}}
		}, "spec.broker cannot switch between managed and external once set"},
		{"resizing the volumes", func(spec map[string]any) { managed(spec)["storageSize"] = "2Gi" },
			"spec.broker.managed.storageSize is immutable"},
		{"changing the storage class", func(spec map[string]any) { managed(spec)["storageClassName"] = "slow" },
			"spec.broker.managed.storageClassName is immutable"},
		{"dropping the storage class", func(spec map[string]any) { delete(managed(spec), "storageClassName") },
			"spec.broker.managed.storageClassName is immutable"},
	}
	for _, tt := range rejected {
		t.Run("rejects "+tt.name, func(t *testing.T) {
			err := update(tt.change)
			if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("update: %v, want an Invalid error saying %q", err, tt.want)
			}
		})
	}

	allowed := []struct {
		name   string
		change func(spec map[string]any)
	}{
		{"scaling the broker", func(spec map[string]any) { managed(spec)["replicas"] = 3 }},
		{"a new broker image", func(spec map[string]any) { managed(spec)["image"] = "rabbitmq:3.13.8-management" }},
		{"new broker resources", func(spec map[string]any) {
			managed(spec)["resources"] = map[string]any{"limits": map[string]any{"memory": "2Gi"}}
		}},
	}
	for _, tt := range allowed {
		t.Run("accepts "+tt.name, func(t *testing.T) {
			if err := update(tt.change); err != nil {
				t.Errorf("update: %v", err)
			}
		})
	}
}

// TestBrokerNeverShrinks changes the replicas of stored managed brokers:
// every decrease is refused, naming the field, except
// 1 -> 0, which stops a single-node broker; growth is always allowed, from
// zero too.
func TestBrokerNeverShrinks(t *testing.T) {
	t.Parallel()
	ns := namespace(t)
	stored := func(name string, replicas int) {
		create(t, queueApp(ns, name, func(spec map[string]any) {
			spec["broker"].(map[string]any)["managed"] = map[string]any{"replicas": replicas}
		}))
	}
	stored("three", 3)
	stored("one", 1)
	stored("stopped", 0)
	scale := func(name string, replicas any) error {
		return dryRunUpdate(t, ns, name, func(spec map[string]any) {
			managed := spec["broker"].(map[string]any)["managed"].(map[string]any)
			if replicas == nil {
				delete(managed, "replicas") // defaulted to 1 again
				return
			}
			managed["replicas"] = replicas
		})
	}

	rejected := []struct {
		app      string
		replicas any
		want     string
	}{
		{"three", 1, "spec.broker.managed.replicas cannot decrease"},
		{"three", 2, "spec.broker.managed.replicas cannot decrease"},
		{"three", 0, "spec.broker.managed.replicas cannot decrease"},
		{"three", nil, "spec.broker.managed.replicas cannot decrease"},
	}
	for _, tt := range rejected {
		t.Run(fmt.Sprintf("rejects %s to %v", tt.app, tt.replicas), func(t *testing.T) {
			err := scale(tt.app, tt.replicas)
			if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "spec.broker.managed.replicas:") {
				t.Errorf("update: %v, want an Invalid error on spec.broker.managed.replicas saying %q", err, tt.want)
			}
		})
	}

	allowed := []struct {
		app      string
		replicas any
	}{
		{"three", 3}, {"three", 5}, {"one", 0}, {"one", 3}, {"stopped", 0}, {"stopped", 1}, {"stopped", 3},
	}
	for _, tt := range allowed {
		t.Run(fmt.Sprintf("accepts %s to %v", tt.app, tt.replicas), func(t *testing.T) {
			if err := scale(tt.app, tt.replicas); err != nil {
				t.Errorf("update: %v", err)
			}
		})
	}
}

// dryRunUpdate tries change on the spec of the app ns/name as a dry-run
// update, again when the controller's status writes got in between, and
// returns the API server's answer.
func dryRunUpdate(t *testing.T, ns, name string, change func(spec map[string]any)) error {
	t.Helper()
	for {
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(v1alpha1.GroupVersion.WithKind("MicroserviceApp"))
		if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, u); err != nil {
			t.Fatal(err)
		}
		change(u.Object["spec"].(map[string]any))
		if err := k8s.Update(context.Background(), u, client.DryRunAll); !apierrors.IsConflict(err) {
			return err
		}
	}
}
