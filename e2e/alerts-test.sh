#!/usr/bin/env bash
# The chart's alert rules, tested: renders templates/prometheusrule.yaml with helm, writes its
# spec.groups out as a plain Prometheus rules file, checks it with `promtool check rules`, checks
# that every alert has a runbook (docs/runbooks/<alert>.md, linked from its runbook_url) and unit
# tests in test/alerts/ where it fires and where it stays silent, then runs
# `promtool test rules` on them. Needs helm (.cache/bin, built by e2e/cluster/build-binaries.sh
# helm), promtool (Debian package prometheus) and python3 with PyYAML (python3-yaml).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=cluster/versions.env
source "$ROOT/e2e/cluster/versions.env"
HELM="${HELM:-$ROOT/.cache/bin/helm-$HELM_VERSION/helm}"
TESTS="$ROOT/test/alerts"
RUNBOOKS="$ROOT/docs/runbooks"

log() { printf '[alerts-test %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[[ -x "$HELM" ]] || die "helm not found at $HELM (make alerts-test builds it with e2e/cluster/build-binaries.sh helm)"
command -v promtool >/dev/null || die "promtool not found: apt-get install prometheus"
python3 -c 'import yaml' 2>/dev/null || die "python3 with PyYAML is required: apt-get install python3-yaml"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# The values the tests expect: the release x0tta6bl4 in x0tta6bl4-system (so the operator's
# metrics Service, and its job label, is x0tta6bl4-metrics), an extra label on every alert, and
# one `for:` override, so both values paths are exercised.
"$HELM" template x0tta6bl4 "$ROOT/charts/x0tta6bl4" \
  --namespace x0tta6bl4-system \
  --api-versions monitoring.coreos.com/v1 \
  --set prometheusRule.enabled=true \
  --set prometheusRule.alertLabels.team=mesh-sre \
  --set prometheusRule.forDurations.X0AgentDown=2m \
  --show-only templates/prometheusrule.yaml >"$work/prometheusrule.yaml"

cp "$TESTS"/*_test.yaml "$work/"

# spec.groups of the PrometheusRule is a Prometheus rules file's `groups`. Then the checks
# promtool does not make: each alert has a runbook_url ending in its own runbook file, that
# file exists, and the tests evaluate it at least once firing and once silent.
python3 - "$work" "$RUNBOOKS" <<'PY'
import glob, os, sys, yaml

work, runbooks = sys.argv[1], sys.argv[2]
docs = [d for d in yaml.safe_load_all(open(os.path.join(work, "prometheusrule.yaml"))) if d]
if len(docs) != 1 or docs[0].get("kind") != "PrometheusRule":
    sys.exit("expected exactly one PrometheusRule from templates/prometheusrule.yaml")
groups = docs[0]["spec"]["groups"]
with open(os.path.join(work, "rules.yaml"), "w") as out:
    yaml.safe_dump({"groups": groups}, out, sort_keys=False, width=1000)

alerts = [r["alert"] for g in groups for r in g["rules"] if "alert" in r]
if len(alerts) != len(set(alerts)):
    sys.exit(f"duplicate alert names: {alerts}")
problems = []
for group in groups:
    for rule in group["rules"]:
        name = rule.get("alert")
        if not name:
            continue
        url = rule.get("annotations", {}).get("runbook_url", "")
        if not url.endswith(f"/{name}.md"):
            problems.append(f"{name}: runbook_url {url!r} does not end in /{name}.md")
        if not os.path.isfile(os.path.join(runbooks, f"{name}.md")):
            problems.append(f"{name}: no runbook docs/runbooks/{name}.md")
        for key in ("summary", "description"):
            if not rule.get("annotations", {}).get(key):
                problems.append(f"{name}: no {key} annotation")
        if "severity" not in rule.get("labels", {}):
            problems.append(f"{name}: no severity label")

firing, silent = set(), set()
for path in glob.glob(os.path.join(work, "*_test.yaml")):
    for test in yaml.safe_load(open(path)).get("tests", []):
        for case in test.get("alert_rule_test", []):
            (firing if case.get("exp_alerts") else silent).add(case["alertname"])
for name in alerts:
    if name not in firing:
        problems.append(f"{name}: no test where it fires")
    if name not in silent:
        problems.append(f"{name}: no test where it stays silent")
for name in sorted((firing | silent) - set(alerts)):
    problems.append(f"{name}: tested but not in the rules")
if problems:
    sys.exit("\n".join(problems))
print(f"{len(alerts)} alerts in {len(groups)} groups, each with a runbook and firing and silent tests")
PY

promtool check rules "$work/rules.yaml"
(cd "$work" && promtool test rules ./*_test.yaml)
log "PASS: $(cat "$work"/*_test.yaml | grep -c "alertname:") alert evaluations in $(cat "$work"/*_test.yaml | grep -c "^  - name:") tests"
