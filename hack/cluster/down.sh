#!/usr/bin/env bash
# Stops the local node that up.sh started, in an order that leaves nothing
# behind, and is safe to run any number of times (up.sh runs it first):
#
#   1. kube-controller-manager and kube-scheduler, so nothing is recreated;
#   2. every pod deleted gracefully (the kubelet still runs: CNI teardown,
#      volume unmounts, preStop hooks);
#   3. the kubelet, kube-proxy and containerd;
#   4. a sweep: leftover containers and shims, pod network namespaces,
#      mounts under $STATE, kube-proxy's rules (kube-proxy --cleanup), the
#      cni0 bridge;
#   5. kube-apiserver and etcd, any other process left in the namespace;
#   6. the namespace and the veth (and with them the host routes), the
#      kubelet's cgroups, and the kernel settings the kubelet changed.
#
#   hack/cluster/down.sh           keep the data (etcd, images, volumes, certificates)
#   hack/cluster/down.sh --purge   and delete $STATE too
set -Eeuo pipefail
source "$(dirname "$0")/lib.sh"
on_error down

PURGE=false QUIET=false
for arg in "$@"; do
  case $arg in
  --purge) PURGE=true ;;
  --quiet) QUIET=true ;;
  *) die down "" "unknown argument $arg (--purge, --quiet)" ;;
  esac
done
say() { $QUIET || log "$@"; }

[[ $(id -u) == 0 ]] || die down "" "must run as root"
mkdir -p "$LOGS" "$RUN"

# stop NAME [SECONDS]: SIGTERM the process in $RUN/NAME.pid, SIGKILL after
# SECONDS (10).
stop() {
  local name=$1 timeout=${2:-10} pid
  pid=$(cat "$RUN/$name.pid" 2>/dev/null || true)
  rm -f "$RUN/$name.pid"
  [[ -n "$pid" ]] && alive "$pid" || return 0
  say "stopping $name ($pid)"
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + timeout))
  while alive "$pid" && ((SECONDS < deadline)); do sleep 0.1; done
  if alive "$pid"; then
    say "$name did not stop in ${timeout}s: SIGKILL (log: $LOGS/$name.log)"
    kill -KILL "$pid" 2>/dev/null || true
    while alive "$pid"; do sleep 0.1; done
  fi
}

running() {
  local pid
  pid=$(cat "$RUN/$1.pid" 2>/dev/null || true)
  [[ -n "$pid" ]] && alive "$pid"
}

have_netns() { [[ -e "$NETNS_PATH" ]]; }

# 1 and 2: with the API server and the kubelet still up.
stop kube-controller-manager
stop kube-scheduler
if running kube-apiserver && running kubelet && kubectl_admin get --raw /readyz >/dev/null 2>&1; then
  say "deleting every pod gracefully"
  kubectl_admin delete pods --all --all-namespaces --wait --timeout=90s >"$LOGS/down-pods.log" 2>&1 ||
    say "some pods did not go in 90s, swept below (log: $LOGS/down-pods.log)"
fi

# 3
stop kubelet 20
stop kube-proxy
stop containerd 20

# 4: whatever the kubelet and containerd left. Shims and containers are
# found by their namespace and runc root, never by name.
if have_netns; then
  for pid in $(ip netns pids "$NETNS" 2>/dev/null); do
    [[ $(readlink "/proc/$pid/exe" 2>/dev/null) == "$CONTAINERD_BIN/containerd-shim-runc-v2" ]] || continue
    say "killing leftover shim $pid"
    kill -KILL "$pid" 2>/dev/null || true
  done
fi
for root in "$RUN"/runc/*/; do
  [[ -d "$root" ]] || continue
  for id in $(runc --root "$root" list -q 2>/dev/null); do
    say "removing leftover container $id"
    runc --root "$root" kill "$id" KILL 2>/dev/null || true
    runc --root "$root" delete --force "$id" 2>/dev/null || true
  done
done
# Processes still in the kubelet's cgroups (containers runc lost track of).
for procs in /sys/fs/cgroup/*/"$CGROUP_ROOT"/; do
  [[ -d "$procs" ]] || continue
  find "$procs" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u | while read -r pid; do
    kill -KILL "$pid" 2>/dev/null || true
  done
done
if have_netns; then
  in_node "$K8S_BIN/kube-proxy" --cleanup >"$LOGS/kube-proxy-cleanup.log" 2>&1 ||
    say "kube-proxy --cleanup failed (log: $LOGS/kube-proxy-cleanup.log)"
  in_node ip link del "$CNI_BRIDGE" 2>/dev/null || true
fi
# Pod network namespaces, overlay and volume mounts, deepest first.
if [[ -d "$STATE" ]]; then
  { findmnt -rn -o TARGET | grep -E "^$STATE/" || true; } | sort -r | while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done
fi

# 5
stop kube-apiserver 20
stop etcd
# Anything else still in the namespace is ours (it is the node's own) and
# would keep its ports.
if have_netns; then
  for pid in $(ip netns pids "$NETNS" 2>/dev/null); do
    say "killing leftover process $pid ($(cat "/proc/$pid/comm" 2>/dev/null || true))"
    kill -KILL "$pid" 2>/dev/null || true
  done
fi

# 6
if have_netns; then
  ip netns del "$NETNS"
fi
ip link del "$HOST_VETH" 2>/dev/null || true
for d in /sys/fs/cgroup/*/"$CGROUP_ROOT"; do
  [[ -d "$d" ]] || continue
  find "$d" -depth -type d -exec rmdir {} + 2>/dev/null || true
  [[ -d "$d" ]] && say "could not remove cgroup $d"
done
if [[ -s "$STATE/sysctls.saved" ]]; then
  sysctl -q -p "$STATE/sysctls.saved" >/dev/null 2>&1 || say "could not restore $STATE/sysctls.saved"
  rm -f "$STATE/sysctls.saved"
fi

# Sockets of shims that are gone.
rm -rf "$SHIM_SOCKETS"
if $PURGE && [[ -d "$STATE" ]]; then
  say "deleting $STATE"
  rm -rf "$STATE"
fi
say "stopped"
