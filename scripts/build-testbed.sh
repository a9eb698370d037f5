#!/usr/bin/env bash
# Builds the test bed's kube-apiserver and etcd from the Go module proxy (no registry ships them)
# and installs them into DIR:
#
#   scripts/build-testbed.sh "$HOME/.cache/kube-iap-testbed/v1.36.2"
#
# The Go module and build caches stay in their usual places, so a second run mostly just relinks.
set -euo pipefail
KUBE_VERSION=v1.36.2
# The etcd ../shared/testbed ships, known good with this API server. The newest 3.5 patch:
# `go list -m go.etcd.io/etcd/server/v3@v3.5`.
ETCD_VERSION=v3.5.30

DIR=${1:?usage: $0 DIR}
case $DIR in /*) ;; *) DIR=$PWD/$DIR ;; esac # the builds below run elsewhere
say() { echo "== $*" >&2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/bin" "$work/apiserver" "$work/etcd"
# Keep the machine's own GOFLAGS (here -buildvcs=false); a go.work above TMPDIR must not leak in.
GOFLAGS="$(go env GOFLAGS) -mod=mod"
export GOFLAGS GOWORK=off CGO_ENABLED=0

check() { # check BINDIR: fail unless both binaries say the versions asked for
  local kube etcd
  kube=$("$1/kube-apiserver" --version)
  etcd=$("$1/etcd" --version | sed -n 1p) # sed, not head: no SIGPIPE for pipefail to trip on
  [ "$kube" = "Kubernetes $KUBE_VERSION" ] || { echo "kube-apiserver says '$kube', want $KUBE_VERSION" >&2; exit 1; }
  [ "$etcd" = "etcd Version: ${ETCD_VERSION#v}" ] || { echo "etcd says '$etcd', want $ETCD_VERSION" >&2; exit 1; }
}

say "building kube-apiserver $KUBE_VERSION from Go modules (about 20 minutes cold on 2 cores)"
cd "$work/apiserver"
go mod init testbed/kube-apiserver
# What upstream's cmd/kube-apiserver/apiserver.go does, minus its blank imports (JSON log format,
# client-go and version metrics), which a test bed does not need.
cat >main.go <<'EOF'
package main

import ("os"; "k8s.io/component-base/cli"; "k8s.io/kubernetes/cmd/kube-apiserver/app")

func main() { os.Exit(cli.Run(app.NewAPIServerCommand())) }
EOF
# k8s.io/kubernetes requires its staging modules (k8s.io/api, ...) at v0.0.0 and replaces them with
# ./staging/src/...; a dependency's replaces don't apply, so point each at its published v0.MINOR.PATCH.
json=$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION") || { echo "$json" >&2; exit 1; }
gomod=$(echo "$json" | sed -n 's/.*"GoMod": "\([^"]*\)".*/\1/p')
staging=$(awk '$1 ~ /^k8s\.io\// && $2 == "v0.0.0" { print $1 }' "$gomod" | sort -u)
[ -n "$staging" ] || { echo "no k8s.io/* v0.0.0 requirements in $gomod" >&2; exit 1; }
edits=(-require="k8s.io/kubernetes@$KUBE_VERSION")
for m in $staging; do edits+=(-replace="$m=$m@v0${KUBE_VERSION#v1}"); done
# Upstream builds with kubernetes' go.mod as the main module, so its godebug defaults apply; keep them.
for kv in $(sed -n 's/^godebug \([^ ]*=[^ ]*\)$/\1/p' "$gomod"); do edits+=(-godebug="$kv"); done
go mod edit "${edits[@]}"
go mod tidy
goexp=${GOEXPERIMENT:-}
# Go 1.27 turned on encoding/json v2, which breaks /openapi/v2 (kubectl apply then cannot fetch it).
gominor=$(go env GOVERSION | sed -n 's/^go1\.\([0-9]*\).*/\1/p')
if [ "${gominor:-0}" -ge 27 ]; then goexp=${goexp:+$goexp,}nojsonv2; fi
# Without the version stamp the server says v0.0.0-master, which kubectl and the tests refuse.
minor=${KUBE_VERSION#v1.}; minor=${minor%%.*}
GOEXPERIMENT=$goexp go build -trimpath -o "$work/bin/kube-apiserver" -ldflags "-s -w \
  -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION \
  -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor" .

say "building etcd $ETCD_VERSION from Go modules (a few minutes cold)"
cd "$work/etcd"
go mod init testbed/etcd
# A wrapper, not `go install go.etcd.io/etcd/server/v3@...`: go install refuses modules whose go.mod
# has replace directives, and etcd's does (../api etc.); as a dependency those are simply ignored.
cat >main.go <<'EOF'
package main

import ("os"; "go.etcd.io/etcd/server/v3/etcdmain")

func main() { etcdmain.Main(os.Args) }
EOF
go mod edit -require="go.etcd.io/etcd/server/v3@$ETCD_VERSION"
go mod tidy
go build -trimpath -ldflags "-s -w" -o "$work/bin/etcd" .

# Only a pair that built and says the right versions reaches DIR, each by a rename within DIR,
# so a build cut short never leaves a half-written binary where scripts/testbed.sh looks.
check "$work/bin"
mkdir -p "$DIR"
for name in kube-apiserver etcd; do
  cp "$work/bin/$name" "$DIR/.$name.tmp"
  mv -f "$DIR/.$name.tmp" "$DIR/$name"
done
check "$DIR"
say "installed kube-apiserver $KUBE_VERSION and etcd $ETCD_VERSION into $DIR"
