#!/usr/bin/env bash
# Builds, without a Docker engine, every image the demo and the end-to-end
# suite run on the local node (hack/cluster), as archives that
# hack/cluster/import-image.sh loads into the node's containerd:
#
#   - the operator and the four services, from this tree: the same images
#     the Dockerfile describes (one static binary, nonroot 65532:65532);
#   - RabbitMQ from Debian's packages (mmdebstrap, with the machine's package
#     sources), laid out like the official image the operator expects
#     (user rabbitmq uid/gid 999, HOME /var/lib/rabbitmq, logs to stdout);
#   - NATS: nats-server from the Go module proxy, at the version go.mod
#     requires (the one the tests embed), laid out like the official
#     nats:<version>-alpine image the operator defaults to (nats-server on
#     the PATH, run with the operator's flags as arguments); and the
#     Prometheus exporter of the managed NATS StatefulSet's sidecar, from
#     this tree (hack/images/natsexporter: the upstream
#     prometheus-nats-exporter is not on the module proxy);
#   - Mailpit, the SMTP catcher the suite reads e-mail from, from the Go
#     module proxy.
#
#   hack/images/build.sh [OUT_DIR]   # prints one archive path per line
#
# OUT_DIR/images.env names the images for the installers (BROKER_IMAGE,
# NATS_IMAGE, NATS_EXPORTER_IMAGE, MAILPIT_IMAGE, REGISTRY, IMAGE_TAG).
#
# Environment: REGISTRY (ghcr.io/courier-dev) and IMAGE_TAG (dev) name the
# project's images; RABBITMQ_IMAGE, NATS_IMAGE, NATS_EXPORTER_IMAGE and
# MAILPIT_IMAGE the others (see below).
# Everything is cached outside the tree; an unchanged input is not rebuilt,
# and hack/image writes identical archives for identical inputs.
set -euo pipefail
cd "$(dirname "$0")/../.."

REGISTRY="${REGISTRY:-ghcr.io/courier-dev}"
IMAGE_TAG="${IMAGE_TAG:-dev}"
# Pinned: Debian bookworm's rabbitmq-server and Mailpit's release.
RABBITMQ_VERSION=3.10.8
RABBITMQ_DEBIAN_VERSION=3.10.8-1.1+deb12u1
RABBITMQ_IMAGE="${RABBITMQ_IMAGE:-courier.local/rabbitmq:$RABBITMQ_VERSION}"
MAILPIT_VERSION=v1.33.1
# nats-server: the version go.mod requires, so the pods run the server the
# tests embed.
NATS_VERSION=$(go list -m -f '{{.Version}}' github.com/nats-io/nats-server/v2) ||
  { echo "images: cannot read nats-server's version from go.mod" >&2; exit 1; }
NATS_IMAGE="${NATS_IMAGE:-courier.local/nats:${NATS_VERSION#v}}"
NATS_EXPORTER_IMAGE="${NATS_EXPORTER_IMAGE:-courier.local/nats-exporter:$IMAGE_TAG}"
MAILPIT_IMAGE="${MAILPIT_IMAGE:-courier.local/mailpit:$MAILPIT_VERSION}"
DEBIAN_SUITE=bookworm

CACHE="${COURIER_IMAGES_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/courier-images}"
OUT="${1:-$CACHE/archives}"
mkdir -p "$CACHE/bin" "$OUT"

log() { echo "images: $*" >&2; }
die() { echo "images: $*" >&2; exit 1; }

IMAGE_TOOL="$CACHE/bin/image"
go build -o "$IMAGE_TOOL" ./hack/image || die "building hack/image failed"

# The project's binaries: static (SQLite is the pure-Go driver), stripped of
# paths, with the VCS revision in build_info.
declare -A packages=(
  [courier-operator]=./operator/cmd
  [gateway]=./services/gateway
  [users]=./services/users
  [posts]=./services/posts
  [mailer]=./services/mailer
)
for b in courier-operator gateway users posts mailer; do
  CGO_ENABLED=0 GOOS=linux GOARCH=amd64 go build -trimpath -ldflags "-s -w" \
    -o "$CACHE/bin/$b" "${packages[$b]}" || die "go build ${packages[$b]} failed"
  "$IMAGE_TOOL" -ref "$REGISTRY/$b:$IMAGE_TAG" -o "$OUT/$b.tar" \
    -file "$CACHE/bin/$b=/$b" -entrypoint "/$b" -user 65532:65532 \
    -label org.opencontainers.image.source=https://github.com/courier-dev/courier >/dev/null ||
    die "image $b failed"
  echo "$OUT/$b.tar"
done

# RabbitMQ's root file system, built once per version. The operator's pods
# run it as 999:999 with HOME /var/lib/rabbitmq (the official image's
# layout), so the Debian user and group move to 999. Debian's
# /usr/sbin/rabbitmq-server wrapper logs to a file and switches users; the
# image runs the real script under /usr/lib/rabbitmq/bin instead.
rootfs="$CACHE/rabbitmq-$RABBITMQ_VERSION-$DEBIAN_SUITE.tar"
if [[ ! -s "$rootfs" ]]; then
  command -v mmdebstrap >/dev/null || die "mmdebstrap not found (apt-get install mmdebstrap)"
  log "building RabbitMQ $RABBITMQ_VERSION from Debian $DEBIAN_SUITE with mmdebstrap (about 2 min)"
  # The .tar extension makes mmdebstrap write a tarball, not a directory.
  mmdebstrap --variant=apt --include="rabbitmq-server=$RABBITMQ_DEBIAN_VERSION,procps" \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --customize-hook='chroot "$1" sh -ec "
      groupmod -g 999 rabbitmq && usermod -u 999 -g 999 rabbitmq
      mkdir -p /var/lib/rabbitmq /var/log/rabbitmq /etc/rabbitmq
      chown -R 999:999 /var/lib/rabbitmq /var/log/rabbitmq /etc/rabbitmq
      rm -rf /var/lib/apt/lists/* /var/cache/apt/*"' \
    "$DEBIAN_SUITE" "${rootfs%.tar}.partial.tar" >&2 || die "mmdebstrap failed"
  mv "${rootfs%.tar}.partial.tar" "$rootfs"
fi
"$IMAGE_TOOL" -ref "$RABBITMQ_IMAGE" -o "$OUT/rabbitmq.tar" -layer "$rootfs" \
  -entrypoint /usr/lib/rabbitmq/bin/rabbitmq-server -user 999:999 \
  -env HOME=/var/lib/rabbitmq -env RABBITMQ_LOGS=- \
  -env PATH=/usr/lib/rabbitmq/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  >/dev/null || die "image rabbitmq failed"
echo "$OUT/rabbitmq.tar"

# nats-server from the module proxy, in a throwaway module so that it
# builds with its own go.mod's dependencies, as its releases do; static,
# like the official image's binary.
nats_server="$CACHE/bin/nats-server-$NATS_VERSION"
if [[ ! -x "$nats_server" ]]; then
  log "building nats-server $NATS_VERSION from the module proxy (about 2 min)"
  work=$(mktemp -d)
  (cd "$work" && go mod init natsbuild >/dev/null 2>&1 &&
    go get "github.com/nats-io/nats-server/v2@$NATS_VERSION" >&2 &&
    CGO_ENABLED=0 GOOS=linux GOARCH=amd64 go build -trimpath -ldflags "-s -w" \
      -o "$nats_server.partial" github.com/nats-io/nats-server/v2) ||
    { rm -rf "$work" "$nats_server.partial"; die "building nats-server failed"; }
  rm -rf "$work"
  mv "$nats_server.partial" "$nats_server"
fi
# The official alpine image's layout: nats-server in /usr/local/bin on the
# PATH (the operator's preStop hook runs `nats-server --signal`), the
# arguments the pod gives it appended. No user of its own is needed: the
# pods run it as 1000:1000, as here.
"$IMAGE_TOOL" -ref "$NATS_IMAGE" -o "$OUT/nats.tar" -file "$nats_server=/usr/local/bin/nats-server" \
  -entrypoint /usr/local/bin/nats-server -user 1000:1000 \
  -env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin >/dev/null ||
  die "image nats failed"
echo "$OUT/nats.tar"

# The NATS exporter, from this tree, as the project's binaries.
CGO_ENABLED=0 GOOS=linux GOARCH=amd64 go build -trimpath -ldflags "-s -w" \
  -o "$CACHE/bin/nats-exporter" ./hack/images/natsexporter || die "go build ./hack/images/natsexporter failed"
"$IMAGE_TOOL" -ref "$NATS_EXPORTER_IMAGE" -o "$OUT/nats-exporter.tar" \
  -file "$CACHE/bin/nats-exporter=/prometheus-nats-exporter" -entrypoint /prometheus-nats-exporter \
  -user 65532:65532 >/dev/null || die "image nats-exporter failed"
echo "$OUT/nats-exporter.tar"

# Mailpit from the module proxy, in a throwaway module.
mailpit="$CACHE/bin/mailpit-$MAILPIT_VERSION"
if [[ ! -x "$mailpit" ]]; then
  log "building Mailpit $MAILPIT_VERSION from the module proxy (about 2 min)"
  work=$(mktemp -d)
  (cd "$work" && go mod init mailpitbuild >/dev/null 2>&1 &&
    go get "github.com/axllent/mailpit@$MAILPIT_VERSION" >&2 &&
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$mailpit" github.com/axllent/mailpit) ||
    { rm -rf "$work"; die "building Mailpit failed"; }
  rm -rf "$work"
fi
"$IMAGE_TOOL" -ref "$MAILPIT_IMAGE" -o "$OUT/mailpit.tar" -file "$mailpit=/mailpit" \
  -entrypoint /mailpit -user 65534:65534 >/dev/null || die "image mailpit failed"
echo "$OUT/mailpit.tar"

# What the installers need to name these images, for hack/demo.sh and the
# local end-to-end run to source.
cat >"$OUT/images.env" <<EOF
REGISTRY=$REGISTRY
IMAGE_TAG=$IMAGE_TAG
BROKER_IMAGE=$RABBITMQ_IMAGE
NATS_IMAGE=$NATS_IMAGE
NATS_EXPORTER_IMAGE=$NATS_EXPORTER_IMAGE
MAILPIT_IMAGE=$MAILPIT_IMAGE
EOF
