#!/usr/bin/env bash
# Starts a single-node Kubernetes cluster on this machine that runs real pods:
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler, containerd
# with runc, the kubelet, a CNI bridge, kube-proxy (iptables), CoreDNS,
# kube-network-policies and local-path-provisioner (the default
# StorageClass).
#
#   hack/cluster/build.sh   # once: binaries and images into the cache
#   hack/cluster/up.sh      # start (stops leftovers of a previous run first)
#   export KUBECONFIG=/var/lib/courier-cluster/kubeconfig
#   hack/cluster/down.sh    # stop; --purge also deletes the node's data
#
# The node lives in its own network namespace (courier-node), joined to the
# host by a veth pair: 10.213.0.1 on the host end, 10.213.0.2 (the API
# server, the kubelet, NodePorts) inside. The namespace has no default route
# and drops new connections towards the veth, so nothing a pod sends leaves
# the machine; the host reaches the API server, pod IPs and ClusterIPs
# through the veth. Every process runs in the host's mount namespace
# (nsenter --net, not `ip netns exec`, which would hide the cgroup and
# volume mounts from containerd).
#
# Data, certificates, logs and the kubeconfig are in $STATE
# (/var/lib/courier-cluster); a restart keeps them, so imported images and
# PersistentVolumes survive. Needs root.
set -Eeuo pipefail
source "$(dirname "$0")/lib.sh"
source "$HERE/pki.sh"

START=$(date +%s.%N)
elapsed() { awk -v s="$START" -v n="$(date +%s.%N)" 'BEGIN { printf "%.1f", n - s }'; }

[[ $(id -u) == 0 ]] || die up "" "must run as root (network namespace, cgroups, mounts)"
for bin in "$ENVTEST_BIN/etcd" "$ENVTEST_BIN/kube-apiserver" "$ENVTEST_BIN/kubectl" \
  "$K8S_BIN/kubelet" "$K8S_BIN/kube-proxy" "$CONTAINERD_BIN/containerd" "$IMAGES/pause.tar"; do
  [[ -e "$bin" ]] || die build "" "$bin is missing: run hack/cluster/build.sh first"
done

# Leftovers of a previous run (processes, chains, the bridge, cgroups, the
# namespace) go first; the data stays. The clock for "Ready after" starts
# once they are gone.
on_error "stopping leftovers (down.sh)"
"$HERE/down.sh" --quiet
log "leftovers stopped in $(elapsed)s"
START=$(date +%s.%N)

mkdir -p "$LOGS" "$RUN" "$STATE/etcd" "$STATE/containerd" "$STATE/kubelet" "$STATE/cni/net.d" \
  "$STATE/cni/networks" "$STATE/local-path" "$STATE/pod-logs" "$STATE/config"
chmod 700 "$STATE/etcd"

# start NAME CMD...: run CMD in the node's network namespace, detached, with
# its output in $LOGS/NAME.log and its pid in $RUN/NAME.pid.
start() {
  local name=$1
  shift
  log "starting $name (log: $LOGS/$name.log)"
  setsid nsenter --net="$NETNS_PATH" -- "$@" >"$LOGS/$name.log" 2>&1 </dev/null &
  echo $! >"$RUN/$name.pid"
}

# wait_until NAME SECONDS WHAT CMD...: poll CMD until it succeeds; fail,
# naming NAME and its log, if NAME's process exits or time runs out.
wait_until() {
  local name=$1 timeout=$2 what=$3
  shift 3
  local pid deadline=$((SECONDS + timeout))
  pid=$(cat "$RUN/$name.pid" 2>/dev/null || true)
  until "$@" >/dev/null 2>&1; do
    if [[ -n "$pid" ]] && ! alive "$pid"; then
      die "$name" "$LOGS/$name.log" "exited while waiting for $what"
    fi
    ((SECONDS < deadline)) || die "$name" "$LOGS/$name.log" "no $what after ${timeout}s"
    sleep 0.2
  done
}

# --- network namespace and veth ---------------------------------------------
setup_network() {
  ip netns add "$NETNS"
  ip link add "$HOST_VETH" type veth peer name "$NODE_VETH" netns "$NETNS"
  ip addr add "$HOST_IP/$VETH_PREFIX" dev "$HOST_VETH"
  ip link set "$HOST_VETH" up
  in_node ip link set lo up
  in_node ip addr add "$NODE_IP/$VETH_PREFIX" dev "$NODE_VETH"
  in_node ip link set "$NODE_VETH" up
  # The host reaches pods and ClusterIPs through the veth, and only those.
  ip route replace "$POD_CIDR" via "$NODE_IP" dev "$HOST_VETH"
  ip route replace "$SERVICE_CIDR" via "$NODE_IP" dev "$HOST_VETH"
  # Inside: forwarding between pods, the bridge through iptables (Services,
  # NetworkPolicies), and no default route.
  # Host-network processes (kube-proxy, hostNetwork pods such as
  # kube-network-policies) need a route to the Service range, or connect()
  # fails with "network is unreachable" before kube-proxy's DNAT can apply.
  # The CNI bridge (created here, adopted by the bridge plugin) is that
  # route: an address no Service claims goes nowhere, never out of the veth.
  in_node ip link add "$CNI_BRIDGE" type bridge
  in_node ip link set "$CNI_BRIDGE" up
  in_node ip route add "$SERVICE_CIDR" dev "$CNI_BRIDGE"
  in_node sysctl -qw net.ipv4.ip_forward=1
  in_node sysctl -qw net.bridge.bridge-nf-call-iptables=1
  # Nothing forwarded leaves towards the veth except replies to the host.
  # mangle runs before filter, where kube-proxy puts its own FORWARD rules.
  in_node iptables -t mangle -A FORWARD -o "$NODE_VETH" -m conntrack ! --ctstate ESTABLISHED,RELATED \
    -m comment --comment "courier-node: nothing leaves the machine" -j DROP
}

# --- cgroups -------------------------------------------------------------------
# The kubelet's cgroupRoot, in every v1 hierarchy (cpuset needs its cpus and
# mems set before anything can join it).
setup_cgroups() {
  local d
  for d in /sys/fs/cgroup/*/; do
    [[ -f "$d/cgroup.procs" ]] || continue
    mkdir -p "$d$CGROUP_ROOT"
    if [[ -f "$d/cpuset.cpus" ]]; then
      cat "$d/cpuset.cpus" >"$d$CGROUP_ROOT/cpuset.cpus"
      cat "$d/cpuset.mems" >"$d$CGROUP_ROOT/cpuset.mems"
    fi
  done
}

# The kubelet sets a few global kernel settings at start
# (vm.overcommit_memory, kernel.panic, ...); down.sh puts them back.
save_sysctls() {
  [[ -s "$STATE/sysctls.saved" ]] && return
  local k
  for k in vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops \
    kernel.keys.root_maxkeys kernel.keys.root_maxbytes; do
    echo "$k=$(sysctl -n "$k")"
  done >"$STATE/sysctls.saved"
}

# --- configuration files ----------------------------------------------------------
write_configs() {
  cat >"$STATE/config/containerd.toml" <<EOF
# containerd $CONTAINERD_VERSION for the local node (config version 4, the
# 2.4 format; version 3 is migrated with a warning at every start).
# Everything under $STATE, nothing in /run/containerd or /var/lib/containerd,
# and no drop-ins from /etc/containerd/conf.d.
version = 4
root = "$STATE/containerd/root"
state = "$STATE/containerd/state"
imports = []
# No NRI (kube-network-policies runs with --disable-nri) and no snapshotters
# but overlayfs.
disabled_plugins = [
  "io.containerd.nri.v1.nri",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.blockfile",
]

[plugins.'io.containerd.server.v1.grpc']
  address = "$CONTAINERD_SOCK"

[plugins.'io.containerd.server.v1.ttrpc']
  address = "$CONTAINERD_SOCK.ttrpc"

# Shim sockets (a unix socket path has at most 108 bytes: not under $STATE).
[plugins.'io.containerd.shim.v1.manager']
  socket_dir = "$SHIM_SOCKETS"

[plugins.'io.containerd.internal.v1.opt']
  path = "$STATE/containerd/opt"

[plugins.'io.containerd.grpc.v1.cri']
  disable_tcp_service = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "$PAUSE_IMAGE"

[plugins.'io.containerd.cri.v1.runtime']
  # This VM lacks CAP_SYS_RESOURCE: without this every sandbox fails with
  # "runc create failed ... can't get final child's PID".
  restrict_oom_score_adj = true
  tolerate_missing_hugetlb_controller = true
  disable_hugetlb_controller = true
  # Pod network namespaces under state, not /var/run/netns.
  netns_mounts_under_state_dir = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = "$(command -v runc)"
        Root = "$RUN/runc"
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["/usr/lib/cni"]
    conf_dir = "$STATE/cni/net.d"
EOF

  cat >"$STATE/cni/net.d/10-courier.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "courier",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$CNI_BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$POD_CIDR"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "$STATE/cni/networks"
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF

  # Pods with dnsPolicy Default get this file: cluster DNS, nothing outside.
  echo "nameserver $DNS_SVC_IP" >"$STATE/config/resolv.conf"

  cat >"$STATE/config/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
tlsCertFile: $PKI/kubelet-serving.crt
tlsPrivateKeyFile: $PKI/kubelet-serving.key
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
imageServiceEndpoint: unix://$CONTAINERD_SOCK
# This kernel has cgroups v1 only.
cgroupDriver: cgroupfs
failCgroupV1: false
cgroupRoot: /$CGROUP_ROOT
failSwapOn: false
# A development node: no allocatable enforcement, no eviction, and imported
# images (there is no registry to pull them again) are never collected.
enforceNodeAllocatable: []
evictionHard: {}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
clusterDNS: [$DNS_SVC_IP]
clusterDomain: $CLUSTER_DOMAIN
resolvConf: $STATE/config/resolv.conf
podLogsDir: $STATE/pod-logs
podCIDR: $POD_CIDR
serializeImagePulls: false
oomScoreAdj: 0
shutdownGracePeriod: 0s
EOF

  cat >"$STATE/config/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: $PKI/kube-proxy.kubeconfig
hostnameOverride: $NODE_NAME
mode: iptables
clusterCIDR: $POD_CIDR
nodePortAddresses: [$NODE_IP/32]
bindAddress: $NODE_IP
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
iptables:
  minSyncPeriod: 1s
# Leave the global conntrack sysctls alone (they are not per namespace).
conntrack:
  maxPerCore: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
EOF
}

# --- control plane ----------------------------------------------------------------
api_ready() { kubectl_admin get --raw /readyz; }

start_control_plane() {
  # etcd on the namespace's loopback, TLS with client certificates (a
  # hostNetwork pod shares that loopback); health and metrics in plain HTTP
  # on 2381, as kubeadm does.
  start etcd "$ENVTEST_BIN/etcd" --name "$NODE_NAME" --data-dir "$STATE/etcd" \
    --listen-client-urls https://127.0.0.1:2379 --advertise-client-urls https://127.0.0.1:2379 \
    --cert-file "$PKI/etcd-server.crt" --key-file "$PKI/etcd-server.key" \
    --client-cert-auth --trusted-ca-file "$PKI/etcd-ca.crt" \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster "$NODE_NAME=http://127.0.0.1:2380" --listen-metrics-urls http://127.0.0.1:2381 \
    --log-level warn
  wait_until etcd 30 "a healthy etcd" in_node curl -fsS http://127.0.0.1:2381/health

  start kube-apiserver "$ENVTEST_BIN/kube-apiserver" \
    --advertise-address "$NODE_IP" --bind-address "$NODE_IP" --secure-port "$APISERVER_PORT" \
    --etcd-servers https://127.0.0.1:2379 --etcd-cafile "$PKI/etcd-ca.crt" \
    --etcd-certfile "$PKI/apiserver-etcd-client.crt" --etcd-keyfile "$PKI/apiserver-etcd-client.key" \
    --client-ca-file "$PKI/ca.crt" \
    --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
    --kubelet-client-certificate "$PKI/apiserver-kubelet-client.crt" \
    --kubelet-client-key "$PKI/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority "$PKI/ca.crt" \
    --kubelet-preferred-address-types InternalIP \
    --requestheader-client-ca-file "$PKI/front-proxy-ca.crt" \
    --requestheader-allowed-names front-proxy-client \
    --requestheader-username-headers X-Remote-User --requestheader-group-headers X-Remote-Group \
    --requestheader-extra-headers-prefix X-Remote-Extra- \
    --proxy-client-cert-file "$PKI/front-proxy-client.crt" --proxy-client-key-file "$PKI/front-proxy-client.key" \
    --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction \
    --service-cluster-ip-range "$SERVICE_CIDR" \
    --service-account-issuer "https://kubernetes.default.svc.$CLUSTER_DOMAIN" \
    --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
    --allow-privileged=true --profiling=false --v=1
  wait_until kube-apiserver 60 "API server ready (/readyz)" api_ready

  start kube-controller-manager "$K8S_BIN/kube-controller-manager" \
    --kubeconfig "$PKI/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$PKI/controller-manager.kubeconfig" \
    --authorization-kubeconfig "$PKI/controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 --leader-elect=false \
    --cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key" \
    --root-ca-file "$PKI/ca.crt" --service-account-private-key-file "$PKI/sa.key" \
    --use-service-account-credentials \
    --allocate-node-cidrs --cluster-cidr "$POD_CIDR" --node-cidr-mask-size 24 \
    --service-cluster-ip-range "$SERVICE_CIDR" --profiling=false --v=1

  start kube-scheduler "$K8S_BIN/kube-scheduler" \
    --kubeconfig "$PKI/scheduler.kubeconfig" \
    --authentication-kubeconfig "$PKI/scheduler.kubeconfig" \
    --authorization-kubeconfig "$PKI/scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --leader-elect=false --profiling=false --v=1
}

# --- node -----------------------------------------------------------------------
ctr_node() { "$CONTAINERD_BIN/ctr" --address "$CONTAINERD_SOCK" -n k8s.io "$@"; }

start_node() {
  start containerd "$CONTAINERD_BIN/containerd" --config "$STATE/config/containerd.toml"
  wait_until containerd 30 "containerd's socket" ctr_node version

  # The sandbox image first: no pod starts without it.
  "$HERE/import-image.sh" "$IMAGES"/*.tar >"$LOGS/import-images.log" 2>&1 ||
    die "image import" "$LOGS/import-images.log" "ctr images import failed"

  save_sysctls
  KUBELET_STARTED=$(date -u +%FT%TZ)
  start kubelet "$K8S_BIN/kubelet" --config "$STATE/config/kubelet.yaml" \
    --kubeconfig "$PKI/kubelet.kubeconfig" --root-dir "$STATE/kubelet" \
    --hostname-override "$NODE_NAME" --node-ip "$NODE_IP" --v=1

  start kube-proxy "$K8S_BIN/kube-proxy" --config "$STATE/config/kube-proxy.yaml" --v=1
}

# node_ready: Ready, as reported by this kubelet (a node kept in etcd from
# the previous run still shows that run's status until the kubelet reports).
node_ready() {
  local ready
  ready=$(kubectl_admin get node "$NODE_NAME" \
    -o jsonpath='{.status.conditions[?(@.type=="Ready")].status} {.status.conditions[?(@.type=="Ready")].lastHeartbeatTime}')
  [[ ${ready% *} == True && ! ${ready#* } < $KUBELET_STARTED ]]
}

# --- add-ons ----------------------------------------------------------------------
apply_addons() {
  # envsubst's list of the variables to fill in, literally.
  # shellcheck disable=SC2016
  local vars='${STATE} ${CLUSTER_DOMAIN} ${DNS_SVC_IP} ${COREDNS_VERSION} ${LOCAL_PATH_PROVISIONER_VERSION} ${KUBE_NETWORK_POLICIES_VERSION} ${BUSYBOX_IMAGE}'
  export STATE CLUSTER_DOMAIN DNS_SVC_IP COREDNS_VERSION LOCAL_PATH_PROVISIONER_VERSION KUBE_NETWORK_POLICIES_VERSION BUSYBOX_IMAGE
  local m
  for m in coredns kube-network-policies local-path-provisioner; do
    envsubst "$vars" <"$HERE/manifests/$m.yaml" | kubectl_admin apply -f - >>"$LOGS/addons.log" 2>&1 ||
      die "$m" "$LOGS/addons.log" "kubectl apply of manifests/$m.yaml failed"
  done
}

# rollout NAMESPACE KIND/NAME: wait for a Deployment or DaemonSet; on failure
# show its pods' state and events.
rollout() {
  local ns=$1 obj=$2
  if ! kubectl_admin -n "$ns" rollout status "$obj" --timeout=120s >>"$LOGS/addons.log" 2>&1; then
    kubectl_admin -n "$ns" get pods -o wide >>"$LOGS/addons.log" 2>&1 || true
    kubectl_admin -n "$ns" get events --sort-by=.lastTimestamp 2>/dev/null | tail -n 15 >>"$LOGS/addons.log" || true
    die "$obj" "$LOGS/addons.log" "not ready after 120s (kubelet log: $LOGS/kubelet.log)"
  fi
}

on_error certificates
make_pki
on_error configuration
write_configs
on_error "network namespace $NETNS"
setup_network
on_error cgroups
setup_cgroups
on_error "control plane"
start_control_plane
on_error node
start_node
on_error add-ons
wait_until kubelet 60 "node $NODE_NAME Ready" node_ready
NODE_READY_AFTER=$(elapsed)
log "node $NODE_NAME Ready ${NODE_READY_AFTER}s after start"
apply_addons
rollout kube-system deployment/coredns
rollout kube-system daemonset/kube-network-policies
rollout local-path-storage deployment/local-path-provisioner
log "CoreDNS, kube-network-policies and local-path-provisioner ready $(elapsed)s after start"

cat <<EOF

The local node is up: Kubernetes $K8S_VERSION, node $NODE_NAME at $NODE_IP
(Ready after ${NODE_READY_AFTER}s). From this shell:

  export KUBECONFIG=$KUBECONFIG_ADMIN
  kubectl get nodes,pods -A

Images come from this machine only (imagePullPolicy: Never or IfNotPresent):
  hack/cluster/import-image.sh IMAGE.tar...
Logs: $LOGS/<component>.log   Stop: hack/cluster/down.sh [--purge]
EOF
