#!/usr/bin/env bash
# Builds a release of Courier without publishing it: what the release
# workflow (.github/workflows/release.yaml) checks before it pushes, and
# what `make release-dry-run` runs here.
#
#   VERSION=v1.2.3 hack/release/build.sh OUT_DIR
#
# From a clean clone of HEAD tagged VERSION (the tag already there, as in
# the workflow, or made in the clone only; uncommitted changes are left out,
# as a release leaves them out), into OUT_DIR:
#
#   bin/linux_<arch>/<binary>   static binaries cross-compiled for every
#                               ARCHES entry. The Go toolchain stamps the tag
#                               and commit into their build information, which
#                               is what build_info reports (services/kit reads
#                               runtime/debug.ReadBuildInfo): no -ldflags -X,
#                               since there is no variable for it to set.
#   images/<binary>.oci.tar     one multi-platform image per binary, an OCI
#                               image layout whose index holds every arch
#                               (hack/image -format oci), with OCI labels;
#   charts/<chart>-<ver>.tgz    both charts, version VERSION without its v,
#                               appVersion VERSION (the default image tag);
#   CHANGELOG.md                the commits since the previous v* tag, by area;
#   SHA256SUMS                  of the binaries and charts;
#   release.env                 VERSION and REVISION, for the steps after.
#
# Then it checks: every binary's stamped version is VERSION and its revision
# the clone's commit, unmodified; every image index holds one image per arch
# (test/release checks each holds a binary for its platform); every chart's
# version and appVersion.
#
# Environment: VERSION (required, v-prefixed semver), BINARIES (all five),
# ARCHES (amd64 arm64), REGISTRY (ghcr.io/courier-dev), HELM (./bin/helm).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

VERSION="${VERSION:?set VERSION, e.g. VERSION=v1.2.3}"
BINARIES="${BINARIES:-courier-operator gateway users posts mailer}"
ARCHES="${ARCHES:-amd64 arm64}"
REGISTRY="${REGISTRY:-ghcr.io/courier-dev}"
HELM="${HELM:-$ROOT/bin/helm}"
OUT="${1:?usage: VERSION=v1.2.3 hack/release/build.sh OUT_DIR}"

log() { echo "release: $*" >&2; }
die() { echo "release: $*" >&2; exit 1; }

[[ "$VERSION" =~ ^v(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z.-]+)?$ ]] ||
  die "VERSION $VERSION is not a v-prefixed semantic version (v1.2.3, v1.2.3-rc.1)"
CHART_VERSION="${VERSION#v}"
[[ -x "$HELM" ]] || die "helm not found at $HELM (make helm)"

declare -A packages=(
  [courier-operator]=./operator/cmd
  [gateway]=./services/gateway
  [users]=./services/users
  [posts]=./services/posts
  [mailer]=./services/mailer
)

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
rm -rf "$OUT/src" "$OUT/tools" "$OUT/bin" "$OUT/images" "$OUT/charts"
mkdir -p "$OUT/bin" "$OUT/images" "$OUT/charts"

# A clean clone: the tree Go stamps must have no uncommitted change, or the
# version gets a +dirty suffix. --shared borrows the objects, so it is quick.
src="$OUT/src"
git clone --quiet --shared --no-checkout "$ROOT" "$src"
REVISION=$(git -C "$ROOT" rev-parse HEAD)
git -C "$src" checkout --quiet --detach "$REVISION"
if tagged=$(git -C "$src" rev-parse --verify --quiet "refs/tags/$VERSION^{commit}"); then
  [[ "$tagged" == "$REVISION" ]] || die "tag $VERSION is on $tagged, not on HEAD $REVISION"
else
  git -C "$src" tag "$VERSION" "$REVISION"
fi
CREATED=$(git -C "$src" show -s --format=%cI "$REVISION")
log "$VERSION at $REVISION"

for arch in $ARCHES; do
  mkdir -p "$OUT/bin/linux_$arch"
  for b in $BINARIES; do
    pkg="${packages[$b]:-}"
    [[ -n "$pkg" ]] || die "unknown binary $b (known: ${!packages[*]})"
    log "go build $b for linux/$arch"
    (cd "$src" && CGO_ENABLED=0 GOOS=linux GOARCH="$arch" go build -buildvcs=true -trimpath -ldflags "-s -w" \
      -o "$OUT/bin/linux_$arch/$b" "$pkg") || die "go build $pkg for $arch failed"
    # What build_info will report: the main module's version and the
    # vcs.revision and vcs.modified settings.
    info=$(go version -m "$OUT/bin/linux_$arch/$b")
    grep -qE "^[[:space:]]+mod[[:space:]]+github.com/courier-dev/courier[[:space:]]+$VERSION([[:space:]]|$)" <<<"$info" ||
      die "$b ($arch) is stamped $(awk '$1=="mod"{print $3}' <<<"$info"), not $VERSION"
    grep -qE "^[[:space:]]+build[[:space:]]+vcs.revision=$REVISION$" <<<"$info" ||
      die "$b ($arch) does not carry revision $REVISION"
    grep -qE "^[[:space:]]+build[[:space:]]+vcs.modified=false$" <<<"$info" ||
      die "$b ($arch) was built from a modified tree"
  done
done

# Outside the clone, whose tree stays clean.
IMAGE_TOOL="$OUT/tools/image"
(cd "$src" && go build -o "$IMAGE_TOOL" ./hack/image) || die "building hack/image failed"
platforms=$(tr ' ' ',' <<<"$ARCHES")
for b in $BINARIES; do
  "$IMAGE_TOOL" -format oci -platforms "$platforms" -ref "$REGISTRY/$b:$VERSION" \
    -o "$OUT/images/$b.oci.tar" -file "$OUT/bin/linux_{arch}/$b=/$b" -entrypoint "/$b" -user 65532:65532 \
    -label "org.opencontainers.image.title=$b" \
    -label "org.opencontainers.image.version=$VERSION" \
    -label "org.opencontainers.image.revision=$REVISION" \
    -label "org.opencontainers.image.created=$CREATED" \
    -label "org.opencontainers.image.source=https://github.com/courier-dev/courier" >&2 || die "image $b failed"
done

for chart in courier blog; do
  "$HELM" lint --quiet "$src/charts/$chart" >/dev/null || die "helm lint charts/$chart failed"
  "$HELM" package "$src/charts/$chart" --version "$CHART_VERSION" --app-version "$VERSION" \
    --destination "$OUT/charts" >/dev/null || die "helm package charts/$chart failed"
  meta=$("$HELM" show chart "$OUT/charts/$chart-$CHART_VERSION.tgz")
  grep -qx "version: $CHART_VERSION" <<<"$meta" || die "chart $chart has $(grep '^version:' <<<"$meta"), want $CHART_VERSION"
  grep -qxE "appVersion: \"?$VERSION\"?" <<<"$meta" || die "chart $chart has $(grep '^appVersion:' <<<"$meta"), want $VERSION"
done

VERSION="$VERSION" "$ROOT/hack/release/changelog.sh" "$src" >"$OUT/CHANGELOG.md"
(cd "$OUT" && sha256sum bin/*/* charts/*.tgz >SHA256SUMS)
printf 'VERSION=%s\nREVISION=%s\n' "$VERSION" "$REVISION" >"$OUT/release.env"
log "done: $OUT"
