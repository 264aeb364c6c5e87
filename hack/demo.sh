#!/usr/bin/env bash
# `make demo`: the whole story on a local control plane.
#
# Starts the control plane, Prometheus and the simulated model servers; installs the CRDs,
# an HTTPRoute to two InferencePools (Gateway API Inference Extension), a RollbackPolicy and
# a ModelDeployment; rolls out v1, then v2 as a canary on the pools' weights.
# At 30% v2 starts failing, and rollguard rolls it back on its own, gradually. A timeline of
# weights, phases and messages is printed, then the triggering value and the rollback record.
# Everything stays up afterwards for `kubectl annotate` and `kubectl get md -w`;
# `make cluster-down` stops it all.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
NS=rollguard-demo
DEMO="$ROOT/.local-cluster/demo"
PROM_PORT=${ROLLGUARD_DEMO_PROMETHEUS_PORT:-9090}
SIM_PORT=${ROLLGUARD_DEMO_SIM_PORT:-9400}
say() { echo "==> $*" >&2; }

bash hack/cluster-up.sh
export KUBECONFIG="$ROOT/.local-cluster/kubeconfig"
export PATH="$ROOT/.local-cluster/bin:$PATH"
mkdir -p "$DEMO"
# A demo run before this one: stop what it left running.
for pidfile in "$DEMO"/*.pid; do
  [[ -f $pidfile ]] && { kill "$(cat "$pidfile")" 2>/dev/null || true; rm -f "$pidfile"; }
done
sleep 1

say "building rollguard and the simulated model servers"
cargo build --quiet --bins

say "Prometheus (Debian's package)"
PROMETHEUS=$(bash hack/install-prometheus.sh)

say "starting the simulated model servers on 127.0.0.1:$SIM_PORT"
nohup ./target/debug/rollguard-model-sim --listen "127.0.0.1:$SIM_PORT" >"$DEMO/sim.log" 2>&1 &
echo $! >"$DEMO/sim.pid"

say "starting Prometheus on 127.0.0.1:$PROM_PORT, scraping revisions 1-5 of $NS/chat every second"
{
  printf 'global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: model-servers\n    static_configs:\n'
  for rev in 1 2 3 4 5; do
    printf "      - targets: ['127.0.0.1:%s']\n        labels:\n          __metrics_path__: /metrics/%s/chat/%s\n          namespace: %s\n          rollguard_model_deployment: chat\n          rollguard_revision: '%s'\n" \
      "$SIM_PORT" "$NS" "$rev" "$NS" "$rev"
  done
} >"$DEMO/prometheus.yml"
rm -rf "$DEMO/prometheus-data"
nohup "$PROMETHEUS" --config.file="$DEMO/prometheus.yml" --storage.tsdb.path="$DEMO/prometheus-data" \
  --web.listen-address="127.0.0.1:$PROM_PORT" >"$DEMO/prometheus.log" 2>&1 &
echo $! >"$DEMO/prometheus.pid"
for _ in $(seq 1 60); do
  curl -fsS "http://127.0.0.1:$PROM_PORT/-/ready" >/dev/null 2>&1 && break
  sleep 0.5
done
curl -fsS "http://127.0.0.1:$PROM_PORT/-/ready" >/dev/null || { echo "error: Prometheus did not start; see $DEMO/prometheus.log" >&2; exit 1; }

say "kubectl apply -f crds/ (and the HTTPRoute CRD from its Go module, the InferencePool CRD of tests/crds)"
kubectl apply --server-side --force-conflicts -f crds/ >/dev/null
kubectl apply --server-side --force-conflicts -f "$(bash hack/router-crds.sh | head -n 1)" >/dev/null
kubectl apply --server-side --force-conflicts -f tests/crds/inferencepools.yaml >/dev/null
kubectl wait --for=condition=Established crd/modeldeployments.rollguard.dev crd/rollbackpolicies.rollguard.dev \
  crd/httproutes.gateway.networking.k8s.io crd/inferencepools.inference.networking.k8s.io --timeout=60s >/dev/null
kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
# A ModelDeployment left mid-canary by an interrupted run holds the traffic finalizer, which
# only a running operator releases: the demo starts from a clean slate without it.
kubectl patch modeldeployment chat -n "$NS" --type=merge -p '{"metadata":{"finalizers":null}}' >/dev/null 2>&1 || true
kubectl delete modeldeployment chat -n "$NS" --ignore-not-found --wait=true >/dev/null

say "starting the operator (log: $DEMO/operator.log)"
nohup ./target/debug/rollguard run --namespace "$NS" --resync-seconds 5 >"$DEMO/operator.log" 2>&1 &
echo $! >"$DEMO/operator.pid"

say "applying an HTTPRoute to the InferencePool chat, a RollbackPolicy and ModelDeployment chat v1"
kubectl apply -n "$NS" -f - >/dev/null <<YAML
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: chat}
spec:
  parentRefs: [{name: llm-gateway}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /v1}}]
    backendRefs: [{group: inference.networking.k8s.io, kind: InferencePool, name: chat}]
---
apiVersion: rollguard.dev/v1alpha1
kind: RollbackPolicy
metadata: {name: llm-demo}
spec:
  provider: {prometheus: {address: "http://127.0.0.1:$PROM_PORT"}}
  interval: 2s
  triggers:
  - name: error-rate
    query: |
      sum(rate(http_requests_total{namespace="{{namespace}}",rollguard_model_deployment="{{name}}",rollguard_revision="{{revision}}",status="5xx"}[10s]))
      / sum(rate(http_requests_total{namespace="{{namespace}}",rollguard_model_deployment="{{name}}",rollguard_revision="{{revision}}"}[10s]))
    operator: Gt
    threshold: 0.05
    severity: Critical
    consecutive: 2
  - name: ttft-p95
    template: VllmTtftP95
    operator: Gt
    threshold: 2.5
    severity: Warning
  rollback:
    mode: Gradual
    gradual: {steps: [20, 5, 0], stepDuration: 3s}
  verification: {window: 20s}
  guardWindow: 30s
YAML
apply_chat() {
  kubectl apply -n "$NS" -f - >/dev/null <<YAML
apiVersion: rollguard.dev/v1alpha1
kind: ModelDeployment
metadata: {name: chat}
spec:
  model: {name: llama-3.1-8b-instruct, version: "$1", uri: hf://meta-llama/Llama-3.1-8B-Instruct}
  replicas: 4
  port: 8000
  template:
    spec:
      containers:
      - name: vllm
        image: vllm/vllm-openai:v0.11.0
        args: ["--model", "meta-llama/Llama-3.1-8B-Instruct"]
  strategy:
    canary:
      steps:
      - setCanaryScale: {matchTrafficWeight: true}
      - setWeight: 10
      - pause: {duration: 6s}
      - setWeight: 30
      - pause: {}
  trafficRouting:
    gatewayAPI:
      httpRoute: chat
      inferencePool:
        endpointPickerRef: {name: chat-epp, port: {number: 9002}}
        canaryEndpointPickerRef: {name: chat-canary-epp, port: {number: 9002}}
  rollbackPolicyRef: {name: llm-demo}
YAML
}

START=$SECONDS
LAST=""
# Prints a timeline line whenever phase, revisions, weights or message change, until "$@" succeeds.
timeline() {
  local deadline=$((SECONDS + 180))
  while :; do
    local line route pods
    line=$(kubectl get md chat -n "$NS" -o jsonpath='{.status.phase}|{.status.stableRevision}|{.status.canaryRevision}|{.status.message}' 2>/dev/null || true)
    route=$(kubectl get httproute chat -n "$NS" -o jsonpath='{range .spec.rules[0].backendRefs[*]}{.name}={.weight} {end}' 2>/dev/null || true)
    # Ready/desired pods of each revision's Deployment (chat-r1=4/4 chat-r2=1/1).
    pods=$(kubectl get deploy -n "$NS" -l rollguard.dev/model-deployment=chat \
      -o jsonpath='{range .items[*]}{.metadata.name}={.status.readyReplicas}/{.spec.replicas} {end}' 2>/dev/null || true)
    if [[ "$line $route $pods" != "$LAST" ]]; then
      IFS='|' read -r phase stable canary message <<<"$line"
      printf '  t+%3ss  %-11s stable=r%-2s canary=%-3s route: %-22s pods: %-22s %s\n' $((SECONDS - START)) "${phase:--}" \
        "${stable:--}" "${canary:+r$canary}" "${route:-}" "${pods:-}" "${message:-}"
      LAST="$line $route $pods"
    fi
    if "$@"; then return 0; fi
    if ((SECONDS > deadline)); then echo "error: the demo did not reach its next stage in 180 s; see $DEMO/operator.log" >&2; exit 1; fi
    sleep 0.5
  done
}
field() { kubectl get md chat -n "$NS" -o jsonpath="$1" 2>/dev/null || true; }
healthy_at() { [[ $(field '{.status.phase}') == Healthy && $(field '{.status.stableRevision}') == "$1" ]]; }
paused_at_30() { [[ $(field '{.status.phase}') == Paused && $(field '{.status.canaryWeight}') == 30 ]]; }
rolled_back() { [[ -n $(field '{.status.lastRollback.completedAt}') ]]; }
verified() { [[ $(field '{.status.lastRollback.verification}') =~ ^(Passed|Failed)$ ]]; }

echo
say "timeline"
apply_chat 2026-11-01
echo "  t+  0s  -- v1 (2026-11-01) applied"
timeline healthy_at 1
apply_chat 2026-11-20
echo "  t+$(printf '%3s' $((SECONDS - START)))s  -- v2 (2026-11-20) applied: a canary of 10% on 1 pod, then 30% on 2 (of 4)"
timeline paused_at_30
curl -fsS -X PUT -H 'content-type: application/json' -d '{"errorRate": 0.4}' \
  "http://127.0.0.1:$SIM_PORT/control/$NS/chat/2" >/dev/null
echo "  t+$(printf '%3s' $((SECONDS - START)))s  -- v2 starts failing: 40% of its responses are 5xx"
timeline rolled_back
timeline verified

echo
say "what triggered it"
kubectl get md chat -n "$NS" -o jsonpath='  trigger {.status.lastRollback.triggerName} on r{.status.lastRollback.fromRevision}: value {.status.lastRollback.value} > threshold {.status.lastRollback.threshold}{"\n"}'
kubectl get md chat -n "$NS" -o jsonpath='{range .status.history[*]}  r{.revision} ({.version}): {.phase}, {.reason}{"\n"}{end}'
say "the triggers now (status.analysis: the restored revision, judged through its verification window)"
kubectl get md chat -n "$NS" -o jsonpath='{range .status.analysis[*]}  {.trigger} on r{.revision}: {.verdict}, {.message}{"\n"}{end}'
say "the rollback record (status.lastRollback)"
kubectl get md chat -n "$NS" -o jsonpath='{.status.lastRollback}' | python3 -m json.tool | sed 's/^/  /'
echo
kubectl get md,rbp -n "$NS"
say "the InferencePools rollguard owns (each selects one revision's pods)"
kubectl get inferencepools -n "$NS" -o jsonpath='{range .items[*]}  {.metadata.name}: revision {.spec.selector.matchLabels.rollguard\.dev/revision}, endpoint picker {.spec.endpointPickerRef.name}{"\n"}{end}'

cat <<MSG

==> The cluster, the operator, Prometheus and the simulated model servers stay up.
    export KUBECONFIG=$KUBECONFIG PATH=$ROOT/.local-cluster/bin:\$PATH
    kubectl get md -n $NS -w                          # watch phases and weights
    kubectl get rollguard -n $NS                      # ModelDeployments and RollbackPolicies
    kubectl annotate md/chat -n $NS rollguard.dev/retry=true   # roll v2 out again (it fails again)
    curl -X PUT -d '{"errorRate":0}' -H 'content-type: application/json' \\
      http://127.0.0.1:$SIM_PORT/control/$NS/chat/2     # ... unless you heal it first
    kubectl annotate md/chat -n $NS rollguard.dev/rollback-to=previous
    kubectl get events -n $NS --field-selector involvedObject.name=chat
    Prometheus: http://127.0.0.1:$PROM_PORT   operator log: $DEMO/operator.log
    Stop everything: make cluster-down
MSG
