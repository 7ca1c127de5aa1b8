#!/usr/bin/env bash
# Benchmarks the Courier operator (issue 12): convergence of N apps against
# the client's rate limit, apply-to-objects latency, memory per app against a
# peer operator written the kubebuilder scaffold's way (bench/operator/peer),
# and API requests at rest. Real processes against real API servers
# (envtest's etcd and kube-apiserver, one per scenario) and one real
# RabbitMQ node per scenario with queues (Debian's rabbitmq-server, started by test/brokertest).
# Prints the raw measurements and writes bench/operator/RESULTS.md.
#
#   bench/operator/run.sh                          # defaults below
#   SIZES=100,500 QUEUE_SIZES=100 bench/operator/run.sh
#   SIZES=100,500,1000 QUEUE_SIZES= LATENCY_RUNS=1 STEADY_WINDOW=0 OUT=/tmp/mem.md PROFILES=/tmp/heap bench/operator/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

SIZES=${SIZES-100,500,1000}              # apps without queues (empty: none)
QUEUE_SIZES=${QUEUE_SIZES-100,500,1000}  # apps with queues on one RabbitMQ (empty: none)
PEER_SIZES=${PEER_SIZES-100,500,1000}    # apps for the peer's memory (empty: none)
QPS=${QPS:-200}                          # the operator's --kube-api-qps
BURST=${BURST:-200}                      # --kube-api-burst
WORKERS=${WORKERS:-8}                    # --max-concurrent-reconciles
LATENCY_RUNS=${LATENCY_RUNS:-50}
STEADY_WINDOW=${STEADY_WINDOW:-330s}     # at rest, 100 apps with queues: one broker resync (5 min) and 11 queue polls
OUT=${OUT:-bench/operator/RESULTS.md}    # a partial run writes elsewhere, e.g. OUT=/tmp/results.md
PROFILES=${PROFILES:-}                   # keep every memory reading's heap profile in this directory

export KUBEBUILDER_ASSETS="${KUBEBUILDER_ASSETS:-$(LOCALBIN="$PWD/bin" ./hack/envtest.sh)}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
CGO_ENABLED=0 go build -o "$work/courier-operator" ./operator/cmd
go build -o "$work/peer" ./bench/operator/peer
go build -o "$work/driver" ./bench/operator

mkdir -p "$work/run" ${PROFILES:+"$PROFILES"}
"$work/driver" -operator "$work/courier-operator" -peer "$work/peer" -crds config/crd/bases \
	-work "$work/run" -report "$work/report.md" \
	-sizes "$SIZES" -queue-sizes "$QUEUE_SIZES" -peer-sizes "$PEER_SIZES" \
	-qps "$QPS" -burst "$BURST" -workers "$WORKERS" \
	-latency-runs "$LATENCY_RUNS" -steady-window "$STEADY_WINDOW" -profiles "$PROFILES" | tee "$work/raw.txt"

{
	cat "$work/report.md"
	echo "## Raw output"
	echo
	echo "SIZES=$SIZES QUEUE_SIZES=$QUEUE_SIZES PEER_SIZES=$PEER_SIZES QPS=$QPS BURST=$BURST WORKERS=$WORKERS LATENCY_RUNS=$LATENCY_RUNS STEADY_WINDOW=$STEADY_WINDOW bench/operator/run.sh"
	echo
	echo '```'
	cat "$work/raw.txt"
	echo '```'
} >"$OUT"
echo "wrote $OUT" >&2
