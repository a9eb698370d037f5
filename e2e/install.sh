#!/usr/bin/env bash
# The installs the docs describe, against a real kind cluster (through KUBECONFIG): the image is
# built from the Dockerfile and loaded into kind, then
#   (a) `helm install` of charts/kube-iap: both replicas become ready, one holds the Lease, the
#       key Secrets exist;
#   (b) the docs' first protected app (docs/first-app.md, applied from its own YAML blocks): the
#       policy gets a status, and a request without credentials through the proxy gets 401;
#   (c) `helm upgrade` keeps the session and signing keys byte for byte, and the rotation
#       commands of docs/upgrading.md add keys the replicas accept;
#   (d) `helm uninstall` leaves the key Secrets behind (resource-policy keep);
#   (e) `kubectl apply -k deploy/` installs the same controller, which becomes ready.
# Without a reachable cluster, Docker, kind or helm it says "skipped: …" and exits 0.
#
#   kind create cluster && KUBECONFIG=~/.kube/config e2e/install.sh
#
# Environment: KIND_CLUSTER_NAME (default: NAME from the kubectl context kind-NAME, else "kind"),
# HELM (default: helm on PATH, else .tools/bin/helm from scripts/install-tools.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

HELM=${HELM:-$(command -v helm || echo .tools/bin/helm)}
if [[ -z ${KUBECONFIG:-} ]] || ! command -v kubectl >/dev/null ||
  ! kubectl cluster-info --request-timeout=5s >/dev/null 2>&1; then
  echo "skipped: no cluster"
  exit 0
fi
for tool in docker kind "$HELM" python3; do
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
apps="kube-iap-e2e-apps-$RANDOM"
work=$(mktemp -d)
forward_pid=""

cleanup() {
  if [[ -n $forward_pid ]]; then kill "$forward_pid" 2>/dev/null || true; fi
  "$HELM" uninstall kube-iap -n "$ns" >/dev/null 2>&1 || true
  kubectl delete -k deploy/ --wait=false >/dev/null 2>&1 || true
  kubectl delete namespace "$apps" "$ns" --wait=false >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# shellcheck source=e2e/chart-lib.sh
source e2e/chart-lib.sh

secret_data() { kubectl -n "$ns" get secret "$1" -o jsonpath='{.data}'; }

# yaml_blocks FILE: the ```yaml blocks of a Markdown file, as one multi-document stream.
yaml_blocks() {
  python3 - "$1" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
print("\n---\n".join(re.findall(r"```yaml\n(.*?)```", text, re.S)))
PY
}

echo "building $image and loading it into kind cluster $cluster"
docker build -q -t "$image" . >/dev/null
kind load docker-image "$image" --name "$cluster" >/dev/null

# (a) helm install
"$HELM" install kube-iap charts/kube-iap -n "$ns" --create-namespace \
  --set image.repository="${image%%:*}" --set image.tag="${image#*:}" \
  --set image.pullPolicy=Never --set service.type=ClusterIP --wait --timeout 180s >/dev/null ||
  fail "helm install"
ready=$(kubectl -n "$ns" get deployment kube-iap -o jsonpath='{.status.readyReplicas}')
[[ $ready == 2 ]] || fail "2 ready replicas after helm install, saw ${ready:-0}"
wait_for "a replica holds the Lease" \
  kubectl -n "$ns" get lease kube-iap-leader -o jsonpath='{.spec.holderIdentity}'
session_before=$(secret_data kube-iap-session-keys)
signing_before=$(secret_data kube-iap-signing-keys)
[[ -n $session_before && -n $signing_before ]] || fail "the key Secrets exist"
ok "(a) helm install: 2 replicas ready, the Lease held, key Secrets created"

# (b) the first protected app, exactly as docs/first-app.md writes it
kubectl create namespace "$apps" >/dev/null
yaml_blocks docs/first-app.md | sed "s/namespace: apps/namespace: $apps/" >"$work/first-app.yaml"
kubectl apply -f "$work/first-app.yaml" >/dev/null || fail "the docs' manifests apply"
kubectl -n "$apps" create deployment hello --image=registry.k8s.io/e2e-test-images/agnhost:2.53 \
  -- /agnhost netexec --http-port=8080 >/dev/null
wait_for "the policy is written a status" \
  kubectl -n "$apps" get iappolicy hello -o jsonpath='{.status.conditions[0].type}'
kubectl -n "$ns" port-forward service/kube-iap 18480:80 >/dev/null 2>&1 &
forward_pid=$!
# A script without credentials is refused (and told how to authenticate), so the route is served
# and fails closed; an unknown host is not served at all.
refused_with_401() {
  local answer
  answer=$(curl -s -o /dev/null -w '%{http_code} %header{www-authenticate}' \
    -H 'Host: hello.example.com' http://127.0.0.1:18480/)
  echo "answer: $answer"
  [[ $answer == "401 Bearer"* ]]
}
wait_for "the route answers 401 without credentials" refused_with_401
unknown=$(curl -s -o /dev/null -w '%{http_code}' -H 'Host: nobody.example.com' http://127.0.0.1:18480/)
[[ $unknown == 404 ]] || fail "an unknown host gets 404, saw $unknown"
ok "(b) docs/first-app.md: the policy has a status, the route fails closed without credentials"

# (c) helm upgrade keeps the keys
"$HELM" upgrade kube-iap charts/kube-iap -n "$ns" --reuse-values --set logFormat=text \
  --wait --timeout 180s >/dev/null || fail "helm upgrade"
[[ $(secret_data kube-iap-session-keys) == "$session_before" ]] || fail "upgrade kept session keys"
[[ $(secret_data kube-iap-signing-keys) == "$signing_before" ]] || fail "upgrade kept signing keys"
ok "(c) helm upgrade keeps the session and signing keys"

# (c2) key rotation exactly as docs/upgrading.md writes it: a new entry added beside the old ones
kubectl -n kube-iap patch secret kube-iap-session-keys --type merge -p "{\"stringData\":{\"key-0002\":\"$(openssl rand -base64 32)\"}}" >/dev/null ||
  fail "the docs' session key rotation command"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/key-0002.pem" 2>/dev/null
kubectl -n kube-iap patch secret kube-iap-signing-keys --type merge -p "{\"data\":{\"key-0002\":\"$(base64 -w0 "$work/key-0002.pem")\"}}" >/dev/null ||
  fail "the docs' signing key rotation command"
for secret in kube-iap-session-keys kube-iap-signing-keys; do
  entries=$(kubectl -n "$ns" get secret "$secret" -o go-template='{{range $k, $v := .data}}{{$k}} {{end}}')
  [[ $entries == "key-0001 key-0002 " ]] || fail "$secret holds both keys, saw: $entries"
done
sleep 5 # the Secret watch delivers the change; a refused entry is logged as "skipped"
kubectl -n "$ns" logs -l app.kubernetes.io/name=kube-iap --tail=200 | grep -q "skipped" &&
  fail "a rotated key was refused"
ok "(c2) the docs' key rotation commands add keys the replicas accept"

# (d) helm uninstall leaves the keys
"$HELM" uninstall kube-iap -n "$ns" --wait >/dev/null || fail "helm uninstall"
secret_data kube-iap-signing-keys >/dev/null || fail "the signing keys survive uninstall"
ok "(d) helm uninstall leaves the key Secrets"

# (e) the kustomize base, with the same image
kubectl apply -k deploy/ >/dev/null || fail "kubectl apply -k deploy/"
kubectl -n "$ns" set image deployment/kube-iap kube-iap="$image" >/dev/null
kubectl -n "$ns" rollout status deployment/kube-iap --timeout=180s >/dev/null ||
  fail "deploy/ rolls out"
ok "(e) kubectl apply -k deploy/: the controller rolls out"
echo "all install scenarios passed"
