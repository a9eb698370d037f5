#!/usr/bin/env bash
# The Gateway API on a real kind cluster (through KUBECONFIG), installed as docs/gateway-api.md
# says: `helm install` with gatewayAPI.installCRDs=true, then a GatewayClass, a Gateway, a real
# app (agnhost) behind an HTTPRoute and an IapPolicy attached to the Gateway:
#   (a) the GatewayClass is Accepted, the Gateway Programmed, the route Accepted and Protected;
#   (b) the route serves the app (its policy admits allUsers), a route no policy covers answers
#       403, and an unknown host 404;
#   (c) `helm uninstall` leaves the Gateway API CRDs (and so every Gateway and route) in place.
# Without a reachable cluster, Docker, kind or helm it says "skipped: …" and exits 0.
#
#   kind create cluster && KUBECONFIG=~/.kube/config e2e/gateway.sh
set -euo pipefail
cd "$(dirname "$0")/.."

HELM=${HELM:-$(command -v helm || echo .tools/bin/helm)}
if [[ -z ${KUBECONFIG:-} ]] || ! command -v kubectl >/dev/null ||
  ! kubectl cluster-info --request-timeout=5s >/dev/null 2>&1; then
  echo "skipped: no cluster"
  exit 0
fi
for tool in docker kind "$HELM" curl; do
  if ! command -v "$tool" >/dev/null; then
    echo "skipped: $tool is not installed"
    exit 0
  fi
done

context=$(kubectl config current-context)
cluster=${KIND_CLUSTER_NAME:-${context#kind-}}
[[ $cluster == "$context" ]] && cluster=kind
image=kube-iap:e2e-$RANDOM
ns=kube-iap
apps="kube-iap-e2e-gateway-$RANDOM"
forward_pid=""

cleanup() {
  if [[ -n $forward_pid ]]; then kill "$forward_pid" 2>/dev/null || true; fi
  "$HELM" uninstall kube-iap -n "$ns" >/dev/null 2>&1 || true
  kubectl delete gatewayclass kube-iap --wait=false >/dev/null 2>&1 || true
  kubectl delete namespace "$apps" "$ns" --wait=false >/dev/null 2>&1 || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# shellcheck source=e2e/chart-lib.sh
source e2e/chart-lib.sh

# condition KIND NAME JSONPATH WANT: the field at JSONPATH of the object says WANT.
condition() {
  [[ $(kubectl -n "$apps" get "$1" "$2" -o jsonpath="$3") == "$4" ]]
}

echo "building $image and loading it into kind cluster $cluster"
docker build -q -t "$image" . >/dev/null
kind load docker-image "$image" --name "$cluster" >/dev/null

"$HELM" install kube-iap charts/kube-iap -n "$ns" --create-namespace \
  --set image.repository="${image%%:*}" --set image.tag="${image#*:}" \
  --set image.pullPolicy=Never --set service.type=ClusterIP \
  --set gatewayAPI.installCRDs=true --wait --timeout 180s >/dev/null ||
  fail "helm install with the Gateway API CRDs"
# The CRDs came with the release: restart so the controller watches them from the start.
kubectl -n "$ns" rollout restart deployment/kube-iap >/dev/null
kubectl -n "$ns" rollout status deployment/kube-iap --timeout=180s >/dev/null || fail "restart"

kubectl create namespace "$apps" >/dev/null
kubectl -n "$apps" create deployment hello --image=registry.k8s.io/e2e-test-images/agnhost:2.53 \
  -- /agnhost netexec --http-port=8080 >/dev/null
kubectl -n "$apps" expose deployment hello --port=80 --target-port=8080 >/dev/null
kubectl apply -f - >/dev/null <<YAML || fail "the Gateway API objects apply"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: kube-iap}
spec: {controllerName: kube-iap.io/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: web, namespace: $apps}
spec:
  gatewayClassName: kube-iap
  listeners: [{name: http, protocol: HTTP, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: hello, namespace: $apps}
spec:
  parentRefs: [{name: web}]
  hostnames: [hello.example.com]
  rules: [{backendRefs: [{name: hello, port: 80}]}]
---
apiVersion: v1
kind: Secret
metadata: {name: idp, namespace: $apps}
stringData: {client-secret: e2e}
---
apiVersion: kube-iap.io/v1alpha1
kind: OAuthClient
metadata: {name: idp, namespace: $apps}
spec:
  issuer: https://accounts.google.com
  clientId: e2e
  clientSecretRef: {name: idp, key: client-secret}
---
apiVersion: kube-iap.io/v1alpha1
kind: IapPolicy
metadata: {name: everyone, namespace: $apps}
spec:
  oauthClientRef: {name: idp}
  access: [{members: [allUsers]}]
  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: hello}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: unprotected, namespace: $apps}
spec:
  parentRefs: [{name: web}]
  hostnames: [open.example.com]
  rules: [{backendRefs: [{name: hello, port: 80}]}]
YAML

# (a) statuses
wait_for "the GatewayClass is Accepted" bash -c \
  "[[ \$(kubectl get gatewayclass kube-iap -o jsonpath='{.status.conditions[?(@.type==\"Accepted\")].status}') == True ]]"
wait_for "the Gateway is Programmed" \
  condition gateway web '{.status.conditions[?(@.type=="Programmed")].status}' True
wait_for "the route is Accepted" \
  condition httproute hello '{.status.parents[0].conditions[?(@.type=="Accepted")].status}' True
wait_for "the route is Protected" \
  condition httproute hello '{.status.parents[0].conditions[?(@.type=="kube-iap.io/Protected")].status}' True
wait_for "the uncovered route says NoPolicy" \
  condition httproute unprotected '{.status.parents[0].conditions[?(@.type=="kube-iap.io/Protected")].reason}' NoPolicy
ok "(a) GatewayClass Accepted, Gateway Programmed, routes Accepted, Protected or NoPolicy"

# (b) traffic
kubectl -n "$ns" port-forward service/kube-iap 18481:80 >/dev/null 2>&1 &
forward_pid=$!
answers() {
  local got
  got=$(curl -s -o /dev/null -w '%{http_code}' -H "Host: $1" -H 'Accept: application/json' \
    http://127.0.0.1:18481/hostname)
  echo "answer: $got"
  [[ $got == "$2" ]]
}
wait_for "the protected route serves the app" answers hello.example.com 200
wait_for "the uncovered route answers 403" answers open.example.com 403
answers nobody.example.com 404 >/dev/null || fail "an unknown host gets 404"
ok "(b) the route serves the app, an uncovered route 403, an unknown host 404"

# (c) uninstall keeps the CRDs
"$HELM" uninstall kube-iap -n "$ns" --wait >/dev/null || fail "helm uninstall"
kubectl get crd httproutes.gateway.networking.k8s.io >/dev/null || fail "the CRDs survive uninstall"
kubectl -n "$apps" get httproute hello >/dev/null || fail "the routes survive uninstall"
ok "(c) helm uninstall leaves the Gateway API CRDs and the routes"
echo "all Gateway API scenarios passed"
