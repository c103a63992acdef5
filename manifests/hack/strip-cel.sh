#!/usr/bin/env bash
# Regenerates manifests/crds/gateway-api/{standard,experimental}/ from the Gateway API v1.6.1
# CRDs kept beside the repository (../shared/gateway-api/crds), made loadable by every API
# server we support (down to Kubernetes 1.20):
#   - `x-kubernetes-validations` (CEL rules) are removed: API servers before 1.25 reject the
#     field. Ambit's controller validates Gateway API objects itself and reports problems in
#     their status conditions, so nothing goes unchecked.
#   - the ValidatingAdmissionPolicy file (admissionregistration.k8s.io/v1, 1.30+) is left out.
# Run from the repository root: manifests/hack/strip-cel.sh [path-to-shared-crds]
set -euo pipefail
src=${1:-../shared/gateway-api/crds}
dst=manifests/crds/gateway-api
for channel in standard experimental; do
  mkdir -p "$dst/$channel"
  rm -f "$dst/$channel"/*.yaml
  for file in "$src/$channel"/gateway.networking*.yaml; do
    name=$(basename "$file")
    case "$name" in *vap_*) continue ;; esac
    # Drop each `x-kubernetes-validations:` key and every line indented deeper than it.
    awk '
      skip_indent >= 0 {
        match($0, /^ */); indent = RLENGTH
        if ($0 ~ /^ *$/ || indent > skip_indent || ($0 ~ /^ *- / && indent == skip_indent)) next
        skip_indent = -1
      }
      /^ *x-kubernetes-validations:/ { match($0, /^ */); skip_indent = RLENGTH; next }
      { print }
    ' skip_indent=-1 "$file" > "$dst/$channel/$name"
  done
  ( cd "$dst/$channel" && {
      echo "apiVersion: kustomize.config.k8s.io/v1beta1"
      echo "kind: Kustomization"
      echo "resources:"
      for f in gateway*.yaml; do echo "  - $f"; done
    } > kustomization.yaml )
done
echo "regenerated $dst from $src"
