#!/usr/bin/env bash
# make demo: the whole product in real pods on this machine, no Docker needed.
#
#   1. the local node (hack/cluster): built once into a cache, then started;
#   2. the images (hack/images/build.sh): operator, four services, RabbitMQ
#      from Debian's packages, Mailpit; imported into the node's containerd;
#   3. charts/courier and charts/blog with helm (hack/kind/install.sh, as the
#      kind suite installs them), the app in namespace $DEMO_NAMESPACE (blog)
#      under the restricted Pod Security Standard, a managed RabbitMQ, e-mail
#      to Mailpit;
#   4. waits for the MicroserviceApp's Ready condition, then port-forwards
#      the gateway and Mailpit to localhost and prints a curl to try.
#
# BROKER_KIND=nats make demo runs the blog on a managed NATS JetStream
# instead of RabbitMQ (hack/kind/install.sh reads it); BROKER_REPLICAS sets
# the broker's nodes (1).
#
# make demo-down (hack/demo.sh down) stops the port-forwards and the node.
# `hack/demo.sh install` does steps 1 to 3 and the wait only: make test-e2e
# uses it, with DEMO_NAMESPACE=courier-e2e, to set up the kind suite's
# cluster on this machine. Needs root (network namespace, cgroups, mounts).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
source hack/cluster/lib.sh

NAMESPACE="${DEMO_NAMESPACE:-blog}"
APP="${DEMO_APP:-blog}"
GATEWAY_PORT="${DEMO_GATEWAY_PORT:-8080}"
MAILPIT_PORT="${DEMO_MAILPIT_PORT:-8025}"
FORWARDS="$STATE/demo-port-forwards"

demo_log() { echo "demo: $*" >&2; }

stop_forwards() {
  [[ -f "$FORWARDS" ]] || return 0
  while read -r pid; do kill "$pid" 2>/dev/null || true; done <"$FORWARDS"
  rm -f "$FORWARDS"
}

case "${1:-up}" in
  up | install) ;;
  down)
    stop_forwards
    "$ROOT/hack/cluster/down.sh"
    exit 0
    ;;
  *) die demo "" "usage: $0 [up|install|down]" ;;
esac

demo_log "building the node's binaries (cached after the first run)"
"$ROOT/hack/cluster/build.sh"
"$ROOT/hack/cluster/up.sh"
export KUBECONFIG="$KUBECONFIG_ADMIN"

# DEMO_FRESH=1 (make test-e2e) starts the app over: the node keeps its state
# between runs, and a run that failed midway leaves its app, broker and
# volumes behind, which the install would otherwise upgrade in place.
# The app goes first (its broker then stops without the preStop checks).
if [[ "${DEMO_FRESH:-}" == 1 ]] && kubectl get namespace "$NAMESPACE" >/dev/null 2>&1; then
  demo_log "deleting what an earlier run left in namespace $NAMESPACE"
  kubectl -n "$NAMESPACE" delete msa --all --wait=true --timeout=5m >/dev/null
  kubectl delete namespace "$NAMESPACE" --wait=true --timeout=5m >/dev/null
fi

demo_log "building the images"
IMAGES_OUT="$STATE/demo-images"
mapfile -t archives < <(IMAGE_TAG="${IMAGE_TAG:-dev}" "$ROOT/hack/images/build.sh" "$IMAGES_OUT")
"$ROOT/hack/cluster/import-image.sh" "${archives[@]}"
set -a
source "$IMAGES_OUT/images.env"
set +a

# One broker node for the demo (the end-to-end suite runs three).
E2E_NAMESPACE="$NAMESPACE" E2E_APP="$APP" PULL_POLICY=Never BROKER_REPLICAS="${BROKER_REPLICAS:-1}" \
  "$ROOT/hack/kind/install.sh"

demo_log "waiting for msa/$APP to be Ready (a first broker start takes about a minute)"
if ! kubectl -n "$NAMESPACE" wait --for=condition=Ready "msa/$APP" --timeout=5m >&2; then
  kubectl -n "$NAMESPACE" get msa "$APP" -o wide >&2 || true
  kubectl -n "$NAMESPACE" get pods -o wide >&2 || true
  die demo "" "msa/$APP did not become Ready; its conditions and pods are above"
fi
kubectl -n "$NAMESPACE" get msa "$APP" -o wide >&2
[[ "${1:-up}" == install ]] && exit 0

stop_forwards
forward() {
  nohup kubectl -n "$NAMESPACE" port-forward "svc/$1" "$2" >"$LOGS/port-forward-$1.log" 2>&1 &
  echo $! >>"$FORWARDS"
}
forward "$APP-gateway" "$GATEWAY_PORT:8080"
forward mailpit "$MAILPIT_PORT:8025"
for url in "http://127.0.0.1:$GATEWAY_PORT/api/posts" "http://127.0.0.1:$MAILPIT_PORT/readyz"; do
  for _ in $(seq 100); do
    curl -fsS -o /dev/null "$url" 2>/dev/null && break
    sleep 0.1
  done
  curl -fsS -o /dev/null "$url" || die demo "$LOGS/port-forward-*.log" "$url does not answer through its port-forward"
done

cat <<EOF

The blog runs in pods on the local node.

  export KUBECONFIG=$KUBECONFIG_ADMIN
  kubectl -n $NAMESPACE get msa,pods

Gateway:  http://127.0.0.1:$GATEWAY_PORT   (port-forward to svc/$APP-gateway)
Mailpit:  http://127.0.0.1:$MAILPIT_PORT   (the e-mails the mailer sends)

Sign up a user:

  curl -s -XPOST 127.0.0.1:$GATEWAY_PORT/api/users -H 'content-type: application/json' \\
    -d '{"name":"Ada","email":"ada@example.com","password":"correct horse battery"}'

The welcome e-mail shows up in Mailpit within a second:

  curl -s 127.0.0.1:$MAILPIT_PORT/api/v1/messages | head -c 600; echo

make demo-down stops everything.
EOF
