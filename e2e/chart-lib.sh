# Shared by the e2e scripts that install the chart (install.sh, gateway.sh): sourced, not run.
# The caller sets `ns`, the namespace kube-iap runs in.

fail() {
  echo "FAIL: $*" >&2
  kubectl -n "$ns" logs -l app.kubernetes.io/name=kube-iap --tail=40 >&2 2>/dev/null || true
  exit 1
}
ok() { echo "ok - $*"; }

# wait_for DESCRIPTION COMMAND [ARG...]: retries COMMAND every second for up to 120 s.
wait_for() {
  local what=$1 out=""
  shift
  local deadline=$((SECONDS + 120))
  until out=$("$@" 2>&1); do
    ((SECONDS < deadline)) || fail "$what: still not so after 120s${out:+ (last: $out)}"
    sleep 1
  done
}
