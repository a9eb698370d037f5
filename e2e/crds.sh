#!/usr/bin/env bash
# Against a real cluster (kind or any other, through KUBECONFIG): installs the CRDs and checks what
# users rely on: `kubectl explain` text, printer columns, and CEL validation rejecting bad members.
# Without a reachable cluster it says "skipped" and exits 0.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v kubectl >/dev/null || ! kubectl version --request-timeout=5s >/dev/null 2>&1; then
  echo "skipped: no Kubernetes cluster reachable (set KUBECONFIG, e.g. to a kind cluster)"
  exit 0
fi

ns="kube-iap-e2e-$RANDOM"
cleanup() { kubectl delete namespace "$ns" --wait=false >/dev/null 2>&1 || true; }
trap cleanup EXIT

kubectl apply -f crds/kube-iap.yaml
kubectl wait --for condition=established --timeout=60s crd/iappolicies.kube-iap.io crd/oauthclients.kube-iap.io
kubectl create namespace "$ns"

kubectl explain iappolicy.spec.access.members | grep -q "allAuthenticatedUsers"
kubectl explain oauthclient.spec.clientSecretRef | grep -q "never copied"

sed "s/namespace: default/namespace: $ns/" examples/manifests/*.yaml | kubectl apply -f -
kubectl get iappolicies -n "$ns" | head -1 | grep -q "READY.*CODE"

bad=$(cat <<YAML
apiVersion: kube-iap.io/v1alpha1
kind: IapPolicy
metadata: {name: bad-member, namespace: $ns}
spec:
  oauthClientRef: {name: local-idp}
  hosts: [bad.example.com]
  access:
    - members: ["alice@example.com"]
YAML
)
if kubectl apply -f - <<<"$bad" 2>/tmp/kube-iap-e2e.err; then
  echo "FAIL: a member without a kind was accepted" >&2
  exit 1
fi
grep -q "members must be" /tmp/kube-iap-e2e.err
echo "e2e crds: passed"
