#!/usr/bin/env bash
# Starts the local control plane on loopback (idempotent): etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler and kwok, run by `kwokctl --runtime binary` from
# binaries built by hack/build-control-plane.sh, plus fake nodes so Deployments become
# Available. Writes the kubeconfig to .local-cluster/kubeconfig.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE="$ROOT/.local-cluster"
KUBECONFIG_OUT="$STATE/kubeconfig"
NAME=rollguard
NODES=${ROLLGUARD_FAKE_NODES:-2}

BIN_DIR=$(bash "$ROOT/hack/build-control-plane.sh" | tail -n 1)
export PATH="$BIN_DIR:$PATH"
export KWOK_WORKDIR="$STATE/kwok"
kubectl() { "$BIN_DIR/kubectl" --kubeconfig "$KUBECONFIG_OUT" "$@"; }

log() { echo "cluster-up: $*" >&2; }

healthy() {
  [[ -f "$KUBECONFIG_OUT" ]] && kubectl get --raw /readyz >/dev/null 2>&1
}

mkdir -p "$STATE"
if healthy; then
  log "already running ($KUBECONFIG_OUT)"
else
  if [[ -d "$KWOK_WORKDIR/clusters/$NAME" ]]; then
    # Left over from a stopped machine or a crash: start it again, or start afresh.
    log "restarting the existing cluster"
    if ! kwokctl --name "$NAME" start cluster --timeout 120s >&2 || ! healthy; then
      log "restart failed; recreating"
      kwokctl --name "$NAME" delete cluster >&2 || true
      rm -rf "$KWOK_WORKDIR/clusters/$NAME" "$KUBECONFIG_OUT"
    fi
  fi
  if ! healthy; then
    log "creating the cluster"
    kwokctl --name "$NAME" create cluster \
      --runtime binary \
      --kubeconfig "$KUBECONFIG_OUT" \
      --etcd-binary "$BIN_DIR/etcd" \
      --kube-apiserver-binary "$BIN_DIR/kube-apiserver" \
      --kube-controller-manager-binary "$BIN_DIR/kube-controller-manager" \
      --kube-scheduler-binary "$BIN_DIR/kube-scheduler" \
      --kwok-controller-binary "$BIN_DIR/kwok" \
      --disable-qps-limits \
      --wait 120s \
      --timeout 180s >&2
  fi
fi

# Fake nodes: kwok keeps them Ready and runs their pods. Roomy, with GPUs, so model
# server pods schedule; a pod asking for more than a node has stays Pending.
for i in $(seq 0 $((NODES - 1))); do
  kubectl apply --server-side --field-manager=rollguard-cluster-up -f - >/dev/null <<YAML
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$i
  annotations:
    node.alpha.kubernetes.io/ttl: "0"
    kwok.x-k8s.io/node: fake
  labels:
    type: kwok
    kubernetes.io/arch: amd64
    kubernetes.io/hostname: kwok-node-$i
    kubernetes.io/os: linux
    kubernetes.io/role: agent
    node-role.kubernetes.io/agent: ""
status:
  allocatable: {cpu: "64", memory: 512Gi, pods: "250", nvidia.com/gpu: "8"}
  capacity: {cpu: "64", memory: 512Gi, pods: "250", nvidia.com/gpu: "8"}
YAML
done
kubectl wait --for=condition=Ready node --all --timeout=120s >/dev/null
# The default ServiceAccount must exist before pods can be created in a namespace.
for _ in $(seq 1 60); do
  kubectl get serviceaccount default -n default >/dev/null 2>&1 && break
  sleep 1
done
# The binaries beside the state, so a person can use this kubectl: export PATH=.local-cluster/bin:$PATH
ln -sfn "$BIN_DIR" "$STATE/bin"
log "ready: export KUBECONFIG=$KUBECONFIG_OUT PATH=$STATE/bin:\$PATH"
