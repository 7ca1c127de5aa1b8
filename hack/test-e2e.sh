#!/usr/bin/env bash
# make test-e2e: the end-to-end suite (test/e2e/kind) against a real cluster.
#
# With kind and a Docker engine, it runs against the cluster hack/kind/up.sh
# made (the current kubeconfig context), as in GitHub Actions. Without them
# (this project's own CI, any machine without Docker) it sets up the local
# node the same way make demo does, with the suite's namespace
# (courier-e2e) and image tag (e2e), upgrades it once from the previous CRD,
# and runs the same suite against it.
# Set E2E_CLUSTER=kind or E2E_CLUSTER=node to choose.
#
# Then it runs the suite a second time, on NATS JetStream: the blog again,
# in namespace $E2E_NATS_NAMESPACE (courier-e2e-nats) with broker.kind=nats
# and $NATS_REPLICAS (3) managed servers, with E2E_BROKER_KIND=nats so the
# suite checks the NATS servers where it checks RabbitMQ's nodes on the
# first pass. Each pass ends by deleting its app and namespace.
set -euo pipefail
cd "$(dirname "$0")/.."

cluster="${E2E_CLUSTER:-}"
if [[ -z "$cluster" ]]; then
  if command -v kind >/dev/null && docker info >/dev/null 2>&1; then
    cluster=kind
  else
    cluster=node
  fi
fi

pull_policy="${PULL_POLICY:-IfNotPresent}"
if [[ "$cluster" == node ]]; then
  pull_policy=Never
  source hack/cluster/lib.sh
  echo "test-e2e: no kind here; using the local node (hack/cluster)" >&2
  DEMO_FRESH=1 DEMO_NAMESPACE="${E2E_NAMESPACE:-courier-e2e}" DEMO_APP="${E2E_APP:-blog}" IMAGE_TAG=e2e BROKER_KIND=rabbitmq BROKER_REPLICAS=3 ./hack/demo.sh install
  export KUBECONFIG="$KUBECONFIG_ADMIN"
  # The connection checks of the NetworkPolicy step use the node's busybox.
  export E2E_PROBE_IMAGE="$BUSYBOX_IMAGE" E2E_PROBE_PULL_POLICY=Never
  set -a
  source "$STATE/demo-images/images.env"
  set +a
  # An upgrade whose CRD changed: put back the CRD of an earlier version
  # (test/e2e/kind/testdata/crd-previous.yaml, before services[].storage
  # and entryPoint), then upgrade both releases as a user would: helm
  # upgrade puts the chart's CRD back (charts/courier renders it as a
  # template); the suite then runs against the upgraded install.
  #
  # The operator is stopped while the previous CRD is in place: the API
  # server prunes the fields that CRD does not know (storage) from the app
  # on every write, for good, and the operator writes the app (finalizer,
  # status) as it reconciles. An app made under the previous version has no
  # such fields; this one, made by the current chart, has, and helm's
  # three-way merge would not put them back. The upgrade starts it again.
  echo "test-e2e: upgrading from the previous CRD" >&2
  kubectl -n "${E2E_OPERATOR_NAMESPACE:-courier-system}" scale deployment --all --replicas=0 >/dev/null
  kubectl -n "${E2E_OPERATOR_NAMESPACE:-courier-system}" wait --for=delete pod --all --timeout=2m >/dev/null
  kubectl apply --server-side --force-conflicts -f test/e2e/kind/testdata/crd-previous.yaml >/dev/null
  E2E_NAMESPACE="${E2E_NAMESPACE:-courier-e2e}" E2E_APP="${E2E_APP:-blog}" PULL_POLICY=Never BROKER_KIND=rabbitmq BROKER_REPLICAS=3 \
    hack/kind/install.sh
  kubectl -n "${E2E_NAMESPACE:-courier-e2e}" wait --for=condition=Ready "msa/${E2E_APP:-blog}" --timeout=5m
fi
suite() { go test -tags e2e -race -count=1 -timeout 45m ./test/e2e/kind/... -v; }

E2E_BROKER_KIND=rabbitmq suite

# The NATS pass. A namespace an earlier, failed run left is started over,
# as hack/demo.sh does with DEMO_FRESH for the first pass.
nats_start=$(date +%s)
nats_namespace="${E2E_NATS_NAMESPACE:-courier-e2e-nats}"
if kubectl get namespace "$nats_namespace" >/dev/null 2>&1; then
  echo "test-e2e: deleting what an earlier run left in namespace $nats_namespace" >&2
  kubectl -n "$nats_namespace" delete msa --all --wait=true --timeout=5m >/dev/null
  kubectl delete namespace "$nats_namespace" --wait=true --timeout=5m >/dev/null
fi
echo "test-e2e: the blog on NATS JetStream in namespace $nats_namespace" >&2
E2E_NAMESPACE="$nats_namespace" E2E_APP="${E2E_APP:-blog}" BROKER_KIND=nats BROKER_REPLICAS="${NATS_REPLICAS:-3}" \
  PULL_POLICY="$pull_policy" hack/kind/install.sh
if ! kubectl -n "$nats_namespace" wait --for=condition=Ready "msa/${E2E_APP:-blog}" --timeout=5m; then
  kubectl -n "$nats_namespace" get msa,pods -o wide >&2 || true
  echo "test-e2e: msa/${E2E_APP:-blog} on NATS did not become Ready" >&2
  exit 1
fi
E2E_NAMESPACE="$nats_namespace" E2E_BROKER_KIND=nats suite
echo "test-e2e: the NATS pass took $(($(date +%s) - nats_start)) s" >&2
