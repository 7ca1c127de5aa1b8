# Certificates and kubeconfigs of the local node, made with openssl. Sourced
# by up.sh after lib.sh; everything lands in $PKI and is made once (delete
# $STATE, or run down.sh --purge, to start over with new ones).

# cert NAME SUBJECT EKU [SAN]: a key and a certificate signed by the cluster
# CA (or by $CA). EKU is serverAuth, clientAuth or both; SAN as openssl
# writes it.
cert() {
  local name=$1 subj=$2 eku=$3 san=${4:-} ca=${CA:-ca}
  [[ -s "$PKI/$name.crt" ]] && return
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$PKI/$name.key" -out "$PKI/$name.csr" -subj "$subj" 2>/dev/null
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$eku"
    [[ -n "$san" ]] && echo "subjectAltName=$san"
  } >"$PKI/$name.ext"
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/$ca.crt" -CAkey "$PKI/$ca.key" -CAcreateserial \
    -days 3650 -sha256 -extfile "$PKI/$name.ext" -out "$PKI/$name.crt" 2>/dev/null
  rm -f "$PKI/$name.csr" "$PKI/$name.ext"
  chmod 600 "$PKI/$name.key"
}

# kubeconfig FILE USER CERT: a self-contained kubeconfig for the API server on
# the node's veth address, authenticating with CERT (a name in $PKI).
kubeconfig() {
  local file=$1 user=$2 name=$3
  (umask 077 && cat >"$file") <<EOF
apiVersion: v1
kind: Config
clusters:
- name: courier-node
  cluster:
    server: https://$NODE_IP:$APISERVER_PORT
    certificate-authority-data: $(base64 -w0 "$PKI/ca.crt")
users:
- name: $user
  user:
    client-certificate-data: $(base64 -w0 "$PKI/$name.crt")
    client-key-data: $(base64 -w0 "$PKI/$name.key")
contexts:
- name: courier-node
  context:
    cluster: courier-node
    user: $user
current-context: courier-node
EOF
}

# ca NAME CN: a self-signed certificate authority.
ca() {
  local name=$1 cn=$2
  [[ -s "$PKI/$name.crt" ]] && return
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 -sha256 \
    -keyout "$PKI/$name.key" -out "$PKI/$name.crt" -subj "/CN=$cn" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
  chmod 600 "$PKI/$name.key"
}

make_pki() {
  mkdir -p "$PKI"
  chmod 700 "$PKI"
  ca ca courier-node-ca
  # The front proxy's own CA (requestheader authentication): aggregated APIs,
  # and the controller manager and scheduler read it at start.
  ca front-proxy-ca courier-node-front-proxy-ca
  # etcd's own CA, so only the API server's etcd client certificate (and no
  # other cluster identity) opens etcd.
  ca etcd-ca courier-node-etcd-ca
  CA=etcd-ca cert etcd-server "/CN=$NODE_NAME" serverAuth,clientAuth "DNS:localhost,IP:127.0.0.1"
  CA=etcd-ca cert apiserver-etcd-client "/CN=kube-apiserver-etcd-client" clientAuth
  cert apiserver "/CN=kube-apiserver" serverAuth \
    "DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.$CLUSTER_DOMAIN,DNS:localhost,IP:$NODE_IP,IP:$KUBERNETES_SVC_IP,IP:127.0.0.1"
  # The API server's client identity towards the kubelet (logs, exec,
  # port-forward), authorized by the kubelet's webhook.
  cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" clientAuth
  cert admin "/O=system:masters/CN=courier-admin" clientAuth
  cert kubelet "/O=system:nodes/CN=system:node:$NODE_NAME" clientAuth
  cert kubelet-serving "/CN=$NODE_NAME" serverAuth "DNS:$NODE_NAME,IP:$NODE_IP"
  cert controller-manager "/CN=system:kube-controller-manager" clientAuth
  cert scheduler "/CN=system:kube-scheduler" clientAuth
  cert kube-proxy "/CN=system:kube-proxy" clientAuth
  CA=front-proxy-ca cert front-proxy-client "/CN=front-proxy-client" clientAuth
  if [[ ! -s "$PKI/sa.key" ]]; then
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$PKI/sa.key" 2>/dev/null
    openssl pkey -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
    chmod 600 "$PKI/sa.key"
  fi

  kubeconfig "$KUBECONFIG_ADMIN" courier-admin admin
  kubeconfig "$PKI/kubelet.kubeconfig" "system:node:$NODE_NAME" kubelet
  kubeconfig "$PKI/controller-manager.kubeconfig" system:kube-controller-manager controller-manager
  kubeconfig "$PKI/scheduler.kubeconfig" system:kube-scheduler scheduler
  kubeconfig "$PKI/kube-proxy.kubeconfig" system:kube-proxy kube-proxy
}
