#!/usr/bin/env python3
"""Checks that every metric the Grafana dashboard queries exists.

    python3 infra/grafana/check-metrics.py [infra/grafana/callflow.json]

A metric name in a panel's PromQL must be one of:
  - exported by callflow's code: a `metrics::counter!`, `gauge!` or
    `histogram!` in services/*/src (histograms are rendered as Prometheus
    summaries by metrics-exporter-prometheus without buckets configured, so
    NAME, NAME_sum and NAME_count exist and NAME_bucket does not);
  - produced by the OpenTelemetry Collector configuration in infra/otel:
    the spanmetrics connector's names (derived from its namespace and unit),
    the cAdvisor series its scrape job keeps;
  - exported by prometheus-nats-exporter's JetStream collector
    (`${nats_prefix}` is checked as both `nats`, the NATS Helm chart's
    -prefix, and `jetstream`, the exporter's default);
  - `up`, which Prometheus (and the collector's prometheus receiver) records
    for every scrape target.
Label names in selectors on callflow's own metrics must be labels the code
sets (or ones the scrape adds), and literal label values must be values the
code can set, where the code only sets literals.

Reads files only; standard library only. Exits 1 on any problem.
"""

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "infra/grafana/callflow.json"
COLLECTOR = ROOT / "infra/otel/collector.yaml"

# Labels a scrape adds (the collector's relabelling, or Prometheus itself),
# and the summary's quantile label.
SCRAPE_LABELS = {"namespace", "service", "pod", "job", "instance", "quantile"}

# prometheus-nats-exporter, collector/jsz.go: <prefix>_<subsystem>_<name>.
NATS_JSZ = {
    "server": ["jetstream_disabled", "total_streams", "total_consumers", "total_messages",
               "total_message_bytes", "max_memory", "max_storage"],
    "stream": ["total_messages", "total_bytes", "first_seq", "last_seq", "consumer_count"],
    "consumer": ["delivered_consumer_seq", "delivered_stream_seq", "num_ack_pending", "num_redelivered",
                 "num_waiting", "num_pending", "ack_floor_stream_seq", "ack_floor_consumer_seq"],
}
NATS_PREFIXES = ["nats", "jetstream"]
NATS_LABELS = {"server_id", "server_name", "cluster", "domain", "meta_leader", "is_meta_leader", "account",
               "account_id", "stream_name", "stream_leader", "is_stream_leader", "consumer_name",
               "consumer_leader", "is_consumer_leader", "consumer_desc", "consumer_created"}

PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
                "unless", "offset", "inf", "nan"}

MACRO = re.compile(r'metrics::(counter|gauge|histogram)!\(\s*"([A-Za-z_:][A-Za-z0-9_:]*)"')
LABEL_PAIR = re.compile(r'"([A-Za-z_][A-Za-z0-9_]*)"\s*=>\s*("([^"]*)"|[^,]+)')


def macro_args(text, start):
    """The rest of a macro's arguments: up to its closing parenthesis."""
    depth = 1
    for i in range(start, len(text)):
        if text[i] == "(":
            depth += 1
        elif text[i] == ")":
            depth -= 1
            if depth == 0:
                return text[start:i]
    return text[start:]


def code_metrics():
    """name -> {"kind", "files", "labels": {label: set(values) or None if dynamic}}"""
    found = {}
    for path in sorted(ROOT.glob("services/*/src/**/*.rs")):
        text = path.read_text(encoding="utf-8")
        for m in MACRO.finditer(text):
            kind, name = m.group(1), m.group(2)
            rest = macro_args(text, m.end())
            entry = found.setdefault(name, {"kind": kind, "files": set(), "labels": {}})
            if entry["kind"] != kind:
                raise SystemExit(f"{name} is both a {entry['kind']} and a {kind}")
            entry["files"].add(str(path.relative_to(ROOT)))
            for key, _, literal in LABEL_PAIR.findall(rest):
                values = entry["labels"].setdefault(key, set())
                if values is None:
                    continue
                if literal:
                    values.add(literal)
                else:
                    entry["labels"][key] = None
    return found


def collector_metrics():
    """Names the collector configuration produces or keeps."""
    text = COLLECTOR.read_text(encoding="utf-8")
    names = {}
    ns = re.search(r"^\s*spanmetrics:\s*\n(?:.*\n)*?\s*namespace:\s*(\S+)", text, re.M)
    unit = re.search(r"^\s*spanmetrics:\s*\n(?:.*\n)*?\s*unit:\s*(\S+)", text, re.M)
    if ns and unit:
        prefix = ns.group(1).replace(".", "_")
        suffix = {"s": "seconds", "ms": "milliseconds"}[unit.group(1)]
        names[f"{prefix}_calls_total"] = "collector spanmetrics"
        for part in ("bucket", "sum", "count"):
            names[f"{prefix}_duration_{suffix}_{part}"] = "collector spanmetrics"
    keep = re.search(r"regex: (container_\S+)\n\s*action: keep", text)
    if keep:
        names["__cadvisor_keep__"] = keep.group(1)
    return names


def exprs(dashboard):
    for panel in dashboard["panels"]:
        for t in panel.get("targets", []):
            yield panel["title"], t["expr"]
    for var in dashboard["templating"]["list"]:
        if var.get("type") == "query":
            query = var["query"]
            m = re.fullmatch(r"label_values\((.*),\s*([A-Za-z_][A-Za-z0-9_]*)\)", query.strip())
            if m:
                # The label asked for is checked like a matcher on that label.
                selector, label = m.group(1).strip(), m.group(2)
                matcher = f'{label}=~".*"'
                query = selector[:-1] + f", {matcher}}}" if selector.endswith("}") else selector + f"{{{matcher}}}"
            yield f"variable {var['name']}", query


def selectors(expr):
    """(metric, {label: (op, value)}) for every vector selector in expr."""
    out = []
    # String literals, durations and grouping clauses carry no metric names.
    stripped = re.sub(r"\[[^\]]*\]", "", expr)
    stripped = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", stripped)
    for m in re.finditer(r"([A-Za-z_:][A-Za-z0-9_:]*)?\s*\{([^}]*)\}|\"[^\"]*\"|([A-Za-z_:][A-Za-z0-9_:]*)"
                         r"(\s*\()?", stripped):
        if m.group(0).startswith('"'):
            continue
        if m.group(2) is not None:
            matchers = {}
            for lm in re.finditer(r'([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"([^"]*)"', m.group(2)):
                matchers[lm.group(1)] = (lm.group(2), lm.group(3))
            if m.group(1):
                out.append((m.group(1), matchers))
            continue
        word, call = m.group(3), m.group(4)
        if call or word in PROMQL_WORDS or re.fullmatch(r"\d.*", word or ""):
            continue
        out.append((word, {}))
    return out


def main():
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    code = code_metrics()
    collector = collector_metrics()
    cadvisor_keep = collector.pop("__cadvisor_keep__", None)
    problems, used = [], {}

    for title, expr in exprs(dashboard):
        variants = [expr.replace("${nats_prefix}", p) for p in NATS_PREFIXES] if "${nats_prefix}" in expr \
            else [expr]
        for variant in variants:
            for name, matchers in selectors(variant):
                source = None
                base = re.sub(r"_(sum|count)$", "", name)
                if name in code:
                    entry = code[name]
                    source = f"code ({entry['kind']}: {', '.join(sorted(entry['files']))})"
                elif base in code and code[base]["kind"] == "histogram":
                    entry = code[base]
                    source = f"code (summary of histogram {base}: {', '.join(sorted(entry['files']))})"
                elif name.endswith("_bucket") and re.sub(r"_bucket$", "", name) in code:
                    problems.append(f"{title}: {name}: callflow's histograms are summaries, no _bucket series")
                    continue
                else:
                    entry = None
                if entry is not None:
                    for label, (op, value) in matchers.items():
                        if label in SCRAPE_LABELS:
                            continue
                        if label not in entry["labels"]:
                            problems.append(f"{title}: {name} has no label {label!r} "
                                            f"(it has {sorted(entry['labels']) or 'none'})")
                            continue
                        known = entry["labels"][label]
                        if known is None or not re.fullmatch(r"[A-Za-z0-9_|-]+", value):
                            continue
                        for alt in value.split("|"):
                            if alt not in known:
                                problems.append(f"{title}: {name}{{{label}{op}\"{value}\"}}: the code never sets "
                                                f"{label}={alt!r} (it sets {sorted(known)})")
                elif name in collector:
                    source = collector[name] + " (infra/otel/collector.yaml)"
                elif name.startswith("container_"):
                    if cadvisor_keep and re.fullmatch(cadvisor_keep, name):
                        source = "kubelet cAdvisor (kept by infra/otel/collector.yaml's kubernetes-cadvisor job)"
                    else:
                        problems.append(f"{title}: {name}: not kept by the collector's cAdvisor job")
                        continue
                elif any(name == f"{p}_{sub}_{n}" for p in NATS_PREFIXES for sub, ns in NATS_JSZ.items()
                         for n in ns):
                    source = "prometheus-nats-exporter -jsz (NATS Helm chart promExporter)"
                    for label in matchers:
                        if label not in NATS_LABELS | SCRAPE_LABELS:
                            problems.append(f"{title}: {name} has no label {label!r}")
                elif name == "up":
                    source = "Prometheus scrape (every target)"
                else:
                    problems.append(f"{title}: {name}: no such metric in the code, the collector or the "
                                    f"NATS exporter")
                    continue
                used.setdefault(name, [source, set()])[1].add(title)

    print(f"{DASHBOARD}: {len(used)} metric names used")
    for name in sorted(used):
        source, titles = used[name]
        print(f"  ok  {name:50} {source}; {len(titles)} panel(s)")
    unused = sorted(n for n in code if not any(u == n or re.sub(r"_(sum|count)$", "", u) == n for u in used))
    print("callflow metrics not on the dashboard:", ", ".join(unused) or "none")
    for p in problems:
        print("  PROBLEM", p)
    if problems:
        sys.exit(1)
    print("all metric names, label names and literal label values resolve")


if __name__ == "__main__":
    main()
