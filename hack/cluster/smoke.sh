#!/usr/bin/env bash
# Proves the local node works end to end, against the cluster up.sh started:
#
#   - a Deployment (busybox httpd, restricted Pod Security, HTTP readiness
#     probe) with a PersistentVolumeClaim from the default StorageClass
#     becomes Ready and writes to its volume;
#   - DNS from a pod: kubernetes.default.svc.cluster.local and the
#     Service's own name;
#   - the Service's ClusterIP answers from a pod and from the host (through
#     the veth);
#   - a NetworkPolicy that denies ingress is enforced (host and pod are cut
#     off), and lifting it restores traffic.
#
#   hack/cluster/smoke.sh          (KEEP=1 leaves the namespace for a look)
set -euo pipefail
source "$(dirname "$0")/lib.sh"

NS=courier-smoke
k() { kubectl_admin -n "$NS" "$@"; }
step() { log "smoke: $*"; }
fail() {
  echo "cluster: smoke: FAIL: $*" >&2
  k get pods,pvc,svc,networkpolicy -o wide >&2 || true
  k get events --sort-by=.lastTimestamp 2>/dev/null | tail -n 15 >&2 || true
  echo "cluster: smoke: logs in $LOGS (kubelet.log, containerd.log); KEEP=1 keeps namespace $NS" >&2
  exit 1
}
cleanup() { [[ ${KEEP:-} == 1 ]] || kubectl_admin delete namespace "$NS" --wait=false >/dev/null 2>&1 || true; }
trap cleanup EXIT

kubectl_admin get --raw /readyz >/dev/null 2>&1 || die smoke "$LOGS/kube-apiserver.log" "no API server: run hack/cluster/up.sh first"
if kubectl_admin get namespace "$NS" >/dev/null 2>&1; then
  step "deleting the previous run's namespace"
  kubectl_admin delete namespace "$NS" --timeout=120s >/dev/null
fi

step "apply: Deployment with an HTTP probe and a PVC, a client pod, a Service"
applied=$(date +%s.%N)
kubectl_admin apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Namespace
metadata:
  name: $NS
  labels:
    pod-security.kubernetes.io/enforce: restricted
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: data
  namespace: $NS
spec:
  accessModes: [ReadWriteOnce]
  resources:
    requests:
      storage: 64Mi
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: $NS
spec:
  replicas: 1
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      terminationGracePeriodSeconds: 2
      securityContext:
        runAsNonRoot: true
        runAsUser: 65534
        runAsGroup: 65534
        fsGroup: 65534
        seccompProfile: {type: RuntimeDefault}
      containers:
      - name: httpd
        image: $BUSYBOX_IMAGE
        imagePullPolicy: Never
        command: [sh, -c, 'mkdir -p /tmp/www && echo courier-smoke >/tmp/www/index.html && date >/data/hello && exec httpd -f -p 8080 -h /tmp/www']
        ports:
        - {name: http, containerPort: 8080}
        readinessProbe:
          httpGet: {path: /, port: http}
          periodSeconds: 1
        securityContext:
          allowPrivilegeEscalation: false
          capabilities: {drop: [ALL]}
        volumeMounts:
        - {name: data, mountPath: /data}
      volumes:
      - name: data
        persistentVolumeClaim: {claimName: data}
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: $NS
spec:
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: http}
---
apiVersion: v1
kind: Pod
metadata:
  name: client
  namespace: $NS
  labels: {app: client}
spec:
  terminationGracePeriodSeconds: 1
  securityContext:
    runAsNonRoot: true
    runAsUser: 65534
    seccompProfile: {type: RuntimeDefault}
  containers:
  - name: client
    image: $BUSYBOX_IMAGE
    imagePullPolicy: Never
    command: [sleep, "3600"]
    securityContext:
      allowPrivilegeEscalation: false
      capabilities: {drop: [ALL]}
EOF

k rollout status deployment/web --timeout=120s >/dev/null || fail "deployment/web not Ready"
ready_after=$(awk -v s="$applied" -v n="$(date +%s.%N)" 'BEGIN { printf "%.1f", n - s }')
k wait --for=condition=Ready pod/client --timeout=60s >/dev/null || fail "pod/client not Ready"
step "web Ready ${ready_after}s after apply (PVC provisioned, probe passing)"

[[ $(k get pvc data -o jsonpath='{.status.phase}') == Bound ]] || fail "PVC data not Bound"
k exec deploy/web -- cat /data/hello >/dev/null || fail "nothing written to the PVC"
step "PVC Bound ($(k get pvc data -o jsonpath='{.spec.volumeName}')) and written"

dns=$(k exec client -- nslookup "kubernetes.default.svc.$CLUSTER_DOMAIN" 2>&1) || fail "DNS from a pod: $dns"
grep -q "$KUBERNETES_SVC_IP" <<<"$dns" || fail "kubernetes.default.svc did not resolve to $KUBERNETES_SVC_IP: $dns"
step "DNS from a pod: kubernetes.default.svc.$CLUSTER_DOMAIN is $KUBERNETES_SVC_IP"

cluster_ip=$(k get svc web -o jsonpath='{.spec.clusterIP}')
# The first request can race kube-proxy's rules for a new Service: retry.
# (Debian's busybox 1.35 wget crashes with -T: busybox timeout instead.)
from_pod() { k exec client -- timeout 3 wget -qO- "http://web.$NS.svc.$CLUSTER_DOMAIN/" 2>&1; }
from_host() { curl -sS --max-time 3 "http://$cluster_ip/" 2>&1; }
retry() { for _ in $(seq 1 20); do "$@" | grep -q courier-smoke && return 0; sleep 0.5; done; return 1; }
retry from_pod || fail "Service web by name from a pod: $(from_pod)"
step "pod -> web.$NS.svc (DNS + ClusterIP $cluster_ip): ok"
retry from_host || fail "ClusterIP $cluster_ip from the host through the veth: $(from_host)"
step "host -> ClusterIP $cluster_ip through the veth: ok"

step "NetworkPolicy: deny all ingress to web"
kubectl_admin apply -f - >/dev/null <<EOF
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: web-deny-ingress
  namespace: $NS
spec:
  podSelector:
    matchLabels: {app: web}
  policyTypes: [Ingress]
EOF
blocked() { ! "$1" | grep -q courier-smoke; }
denied=false
for _ in $(seq 1 20); do
  if blocked from_pod && blocked from_host; then denied=true; break; fi
  sleep 0.5
done
$denied || fail "NetworkPolicy not enforced: web still answers (kube-network-policies: kubectl -n kube-system logs ds/kube-network-policies)"
step "pod -> web and host -> web are denied"
k delete networkpolicy web-deny-ingress >/dev/null
retry from_pod || fail "traffic did not come back after deleting the NetworkPolicy: $(from_pod)"
step "policy deleted: pod -> web answers again"

step "PASS"
