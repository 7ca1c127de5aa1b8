#!/usr/bin/env bash
# Installs into the cluster of the current kubeconfig context what the kind
# end-to-end suite (test/e2e/kind) runs against:
#
#   1. charts/courier (the CRD and the operator), release "courier" in
#      $E2E_OPERATOR_NAMESPACE (courier-system),
#   2. Mailpit (hack/kind/mailpit), release "$E2E_MAILPIT" (mailpit) in
#      $E2E_NAMESPACE (courier-e2e),
#   3. charts/blog, release "$E2E_APP" (blog) in $E2E_NAMESPACE, sending its
#      e-mail through Mailpit.
#
# It needs only helm (the pinned one, from `make helm`), so it runs against
# any cluster: up.sh calls it after loading the images into kind. Against a
# control plane without nodes, such as the local one of `make run`, set
# WAIT=false: every object is written, no pod starts. Running it again
# upgrades the releases and brings back an app the suite deleted.
#
# The app's namespace enforces the restricted Pod Security Standard (labelled
# with kubectl before anything is installed in it), so every pod the
# operator and the charts make must be admitted under it.
#
# Environment: REGISTRY (ghcr.io/courier-dev) and IMAGE_TAG (e2e) name the
# images, PULL_POLICY (IfNotPresent) is their pull policy, MAILPIT_IMAGE
# overrides Mailpit's. BROKER_KIND (rabbitmq) is the app's broker, the
# chart's broker.kind: rabbitmq or nats. BROKER_IMAGE overrides the managed
# RabbitMQ's image, NATS_IMAGE and NATS_EXPORTER_IMAGE the managed NATS
# servers' and their exporter's (the operator's defaults otherwise);
# BROKER_REPLICAS is the broker's nodes (3: the suite checks that a quorum
# queue survives losing one). HELM is the helm binary (./bin/helm), KUBECTL
# kubectl.
set -euo pipefail
cd "$(dirname "$0")/../.."

REGISTRY="${REGISTRY:-ghcr.io/courier-dev}"
IMAGE_TAG="${IMAGE_TAG:-e2e}"
PULL_POLICY="${PULL_POLICY:-IfNotPresent}"
OPERATOR_NAMESPACE="${E2E_OPERATOR_NAMESPACE:-courier-system}"
NAMESPACE="${E2E_NAMESPACE:-courier-e2e}"
APP="${E2E_APP:-blog}"
MAILPIT="${E2E_MAILPIT:-mailpit}"
WAIT="${WAIT:-true}"
HELM="${HELM:-}"

log() { echo "kind-install: $*" >&2; }

if [[ -z "$HELM" ]]; then
  make --no-print-directory helm >&2
  HELM="$PWD/bin/helm"
fi

# --wait makes a broken image or a crashing operator fail here, with helm's
# message, rather than minutes later in the suite.
wait_flags=()
if [[ "$WAIT" == true ]]; then
  wait_flags=(--wait --timeout 5m)
fi

KUBECTL="${KUBECTL:-kubectl}"
# The chart renders the CRD as a template (crds.install), so helm upgrade
# updates it. A CRD helm does not own yet (installed from the chart's old
# crds/ directory, or applied by hand as test-e2e.sh does) is adopted into
# the release first, as docs/operations.md tells users to: helm refuses to
# take over an object without its release label and annotations.
crd=microserviceapps.apps.courier.dev
if owner=$("$KUBECTL" get crd "$crd" -o jsonpath='{.metadata.annotations.meta\.helm\.sh/release-name}' 2>/dev/null) &&
  [[ -z "$owner" ]]; then
  log "adopting CRD $crd into release courier"
  "$KUBECTL" label crd "$crd" --overwrite app.kubernetes.io/managed-by=Helm >/dev/null
  "$KUBECTL" annotate crd "$crd" --overwrite \
    meta.helm.sh/release-name=courier meta.helm.sh/release-namespace="$OPERATOR_NAMESPACE" >/dev/null
fi

log "operator: $REGISTRY/courier-operator:$IMAGE_TAG ($PULL_POLICY) into $OPERATOR_NAMESPACE"
"$HELM" upgrade --install courier charts/courier \
  --namespace "$OPERATOR_NAMESPACE" --create-namespace \
  --set image.repository="$REGISTRY/courier-operator" \
  --set image.tag="$IMAGE_TAG" \
  --set image.pullPolicy="$PULL_POLICY" \
  "${wait_flags[@]}"

log "namespace $NAMESPACE: restricted Pod Security Standard, enforced"
"$KUBECTL" create namespace "$NAMESPACE" --dry-run=client -o yaml | "$KUBECTL" apply -f - >/dev/null
"$KUBECTL" label namespace "$NAMESPACE" --overwrite \
  pod-security.kubernetes.io/enforce=restricted pod-security.kubernetes.io/enforce-version=latest >/dev/null

log "SMTP sink: $MAILPIT into $NAMESPACE"
mailpit_flags=()
if [[ -n "${MAILPIT_IMAGE:-}" ]]; then
  mailpit_flags=(--set image="$MAILPIT_IMAGE")
fi
"$HELM" upgrade --install "$MAILPIT" hack/kind/mailpit \
  --namespace "$NAMESPACE" --create-namespace \
  "${mailpit_flags[@]}" "${wait_flags[@]}"

# No --wait: helm cannot tell when a MicroserviceApp is Ready; the suite
# waits for its Ready condition and prints why when it does not come.
# The kind node's local-path provisioner ignores the volume size, so 1Gi
# only keeps the claim honest about what a test broker needs.
BROKER_KIND="${BROKER_KIND:-rabbitmq}"
app_flags=(--set broker.kind="$BROKER_KIND" --set broker.managed.replicas="${BROKER_REPLICAS:-3}")
case "$BROKER_KIND" in
  rabbitmq)
    if [[ -n "${BROKER_IMAGE:-}" ]]; then
      app_flags+=(--set broker.managed.image="$BROKER_IMAGE")
    fi
    ;;
  nats)
    if [[ -n "${NATS_IMAGE:-}" ]]; then
      app_flags+=(--set broker.managed.image="$NATS_IMAGE")
    fi
    if [[ -n "${NATS_EXPORTER_IMAGE:-}" ]]; then
      app_flags+=(--set broker.managed.exporterImage="$NATS_EXPORTER_IMAGE")
    fi
    ;;
  *)
    echo "kind-install: BROKER_KIND=$BROKER_KIND: want rabbitmq or nats" >&2
    exit 1
    ;;
esac
log "app: $APP into $NAMESPACE on $BROKER_KIND, mail through $MAILPIT.$NAMESPACE.svc:1025"
"$HELM" upgrade --install "$APP" charts/blog \
  --namespace "$NAMESPACE" \
  --set image.registry="$REGISTRY" \
  --set image.tag="$IMAGE_TAG" \
  --set image.pullPolicy="$PULL_POLICY" \
  --set broker.managed.storageSize=1Gi \
  --set smtp.host="$MAILPIT.$NAMESPACE.svc" \
  --set smtp.port=1025 \
  --set smtp.startTLS=false \
  "${app_flags[@]}"

log "done; run the suite with: make test-e2e"
