#!/usr/bin/env bash
# The controller against a real cluster (kind, through KUBECONFIG): `kube-iap controller` runs out of
# cluster on this machine, watching one scratch namespace, and each scenario checks what users see:
# status codes on the resources, Events, and requests through the proxy, also across an API outage.
# Without a reachable cluster it says "skipped: no cluster" and exits 0.
#
#   kind create cluster && KUBECONFIG=~/.kube/config e2e/controller.sh
#
# Scenarios (e)-(g) need the kind cluster's node containers on this machine's Docker: the test
# backend listens on the kind network's gateway address (this machine's address there, and a valid
# EndpointSlice address), and (g) pauses the control-plane container.
# Environment: KIND_CLUSTER_NAME (default: NAME from the kubectl context kind-NAME, else "kind"),
# KUBE_IAP_BIN (a built binary; default: cargo build --release), PAUSE_SECS (default 60),
# BACKEND_PORT (default 18081).
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -z ${KUBECONFIG:-} ]] || ! command -v kubectl >/dev/null ||
  ! kubectl cluster-info --request-timeout=5s >/dev/null 2>&1; then
  echo "skipped: no cluster"
  exit 0
fi

WAIT_SECS=30
PAUSE_SECS=${PAUSE_SECS:-60}
BACKEND_PORT=${BACKEND_PORT:-18081}
PROXY=http://127.0.0.1:18080
ADMIN=http://127.0.0.1:19090
ns="kube-iap-e2e-ctl-$RANDOM"
work=$(mktemp -d)
controller_pid=""
backend_pid=""
paused_node=""

cleanup() {
  # Never leave the cluster frozen, whatever failed.
  if [[ -n $paused_node ]]; then docker unpause "$paused_node" >/dev/null 2>&1 || true; fi
  if [[ -n $controller_pid ]]; then kill "$controller_pid" 2>/dev/null || true; fi
  if [[ -n $backend_pid ]]; then kill "$backend_pid" 2>/dev/null || true; fi
  kubectl delete namespace "$ns" --wait=false >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() {
  echo "FAIL: $*" >&2
  if [[ -s $work/controller.log ]]; then
    echo "--- last lines of the controller log:" >&2
    tail -n 40 "$work/controller.log" >&2
  fi
  exit 1
}

ok() { echo "ok - $*"; }

# wait_for DESCRIPTION COMMAND [ARG...]: runs COMMAND every 0.5 s until it succeeds, for at most
# WAIT_SECS seconds; then fails with DESCRIPTION and what COMMAND printed last.
wait_for() {
  local what=$1 out=""
  shift
  local deadline=$((SECONDS + WAIT_SECS))
  until out=$("$@" 2>&1); do
    if [[ -n $controller_pid ]] && ! kill -0 "$controller_pid" 2>/dev/null; then
      fail "$what: the controller exited"
    fi
    if ((SECONDS >= deadline)); then
      fail "$what: still not so after ${WAIT_SECS}s${out:+ (last: $out)}"
    fi
    sleep 0.5
  done
}

# apply: kubectl apply of the YAML on stdin, into the scratch namespace.
apply() { kubectl apply -n "$ns" -f - >/dev/null; }

# jsonpath OBJECT TEMPLATE: fields of an object in the scratch namespace.
jsonpath() { kubectl get "$1" -n "$ns" -o jsonpath="$2"; }

# The predicates below print what they saw, which wait_for shows when it gives up.

# has_status OBJECT CODE [READY]: status.errorCode is CODE ("" for none) and, when given, the Ready
# condition is READY.
has_status() {
  local code ready
  code=$(jsonpath "$1" '{.status.errorCode}')
  ready=$(jsonpath "$1" '{.status.conditions[?(@.type=="Ready")].status}')
  echo "errorCode=${code:-none} Ready=${ready:-none}"
  [[ $code == "$2" && (-z ${3:-} || $ready == "$3") ]]
}

# status_current OBJECT: the status was computed from the latest spec.
status_current() {
  local observed generation
  observed=$(jsonpath "$1" '{.status.observedGeneration}')
  generation=$(jsonpath "$1" '{.metadata.generation}')
  echo "observedGeneration=${observed:-none} generation=$generation"
  [[ $observed == "$generation" ]]
}

lease_held_by() {
  local holder
  holder=$(jsonpath lease/kube-iap-leader '{.spec.holderIdentity}')
  echo "holder: ${holder:-none}"
  [[ $holder == "$1" ]]
}

# ingress_address_is INGRESS IP: the Ingress status lists IP as a load balancer address.
ingress_address_is() {
  local addresses
  addresses=$(jsonpath "ingress/$1" '{.status.loadBalancer.ingress[*].ip}')
  echo "addresses: ${addresses:-none}"
  [[ " $addresses " == *" $2 "* ]]
}

# event_mentions KIND NAME TEXT: an Event about the object says TEXT. (Events written through
# events.k8s.io/v1 read back through core/v1: regarding -> involvedObject, note -> message.)
event_mentions() {
  local messages
  messages=$(kubectl get events -n "$ns" \
    --field-selector "involvedObject.kind=$1,involvedObject.name=$2" \
    -o jsonpath='{range .items[*]}{.message}{"\n"}{end}')
  echo "events: ${messages:-none}"
  [[ $messages == *"$3"* ]]
}

# http_code HOST: the status code of GET / for HOST through the proxy.
http_code() {
  curl -s -o /dev/null -w '%{http_code}' --max-time 5 -H "Host: $1" "$PROXY/" || true
}

# answers HOST CODE: the proxy answers GET / for HOST with CODE.
answers() {
  local got
  got=$(http_code "$1")
  echo "HTTP $got"
  [[ $got == "$2" ]]
}

# --- setup -----------------------------------------------------------------------------------------

if [[ -n ${KUBE_IAP_BIN:-} ]]; then
  bin=$KUBE_IAP_BIN
else
  # Built first (what `cargo run --release` would do), so the readiness wait does not include
  # compiling and the PID below is the controller's own.
  cargo build --release -q --bin kube-iap
  bin=target/release/kube-iap
fi

kubectl apply -f crds/kube-iap.yaml >/dev/null
kubectl wait --for condition=established --timeout=60s \
  crd/iappolicies.kube-iap.io crd/oauthclients.kube-iap.io >/dev/null
kubectl create namespace "$ns" >/dev/null
echo "# scratch namespace $ns"

# Ingress support (scenario f) runs when this build of the controller has it.
ingress_flags=()
if "$bin" controller --help | grep -q -- --ingress-address; then
  ingress_flags=(--ingress-address 127.0.0.1)
fi
"$bin" controller --namespace "$ns" --pod-namespace "$ns" --pod-name e2e \
  --http-addr 127.0.0.1:18080 --no-https --admin-addr 127.0.0.1:19090 \
  "${ingress_flags[@]}" >"$work/controller.log" 2>&1 &
controller_pid=$!

wait_for "the controller becomes ready" curl -sf --max-time 2 "$ADMIN/readyz"
wait_for "the controller holds the Lease kube-iap-leader" lease_held_by e2e
ok "the controller is ready and holds the Lease kube-iap-leader"

# OAuth clients the scenarios share. Their issuers never answer (.invalid never resolves), which
# shows on the OAuthClients only (code 11): allUsers routes forward all the same.
apply <<YAML
apiVersion: v1
kind: Secret
metadata: {name: idp-secret}
stringData: {client-secret: e2e-secret}
---
apiVersion: kube-iap.io/v1alpha1
kind: OAuthClient
metadata: {name: idp}
spec:
  issuer: https://accounts.e2e.invalid
  clientId: e2e
  clientSecretRef: {name: idp-secret, key: client-secret}
---
apiVersion: kube-iap.io/v1alpha1
kind: OAuthClient
metadata: {name: idp-other}
spec:
  issuer: https://other.e2e.invalid
  clientId: e2e-other
  clientSecretRef: {name: idp-secret, key: client-secret}
YAML

# --- (a) an OAuthClient without a client ID: code 7 ------------------------------------------------

apply <<YAML
apiVersion: kube-iap.io/v1alpha1
kind: OAuthClient
metadata: {name: no-client-id}
spec:
  issuer: https://accounts.e2e.invalid
  clientId: ""
  clientSecretRef: {name: idp-secret, key: client-secret}
YAML
wait_for "(a) OAuthClient no-client-id has errorCode 7 and Ready False" \
  has_status oauthclient/no-client-id 7 False
ok "(a) an OAuthClient with an empty clientId reports code 7, READY False"

# --- (b) a policy naming an OAuthClient that does not exist: code 13 -------------------------------

apply <<YAML
apiVersion: kube-iap.io/v1alpha1
kind: IapPolicy
metadata: {name: missing-client}
spec:
  oauthClientRef: {name: no-such-client}
  hosts: [missing.e2e.test]
  backend: {service: app, port: 80}
  access:
    - members: [allUsers]
YAML
wait_for "(b) IapPolicy missing-client has errorCode 13" has_status iappolicy/missing-client 13 False
ok "(b) an IapPolicy naming a missing OAuthClient reports code 13"

# --- (c) two policies on one host with different OAuthClients: the newer gets code 9 ---------------

# Different paths, so the only clash is the OAuth client (one browser session per host).
conflict_policy() { # NAME OAUTHCLIENT
  apply <<YAML
apiVersion: kube-iap.io/v1alpha1
kind: IapPolicy
metadata: {name: $1}
spec:
  oauthClientRef: {name: $2}
  hosts: [shared.e2e.test]
  paths: [/$1]
  backend: {service: app, port: 80}
  access:
    - members: [allUsers]
YAML
}
conflict_policy conflict-older idp
sleep 1.5 # creationTimestamp counts whole seconds: make the second policy strictly newer
conflict_policy conflict-newer idp-other
wait_for "(c) IapPolicy conflict-newer has errorCode 9" has_status iappolicy/conflict-newer 9 False
wait_for "(c) IapPolicy conflict-older has no error code" has_status iappolicy/conflict-older ""
ok "(c) of two IapPolicies on one host with different OAuthClients, the newer reports code 9"

# --- (d) an OAuthClient whose provider does not answer: code 11 ------------------------------------

# A policy uses the client, so its provider is actually contacted.
apply <<YAML
apiVersion: kube-iap.io/v1alpha1
kind: OAuthClient
metadata: {name: idp-down}
spec:
  issuer: http://127.0.0.1:1
  clientId: e2e
  clientSecretRef: {name: idp-secret, key: client-secret}
---
apiVersion: kube-iap.io/v1alpha1
kind: IapPolicy
metadata: {name: uses-idp-down}
spec:
  oauthClientRef: {name: idp-down}
  hosts: [down.e2e.test]
  backend: {service: app, port: 80}
  access:
    - members: [allAuthenticatedUsers]
YAML
wait_for "(d) OAuthClient idp-down has errorCode 11" has_status oauthclient/idp-down 11 False
ok "(d) an OAuthClient whose issuer does not answer reports code 11"

# --- the test backend, on the kind network ---------------------------------------------------------

cluster=${KIND_CLUSTER_NAME:-}
if [[ -z $cluster ]]; then
  context=$(kubectl config current-context 2>/dev/null || true)
  cluster=kind
  if [[ $context == kind-* ]]; then cluster=${context#kind-}; fi
fi
node="$cluster-control-plane"
gateway=""
if command -v docker >/dev/null && docker inspect "$node" >/dev/null 2>&1; then
  # This machine's address on the kind network (IPv4): it can listen there, and unlike 127.0.0.1 it
  # is an address an EndpointSlice may hold.
  gateway=$(docker network inspect kind -f '{{range .IPAM.Config}}{{.Gateway}} {{end}}' 2>/dev/null |
    tr ' ' '\n' | grep -F . | head -n1 || true)
  if [[ -z $gateway ]]; then
    gateway=$(docker inspect "$node" \
      -f '{{with index .NetworkSettings.Networks "kind"}}{{.Gateway}}{{end}}' || true)
  fi
fi
if [[ -z $gateway ]]; then
  echo "skipped - (e) to (g): no kind node container $node on this machine's Docker"
  echo "e2e controller: passed (a) to (d)"
  exit 0
fi

mkdir -p "$work/www"
echo "hello from the e2e backend" >"$work/www/index.html"
python3 -m http.server --bind "$gateway" --directory "$work/www" "$BACKEND_PORT" \
  >"$work/backend.log" 2>&1 &
backend_pid=$!
wait_for "the test backend answers on $gateway:$BACKEND_PORT" \
  curl -sf --max-time 2 "http://$gateway:$BACKEND_PORT/"

# --- (e) a Service annotated for an allUsers policy: forwarded -------------------------------------

# The Service has no selector, so its EndpointSlice is ours to write: the backend above.
apply <<YAML
apiVersion: kube-iap.io/v1alpha1
kind: IapPolicy
metadata: {name: open}
spec:
  oauthClientRef: {name: idp}
  hosts: [app.e2e.test]
  access:
    - members: [allUsers]
---
apiVersion: v1
kind: Service
metadata:
  name: app
  annotations: {kube-iap.io/policy: open}
spec:
  ports:
    - {name: http, port: 80, targetPort: $BACKEND_PORT}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: app-1
  labels: {kubernetes.io/service-name: app}
addressType: IPv4
ports:
  - {name: http, port: $BACKEND_PORT}
endpoints:
  - addresses: ["$gateway"]
    conditions: {ready: true}
YAML
wait_for "(e) app.e2e.test answers 200 through the proxy" answers app.e2e.test 200
wait_for "(e) IapPolicy open is Ready with no error code" has_status iappolicy/open "" True
ok "(e) a Service annotated kube-iap.io/policy is served: app.e2e.test answers 200"

# --- (f) Ingresses of class kube-iap ---------------------------------------------------------------

if ((${#ingress_flags[@]} == 0)); then
  echo "skipped - (f) Ingresses: this build of the controller does not serve them yet"
else

apply <<YAML
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: ing
  annotations: {kube-iap.io/policy: open}
spec:
  ingressClassName: kube-iap
  rules:
    - host: ing.e2e.test
      http:
        paths:
          - path: /
            pathType: Prefix
            backend:
              service: {name: app, port: {number: 80}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: no-policy
spec:
  ingressClassName: kube-iap
  rules:
    - host: no-policy.e2e.test
      http:
        paths:
          - path: /
            pathType: Prefix
            backend:
              service: {name: app, port: {number: 80}}
YAML
wait_for "(f) ing.e2e.test answers 200 through the proxy" answers ing.e2e.test 200
wait_for "(f) Ingress ing has the address 127.0.0.1 in its status" ingress_address_is ing 127.0.0.1
ok "(f) an Ingress annotated kube-iap.io/policy is served (200) and shows the proxy's address"
wait_for "(f) an Event on Ingress no-policy mentions the kube-iap.io/policy annotation" \
  event_mentions Ingress no-policy kube-iap.io/policy
wait_for "(f) no-policy.e2e.test answers 404" answers no-policy.e2e.test 404
ok "(f) an Ingress without kube-iap.io/policy is not served (404) and gets an Event saying why"
fi

# --- (g) an API server outage: traffic keeps flowing, changes apply once it is back ----------------

echo "# (g) pausing $node for ${PAUSE_SECS}s"
docker pause "$node" >/dev/null
paused_node=$node
total=0
failed=0
end=$((SECONDS + PAUSE_SECS))
while ((SECONDS < end)); do
  code=$(http_code app.e2e.test)
  total=$((total + 1))
  if [[ $code != 200 ]]; then
    failed=$((failed + 1))
    echo "  request $total during the outage: HTTP $code" >&2
  fi
  sleep 0.2
done
docker unpause "$node" >/dev/null
paused_node=""
((failed == 0)) || fail "(g) $failed of $total requests during the API outage did not answer 200"
ok "(g) all $total requests during a ${PAUSE_SECS}s API outage answered 200"

# The API server needs a moment after the unpause: the change is retried until accepted, then the
# controller has 30 s to serve it and report it.
add_host() {
  apply <<YAML
apiVersion: kube-iap.io/v1alpha1
kind: IapPolicy
metadata: {name: open}
spec:
  oauthClientRef: {name: idp}
  hosts: [app.e2e.test, after.e2e.test]
  access:
    - members: [allUsers]
YAML
}
WAIT_SECS=90 wait_for "(g) the API server accepts a change after the outage" add_host
wait_for "(g) after.e2e.test, added after the outage, answers 200" answers after.e2e.test 200
wait_for "(g) IapPolicy open's status catches up with the change" status_current iappolicy/open
ok "(g) a change made after the outage is served and reported within ${WAIT_SECS}s"

echo "e2e controller: passed"
