#!/usr/bin/env python3
"""The chart's Grafana dashboards, checked.

  dashboards-check.py lint [--rendered FILE]
      every dashboard in charts/x0tta6bl4/dashboards/ is valid JSON with a unique uid, Grafana
      schemaVersion >= 39, a `datasource` variable every panel and target uses (${datasource}),
      and a PromQL `expr` in every target; with --rendered, the output of
      `helm template --set dashboards.enabled=true --show-only templates/dashboards.yaml` holds
      one ConfigMap per dashboard, labelled grafana_dashboard: "1", with the file unchanged.

  dashboards-check.py query <prometheus base URL>
      the lint, then every panel target's expr and every query variable of every dashboard run
      against that (real) Prometheus: a target must return at least one series, a variable at
      least one value, unless ALLOW_EMPTY below lists it, with the reason. Each expr is first
      run as an instant query (/api/v1/query); a time-series panel's target that returns
      nothing now but did within the dashboard's default range (the last hour: what Grafana
      would draw; e.g. a counter of an operator process that has since been restarted) passes
      by /api/v1/query_range over that hour, and is reported as such. Dashboard variables are
      replaced by `.*` (they are only used with =~), Grafana's $__rate_interval by 1m,
      $__interval by 15s and $__range by 1h. Exit status 1 if any query fails or returns
      nothing without being allowed.

Needs python3 (and PyYAML for --rendered: python3-yaml).
"""
import glob
import json
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DASHBOARDS = os.path.join(ROOT, "charts", "x0tta6bl4", "dashboards")

# (dashboard uid, panel title) -> why that panel may return no series in the demo. Panels whose
# metric only has series once something goes wrong (a counter vec's labelled series appear at
# the first increment) are here; everything else must return data.
ALLOW_EMPTY = {
    ("x0-identity-sessions", "Session refusals"):
        "x0_agent_session_refusals_total has a series only after a refusal; the demo's agents all "
        "share one mesh authority and post-quantum key exchange, so refusals come only from races "
        "around the failover's and chaos runs' restarts, when they happen at all",
    ("x0-identity-sessions", "Node key rotations"):
        "x0_agent_key_rotations_total counts rotations, which happen at the key lifetime "
        "(hours), not within a demo run",
    ("x0-operator", "Reconcile errors by kind and cause"):
        "x0_reconcile_errors_total has a series only after a failed reconcile; a healthy demo "
        "has none (the stat panel 'Reconcile errors/s' shows 0 instead)",
    ("x0-federated-learning", "Aggregator accuracy"):
        "x0_agent_fl_round_accuracy_ratio exists only while an agent aggregates a job; the demo's "
        "round (10 rounds of about 0.2s) is over about when `make demo` returns, before this "
        "Prometheus scrapes (the operator's x0_fl_job_accuracy_ratio in 'Accuracy' keeps it)",
    # One target of a panel: (dashboard uid, panel title, refId).
    ("x0-chaos", "Verdicts", "A"):
        "x0_chaos_experiment_verdicts counts the judged ChaosExperiments that exist; demo-chaos "
        "deletes each one a second or two after it completes, which a 5 s scrape may never see "
        "(target B of the same panel, x0_chaos_verdicts_total, counts every verdict and must "
        "have data)",
    ("x0-federated-learning", "FL messages dropped"):
        "x0_agent_fl_dropped_total has a series only after a malformed, unauthenticated or "
        "unknown-job FL message, which the demo's round does not send",
}

SUBSTITUTIONS = [
    (re.compile(r"\$__rate_interval|\$\{__rate_interval\}"), "1m"),
    (re.compile(r"\$__interval|\$\{__interval\}"), "15s"),
    (re.compile(r"\$__range|\$\{__range\}"), "1h"),
    # Dashboard variables ($var, ${var}, ${var:regex}, [[var]]): used only with =~, so `.*`.
    (re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*(:[a-z]+)?\}|\$[A-Za-z_][A-Za-z0-9_]*|\[\[[A-Za-z_][A-Za-z0-9_]*\]\]"), ".*"),
]


def substitute(expr):
    for pattern, value in SUBSTITUTIONS:
        expr = pattern.sub(value, expr)
    return expr


def panels(dashboard):
    for p in dashboard.get("panels", []):
        yield p
        for inner in p.get("panels", []) or []:
            yield inner


def load():
    files = sorted(glob.glob(os.path.join(DASHBOARDS, "*.json")))
    if not files:
        sys.exit(f"no dashboards in {DASHBOARDS}")
    return [(f, json.load(open(f))) for f in files]


def lint(boards, rendered=None):
    problems, uids = [], set()
    for path, d in boards:
        name = os.path.basename(path)
        uid = d.get("uid")
        if not uid or uid in uids:
            problems.append(f"{name}: missing or duplicate uid {uid!r}")
        uids.add(uid)
        if d.get("schemaVersion", 0) < 39:
            problems.append(f"{name}: schemaVersion {d.get('schemaVersion')} < 39")
        variables = {v["name"]: v for v in d.get("templating", {}).get("list", [])}
        if variables.get("datasource", {}).get("type") != "datasource":
            problems.append(f"{name}: no `datasource` variable of type datasource")
        for v in variables.values():
            if v["type"] == "query" and v.get("datasource", {}).get("uid") != "${datasource}":
                problems.append(f"{name}: variable {v['name']} does not use ${{datasource}}")
        for p in panels(d):
            if p["type"] == "row":
                continue
            title = p.get("title")
            if p.get("datasource", {}).get("uid") != "${datasource}":
                problems.append(f"{name}: panel {title!r} does not use ${{datasource}}")
            if not p.get("targets"):
                problems.append(f"{name}: panel {title!r} has no targets")
            for t in p.get("targets", []):
                if not t.get("expr"):
                    problems.append(f"{name}: panel {title!r} target {t.get('refId')} has no expr")
                if t.get("datasource", {}).get("uid") != "${datasource}":
                    problems.append(f"{name}: panel {title!r} target {t.get('refId')} does not use ${{datasource}}")
                for m in re.finditer(r"(\w+)\s*(!?=~?)\s*\"\$", t.get("expr", "")):
                    if m.group(2) != "=~":
                        problems.append(f"{name}: panel {title!r}: variable used with {m.group(2)}, not =~")
    known = {(d["uid"], p.get("title")) for _, d in boards for p in panels(d)}
    known |= {(d["uid"], p.get("title"), t.get("refId")) for _, d in boards for p in panels(d)
              for t in p.get("targets", [])}
    for key in ALLOW_EMPTY:
        if key not in known:
            problems.append(f"ALLOW_EMPTY names a panel that does not exist: {key}")
    if rendered:
        import yaml
        docs = [x for x in yaml.safe_load_all(open(rendered)) if x]
        by_key = {}
        for doc in docs:
            if doc.get("kind") != "ConfigMap" or doc["metadata"].get("labels", {}).get("grafana_dashboard") != "1":
                problems.append(f"rendered: {doc.get('kind')} {doc['metadata'].get('name')} is not a ConfigMap labelled grafana_dashboard: \"1\"")
                continue
            by_key.update(doc.get("data", {}))
        for path, d in boards:
            key = "x0tta6bl4-" + os.path.basename(path)
            if key not in by_key:
                problems.append(f"rendered: no ConfigMap carries {key}")
            elif json.loads(by_key[key]) != d:
                problems.append(f"rendered: {key} differs from {os.path.basename(path)}")
    if problems:
        sys.exit("dashboard lint failed:\n  " + "\n  ".join(problems))
    n = sum(1 for _, d in boards for p in panels(d) if p["type"] != "row")
    print(f"lint: {len(boards)} dashboards, {n} panels: valid, ${{datasource}} everywhere"
          + (", rendered as grafana_dashboard ConfigMaps" if rendered else ""))


def query(base, promql, window=None):
    if window:
        end = time.time()
        # One step per scrape: a short-lived series (a ChaosExperiment that existed for a few
        # seconds) was scraped once at least and goes stale at the next scrape, so only a step
        # no longer than the scrape interval is sure to land inside its life.
        step = os.environ.get("X0_SCRAPE_INTERVAL", "5")
        params = {"query": promql, "start": f"{end - window:.3f}", "end": f"{end:.3f}", "step": step}
        url = base.rstrip("/") + "/api/v1/query_range?" + urllib.parse.urlencode(params)
    else:
        url = base.rstrip("/") + "/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            body = json.load(r)
    except urllib.error.HTTPError as e:
        body = json.load(e)
    if body.get("status") != "success":
        raise RuntimeError(f"{body.get('errorType')}: {body.get('error')}")
    return body["data"]["result"]


def label_values(base, definition):
    m = re.fullmatch(r"\s*label_values\((.*),\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)\s*", definition)
    if not m:
        raise RuntimeError(f"unsupported variable query {definition!r}")
    series = query(base, substitute(m.group(1)))
    return sorted({s["metric"].get(m.group(2)) for s in series} - {None})


def run(base, boards):
    ok, allowed, failed = 0, [], []
    for path, d in boards:
        uid = d["uid"]
        for v in d.get("templating", {}).get("list", []):
            if v["type"] != "query":
                continue
            try:
                values = label_values(base, v["definition"])
            except RuntimeError as e:
                failed.append(f"{uid} variable ${v['name']}: {e}")
                continue
            if values:
                ok += 1
                print(f"  ok    {uid} variable ${v['name']}: {', '.join(values)}")
            else:
                failed.append(f"{uid} variable ${v['name']}: no values ({v['definition']})")
        for p in panels(d):
            if p["type"] == "row":
                continue
            title = p["title"]
            for t in p["targets"]:
                expr = substitute(t["expr"])
                where = f"{uid} / {title} [{t['refId']}]"
                try:
                    result = query(base, expr)
                except RuntimeError as e:
                    failed.append(f"{where}: query error {e}: {expr}")
                    continue
                if not result and p["type"] == "timeseries":
                    try:
                        ranged = query(base, expr, window=3600)
                    except RuntimeError as e:
                        failed.append(f"{where}: range query error {e}: {expr}")
                        continue
                    if ranged:
                        ok += 1
                        last = max(float(v[-1][0]) for s in ranged for v in [s["values"]])
                        print(f"  ok    {where}: {len(ranged)} series in the last hour (none now; last sample "
                              f"{time.time() - last:.0f}s ago)")
                        continue
                if result:
                    ok += 1
                    print(f"  ok    {where}: {len(result)} series")
                elif (uid, title, t["refId"]) in ALLOW_EMPTY or (uid, title) in ALLOW_EMPTY:
                    allowed.append(where)
                    reason = ALLOW_EMPTY.get((uid, title, t["refId"])) or ALLOW_EMPTY[(uid, title)]
                    print(f"  empty {where}: allowed: {reason}")
                else:
                    failed.append(f"{where}: no series: {expr}")
    total = ok + len(allowed) + len(failed)
    print(f"queries: {total}, with data: {ok}, allowed empty: {len(allowed)}, failed: {len(failed)}")
    if failed:
        sys.exit("dashboard queries without data or failing:\n  " + "\n  ".join(failed))


def main():
    args = sys.argv[1:]
    if args[:1] == ["lint"]:
        rendered = args[2] if args[1:2] == ["--rendered"] and len(args) == 3 else None
        lint(load(), rendered)
    elif args[:1] == ["query"] and len(args) == 2:
        boards = load()
        lint(boards)
        run(args[1], boards)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
