#!/usr/bin/env bash
# Creates a kind cluster for the end-to-end suite, builds the operator's and
# the four services' images from this tree, loads them into the node and
# installs the charts and Mailpit (install.sh):
#
#   hack/kind/up.sh && make test-e2e; hack/kind/down.sh
#
# Needs docker and kind (go install sigs.k8s.io/kind@v0.33.0). An existing
# cluster of the same name is reused: the images are rebuilt and reloaded,
# the releases upgraded.
#
# Environment: KIND_CLUSTER (courier-e2e), KIND_NODE_IMAGE, KIND (kind),
# REGISTRY and IMAGE_TAG (ghcr.io/courier-dev, e2e), and install.sh's.
set -euo pipefail
cd "$(dirname "$0")/../.."

CLUSTER="${KIND_CLUSTER:-courier-e2e}"
# Kubernetes 1.37, what go.mod's k8s.io modules and envtest are. This is kind
# v0.33.0's own default node image, pinned by digest here so that another
# kind release cannot change the cluster under the suite unnoticed.
NODE_IMAGE="${KIND_NODE_IMAGE:-kindest/node:v1.37.0@sha256:a1ed56cfb0e7b93589bdf97c8cd566405a265939e3620fc4f5de89adff580ae5}"
KIND="${KIND:-kind}"
export REGISTRY="${REGISTRY:-ghcr.io/courier-dev}"
export IMAGE_TAG="${IMAGE_TAG:-e2e}"
# The images exist only inside the node, loaded below: Never makes a missing
# one fail as ErrImageNeverPull instead of pulling someone else's.
export PULL_POLICY="${PULL_POLICY:-Never}"

log() { echo "kind-up: $*" >&2; }

for tool in "$KIND" docker; do
  if ! command -v "$tool" >/dev/null; then
    log "$tool not found (kind: go install sigs.k8s.io/kind@v0.33.0)"
    exit 1
  fi
done

if "$KIND" get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  log "reusing kind cluster $CLUSTER"
else
  log "creating kind cluster $CLUSTER from $NODE_IMAGE"
  "$KIND" create cluster --name "$CLUSTER" --image "$NODE_IMAGE" --wait 3m
fi
# Points the current kubeconfig context at the cluster, also when reused;
# install.sh and the suite use the current context.
"$KIND" export kubeconfig --name "$CLUSTER"

log "building the images $REGISTRY/<binary>:$IMAGE_TAG"
make --no-print-directory docker-build REGISTRY="$REGISTRY" TAG="$IMAGE_TAG" CONTAINER_TOOL=docker
# The Makefile's BINARIES: the operator and the four services.
images=()
for b in courier-operator gateway users posts mailer; do
  images+=("$REGISTRY/$b:$IMAGE_TAG")
done
log "loading ${images[*]} into $CLUSTER"
if ! "$KIND" load docker-image --name "$CLUSTER" "${images[@]}"; then
  # Docker's containerd image store (the default of new Docker 29 installs)
  # can save an image index naming content it does not hold, which the node
  # refuses ("content digest ... not found", kind issue 3795). An archive of
  # the node's platform only holds everything it names.
  platform="linux/$(docker version -f '{{.Server.Arch}}')"
  log "kind load docker-image failed; loading a $platform archive instead"
  archive="$(mktemp -d)/images.tar"
  docker image save --platform "$platform" -o "$archive" "${images[@]}"
  "$KIND" load image-archive --name "$CLUSTER" "$archive"
  rm -rf "$(dirname "$archive")"
fi

hack/kind/install.sh
