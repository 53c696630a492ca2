"""Writes a bench run as JSON, a markdown table and a PNG plot; summarises py-spy profiles."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

RATE_UNITS = ("req/s", "items/s", "deliveries/s", "msgs/s", "events/s")


def fmt_value(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    if unit in RATE_UNITS:
        return f"{value:,.0f}"
    if unit == "ms":
        # A lone call's few milliseconds need the tenth; a tail's hundreds do not.
        return f"{value:,.1f}" if value < 10 else f"{value:,.0f}"
    if unit == "per accepted":
        return f"{value:.2f}"
    return f"{value:,.1f}"


def fmt_figure(fig: dict[str, Any] | None) -> str:
    if not fig or fig.get("median") is None:
        return "n/a"
    unit = fig.get("unit", "")
    ge = "≥ " if fig.get("censored") else ""
    text = f"{ge}{fmt_value(fig['median'], unit)} {unit}"
    if len([r for r in fig.get("runs", []) if r is not None]) > 1:
        text += f" ({fmt_value(fig['min'], unit)}-{fmt_value(fig['max'], unit)})"
    return text


def markdown_table(doc: dict[str, Any]) -> str:
    lines = [
        "| id | scenario | project figure | baseline | ratio | target | met |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in doc["results"]:
        base = fmt_figure(row["baseline"])
        if row["baseline"]:
            base += f" — {row['baseline_name']}"
        ratio = f"{row['ratio']:.2f}x" if row["ratio"] is not None else "-"
        met = {True: "✅ met", False: "❌ not met", None: "(info)"}[row["met"]]
        lines.append(
            f"| {row['key']} | {row['scenario']} | {fmt_figure(row['figure'])} | {base} "
            f"| {ratio} | {row['target']} | {met} |"
        )
    return "\n".join(lines)


def markdown(doc: dict[str, Any]) -> str:
    mach = doc["machine"]
    out = [
        f"# CIM Hub benchmark — {doc['generated_at']}",
        "",
        f"`{doc['command']}` — database **{doc['db']}**, {doc['runs']} run(s) per figure "
        f"(median, with min-max), {doc['duration_seconds']:.0f} s in all"
        + (" — **quick run**" if doc["quick"] else "")
        + ".",
        "",
        f"Machine: {mach['cpu_count']} x {mach['cpu_model']}, "
        f"{mach['memory_bytes'] / 2**30:.1f} GiB, Python {mach['python']}, "
        f"commit `{mach['git_commit'][:12]}`"
        + (" (working tree modified)" if mach["git_dirty"] else "")
        + ", load average at start "
        + ", ".join(f"{x:.2f}" for x in mach["load_average_at_start"])
        + ".",
        "",
        markdown_table(doc),
        "",
    ]
    extra = [r for r in doc["results"] if r.get("reference")]
    for r in extra:
        out.append(
            f"- {r['key']} reference: {r['reference_name']} {fmt_figure(r['reference'])}"
            + (
                f", ratio {r['ratio_to_reference']:.2f}x"
                if r.get("ratio_to_reference") is not None
                else ""
            )
        )
    for r in doc["results"]:
        if r.get("note"):
            out.append(f"- {r['key']}: {r['note']}")
        if r.get("cost_percent") is not None:
            runs = ", ".join(
                "n/a" if c is None else f"{c:.1f} %" for c in r.get("cost_runs_percent", [])
            )
            out.append(
                f"- {r['key']}: costs {r['cost_percent']:.1f} % of the throughput with "
                f"observability off (median of the runs' costs: {runs})"
            )
        if r.get("cpu_cost_percent") is not None:
            off, on = r["cpu_ms_per_call_off"]["median"], r["cpu_ms_per_call"]["median"]
            what = r.get("cpu_per", "call")
            out.append(
                f"- {r['key']}: hub CPU per {what} {on:.3f} ms against {off:.3f} ms with "
                f"observability off: {r['cpu_cost_percent']:+.1f} % (median of the runs' ratios)"
            )
        if r.get("accept_only"):
            ratio = r.get("accept_only_ratio")
            out.append(
                f"- {r['key']}: accepting alone (the same hub setup with dispatch held back) "
                f"{fmt_figure(r['accept_only'])}"
                + (f", {ratio:.2f}x bare unary" if ratio is not None else "")
            )
        if r.get("sent_per_accepted", {}).get("median") is not None:
            out.append(
                f"- {r['key']}: sent by dispatch during the runs "
                f"{fmt_figure(r['sent_per_accepted'])} (below 1, accepting outran dispatch "
                "in the same process and the outbox grew)"
            )
        for name, figure in r.get("p50_by_series", {}).items():
            out.append(f"- {r['key']}: {name} at concurrency 1, p50 {fmt_figure(figure)}")
        if r.get("p99_ms"):
            out.append(f"- {r['key']}: client-side p99 per request {fmt_figure(r['p99_ms'])}")
        if r.get("server_cpu_percent"):
            text = f"- {r['key']}: hub CPU {fmt_figure(r['server_cpu_percent'])} of one core"
            if r.get("baseline_server_cpu_percent"):
                text += f"; baseline server {fmt_figure(r['baseline_server_cpu_percent'])}"
            out.append(text)
        if r["key"] == "P6":
            out.append(
                "- P6: hub RSS before subscribers "
                f"{fmt_value(r.get('rss_before_subscribers_mb'), 'MB')} MB, "
                f"with {1000} idle subscribers "
                f"{fmt_value(r.get('rss_idle_subscribers_mb'), 'MB')} MB, "
                f"peak over all of P3 {fmt_value(r.get('peak_over_whole_p3_mb'), 'MB')} MB"
            )
    tvc = doc["series"].get("throughput_vs_concurrency")
    if tvc:
        levels = sorted({int(c) for per in tvc.values() for c in per})
        out += ["", "## Throughput against concurrency (req/s)", ""]
        out.append("| series | " + " | ".join(f"c={c}" for c in levels) + " |")
        out.append("|---|" + "---|" * len(levels))
        for name, per in tvc.items():
            cells = [fmt_figure(per.get(str(c))) for c in levels]
            out.append(f"| {name} | " + " | ".join(cells) + " |")
    fl = doc["series"].get("fanout_latency")
    if fl:
        out += ["", "## Fan-out latency against load (ms, receive - server_timestamp)", ""]
        out.append("| events/s | platform p50 | platform p99 | bare p50 | bare p99 |")
        out.append("|---|---|---|---|---|")
        for rate in fl["platform"]:
            p, b = fl["platform"][rate], fl["bare"].get(rate, {})
            out.append(
                f"| {rate} | {fmt_figure(p['p50'])} | {fmt_figure(p['p99'])} "
                f"| {fmt_figure(b.get('p50'))} | {fmt_figure(b.get('p99'))} |"
            )
        out.append("")
        out.append(
            "≥ marks a lower bound: deliveries still missing when the wait ended count as "
            "arriving then."
        )
    if doc.get("profiles"):
        out += ["", "## Profiles", ""]
        out += [f"- {k}: `{v}`" for k, v in doc["profiles"].items()]
    if doc["notes"]:
        out += ["", "## Notes", ""]
        out += [f"- {n}" for n in doc["notes"]]
    return "\n".join(out) + "\n"


def plot(doc: dict[str, Any], path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    title = f"CIM Hub bench ({doc['db']}, {doc['runs']} run(s), median with min-max)"
    fig.suptitle(title + f" — {doc['machine']['git_commit'][:10]}")

    def errbar(ax: Any, xs: list[float], figs: list[dict[str, Any]], label: str, **kw: Any) -> None:
        pts = [(x, f) for x, f in zip(xs, figs, strict=False) if f and f.get("median") is not None]
        if not pts:
            return
        x = [p[0] for p in pts]
        y = [p[1]["median"] for p in pts]
        lo = [p[1]["median"] - p[1]["min"] for p in pts]
        hi = [p[1]["max"] - p[1]["median"] for p in pts]
        ax.errorbar(x, y, yerr=[lo, hi], marker="o", capsize=3, label=label, **kw)

    ax = axes[0][0]
    tvc = doc["series"].get("throughput_vs_concurrency", {})
    for name, per in tvc.items():
        levels = sorted(int(c) for c in per)
        errbar(ax, levels, [per[str(c)] for c in levels], name)
    ax.set_title("P1/P4: throughput against concurrency")
    ax.set_xlabel("concurrent requests")
    ax.set_ylabel("requests/s")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    if tvc:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)

    ax = axes[0][1]
    fl = doc["series"].get("fanout_latency", {})
    for who, style in (("platform", "-"), ("bare", "--")):
        per = fl.get(who, {})
        rates = sorted(int(r) for r in per)
        figs = [per[str(r)]["p99"] for r in rates]
        errbar(ax, rates, figs, f"{who} p99", linestyle=style)
        for r, f in zip(rates, figs, strict=False):
            if f.get("censored") and f.get("median") is not None:
                ax.annotate(
                    "lagging: lower bound", (r, f["median"]), fontsize=7,
                    textcoords="offset points", xytext=(-40, 8),
                )  # fmt: skip
    if fl:
        ax.axhline(
            200, color="red", linewidth=0.8, linestyle=":", label="P3 target (200 ms @ 50/s)"
        )
        ax.legend(fontsize=8)
        ax.set_yscale("log")
        ax.set_xscale("log")
    ax.set_title("P3: fan-out p99 latency against load (1000 subscribers)")
    ax.set_xlabel("events/s")
    ax.set_ylabel("p99 ms (bare: lower bound when lagging)")
    ax.grid(alpha=0.3)

    ax = axes[1][0]
    bars = []
    for r in doc["results"]:
        if r["key"] in ("P1", "P2", "P3", "P5") and r["baseline"]:
            bars.append((r["key"], r["figure"], r["baseline"], r["figure"].get("unit", "")))
    for i, (_key, f, b, _unit) in enumerate(bars):
        for j, (val, color) in enumerate(((b, "tab:gray"), (f, "tab:blue"))):
            if val.get("median") is None:
                continue
            ax.bar(
                i + (j - 0.5) * 0.38,
                val["median"],
                0.36,
                yerr=[[val["median"] - val["min"]], [val["max"] - val["median"]]],
                color=color,
                capsize=3,
                label=("baseline" if j == 0 else "platform") if i == 0 else None,
            )
    ax.set_xticks(range(len(bars)), [f"{k}\n({u})" for k, _, _, u in bars])
    ax.set_yscale("log")
    ax.set_title("Throughput: platform against its baseline")
    if bars:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")

    ax = axes[1][1]
    targets = {"P1": 0.7, "P2": 0.25, "P3": 3.0, "P4": 0.6}
    keys = [r for r in doc["results"] if r["key"] in targets and r["ratio"] is not None]
    for i, r in enumerate(keys):
        color = "tab:green" if r["met"] else "tab:red"
        ax.bar(i, r["ratio"], 0.5, color=color)
        ax.plot([i - 0.3, i + 0.3], [targets[r["key"]]] * 2, color="black", linewidth=2)
    ax.set_xticks(range(len(keys)), [r["key"] for r in keys])
    ax.set_title("Ratio to baseline (black line: target)")
    ax.set_ylabel("platform / baseline")
    ax.grid(alpha=0.3, axis="y")

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_all(doc: dict[str, Any], out_dir: Path, stem: str) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{stem}.json", out_dir / f"{stem}.md", out_dir / f"{stem}.png"]
    paths[0].write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n")
    paths[1].write_text(markdown(doc))
    try:
        plot(doc, paths[2])
    except Exception as exc:  # a plotting problem must not lose the numbers
        doc["notes"].append(f"plot failed: {exc!r}")
        paths[0].write_text(json.dumps(doc, indent=2) + "\n")
        paths.pop()
    return paths


# ------------------------------------------------------------------ profiles
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def _where(frame: str) -> tuple[str, str]:
    """(function in file, package) for one py-spy frame "func (path/file.py:123)"."""
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip(), "?"
    func, file = match["func"], match["file"]
    if "site-packages/" in file:
        rel = file.split("site-packages/", 1)[1]
        package = rel.split("/", 1)[0]
    elif "/lib/python3" in file:
        rel = file.split("/lib/python3", 1)[1].split("/", 1)[-1]
        package = "stdlib:" + rel.split("/", 1)[0].removesuffix(".py")
    elif "/work/" in file or file.startswith(("server/", "adapters/")):
        rel = re.sub(r"^.*?/(server|adapters|generated|bench)/", r"\1/", file)
        package = rel.rsplit("/", 1)[0]
    else:
        rel = file
        package = file.split("/", 1)[0] or "?"
    return f"{func} ({rel})", package


def _thread_name(head: str, stack: str) -> str:
    """Names a thread by what it runs: the event loop, aiosqlite's worker, gRPC's poller..."""
    if "run_forever" in stack or "run_until_complete" in stack:
        return "event loop (main thread)"
    if "_connection_worker_thread" in stack:
        return "aiosqlite worker thread"
    if "concurrent/futures/thread" in stack:
        return "executor thread"
    return head if head.startswith("thread") else "other"


def summarize_profile(folded: str, key: str, top: int = 30) -> str:
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    for line in folded.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        head = stack.split(";", 1)[0]
        threads[_thread_name(head, stack)] += n
        frames = [
            _where(f) for f in stack.split(";") if f and not f.startswith(("process ", "thread "))
        ]
        if not frames:
            continue
        own[frames[-1][0]] += n
        packages[frames[-1][1]] += n
        for name in {f[0] for f in frames}:
            inclusive[name] += n
    if total == 0:
        return f"{key}: no samples\n"

    def table(counter: Counter[str], title: str) -> list[str]:
        rows = [f"## {title}", ""]
        for name, n in counter.most_common(top):
            rows.append(f"{100 * n / total:6.1f}%  {name}")
        return [*rows, ""]

    return "\n".join(
        [
            f"# py-spy profile of the hub during {key}: {total} samples (all threads)",
            "",
            *table(threads, "samples by thread"),
            *table(packages, "own time by package or project module"),
            *table(own, "own time by function"),
            *table(inclusive, "inclusive time by function"),
        ]
    )
