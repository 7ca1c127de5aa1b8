#!/usr/bin/env bash
# Builds every binary and image the local node needs, at the versions in
# versions.env, into a cache outside the work tree:
#
#   $CACHE/<component>-<version>/   binaries
#   $CACHE/images/*.tar             image archives for `ctr images import`
#   $CACHE/logs/build-*.log         one build log per component
#
# What is already there is skipped, so a second run takes seconds. Builds run
# one after another (each one alone keeps 2 cores busy). etcd, kube-apiserver
# and kubectl come from hack/envtest.sh; runc, the CNI plugins, iptables and
# busybox from Debian (apt-get).
#
#   hack/cluster/build.sh            everything
#   hack/cluster/build.sh kubernetes one component (envtest debian kubernetes
#                                    containerd coredns kube-network-policies
#                                    local-path-provisioner pause images)
set -euo pipefail
source "$(dirname "$0")/lib.sh"

BUILD_LOGS="$CACHE/logs"
TIMES="$CACHE/logs/build-times.txt"
mkdir -p "$BUILD_LOGS" "$IMAGES"
export GOFLAGS="${GOFLAGS:-} -mod=mod"
export CGO_ENABLED=0

# timed COMPONENT CMD...: run CMD with its output in the component's build
# log, and record how long it took.
timed() {
  local component=$1 start rc=0
  shift
  local logfile="$BUILD_LOGS/build-$component.log"
  log "building $component (log: $logfile)"
  start=$(date +%s)
  "$@" >"$logfile" 2>&1 || rc=$?
  ((rc == 0)) || die "$component" "$logfile" "build failed (exit $rc)"
  local secs=$(($(date +%s) - start))
  echo "$(date -u +%FT%TZ) $component ${secs}s" >>"$TIMES"
  log "built $component in ${secs}s"
}

# throwaway_module DIR REQUIRE... : a module that requires the given
# module@version pairs, in a fresh directory (hack/envtest.sh's recipe).
throwaway_module() {
  local dir=$1
  shift
  rm -rf "$dir" && mkdir -p "$dir"
  (cd "$dir" && go mod init courier-cluster-build >/dev/null 2>&1)
  local req
  for req in "$@"; do echo "require ${req%@*} ${req#*@}" >>"$dir/go.mod"; done
}

# tools_file DIR PKG...: a tools.go that imports the packages to build, so
# `go mod tidy` records all their dependencies.
tools_file() {
  local dir=$1
  shift
  {
    printf '//go:build tools\n\npackage tools\n\nimport (\n'
    local p
    for p in "$@"; do printf '\t_ "%s"\n' "$p"; done
    printf ')\n'
  } >"$dir/tools.go"
}

# finish TMPDIR DIR: move a finished build into place in one step, so an
# interrupted build never looks complete.
finish() { rm -rf "$2" && mv "$1" "$2"; }

build_envtest() {
  if [[ -x "$ENVTEST_BIN/kube-apiserver" && -x "$ENVTEST_BIN/etcd" && -x "$ENVTEST_BIN/kubectl" ]]; then return; fi
  # Someone may be building them right now: wait instead of racing them.
  local waited=0
  while pgrep -f "go build -o $ENVTEST_BIN/" >/dev/null && ((waited < 3600)); do
    ((waited % 60 == 0)) && log "waiting for a running hack/envtest.sh build ($ENVTEST_BIN)"
    sleep 10
    waited=$((waited + 10))
  done
  timed envtest env ENVTEST_K8S_VERSION="${K8S_VERSION#v}" "$ROOT/hack/envtest.sh"
}

build_debian() {
  local missing=()
  command -v runc >/dev/null || missing+=(runc)
  [[ -x /usr/lib/cni/bridge ]] || missing+=(containernetworking-plugins)
  command -v iptables >/dev/null || missing+=(iptables)
  command -v conntrack >/dev/null || missing+=(conntrack)
  command -v ip >/dev/null || missing+=(iproute2)
  [[ -x /bin/busybox ]] || missing+=(busybox-static)
  command -v openssl >/dev/null || missing+=(openssl)
  command -v nsenter >/dev/null || missing+=(util-linux)
  ((${#missing[@]} == 0)) && return
  timed debian sh -c "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y ${missing[*]}"
}

# kubelet, kube-controller-manager, kube-scheduler and kube-proxy in one go
# build, so the packages they share compile once.
build_kubernetes() {
  [[ -x "$K8S_BIN/kubelet" ]] && return
  local work="$CACHE/work/kubernetes" staging="v0.${K8S_VERSION#v1.}"
  local cmds=(kubelet kube-controller-manager kube-scheduler kube-proxy)
  k8s_build() {
    throwaway_module "$work" "k8s.io/kubernetes@$K8S_VERSION"
    local gomod
    gomod=$(cd "$work" && go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
    # Staging modules appear as "k8s.io/<name> v0.0.0" in kubernetes' go.mod.
    grep -E '^\s*k8s\.io/[a-z0-9-]+ v0\.0\.0$' "$gomod" | awk '{print $1}' | sort -u |
      while read -r m; do echo "replace $m => $m $staging"; done >>"$work/go.mod"
    tools_file "$work" "${cmds[@]/#/k8s.io/kubernetes/cmd/}"
    local minor=${K8S_VERSION#v1.}
    minor=${minor%%.*}
    (cd "$work" && go mod tidy &&
      go build -trimpath -o "$work/bin/" \
        -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean" \
        "${cmds[@]/#/k8s.io/kubernetes/cmd/}")
  }
  timed kubernetes k8s_build
  finish "$work/bin" "$K8S_BIN"
}

build_containerd() {
  [[ -x "$CONTAINERD_BIN/containerd" ]] && return
  local work="$CACHE/work/containerd" mod=github.com/containerd/containerd/v2
  local pkgs=("$mod/cmd/containerd" "$mod/cmd/ctr" "$mod/cmd/containerd-shim-runc-v2")
  containerd_build() {
    throwaway_module "$work"
    tools_file "$work" "${pkgs[@]}"
    # The three commands, not the module alone: `go get` of the module does
    # not pull the commands' own dependencies.
    (cd "$work" && go get "${pkgs[@]/%/@$CONTAINERD_VERSION}" && go mod tidy &&
      go build -trimpath -tags "no_btrfs no_devmapper no_zfs urfave_cli_no_docs" -o "$work/bin/" \
        -ldflags "-s -w -X $mod/version.Version=$CONTAINERD_VERSION" "${pkgs[@]}")
  }
  timed containerd containerd_build
  finish "$work/bin" "$CONTAINERD_BIN"
}

build_coredns() {
  [[ -x "$COREDNS_BIN/coredns" ]] && return
  local work="$CACHE/work/coredns"
  coredns_build() {
    throwaway_module "$work" "github.com/coredns/coredns@$COREDNS_VERSION"
    tools_file "$work" github.com/coredns/coredns
    (cd "$work" && go mod tidy && go build -trimpath -ldflags "-s -w" -o "$work/bin/coredns" github.com/coredns/coredns)
  }
  timed coredns coredns_build
  finish "$work/bin" "$COREDNS_BIN"
}

# kube-network-policies queues packets to its user-space verdict with the
# nftables "queue" expression, which this kernel lacks (CONFIG_NFT_QUEUE is
# not set: adding the rule fails with "netlink receive: no such file or
# directory"). The kernel has the xtables NFQUEUE target and nft_compat, so
# the build swaps each queue expression for that target; nothing else
# changes. The patch is checked: the build fails if upstream code moved.
build_kube_network_policies() {
  [[ -x "$KNP_BIN/kube-network-policies" ]] && return
  local work="$CACHE/work/kube-network-policies" mod=sigs.k8s.io/kube-network-policies
  knp_build() {
    rm -rf "$work" && mkdir -p "$work"
    local dir
    dir=$(cd "$work" && go mod download -json "$mod@$KUBE_NETWORK_POLICIES_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
    cp -r "$dir" "$work/src" && chmod -R u+w "$work/src"
    local pkg="$work/src/pkg/networkpolicy"
    sed '\|^//go:build ignore$|d' "$HERE/knp/nfqueue_compat.go" >"$pkg/nfqueue_compat.go"
    perl -0pi -e 's/queue := &expr\.Queue\{Num: uint16\(c\.config\.QueueID\)\}\n\tif c\.config\.FailOpen \{\n\t\tqueue\.Flag = expr\.QueueFlagBypass\n\t\}/queue := nfqueueTarget(uint16(c.config.QueueID), c.config.FailOpen)/g' "$pkg/controller.go"
    perl -0pi -e 's/&expr\.Queue\{Num: uint16\(n\.nfQueueID\), Flag: expr\.QueueFlagBypass\}/nfqueueTarget(uint16(n.nfQueueID), true)/g' "$pkg/dnsagent.go"
    if grep -n 'expr\.Queue' "$pkg"/*.go | grep -v _test.go; then
      echo "patch did not apply: expr.Queue still used" >&2
      return 1
    fi
    (cd "$work/src" && go build -trimpath -ldflags "-s -w" -o "$work/bin/kube-network-policies" ./cmd)
  }
  timed kube-network-policies knp_build
  finish "$work/bin" "$KNP_BIN"
}

build_local_path_provisioner() {
  [[ -x "$LPP_BIN/local-path-provisioner" ]] && return
  local work="$CACHE/work/local-path-provisioner" mod=github.com/rancher/local-path-provisioner
  lpp_build() {
    throwaway_module "$work" "$mod@$LOCAL_PATH_PROVISIONER_VERSION"
    tools_file "$work" "$mod"
    (cd "$work" && go mod tidy && go build -trimpath -ldflags "-s -w" -o "$work/bin/local-path-provisioner" "$mod")
  }
  timed local-path-provisioner lpp_build
  finish "$work/bin" "$LPP_BIN"
}

# The pause binary and every image are cheap; they are rebuilt each run, and
# zero timestamps and no VCS stamp keep unchanged images byte-identical, so
# an import of an unchanged image adds nothing.
build_pause() {
  mkdir -p "$CACHE/pause"
  (cd "$ROOT" && go build -trimpath -buildvcs=false -ldflags "-s -w" -o "$CACHE/pause/pause" ./hack/cluster/pause) >"$BUILD_LOGS/build-pause.log" 2>&1 ||
    die pause "$BUILD_LOGS/build-pause.log" "build failed"
}

# image NAME ARGS...: write $IMAGES/NAME.tar with hack/image.
image() {
  local name=$1
  shift
  "$CACHE/bin/image" -o "$IMAGES/$name.tar" "$@" >>"$BUILD_LOGS/build-images.log" 2>&1 ||
    die "image $name" "$BUILD_LOGS/build-images.log" "image build failed"
}

build_images() {
  mkdir -p "$CACHE/bin"
  : >"$BUILD_LOGS/build-images.log"
  (cd "$ROOT" && go build -o "$CACHE/bin/image" ./hack/image) >>"$BUILD_LOGS/build-images.log" 2>&1 ||
    die "image tool" "$BUILD_LOGS/build-images.log" "go build ./hack/image failed"

  image pause -ref "$PAUSE_IMAGE" -file "$CACHE/pause/pause=/pause" -entrypoint /pause -user 65535:65535

  # busybox: Debian's static binary and one link per applet, as a layer tar
  # with fixed owners and timestamps so rebuilds give the same digest.
  local bb="$CACHE/work/busybox"
  rm -rf "$bb" && mkdir -p "$bb/root/bin" "$bb/root/tmp" "$bb/root/etc"
  cp /bin/busybox "$bb/root/bin/busybox"
  local applet
  for applet in $(/bin/busybox --list); do
    [[ $applet == busybox ]] || ln -s busybox "$bb/root/bin/$applet"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n' >"$bb/root/etc/passwd"
  printf 'root:x:0:\nnobody:x:65534:\n' >"$bb/root/etc/group"
  chmod 1777 "$bb/root/tmp"
  tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$bb/root" -cf "$bb/layer.tar" .
  image busybox -ref "$BUSYBOX_IMAGE" -layer "$bb/layer.tar" -cmd /bin/sh

  image coredns -ref "courier.local/coredns:$COREDNS_VERSION" -file "$COREDNS_BIN/coredns=/coredns" \
    -entrypoint /coredns -user 65532:65532
  image local-path-provisioner -ref "courier.local/local-path-provisioner:$LOCAL_PATH_PROVISIONER_VERSION" \
    -file "$LPP_BIN/local-path-provisioner=/usr/bin/local-path-provisioner" -entrypoint /usr/bin/local-path-provisioner
  image kube-network-policies -ref "courier.local/kube-network-policies:$KUBE_NETWORK_POLICIES_VERSION-nftcompat" \
    -file "$KNP_BIN/kube-network-policies=/bin/netpol" -entrypoint /bin/netpol
  log "images in $IMAGES"
}

ALL=(envtest debian kubernetes containerd coredns kube-network-policies local-path-provisioner pause images)
for component in "${@:-${ALL[@]}}"; do
  case $component in
  envtest) build_envtest ;;
  debian) build_debian ;;
  kubernetes) build_kubernetes ;;
  containerd) build_containerd ;;
  coredns) build_coredns ;;
  kube-network-policies) build_kube_network_policies ;;
  local-path-provisioner) build_local_path_provisioner ;;
  pause) build_pause ;;
  images) build_images ;;
  *) die build "" "unknown component $component (one of: ${ALL[*]})" ;;
  esac
done
log "binaries and images are in $CACHE"
