#!/usr/bin/env bash
# Tests the Argo CD health checks (deploy/argocd/health-checks.yaml): each script, exactly as
# the ConfigMap holds it, runs with lua5.4 and with lua5.1 (the dialect of Argo CD's gopher-lua)
# against the fixtures of deploy/argocd/test/fixtures.lua, one per phase and condition reason
# the operator writes. The scripts run.lua extracts are first compared with PyYAML's reading
# of the file, so what runs is what Argo CD would read.
#
# Needs the Debian packages lua5.4, lua5.1 and python3-yaml (.ci/run installs them).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

for tool in lua5.4 lua5.1 python3; do
  command -v "$tool" >/dev/null || { echo "argocd-test: $tool is required (Debian package $tool)" >&2; exit 1; }
done
python3 -c 'import yaml' 2>/dev/null || { echo "argocd-test: python3 cannot import yaml (Debian package python3-yaml)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/lua" "$work/yaml"
lua5.4 deploy/argocd/test/run.lua . --extract "$work/lua"
python3 - deploy/argocd/health-checks.yaml "$work/yaml" <<'EOF'
import os, sys, yaml
path, out = sys.argv[1], sys.argv[2]
with open(path) as f:
    cm = yaml.safe_load(f)
assert cm["apiVersion"] == "v1" and cm["kind"] == "ConfigMap", "not a ConfigMap"
assert cm["metadata"]["name"] == "argocd-cm", "not argocd-cm"
for key, script in cm["data"].items():
    assert key.startswith("resource.customizations.health.x0tta6bl4.io_"), f"unexpected key {key}"
    with open(os.path.join(out, key), "w") as f:
        f.write(script)
EOF
if ! diff -r "$work/yaml" "$work/lua"; then
  echo "argocd-test: run.lua reads the scripts differently from PyYAML (diff above: PyYAML < > run.lua)" >&2
  exit 1
fi
echo "scripts extracted as PyYAML reads them: $(ls "$work/lua" | sed 's/.*_//' | paste -sd' ')"

for lua in lua5.4 lua5.1; do
  echo "== $lua"
  "$lua" deploy/argocd/test/run.lua .
done
