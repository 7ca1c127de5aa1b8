#!/usr/bin/env bash
# Shows the local node's processes and their memory: each component up.sh
# started, the containerd shims, and the pods' processes (everything in the
# kubelet's cgroups), with the total resident set size.
#
#   hack/cluster/status.sh
set -euo pipefail
source "$(dirname "$0")/lib.sh"

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }

total=0
row() {
  local what=$1 pid=$2 rss
  rss=$(rss_kib "$pid")
  rss=${rss:-0}
  total=$((total + rss))
  printf '%-28s %8s %8d MiB\n' "$what" "$pid" $((rss / 1024))
}

printf '%-28s %8s %12s\n' COMPONENT PID RSS
seen=" "
for f in "$RUN"/*.pid; do
  [[ -e "$f" ]] || continue
  pid=$(cat "$f")
  alive "$pid" || { printf '%-28s %8s %12s\n' "$(basename "$f" .pid)" "$pid" "not running"; continue; }
  row "$(basename "$f" .pid)" "$pid"
  seen+="$pid "
done
if [[ -e "$NETNS_PATH" ]]; then
  for pid in $(ip netns pids "$NETNS" 2>/dev/null); do
    [[ $seen == *" $pid "* ]] && continue
    row "$(cat "/proc/$pid/comm" 2>/dev/null || echo '?') (node netns)" "$pid"
    seen+="$pid "
  done
fi
if [[ -d /sys/fs/cgroup/memory/$CGROUP_ROOT ]]; then
  for pid in $(find "/sys/fs/cgroup/memory/$CGROUP_ROOT" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -un); do
    [[ $seen == *" $pid "* ]] && continue
    row "pod: $(cat "/proc/$pid/comm" 2>/dev/null || echo '?')" "$pid"
    seen+="$pid "
  done
fi
printf '%-28s %8s %8d MiB\n' TOTAL "" $((total / 1024))
