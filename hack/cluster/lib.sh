# Shared by build.sh, up.sh, down.sh, import-image.sh and smoke.sh: where
# things live and how errors are reported. Sourced, never run.
#
# Environment (all optional):
#   COURIER_CLUSTER_CACHE  built binaries and images
#                          (${XDG_CACHE_HOME:-$HOME/.cache}/courier-cluster)
#   COURIER_CLUSTER_STATE  the node's data, certificates, logs, kubeconfig
#                          (/var/lib/courier-cluster)

# Variables here are used by the scripts that source this file.
# shellcheck disable=SC2034
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
# shellcheck source=versions.env
source "$HERE/versions.env"

CACHE="${COURIER_CLUSTER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/courier-cluster}"
STATE="${COURIER_CLUSTER_STATE:-/var/lib/courier-cluster}"
LOGS="$STATE/logs"
RUN="$STATE/run"
PKI="$STATE/pki"

# Binaries, one cache directory per component and version.
K8S_BIN="$CACHE/kubernetes-$K8S_VERSION"
CONTAINERD_BIN="$CACHE/containerd-$CONTAINERD_VERSION"
COREDNS_BIN="$CACHE/coredns-$COREDNS_VERSION"
# "-nftcompat": patched to queue through the xtables NFQUEUE target, see
# build.sh (this kernel has no nft "queue" expression).
KNP_BIN="$CACHE/kube-network-policies-$KUBE_NETWORK_POLICIES_VERSION-nftcompat"
LPP_BIN="$CACHE/local-path-provisioner-$LOCAL_PATH_PROVISIONER_VERSION"
IMAGES="$CACHE/images"
# etcd, kube-apiserver and kubectl: hack/envtest.sh's store.
ENVTEST_BIN="${ENVTEST_STORE:-${XDG_DATA_HOME:-$HOME/.local/share}/kubebuilder-envtest}/k8s/${K8S_VERSION#v}-linux-amd64"

# The node: its network namespace, the veth to the host and the addresses.
NETNS=courier-node
NETNS_PATH=/run/netns/$NETNS
NODE_NAME=courier-node
HOST_VETH=courier-veth0
NODE_VETH=eth0
HOST_IP=10.213.0.1
NODE_IP=10.213.0.2
VETH_PREFIX=30
POD_CIDR=10.244.0.0/24
SERVICE_CIDR=10.96.0.0/16
KUBERNETES_SVC_IP=10.96.0.1
DNS_SVC_IP=10.96.0.10
CLUSTER_DOMAIN=cluster.local
APISERVER_PORT=6443
CNI_BRIDGE=cni0
# Every cgroup the kubelet creates lives under this one (cgroupRoot), so stop
# can remove them all.
CGROUP_ROOT=courier-node

CONTAINERD_SOCK="$STATE/containerd/containerd.sock"
SHIM_SOCKETS=/run/courier-cluster/shims
KUBECONFIG_ADMIN="$STATE/kubeconfig"

log() { echo "cluster: $*" >&2; }

# die COMPONENT LOGFILE MESSAGE: stop with a message that names the component
# and where to look, and the log's last lines.
die() {
  local component=$1 logfile=$2
  shift 2
  echo "cluster: $component: $*" >&2
  if [[ -n "$logfile" ]]; then
    echo "cluster: $component: log: $logfile" >&2
    if [[ -f "$logfile" ]]; then
      echo "----- last lines of $logfile -----" >&2
      tail -n 20 "$logfile" >&2
      echo "-----" >&2
    fi
  fi
  exit 1
}

# alive PID: the process exists and is not a zombie (this VM's init reaps
# orphans only every second or so, and kill -0 succeeds on a zombie).
alive() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [[ ${stat%% *} != Z ]]
}

# on_error STEP: from here on, a failing command names STEP (the component or
# phase), the command and where the logs are, instead of failing silently
# under set -e. Scripts set -E so functions inherit the trap.
on_error() {
  CURRENT_STEP=$1
  trap 'echo "cluster: $CURRENT_STEP: failed: $BASH_COMMAND (${BASH_SOURCE[0]##*/} line $LINENO); logs: $LOGS" >&2' ERR
}

# in_node CMD...: run CMD in the node's network namespace, with the host's
# mount namespace (unlike `ip netns exec`, which remounts /sys and hides the
# cgroup mounts and the kubelet's volume mounts from containerd).
in_node() { nsenter --net="$NETNS_PATH" -- "$@"; }

# Tools first from the cache, then the system.
export PATH="$CONTAINERD_BIN:$K8S_BIN:$ENVTEST_BIN:/usr/sbin:/sbin:$PATH"

kubectl_admin() { "$ENVTEST_BIN/kubectl" --kubeconfig "$KUBECONFIG_ADMIN" "$@"; }
