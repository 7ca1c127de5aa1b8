#!/usr/bin/env bash
# Provides the envtest control-plane binaries (etcd, kube-apiserver, kubectl)
# and prints the directory that holds them, for KUBEBUILDER_ASSETS.
#
# 1. A cached copy in setup-envtest's own store layout is reused.
# 2. Otherwise setup-envtest downloads them (works for users who are online).
# 3. When the download fails (no internet, as in our sandbox CI), etcd and
#    kube-apiserver are built from the Go module proxy in throwaway modules
#    that replace every k8s.io staging module with its published v0.<minor>.
#
# Everything lands outside the work tree, so CI runs and later builds reuse it.
set -euo pipefail

K8S_VERSION="${ENVTEST_K8S_VERSION:-1.37.2}"
ETCD_VERSION="${ENVTEST_ETCD_VERSION:-3.6.8}"
SETUP_ENVTEST_VERSION="${SETUP_ENVTEST_VERSION:-v0.25.1}"
STORE="${ENVTEST_STORE:-${XDG_DATA_HOME:-$HOME/.local/share}/kubebuilder-envtest}"
ASSETS="$STORE/k8s/${K8S_VERSION}-linux-amd64"
LOCALBIN="${LOCALBIN:-$(cd "$(dirname "$0")/.." && pwd)/bin}"

log() { echo "envtest: $*" >&2; }

have_assets() {
  [[ -x "$ASSETS/etcd" && -x "$ASSETS/kube-apiserver" && -x "$ASSETS/kubectl" ]]
}

if have_assets; then
  echo "$ASSETS"
  exit 0
fi
mkdir -p "$ASSETS"

try_setup_envtest() {
  mkdir -p "$LOCALBIN"
  if [[ ! -x "$LOCALBIN/setup-envtest" ]]; then
    GOBIN="$LOCALBIN" go install "sigs.k8s.io/controller-runtime/tools/setup-envtest@${SETUP_ENVTEST_VERSION}" >&2 || return 1
  fi
  local dir
  dir=$(timeout 60 "$LOCALBIN/setup-envtest" use "$K8S_VERSION" --bin-dir "$STORE" -p path 2>/dev/null) || return 1
  [[ -n "$dir" && -x "$dir/kube-apiserver" ]] || return 1
  cp -f "$dir"/* "$ASSETS/" 2>/dev/null || true
  return 0
}

# throwaway_module DIR MAIN_MODULE VERSION writes a module that requires
# MAIN_MODULE@VERSION and pins every module the main module's go.mod lists at
# v0.0.0 (k8s.io staging repos) to the published STAGING_VERSION.
throwaway_module() {
  local dir=$1 mod=$2 ver=$3 staging=${4:-}
  rm -rf "$dir" && mkdir -p "$dir"
  (
    cd "$dir"
    go mod init envtestbuild >/dev/null 2>&1
    local gomod
    gomod=$(go mod download -json "$mod@$ver" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
    {
      echo "require $mod $ver"
      if [[ -n "$staging" ]]; then
        # Staging modules appear as "k8s.io/<name> v0.0.0" in kubernetes' go.mod.
        grep -E '^\s*k8s\.io/[a-z0-9-]+ v0\.0\.0$' "$gomod" | awk '{print $1}' | sort -u |
          while read -r m; do echo "replace $m => $m $staging"; done
      fi
    } >>go.mod
  )
}

# version_ldflags stamps K8S_VERSION into a Kubernetes binary.
version_ldflags() {
  local v="v${K8S_VERSION}" minor="${K8S_VERSION#*.}"
  minor="${minor%%.*}"
  echo "-X k8s.io/component-base/version.gitVersion=$v -X k8s.io/component-base/version.gitMajor=${K8S_VERSION%%.*} -X k8s.io/component-base/version.gitMinor=$minor"
}

build_from_proxy() {
  local work
  work=$(mktemp -d)
  trap 'rm -rf "$work"' RETURN
  local minor="${K8S_VERSION#*.}"
  local staging="v0.${minor}"

  if [[ ! -x "$ASSETS/etcd" ]]; then
    log "building etcd v${ETCD_VERSION} from the module proxy (about 2 min)"
    throwaway_module "$work/etcd" go.etcd.io/etcd/server/v3 "v${ETCD_VERSION}"
    (cd "$work/etcd"
     cat > tools.go <<'GO'
//go:build tools

package tools

import _ "go.etcd.io/etcd/server/v3"
GO
     go mod tidy >&2 && CGO_ENABLED=0 go build -o "$ASSETS/etcd" go.etcd.io/etcd/server/v3)
  fi

  if [[ ! -x "$ASSETS/kube-apiserver" ]]; then
    log "building kube-apiserver v${K8S_VERSION} from the module proxy (about 11 min on 2 cores)"
    throwaway_module "$work/apiserver" k8s.io/kubernetes "v${K8S_VERSION}" "$staging"
    (cd "$work/apiserver"
     cat > tools.go <<'GO'
//go:build tools

package tools

import _ "k8s.io/kubernetes/cmd/kube-apiserver"
GO
     # Stamped, or the server reports v0.0.0-master and clients that parse
     # it (kubectl version, helm's kubeVersion checks) fail.
     go mod tidy >&2 && CGO_ENABLED=0 go build -ldflags "$(version_ldflags)" \
       -o "$ASSETS/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver)
  fi

  if [[ ! -x "$ASSETS/kubectl" ]]; then
    if command -v kubectl >/dev/null; then
      ln -sf "$(command -v kubectl)" "$ASSETS/kubectl"
    else
      log "building kubectl v${K8S_VERSION} from the module proxy"
      throwaway_module "$work/kubectl" k8s.io/kubernetes "v${K8S_VERSION}" "$staging"
      (cd "$work/kubectl"
       cat > tools.go <<'GO'
//go:build tools

package tools

import _ "k8s.io/kubectl/pkg/cmd"
GO
       go mod tidy >&2 && CGO_ENABLED=0 go build -o "$ASSETS/kubectl" k8s.io/kubernetes/cmd/kubectl)
    fi
  fi
}

if ! try_setup_envtest; then
  log "setup-envtest could not download; building from the Go module proxy instead"
  build_from_proxy
fi
have_assets || { log "envtest binaries missing in $ASSETS"; exit 1; }
echo "$ASSETS"
