"""CIM Hub benchmarks: the platform against bare baselines, in one run, on one machine.

    .venv/bin/python bench/run.py                  # everything, SQLite, 3 runs per figure
    .venv/bin/python bench/run.py --quick          # a smoke run: 1 run, shorter windows
    .venv/bin/python bench/run.py --db postgresql  # P1, P2 and P5 on a throwaway PostgreSQL
    .venv/bin/python bench/run.py --only P1,P4 --profile
    .venv/bin/python bench/run.py --only M1        # what metrics and tracing cost P1 and P5

Every server (the hub, the bare baselines, the fake SMS provider) and every
load generator is its own process, talking over loopback. Figures are the
median of --runs runs with min and max; each is set against a baseline
measured in the same run. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))

import flame
import peer
import report
from common import (
    BENCH,
    ROOT,
    BenchError,
    Child,
    Children,
    CpuMeter,
    RssSampler,
    Worker,
    hist_merge,
    hist_percentile,
    log,
    machine,
    quiesce,
    summary,
)
from loadgen import API_ID, API_KEY, AUTH_METADATA, GRPC_OPTIONS, batch_request, message_payload

ALL = ("P1", "P2", "P3", "P4", "P5", "P6", "M1", "K1")
PG_DEFAULT = ("P1", "P2", "P5")
TWILIO_SID = "AC" + "0" * 32
TWILIO_TOKEN = "bench-auth-token"
SMS_LANE = "+447700000000"


@dataclass(frozen=True)
class Plan:
    """How long and how hard each measurement runs."""

    runs: int
    warmup: float = 0.5
    unary_seconds: float = 2.5  # at the headline concurrency
    sweep_seconds: float = 1.0  # at the other concurrency levels
    concurrency: int = 64
    sweep: tuple[int, ...] = (1, 8, 64)
    batch_concurrency: int = 4
    batch_items: int = 1000
    batch_seconds: float = 3.0
    batch_max_seconds: float = 30.0  # a window grows until `concurrency` batches completed
    subscribers: int = 1000
    sub_workers: int = 2
    channels_per_worker: int = 5
    burst_messages: int = 50  # platform burst: one SendBatch; 3 events per message
    burst_events: int = 150  # bare burst: as many events, each its own stream message
    rates: tuple[int, ...] = (10, 50, 200)  # events/s for the fan-out latency
    rate_seconds: float = 3.0
    drain_cap: float = 5.0  # how long past the end of a rate run to wait for stragglers
    sustained_offered: int = 3000  # messages/s offered for the P5 throughput run
    sustained_batch: int = 250
    sustained_backlog: int = 1000  # offering pauses while this many are accepted, not sent
    drain_wait: float = 45.0  # the longest wait for the provider to get what was accepted
    sustained_seconds: float = 3.0
    p5_rate: int = 500
    p5_seconds: float = 2.0
    profile_seconds: float = 5.0
    cost_runs: int = 5  # M1: rounds of off / metrics / traced, taking turns
    cost_rate: int = 300  # M1: SendMessage/s offered while the hub's CPU is metered
    cost_seconds: float = 2.0
    cost_settle: float = 1.0
    peer_messages: int = 10_000  # K1: SMS each side takes, at `concurrency`


FULL = Plan(runs=3)
QUICK = Plan(
    runs=1,
    unary_seconds=1.5,
    sweep=(64,),
    batch_seconds=1.5,
    burst_messages=20,
    burst_events=60,
    rate_seconds=2.0,
    drain_cap=3.0,
    sustained_seconds=2.0,
    p5_seconds=2.0,
    profile_seconds=3.0,
    cost_runs=2,
    peer_messages=3000,
)


@dataclass
class Hub:
    child: Child
    grpc: str
    http: str

    @property
    def pid(self) -> int:
        return self.child.pid


@dataclass
class Ctx:
    args: argparse.Namespace
    plan: Plan
    children: Children
    tmp: Path
    db: str
    pg: Any = None
    load: Worker | None = None
    subs: list[Worker] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    series: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    profiles: dict[str, str] = field(default_factory=dict)

    def db_url(self, name: str) -> str:
        if self.db == "postgresql":
            return str(self.pg.url(self.pg.create_database()))
        return f"sqlite+aiosqlite:///{self.tmp / (name + '.db')}"

    @property
    def worker(self) -> Worker:
        assert self.load is not None
        return self.load


# ------------------------------------------------------------------ servers
async def start_hub(
    ctx: Ctx,
    name: str,
    channels: Path | None = None,
    extra_env: dict[str, str] | None = None,
    db_url: str | None = None,
) -> Hub:
    argv = [
        "-m", "server", "serve",
        "--grpc-port", "0",
        "--http-port", "0",
        "--database-url", db_url or ctx.db_url(name),
        "--log-level", "WARNING",
    ]  # fmt: skip
    if channels is not None:
        argv += ["--channels", str(channels)]
    env = {
        "CIMHUB_SHUTDOWN_GRACE": "1",
        "BENCH_TWILIO_TOKEN": TWILIO_TOKEN,
        # The hub creates this app and key at start, so calls pass authentication.
        "CIMHUB_BOOTSTRAP_API_ID": API_ID,
        "CIMHUB_BOOTSTRAP_API_KEY": API_KEY,
        # The per-tenant rate limit (1000/s by default) is a policy, not a
        # capacity: left on, it would cap P1 and P4 at the limit. Calls still
        # pass through the limiter.
        "CIMHUB_RATE_PER_SECOND": "1000000",
        "CIMHUB_RATE_BURST": "1000000",
        **(extra_env or {}),
    }
    child = await ctx.children.start(name, argv, "cimhub: gRPC on", env=env, ready_timeout=120)
    # "cimhub: gRPC on 127.0.0.1:N, HTTP on 127.0.0.1:M"
    grpc_addr = child.ready_line.split("gRPC on ", 1)[1].split(",")[0].strip()
    http_addr = child.ready_line.split("HTTP on ", 1)[1].strip()
    log(f"{name}: hub pid {child.pid}, gRPC {grpc_addr}, HTTP {http_addr} ({ctx.db})")
    return Hub(child, grpc_addr, "http://" + http_addr)


async def start_split(ctx: Ctx, name: str, channels: Path | None = None) -> tuple[Hub, Hub]:
    """An api process and a dispatcher process on one database: the roles split."""
    shared = ctx.db_url(f"{name}-split")
    api = await start_hub(ctx, f"{name}-api", channels, {"CIMHUB_ROLE": "api"}, shared)
    dispatcher = await start_hub(
        ctx, f"{name}-dispatcher", channels, {"CIMHUB_ROLE": "dispatcher"}, shared
    )
    return api, dispatcher


async def start_script(ctx: Ctx, name: str, script: str, prefix: str, *extra: str) -> Child:
    child = await ctx.children.start(name, [str(BENCH / script), *extra], prefix)
    log(f"{name}: pid {child.pid}, {child.address()}")
    return child


@contextlib.asynccontextmanager
async def profiled(ctx: Ctx, key: str, pid: int) -> AsyncIterator[None]:
    """With --profile, py-spy samples the process while the block runs."""
    if not ctx.args.profile:
        yield
        return
    pyspy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if pyspy is None:
        ctx.notes.append("--profile: py-spy not found (make venv installs it from uv.lock)")
        yield
        return
    out_dir = ctx.args.profile_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    raw = out_dir / f"{key}.folded"
    with (ctx.tmp / f"py-spy-{key}.log").open("wb") as errfile:
        proc = await asyncio.create_subprocess_exec(
            pyspy, "record", "--pid", str(pid), "--rate", "200", "--nonblocking", "--threads",
            "--format", "raw", "--output", str(raw),
            stdout=errfile, stderr=errfile,
        )  # fmt: skip
    await asyncio.sleep(1.0)  # py-spy attaches
    try:
        yield
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(proc.wait(), 30)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        if raw.exists():
            summary_path = out_dir / f"{key}.txt"
            summary_path.write_text(report.summarize_profile(raw.read_text(), key))
            flame.write_svg(raw, out_dir / f"{key}.svg", f"hub during {key} ({ctx.db})")
            ctx.profiles[key] = str(summary_path.relative_to(ROOT))
            log(f"profile {key}: {summary_path.relative_to(ROOT)}")


def row(
    ctx: Ctx,
    key: str,
    id_: str,
    scenario: str,
    figure: dict[str, Any],
    baseline: dict[str, Any] | None,
    baseline_name: str,
    target: str,
    met: bool | None,
    ratio: float | None = None,
    ratio_runs: list[float | None] | None = None,
    **extra: Any,
) -> None:
    ctx.rows.append(
        {
            "key": key,
            "id": id_,
            "scenario": scenario,
            "figure": figure,
            "baseline": baseline,
            "baseline_name": baseline_name,
            "ratio": ratio,
            "ratio_runs": ratio_runs or [],
            "target": target,
            "met": met,
            **extra,
        }
    )
    shown = report.fmt_figure(figure)
    base = report.fmt_figure(baseline) if baseline else "-"
    r = f"{ratio:.2f}x" if ratio is not None else "-"
    verdict = {True: "MET", False: "NOT MET", None: "info"}[met]
    log(f"  {key}: {shown} vs {base} -> {r}; target {target}: {verdict}")


def ratio_of(a: dict[str, Any], b: dict[str, Any] | None) -> float | None:
    if not b or not a.get("median") or not b.get("median"):
        return None
    return float(a["median"]) / float(b["median"])


def run_ratios(a: list[Any], b: list[Any]) -> list[float | None]:
    return [x / y if x is not None and y else None for x, y in zip(a, b, strict=False)]


# ----------------------------------------------------------- P1 / P4: unary
HELD = "gRPC SendMessage, dispatch held back"
SPLIT = "gRPC SendMessage, roles split (api process)"
REST = "REST /api/v1/message/send"
REST_SPLIT = "REST /api/v1/message/send, roles split (api process)"
FULL_SYNC = "gRPC SendMessage, synchronous=FULL"
# Accepted and sent messages, as the hub's /metrics counts them.
ACCEPTED, SENT = "cimhub_messages_accepted_total", "cimhub_dispatch_attempts_total"


async def hub_counts(http: str) -> dict[str, float]:
    """The hub's accepted and sent counters, summed over their labels."""
    totals = {ACCEPTED: 0.0, SENT: 0.0}
    async with (
        aiohttp.ClientSession(trust_env=False) as session,
        session.get(http + "/metrics") as resp,
    ):
        text = await resp.text()
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in totals:
            totals[name] += float(line.rsplit(" ", 1)[1])
    return totals


async def bench_unary(ctx: Ctx, want: set[str]) -> None:
    plan = ctx.plan
    log("P1/P4: unary throughput (SendMessage, REST façade) against bare gRPC and aiohttp")
    bare_grpc = await start_script(ctx, "bare-grpc", "baselines/bare_grpc.py", "bare-grpc:")
    bare_http = await start_script(ctx, "bare-http", "baselines/bare_http.py", "bare-http:")
    hub = await start_hub(ctx, "hub-unary")
    series: dict[str, tuple[str, str, int]] = {
        "bare gRPC unary": ("bare_unary", bare_grpc.address(), bare_grpc.pid),
        "gRPC SendMessage": ("send_message", hub.grpc, hub.pid),
    }
    held: Hub | None = None
    split: Hub | None = None
    split_dispatcher: Hub | None = None
    if want & {"P1", "P4"}:
        # The same calls to an api process whose messages a dispatcher process
        # on the same database sends: the layout `--role` is for.
        split, split_dispatcher = await start_split(ctx, "hub-split")
    if "P1" in want:
        # The same calls to a hub whose sandbox channel is paced to one message
        # a second: it accepts, but dispatches next to nothing. How far this is
        # above P1 is what dispatching in the same process costs.
        paced = ctx.tmp / "channels-held.toml"
        paced.write_text(
            '[[channels]]\nid = "sandbox"\ntype = "SANDBOX"\nprovider = "sandbox"\n'
            'lane = "sandbox"\nname = "Sandbox, paced"\nsandbox = true\ntps = 1\n'
        )
        held = await start_hub(ctx, "hub-unary-held", paced)
        series[HELD] = ("send_message", held.grpc, held.pid)
    full: Hub | None = None
    if "P1" in want and ctx.db == "sqlite":
        # What power-loss durability costs: the same calls with the WAL
        # fsynced on every group commit (README, crash safety).
        fsync_each = {"CIMHUB_SQLITE_SYNCHRONOUS": "FULL"}
        full = await start_hub(ctx, "hub-unary-full", extra_env=fsync_each)
        series[FULL_SYNC] = ("send_message", full.grpc, full.pid)
    if split is not None:
        series[SPLIT] = ("send_message", split.grpc, split.pid)
    if "P4" in want:
        series[REST] = ("rest_send", hub.http, hub.pid)
        if split is not None:
            series[REST_SPLIT] = ("rest_send", split.http, split.pid)
        series["bare aiohttp JSON"] = ("bare_http", "http://" + bare_http.address(), bare_http.pid)
    levels = sorted(set(plan.sweep) | {plan.concurrency})
    raw: dict[str, dict[int, list[float]]] = {s: {c: [] for c in levels} for s in series}
    lat: dict[str, list[float]] = {s: [] for s in series}
    # Each series' p50 at the lowest concurrency: what a lone request waits.
    lone = levels[0]
    lone_p50: dict[str, list[float]] = {s: [] for s in series}
    cpus: dict[str, list[float | None]] = {s: [] for s in series}
    # With dispatch in the process, how many messages it sent for each it
    # accepted during a run: below 1, accepting outran sending and the
    # figure was bought with a growing outbox.
    kept_up: dict[str, list[float]] = {name: [] for name in ("gRPC SendMessage", REST)}
    extra_hubs = [h for h in (held, full, split, split_dispatcher) if h is not None]
    everyone = [hub.pid, bare_grpc.pid, bare_http.pid, *(h.pid for h in extra_hubs)]
    for run in range(plan.runs):
        for c in levels:
            seconds = plan.unary_seconds if c == plan.concurrency else plan.sweep_seconds
            for name, (kind, target, pid) in series.items():
                await quiesce(everyone)
                counted = name in kept_up and c == plan.concurrency
                before = await hub_counts(hub.http) if counted else {}
                async with CpuMeter(pid) as cpu:
                    r = await ctx.worker.call(
                        "load",
                        kind=kind,
                        target=target,
                        concurrency=c,
                        warmup=plan.warmup,
                        duration=seconds,
                        channel_id="sandbox",
                    )
                if r["errors"]:
                    ctx.notes.append(
                        f"{name} c={c} run {run + 1}: {r['errors']} errors, e.g. {r['first_error']}"
                    )
                raw[name][c].append(r["rate"])
                if counted:
                    after = await hub_counts(hub.http)
                    accepted = after[ACCEPTED] - before[ACCEPTED]
                    if accepted:
                        kept_up[name].append((after[SENT] - before[SENT]) / accepted)
                if c == lone:
                    lone_p50[name].append(r["p50_ms"])
                if c == plan.concurrency:
                    lat[name].append(r["p99_ms"])
                    cpus[name].append(cpu.percent)
                log(
                    f"  run {run + 1}/{plan.runs} c={c:<3} {name:<28} {r['rate']:8.0f}/s  p99 "
                    f"{r['p99_ms']:.1f} ms"
                )
    ctx.series["throughput_vs_concurrency"] = {
        name: {str(c): summary(v, "req/s") for c, v in per.items()} for name, per in raw.items()
    }
    c = plan.concurrency
    bare = summary(raw["bare gRPC unary"][c], "req/s")
    send = summary(raw["gRPC SendMessage"][c], "req/s")
    if "P1" in want:
        r = ratio_of(send, bare)
        row(
            ctx, "P1", "P1", f"durable SendMessage (gRPC, {ctx.db}) at concurrency {c}",
            send, bare, f"bare grpc.aio unary, concurrency {c}", ">= 0.7x bare unary RPS",
            None if r is None else r >= 0.7, r,
            run_ratios(raw["gRPC SendMessage"][c], raw["bare gRPC unary"][c]),
            p99_ms=summary(lat["gRPC SendMessage"], "ms"),
            baseline_p99_ms=summary(lat["bare gRPC unary"], "ms"),
            server_cpu_percent=summary(cpus["gRPC SendMessage"], "%"),
            baseline_server_cpu_percent=summary(cpus["bare gRPC unary"], "%"),
            accept_only=summary(raw[HELD][c], "req/s"),
            accept_only_ratio=ratio_of(summary(raw[HELD][c], "req/s"), bare),
            sent_per_accepted=summary(kept_up["gRPC SendMessage"], "per accepted"),
        )  # fmt: skip
        split_fig = summary(raw[SPLIT][c], "req/s")
        r = ratio_of(split_fig, bare)
        row(
            ctx, "P1 split", "P1",
            f"durable SendMessage (gRPC, {ctx.db}) at concurrency {c}, to an api process with "
            "dispatch in a dispatcher process on the same database",
            split_fig, bare, f"bare grpc.aio unary, concurrency {c}", ">= 0.7x bare unary RPS",
            None if r is None else r >= 0.7, r,
            run_ratios(raw[SPLIT][c], raw["bare gRPC unary"][c]),
            p99_ms=summary(lat[SPLIT], "ms"),
            server_cpu_percent=summary(cpus[SPLIT], "%"),
        )  # fmt: skip
    if full is not None:
        full_fig = summary(raw[FULL_SYNC][c], "req/s")
        row(
            ctx, "P1 FULL", "P1",
            f"durable SendMessage (gRPC, sqlite) at concurrency {c} with "
            "CIMHUB_SQLITE_SYNCHRONOUS=FULL: the WAL fsynced on every group commit",
            full_fig, send, f"the same with the default NORMAL, concurrency {c}, same run",
            "reported", None, ratio_of(full_fig, send),
            run_ratios(raw[FULL_SYNC][c], raw["gRPC SendMessage"][c]),
            p99_ms=summary(lat[FULL_SYNC], "ms"),
            p50_by_series={
                name: summary(lone_p50[name], "ms") for name in (FULL_SYNC, "gRPC SendMessage")
            }
            if lone == 1
            else {},
            server_cpu_percent=summary(cpus[FULL_SYNC], "%"),
        )  # fmt: skip
    if "P1" in want and split is not None and lone == 1:
        p50 = summary(lone_p50[SPLIT], "ms")
        row(
            ctx, "P1@1", "P1",
            f"p50 of a lone SendMessage (gRPC, {ctx.db}, concurrency 1) to an api process with "
            "dispatch in a dispatcher process",
            p50, summary(lone_p50["bare gRPC unary"], "ms"), "bare grpc.aio unary, concurrency 1",
            "p50 < 2 ms", None if p50["median"] is None else p50["median"] < 2.0,
            p50_by_series={
                name: summary(values, "ms") for name, values in lone_p50.items() if name != SPLIT
            },
        )  # fmt: skip
    if "P4" in want:
        rest = summary(raw[REST][c], "req/s")
        bare_json = summary(raw["bare aiohttp JSON"][c], "req/s")
        r = ratio_of(rest, send)
        row(
            ctx, "P4", "P4", f"REST POST /api/v1/message/send through the façade, concurrency {c}",
            rest, send, f"gRPC SendMessage, concurrency {c}, same run", ">= 0.6x gRPC SendMessage",
            None if r is None else r >= 0.6, r,
            run_ratios(raw[REST][c], raw["gRPC SendMessage"][c]),
            reference=bare_json, reference_name="bare aiohttp JSON handler",
            ratio_to_reference=ratio_of(rest, bare_json),
            p99_ms=summary(lat[REST], "ms"),
            server_cpu_percent=summary(cpus[REST], "%"),
            sent_per_accepted=summary(kept_up[REST], "per accepted"),
        )  # fmt: skip
        if split is not None:
            # Like for like: both to an api process, dispatch elsewhere, so
            # neither figure is bought with sends put off.
            grpc_split = summary(raw[SPLIT][c], "req/s")
            rest_split = summary(raw[REST_SPLIT][c], "req/s")
            r = ratio_of(grpc_split, rest_split)
            row(
                ctx, "P4 gRPC", "P4",
                f"gRPC SendMessage against REST through the façade, concurrency {c}, both to "
                "an api process with dispatch in a dispatcher process",
                grpc_split, rest_split, f"REST POST /api/v1/message/send, concurrency {c}, "
                "same api process, same run", ">= 1.0x REST",
                None if r is None else r >= 1.0, r,
                run_ratios(raw[SPLIT][c], raw[REST_SPLIT][c]),
                p99_ms=summary(lat[SPLIT], "ms"),
                baseline_p99_ms=summary(lat[REST_SPLIT], "ms"),
            )  # fmt: skip
    if ctx.args.profile:
        for key, kind, target in (("P1", "send_message", hub.grpc), ("P4", "rest_send", hub.http)):
            if key not in want:
                continue
            await quiesce([hub.pid])
            async with profiled(ctx, key, hub.pid):
                await ctx.worker.call(
                    "load", kind=kind, target=target, concurrency=c, warmup=0.2,
                    duration=plan.profile_seconds, channel_id="sandbox",
                )  # fmt: skip
    for child in (hub.child, bare_grpc, bare_http, *(h.child for h in extra_hubs)):
        await ctx.children.stop(child)


# ------------------------------------------------------------------ P2: batch
def _per_destination(rate: dict[str, Any], cpu: dict[str, Any]) -> str:
    """What a destination costs the hub: wall time at the measured rate, and CPU time."""
    if not rate.get("median"):
        return ""
    wall = 1e6 / rate["median"]
    text = f"; {wall:,.0f} µs a destination"
    if cpu.get("median"):
        text += f" ({cpu['median'] / 100 * wall:,.0f} µs of the hub's CPU)"
    return text


async def bench_batch(ctx: Ctx) -> None:
    plan = ctx.plan
    log(f"P2: SendBatch of {plan.batch_items} destinations against a bare batch transport")
    bare = await start_script(ctx, "bare-batch", "baselines/bare_grpc.py", "bare-grpc:")
    hub = await start_hub(ctx, "hub-batch")
    # Scheduled a day ahead: accepting is measured, not the dispatch of 75k messages a second.
    send_at = str(int(time.time()) + 86_400)
    common = {
        "concurrency": plan.batch_concurrency,
        "warmup": plan.warmup,
        "duration": plan.batch_seconds,
        "items": plan.batch_items,
        "channel": "sms",
        "from_address": "CNNECT",
        "send_at": send_at,
        "min_count": plan.batch_concurrency,
        "max_duration": plan.batch_max_seconds,
    }
    bare_runs: list[float] = []
    hub_runs: list[float] = []
    p99: list[float] = []
    hub_cpu: list[float | None] = []
    bare_cpu: list[float | None] = []
    for run in range(plan.runs):
        for name, kind, target, out in (
            ("bare batch", "bare_batch", bare.address(), bare_runs),
            ("SendBatch", "send_batch", hub.grpc, hub_runs),
        ):
            await quiesce([hub.pid, bare.pid])
            async with CpuMeter(hub.pid if kind == "send_batch" else bare.pid) as cpu:
                r = await ctx.worker.call("load", kind=kind, target=target, **common)
            (hub_cpu if kind == "send_batch" else bare_cpu).append(cpu.percent)
            if r["errors"]:
                ctx.notes.append(
                    f"P2 {name} run {run + 1}: {r['errors']} errors, e.g. {r['first_error']}"
                )
            out.append(r["rate"] * plan.batch_items)
            if kind == "send_batch":
                p99.append(r["p99_ms"])
            log(
                f"  run {run + 1}/{plan.runs} {name:<12} {r['rate'] * plan.batch_items:10.0f} "
                f"items/s ({r['rate']:.1f} req/s, p99 {r['p99_ms']:.0f} ms)"
            )
    fig, base = summary(hub_runs, "items/s"), summary(bare_runs, "items/s")
    r = ratio_of(fig, base)
    row(
        ctx, "P2", "P2",
        f"durable SendBatch, {plan.batch_items} destinations, concurrency "
        f"{plan.batch_concurrency} ({ctx.db})",
        fig, base, f"bare grpc.aio batch of {plan.batch_items} items (decode, one id per item)",
        ">= 0.25x bare batch items/s", None if r is None else r >= 0.25, r,
        run_ratios(hub_runs, bare_runs), p99_ms=summary(p99, "ms"),
        server_cpu_percent=summary(hub_cpu, "%"),
        baseline_server_cpu_percent=summary(bare_cpu, "%"),
        note="batches carry sendAt = now + 1 day, so the accept path is measured without dispatch"
        + _per_destination(fig, summary(hub_cpu, "%")),
    )  # fmt: skip
    if ctx.args.profile:
        await quiesce([hub.pid])
        async with profiled(ctx, "P2", hub.pid):
            await ctx.worker.call(
                "load", kind="send_batch", target=hub.grpc,
                **{**common, "warmup": 0.2, "duration": plan.profile_seconds},
            )  # fmt: skip
    await ctx.children.stop(hub.child)
    await ctx.children.stop(bare)


# ------------------------------------------------------------ P3 / P6: fan-out
def now_ms() -> float:
    return time.time() * 1000.0


@dataclass
class Fleet:
    """One group of subscriber streams (one per server), spread over the subscriber workers."""

    ctx: Ctx
    group: str
    target: str
    kind: str  # "project" or "bare"

    async def _all(self, op: str, call_timeout: float = 120.0, **spec: Any) -> list[dict[str, Any]]:
        return list(
            await asyncio.gather(
                *(
                    w.call(op, call_timeout=call_timeout, group=self.group, **spec)
                    for w in self.ctx.subs
                )
            )
        )

    async def subscribe(self) -> None:
        plan = self.ctx.plan
        await self._all(
            "subscribe",
            target=self.target,
            kind=self.kind,
            count=plan.subscribers // len(self.ctx.subs),
            channels=plan.channels_per_worker,
            channel_id="sandbox-sms",
        )

    async def arm(self, threshold: float, expected: int) -> None:
        await self._all("arm", threshold_ms=threshold, expected=expected)

    async def wait(self, seconds: float) -> dict[str, Any]:
        parts = await self._all("wait", call_timeout=seconds + 30, timeout=seconds)
        return {
            "received": sum(p["received"] for p in parts),
            "expected": sum(p["expected"] for p in parts),
            "streams": sum(p["streams"] for p in parts),
            "alive": sum(p["alive"] for p in parts),
            "complete": sum(p["complete"] for p in parts),
            "items": sum(p["items"] for p in parts),
            "last_recv_ms": max(p["last_recv_ms"] for p in parts),
            "end_ms": max(p["end_ms"] for p in parts),
            "hist": hist_merge(p["hist"] for p in parts),
            "stream_errors": sum(p["stream_errors"] for p in parts),
            "last_error": next((p["last_error"] for p in parts if p["last_error"]), ""),
            "change_bytes": max(p["change_bytes"] for p in parts),
        }

    async def unsubscribe(self) -> None:
        await self._all("unsubscribe")

    async def check(self, res: dict[str, Any], what: str, probe: Callable[[], Any]) -> None:
        """If streams ended (the server cut them off), say so and open them again."""
        if res["alive"] < res["streams"] or res["stream_errors"]:
            self.ctx.notes.append(
                f"{what}: {res['streams'] - res['alive']} of {res['streams']} {self.group} "
                f"streams ended ({res['stream_errors']} errors, e.g. {res['last_error']}); "
                "they were opened again"
            )
            log(f"  {what}: {res['streams'] - res['alive']} {self.group} streams ended; reopening")
            await self.unsubscribe()
            await self.subscribe()
            await self.until_ready(probe)

    async def until_ready(self, probe: Callable[[], Any], tries: int = 40) -> dict[str, Any]:
        """Probe events until every stream has seen one: a stream has no other ready signal."""
        began = time.monotonic()
        await self.arm(now_ms(), 1)
        for _ in range(tries):
            await probe()
            res = await self.wait(1.5)
            if res["complete"] >= res["streams"]:
                took = time.monotonic() - began
                log(f"  {res['streams']} {self.group} streams ready in {took:.1f}s")
                return res
        raise BenchError(
            f"only {res['complete']}/{res['streams']} {self.group} streams saw a probe "
            f"({res['alive']} alive, {res['stream_errors']} errors: {res['last_error']})"
        )


async def fanout_burst(
    fleet: Fleet, server_pid: int, quiet: list[int], expected: int, trigger: Callable[[], Any]
) -> tuple[float | None, dict[str, Any], int]:
    """Deliveries/s for one burst, the merged wait result, and the server's peak RSS."""
    await quiesce(quiet)
    await fleet.arm(now_ms(), expected)
    async with RssSampler(server_pid) as rss, CpuMeter(server_pid) as cpu:
        start = now_ms()
        await trigger()
        res = await fleet.wait(60)
    res["server_cpu_percent"] = cpu.percent
    if res["received"] == 0:
        return None, res, rss.peak
    seconds = max(1e-3, (res["last_recv_ms"] - start) / 1000.0)
    return res["received"] / seconds, res, rss.peak


def latency_figures(res: dict[str, Any], published_until: float) -> dict[str, Any]:
    missing = max(0, res["expected"] - res["received"])
    # A delivery still missing at the end is at least this late: a lower bound.
    missing_at = int(max(0.0, res["end_ms"] - published_until))
    return {
        "p50": hist_percentile(res["hist"], 0.50, missing, missing_at),
        "p99": hist_percentile(res["hist"], 0.99, missing, missing_at),
        "missing": missing,
        "censored": missing > 0.01 * max(1, res["expected"]),
    }


async def bench_fanout(ctx: Ctx, want: set[str]) -> None:
    plan = ctx.plan
    n_subs = plan.subscribers
    log(
        f"P3/P6: fan-out to {n_subs} gRPC subscribers ({len(ctx.subs)} client processes), "
        "hub and bare baseline interleaved"
    )
    hub = await start_hub(ctx, "hub-fanout")
    bare = await start_script(ctx, "bare-fanout", "baselines/bare_fanout.py", "bare-fanout:")
    hub_ch = grpc.aio.insecure_channel(hub.grpc, options=GRPC_OPTIONS)
    bare_ch = grpc.aio.insecure_channel(bare.address())
    send_message = hub_ch.unary_unary("/cim.v1.MessagingService/SendMessage")
    send_batch = hub_ch.unary_unary("/cim.v1.MessagingService/SendBatch")
    publish = bare_ch.unary_unary("/bare.Fanout/Publish")
    hub_fleet = Fleet(ctx, "hub", hub.grpc, "project")
    bare_fleet = Fleet(ctx, "bare", bare.address(), "bare")
    sub_pids = [w.pid for w in ctx.subs]
    hub_rates: list[float | None] = []
    bare_rates: list[float | None] = []
    hub_peaks: list[float] = []
    bare_peaks: list[float] = []
    hub_cpu: list[float | None] = []
    bare_cpu: list[float | None] = []
    hub_lat: dict[int, list[dict[str, Any]]] = {r: [] for r in plan.rates}
    bare_lat: dict[int, list[dict[str, Any]]] = {r: [] for r in plan.rates}
    try:
        rss_empty = RssSampler(hub.pid).now()
        await hub_fleet.subscribe()

        async def hub_probe() -> None:
            await send_message(message_payload("sandbox-sms"), timeout=30, metadata=AUTH_METADATA)

        probe = await hub_fleet.until_ready(hub_probe)
        change_bytes = probe["change_bytes"] or 200
        await asyncio.sleep(0.5)
        await quiesce([hub.pid])
        rss_idle = RssSampler(hub.pid).now()
        log(
            f"  hub RSS {rss_empty / 2**20:.0f} MB before subscribers, "
            f"{rss_idle / 2**20:.0f} MB with {n_subs} idle; a change is {change_bytes} B"
        )

        async def bare_probe() -> None:
            await publish(json.dumps({"count": 1, "rate": 0, "size": change_bytes}).encode())

        await bare_fleet.subscribe()
        await bare_fleet.until_ready(bare_probe)

        burst_req = batch_request(
            "sms", "CNNECT", plan.burst_messages, "Your parcel is on its way."
        ).SerializeToString()

        async def hub_burst() -> None:
            await send_batch(burst_req, timeout=30, metadata=AUTH_METADATA)

        async def bare_burst() -> None:
            spec = {"count": plan.burst_events, "rate": 0, "size": change_bytes}
            await publish(json.dumps(spec).encode())

        everyone = [hub.pid, bare.pid, *sub_pids]
        for run in range(plan.runs):
            rate, res, peak = await fanout_burst(
                hub_fleet, hub.pid, everyone, 3 * plan.burst_messages, hub_burst
            )
            hub_rates.append(rate)
            hub_peaks.append(peak / 2**20)
            hub_cpu.append(res["server_cpu_percent"])
            log(
                f"  run {run + 1}/{plan.runs} hub burst:  {res['received']}/{res['expected']} "
                f"changes in {res['items']} stream items, {rate or 0:,.0f} deliveries/s, "
                f"peak RSS {peak / 2**20:.0f} MB"
            )
            if res["received"] < res["expected"]:
                ctx.notes.append(
                    f"P3 hub burst run {run + 1}: {res['received']}/{res['expected']} changes "
                    f"arrived ({res['last_error']})"
                )
            await hub_fleet.check(res, f"P3 hub burst run {run + 1}", hub_probe)
            rate, res, peak = await fanout_burst(
                bare_fleet, bare.pid, everyone, plan.burst_events, bare_burst
            )
            bare_rates.append(rate)
            bare_peaks.append(peak / 2**20)
            bare_cpu.append(res["server_cpu_percent"])
            log(
                f"  run {run + 1}/{plan.runs} bare burst: {res['received']}/{res['expected']} "
                f"events, {rate or 0:,.0f} deliveries/s"
            )

        async def hub_rate_run(rate: int, seconds: float) -> dict[str, Any]:
            await quiesce(everyone)
            messages = max(1, round(rate / 3 * seconds))
            t0 = now_ms()
            await hub_fleet.arm(t0, 3 * messages)
            async with RssSampler(hub.pid) as rss:
                sent, res = await asyncio.gather(
                    ctx.worker.call(
                        "paced", kind="send_message", target=hub.grpc, channel_id="sandbox-sms",
                        rate=rate / 3, duration=seconds, count=messages,
                    ),
                    hub_fleet.wait(seconds + plan.drain_cap),
                )  # fmt: skip
            hub_peaks.append(rss.peak / 2**20)
            lat = latency_figures(res, t0 + sent["offered_seconds"] * 1000)
            lat["events_per_s"] = 3 * sent["sent"] / max(1e-3, sent["offered_seconds"])
            lat["delivered"] = f"{res['received']}/{res['expected']}"
            await hub_fleet.check(res, f"P3 hub at {rate} events/s", hub_probe)
            return lat

        async def bare_rate_run(rate: int, seconds: float) -> dict[str, Any]:
            await quiesce(everyone)
            count = max(1, round(rate * seconds))
            t0 = now_ms()
            await bare_fleet.arm(t0, count)
            await publish(json.dumps({"count": count, "rate": rate, "size": change_bytes}).encode())
            res = await bare_fleet.wait(seconds + plan.drain_cap)
            lat = latency_figures(res, t0 + seconds * 1000)
            lat["events_per_s"] = float(rate)
            lat["delivered"] = f"{res['received']}/{res['expected']}"
            if res["received"] < res["expected"]:
                # It fell behind: drop its queues rather than wait for them to drain.
                await bare_fleet.unsubscribe()
                await bare_fleet.subscribe()
                await bare_fleet.until_ready(bare_probe)
            return lat

        for rate in plan.rates:
            for run in range(plan.runs):
                for who, fn, out in (
                    ("hub ", hub_rate_run, hub_lat),
                    ("bare", bare_rate_run, bare_lat),
                ):
                    lat = await fn(rate, plan.rate_seconds)
                    out[rate].append(lat)
                    log(
                        f"  run {run + 1}/{plan.runs} {who} {rate:>3} events/s: "
                        f"p50 {'>=' if lat['censored'] else ''}{lat['p50']:,.0f} ms, "
                        f"p99 {'>=' if lat['censored'] else ''}{lat['p99']:,.0f} ms, "
                        f"{lat['delivered']} delivered"
                    )

        if ctx.args.profile and "P3" in want:
            async with profiled(ctx, "P3", hub.pid):
                await fanout_burst(hub_fleet, hub.pid, everyone, 3 * plan.burst_messages, hub_burst)
                await hub_rate_run(50, plan.profile_seconds)
        await hub_fleet.unsubscribe()
        await bare_fleet.unsubscribe()
        per_stream_rss = {"empty_mb": rss_empty / 2**20, "idle_1000_mb": rss_idle / 2**20}
    finally:
        await hub_ch.close()
        await bare_ch.close()
        await ctx.children.stop(hub.child)
        await ctx.children.stop(bare)

    hub_fig = summary(hub_rates, "deliveries/s")
    bare_fig = summary(bare_rates, "deliveries/s")

    def lat_summary(runs: list[dict[str, Any]], key: str = "p99") -> dict[str, Any]:
        s = summary([x[key] for x in runs], "ms")
        # Censored runs are lower bounds, and the largest: the median is one if most are.
        s["censored_runs"] = sum(1 for x in runs if x["censored"])
        s["censored"] = 2 * s["censored_runs"] > len(runs)
        s["events_per_s"] = summary([x["events_per_s"] for x in runs], "events/s")
        s["run_detail"] = runs
        return s

    ctx.series["fanout_latency"] = {
        "platform": {
            str(r): {"p99": lat_summary(v), "p50": lat_summary(v, "p50")}
            for r, v in hub_lat.items()
        },
        "bare": {
            str(r): {"p99": lat_summary(v), "p50": lat_summary(v, "p50")}
            for r, v in bare_lat.items()
        },
    }
    ctx.series["fanout_throughput"] = {"platform": hub_fig, "bare": bare_fig}
    if "P3" in want:
        r = ratio_of(hub_fig, bare_fig)
        row(
            ctx, "P3", "P3",
            f"fan-out to {n_subs} gRPC subscribers, burst of {plan.burst_messages} messages "
            f"({3 * plan.burst_messages} events, coalesced changes[])",
            hub_fig, bare_fig,
            f"bare one-event-per-message fan-out, burst of {plan.burst_events} events",
            ">= 3x bare deliveries/s", None if r is None else r >= 3.0, r,
            run_ratios(hub_rates, bare_rates),
            server_cpu_percent=summary(hub_cpu, "%"),
            baseline_server_cpu_percent=summary(bare_cpu, "%"),
        )  # fmt: skip
        for rate in plan.rates:
            fig = lat_summary(hub_lat[rate])
            base = lat_summary(bare_lat[rate])
            target = "p99 < 200 ms" if rate == 50 else "reported"
            met = (fig["median"] is not None and fig["median"] < 200) if rate == 50 else None
            row(
                ctx, f"P3@{rate}", "P3",
                f"p99 latency at {rate} events/s to {n_subs} subscribers (receive - "
                "server_timestamp)",
                fig, base, f"bare per-event streaming at {rate} events/s",
                target, met, None, None,
                p50=lat_summary(hub_lat[rate], "p50"),
                baseline_p50=lat_summary(bare_lat[rate], "p50"),
            )  # fmt: skip
    if "P6" in want:
        fig = summary(hub_peaks[: plan.runs], "MB")
        base = summary(bare_peaks, "MB")
        overall = max(hub_peaks) if hub_peaks else None
        row(
            ctx, "P6", "P6",
            f"hub RSS with {n_subs} idle subscribers plus a P3 burst (psutil, peak)",
            fig, base, "bare fan-out server, same subscribers and burst",
            "< 300 MB", None if fig["median"] is None else fig["median"] < 300,
            ratio_of(fig, base), None,
            rss_before_subscribers_mb=per_stream_rss.get("empty_mb"),
            rss_idle_subscribers_mb=per_stream_rss.get("idle_1000_mb"),
            peak_over_whole_p3_mb=overall,
        )  # fmt: skip


# -------------------------------------------------------- P5: SMS dispatch
async def fake_stats(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with session.get(url + "/bench/stats") as resp:
        return dict(await resp.json())


async def wait_for_provider(
    session: aiohttp.ClientSession, url: str, expected: int, seconds: float
) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    stats = await fake_stats(session, url)
    while stats["count"] < expected and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        stats = await fake_stats(session, url)
    stats["end_ms"] = now_ms()
    return stats


@dataclass
class Sustained:
    rate: float | None
    offered: float
    backlog_wait: float
    cpu: float | None
    cpu_seconds: float | None = None  # the hub's, from the first offer to the last receipt
    count: int = 0  # messages the provider received


async def sustained_run(
    ctx: Ctx,
    hub: Hub,
    fake: Child,
    session: aiohttp.ClientSession,
    what: str,
    others: Sequence[int] = (),
) -> Sustained:
    """Batches offered at up to plan.sustained_offered/s: the rate the provider receives.

    ``others`` are the pids of processes that share the work (a dispatcher
    beside an api process): waited on to be idle before the run, like the hub.
    """
    plan = ctx.plan
    fake_url = "http://" + fake.address()
    await quiesce([hub.pid, fake.pid, *others])
    await session.post(fake_url + "/bench/reset")
    async with CpuMeter(hub.pid) as cpu:
        sent = await ctx.worker.call(
            "paced", kind="send_batch", target=hub.grpc, channel="sms",
            from_address=SMS_LANE, items=plan.sustained_batch,
            rate=plan.sustained_offered / plan.sustained_batch,
            duration=plan.sustained_seconds, backlog_url=fake_url + "/bench/count",
            max_backlog=plan.sustained_backlog, call_timeout=plan.sustained_seconds + 300,
        )  # fmt: skip
        expected = (sent["sent"] - sent["errors"]) * plan.sustained_batch
        stats = await wait_for_provider(session, fake_url, expected, plan.drain_wait)
    span = (stats["last_ms"] - stats["first_ms"]) / 1000.0
    rate = stats["count"] / span if span > 0 else None
    offered = sent["sent"] * plan.sustained_batch / max(1e-3, sent["offered_seconds"])
    log(
        f"  {what}: offered {offered:,.0f}/s, provider got "
        f"{stats['count']}/{expected} at {rate or 0:,.0f} msgs/s"
    )
    if stats["count"] < expected:
        ctx.notes.append(
            f"{what}: provider got {stats['count']}/{expected} within {plan.drain_wait:.0f} s"
        )
    return Sustained(
        rate, offered, sent["backlog_wait_seconds"], cpu.percent, cpu.seconds, stats["count"]
    )


def sms_channels(ctx: Ctx, fake_url: str, extra: str = "") -> Path:
    channels = ctx.tmp / "channels-p5.toml"
    channels.write_text(
        "[[channels]]\n"
        'id = "bench-sms"\n'
        'type = "SMS"\n'
        'provider = "twilio"\n'
        f'lane = "{SMS_LANE}"\n'
        'name = "Bench SMS (fake Twilio)"\n'
        f'account_sid = "{TWILIO_SID}"\n'
        'auth_token_env = "BENCH_TWILIO_TOKEN"\n'
        f'base_url = "{fake_url}"\n' + extra
    )
    return channels


async def start_fake_sms(ctx: Ctx) -> Child:
    return await start_script(
        ctx, "fake-sms", "fake_sms.py", "fake-sms:",
        "--account-sid", TWILIO_SID, "--auth-token", TWILIO_TOKEN,
    )  # fmt: skip


async def bench_dispatch(ctx: Ctx) -> None:
    plan = ctx.plan
    log("P5: dispatch to a loopback fake SMS provider (FakeTwilio)")
    fake = await start_fake_sms(ctx)
    fake_url = "http://" + fake.address()
    channels = sms_channels(ctx, fake_url)
    hub = await start_hub(ctx, "hub-dispatch", channels)
    # The same load to an api process whose messages a dispatcher process on
    # the same database sends: the roles split.
    split_api, split_dispatcher = await start_split(ctx, "hub-dispatch", channels)
    session = aiohttp.ClientSession(trust_env=False)
    try:
        direct: list[float] = []
        sustained: list[float | None] = []
        split_rates: list[float | None] = []
        p99s: list[dict[str, Any]] = []
        offered_rates: list[float] = []
        backlog_waits: list[float] = []
        sustained_cpu: list[float | None] = []
        for run in range(plan.runs):
            await quiesce([hub.pid, fake.pid])
            r = await ctx.worker.call(
                "load", kind="twilio_direct", target=fake_url, concurrency=64,
                warmup=plan.warmup, duration=plan.unary_seconds,
                account_sid=TWILIO_SID, auth_token=TWILIO_TOKEN,
            )  # fmt: skip
            direct.append(r["rate"])
            log(f"  run {run + 1}/{plan.runs} direct to fake provider: {r['rate']:.0f} msgs/s")

            res = await sustained_run(ctx, hub, fake, session, f"P5 sustained run {run + 1}")
            sustained_cpu.append(res.cpu)
            offered_rates.append(res.offered)
            backlog_waits.append(res.backlog_wait)
            sustained.append(res.rate)
            res = await sustained_run(
                ctx, split_api, fake, session, f"P5 split run {run + 1}", [split_dispatcher.pid]
            )
            split_rates.append(res.rate)

            await quiesce([hub.pid, fake.pid])
            await session.post(fake_url + "/bench/reset")
            t0 = now_ms()
            sent = await ctx.worker.call(
                "paced", kind="send_message", target=hub.grpc, channel_id="bench-sms",
                rate=plan.p5_rate, duration=plan.p5_seconds,
                count=int(plan.p5_rate * plan.p5_seconds), call_timeout=300,
            )  # fmt: skip
            expected = sent["sent"] - sent["errors"]
            stats = await wait_for_provider(session, fake_url, expected, plan.drain_wait)
            hist = {int(k): v for k, v in stats["hist"].items()}
            missing = max(0, expected - stats["count"])
            published_until = t0 + sent["offered_seconds"] * 1000
            lat = {
                "p50": hist_percentile(hist, 0.5, missing, int(stats["end_ms"] - published_until)),
                "p99": hist_percentile(hist, 0.99, missing, int(stats["end_ms"] - published_until)),
                "missing": missing,
                "errors": sent["errors"],
            }
            p99s.append(lat)
            log(
                f"  run {run + 1}/{plan.runs} {plan.p5_rate} msgs/s: p50 {lat['p50']:.0f} ms, p99 "
                f"{lat['p99']:.0f} ms ({stats['count']}/{expected})"
            )
            if sent["errors"]:
                ctx.notes.append(
                    f"P5 paced run {run + 1}: {sent['errors']} send errors, e.g. "
                    f"{sent['first_error']}"
                )
        if ctx.args.profile:
            await quiesce([hub.pid, fake.pid])
            async with profiled(ctx, "P5", hub.pid):
                await ctx.worker.call(
                    "paced", kind="send_batch", target=hub.grpc, channel="sms",
                    from_address=SMS_LANE, items=plan.sustained_batch,
                    rate=plan.sustained_offered / plan.sustained_batch,
                    duration=plan.profile_seconds,
                )  # fmt: skip
                await asyncio.sleep(2)
    finally:
        await session.close()
        await ctx.children.stop(hub.child)
        await ctx.children.stop(split_api.child)
        await ctx.children.stop(split_dispatcher.child)
        await ctx.children.stop(fake)

    fig = summary(sustained, "msgs/s")
    base = summary(direct, "msgs/s")
    # Offering pauses while the backlog is full; if it never paused, the hub kept up.
    capped = not any(backlog_waits)
    row(
        ctx, "P5", "P5",
        f"dispatch to loopback fake SMS provider, accept → provider received, sustained ({ctx.db})",
        fig, base, "the same fake provider driven directly, concurrency 64",
        ">= 1,500 msgs/s", None if fig["median"] is None else fig["median"] >= 1500,
        ratio_of(fig, base), run_ratios(sustained, direct),
        offered=summary(offered_rates, "msgs/s"),
        server_cpu_percent=summary(sustained_cpu, "%"),
        note=(
            f"offered {plan.sustained_offered:,}/s in batches of {plan.sustained_batch} and the "
            "hub "
            "kept up: the figure is a lower bound of its capacity" if capped else
            f"offered up to {plan.sustained_offered:,}/s in batches of {plan.sustained_batch}, "
            "pausing "
            f"while {plan.sustained_backlog:,} were accepted but not yet at the provider: the "
            "figure "
            "is the end-to-end capacity (accept + dispatch in one process)"
        ),
    )  # fmt: skip
    split_fig = summary(split_rates, "msgs/s")
    row(
        ctx, "P5 split", "P5",
        f"P5 with the roles split: an api and a dispatcher process on one database ({ctx.db})",
        split_fig, base, "the same fake provider driven directly, concurrency 64",
        ">= 1,500 msgs/s", None if split_fig["median"] is None else split_fig["median"] >= 1500,
        ratio_of(split_fig, base), run_ratios(split_rates, direct),
    )  # fmt: skip
    p99_fig = summary([x["p99"] for x in p99s], "ms")
    row(
        ctx, "P5@500", "P5",
        f"p99 accept → provider received at {plan.p5_rate} msgs/s offered (SendMessage)",
        p99_fig, None, "-", "p99 < 250 ms",
        None if p99_fig["median"] is None else p99_fig["median"] < 250,
        None, None, p50=summary([x["p50"] for x in p99s], "ms"),
        missing=[x["missing"] for x in p99s],
    )  # fmt: skip


# ------------------------------------------- K1: side by side with Kannel
async def bench_peer(ctx: Ctx) -> None:
    plan = ctx.plan
    count, conc = plan.peer_messages, plan.concurrency
    log(f"K1: {count:,} SMS at concurrency {conc} through Kannel and through the hub (wrk)")
    await peer.ensure_tools()
    kannel_runs: list[peer.Side] = []
    hub_runs: list[peer.Side] = []
    split_runs: list[peer.Side] = []
    fake = await start_fake_sms(ctx)
    fake_url = "http://" + fake.address()
    channels = sms_channels(ctx, fake_url)
    hub = await start_hub(ctx, "hub-peer", channels)
    # Kannel takes HTTP in smsbox and stores and delivers in bearerbox: the
    # hub's like of it is an api process beside a dispatcher process.
    api, dispatcher = await start_split(ctx, "hub-peer", channels)
    auth = (API_ID, API_KEY)
    try:
        for run in range(plan.runs):
            tmp = ctx.tmp / f"kannel-{run}"
            tmp.mkdir()
            await quiesce([fake.pid])
            k = await peer.kannel_side(tmp, count, conc, plan.drain_wait)
            sides = [("Kannel", k)]
            for name, target, pids in (
                ("hub", hub, [hub.pid]),
                ("hub split", api, [api.pid, dispatcher.pid]),
            ):
                await quiesce([*pids, fake.pid])
                # A few sends first, so the adapter's provider connections are open.
                await peer.hub_side(target.http, fake_url, "bench-sms", auth, 64, 8, 30)
                side = await peer.hub_side(
                    target.http, fake_url, "bench-sms", auth, count, conc, plan.drain_wait
                )
                sides.append((name, side))
            kannel_runs.append(k)
            hub_runs.append(sides[1][1])
            split_runs.append(sides[2][1])
            for name, side in sides:
                log(
                    f"  run {run + 1}/{plan.runs} {name}: accepted {side.load.ok}/"
                    f"{side.load.requests} at {side.load.rate:,.0f} req/s (p99 "
                    f"{side.load.p99_ms:.0f} ms), delivered {side.delivered} at "
                    f"{side.delivered_rate:,.0f} msgs/s"
                )
        if ctx.args.profile:
            # Both processes of the split layout, over one more run of it.
            await quiesce([api.pid, dispatcher.pid, fake.pid])
            async with (
                profiled(ctx, "K1-split-api", api.pid),
                profiled(ctx, "K1-split-dispatcher", dispatcher.pid),
            ):
                await peer.hub_side(
                    api.http, fake_url, "bench-sms", auth, count, conc, plan.drain_wait
                )
    finally:
        for child in (hub.child, api.child, dispatcher.child, fake):
            await ctx.children.stop(child)
    recorded = {
        "kannel": [s.as_dict() for s in kannel_runs],
        "hub": [s.as_dict() for s in hub_runs],
        "hub_split": [s.as_dict() for s in split_runs],
    }
    for key, runs, layout in (
        ("K1", hub_runs, "one hub process"),
        ("K1 split", split_runs, "an api and a dispatcher process"),
    ):
        for suffix, what, pick in (
            ("accept", "accepted", lambda s: s.load.rate),
            ("e2e", "delivered end to end", lambda s: s.delivered_rate),
        ):
            fig = summary([pick(s) for s in runs], "msgs/s")
            base = summary([pick(s) for s in kannel_runs], "msgs/s")
            ratio = ratio_of(fig, base)
            row(
                ctx, f"{key} {suffix}", "K1",
                f"{count:,} SMS over HTTP at concurrency {conc}, {what}, {layout} ({ctx.db})",
                fig, base, "Kannel 1.4.5 with its store file, fakesmsc as the SMSC, same wrk load",
                ">= 0.25x Kannel", None if ratio is None else ratio >= 0.25, ratio,
                run_ratios([pick(s) for s in runs], [pick(s) for s in kannel_runs]),
                sides=recorded,
            )  # fmt: skip


# ------------------------------------ M1: what metrics and tracing cost
# Three hubs, started together and identical but for what they observe. The
# first is the baseline both costs are measured against.
COST_MODES = ("off", "metrics", "traced")
COST_LABEL = {
    "off": "metrics and tracing off",
    "metrics": "metrics on, tracing off",
    "traced": "metrics on, tracing on (OTLP export, sampling 100 %)",
}
COST_BUDGET = {"metrics": 10.0, "traced": 25.0}


def cost_env(mode: str, sink: str) -> dict[str, str]:
    if mode == "off":
        return {"CIMHUB_METRICS": "off"}
    env = {"CIMHUB_METRICS": "on"}
    if mode == "traced":
        env |= {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{sink}",
            "OTEL_TRACES_SAMPLER": "always_on",
        }
    return env


def median_of(values: list[float | None]) -> float | None:
    known = sorted(v for v in values if v is not None)
    if not known:
        return None
    mid = len(known) // 2
    return known[mid] if len(known) % 2 else (known[mid - 1] + known[mid]) / 2


async def paced_cpu(ctx: Ctx, hub: Hub, everyone: list[int]) -> float | None:
    """The hub's CPU ms per SendMessage at a fixed, modest rate, dispatch included.

    At a pace every mode keeps up with, the work per call is the same whoever
    else is using the cores; a closed-loop rate is not."""
    plan = ctx.plan
    await quiesce(everyone)
    async with CpuMeter(hub.pid) as cpu:
        sent = await ctx.worker.call(
            "paced", kind="send_message", target=hub.grpc, channel_id="sandbox",
            rate=plan.cost_rate, duration=plan.cost_seconds,
            count=int(plan.cost_rate * plan.cost_seconds), call_timeout=300,
        )  # fmt: skip
        # The sandbox delivers after 50 ms; its receipts land within the settle time.
        await asyncio.sleep(plan.cost_settle)
    calls = sent["sent"] - sent["errors"]
    return cpu.seconds / calls * 1000 if cpu.seconds is not None and calls else None


async def bench_observability_cost(ctx: Ctx) -> None:
    """P1 and P5 on hubs with observability off, metrics on, and metrics plus tracing on.

    Each run measures all three back to back, in an order that rotates from run
    to run, so drift on the machine falls on every mode alike. A run's cost is
    1 - (mode's figure / the off hub's figure in that run); the reported cost
    is the median over runs."""
    plan = ctx.plan
    runs = plan.cost_runs
    log(f"M1: P1 and P5 with observability off, metrics on, metrics + tracing on ({runs} runs)")
    fake = await start_fake_sms(ctx)
    sink = await start_script(ctx, "otlp-sink", "otlp_sink.py", "otlp-sink:")
    sandbox = '[[channels]]\nid = "sandbox"\ntype = "SANDBOX"\nprovider = "sandbox"\n'
    channels = sms_channels(ctx, "http://" + fake.address(), sandbox)
    hubs = {
        mode: await start_hub(ctx, f"hub-cost-{mode}", channels, cost_env(mode, sink.address()))
        for mode in COST_MODES
    }
    unary: dict[str, list[float | None]] = {mode: [] for mode in hubs}
    dispatch: dict[str, list[float | None]] = {mode: [] for mode in hubs}
    cpu_per_call: dict[str, list[float | None]] = {mode: [] for mode in hubs}
    cpu_per_message: dict[str, list[float | None]] = {mode: [] for mode in hubs}
    everyone = [fake.pid, sink.pid, *(h.pid for h in hubs.values())]
    session = aiohttp.ClientSession(trust_env=False)
    try:
        for run in range(runs):
            order = [*COST_MODES[run % 3 :], *COST_MODES[: run % 3]]
            for mode in order:
                await quiesce(everyone)
                r = await ctx.worker.call(
                    "load", kind="send_message", target=hubs[mode].grpc,
                    concurrency=plan.concurrency, warmup=plan.warmup,
                    duration=plan.unary_seconds, channel_id="sandbox",
                )  # fmt: skip
                unary[mode].append(r["rate"] if not r["errors"] else None)
                cpu_per_call[mode].append(await paced_cpu(ctx, hubs[mode], everyone))
                if r["errors"]:
                    ctx.notes.append(f"M1 P1 {mode} run {run + 1}: {r['errors']} errors")
                log(f"  run {run + 1}/{runs} P1 {mode:<8} {r['rate']:8.0f}/s")
            for mode in order:
                what = f"run {run + 1} P5 {mode}"
                res = await sustained_run(ctx, hubs[mode], fake, session, what)
                dispatch[mode].append(res.rate)
                cpu_per_message[mode].append(
                    res.cpu_seconds / res.count * 1000 if res.cpu_seconds and res.count else None
                )
        if ctx.args.profile:
            await quiesce(everyone)
            async with profiled(ctx, "M1-P1-traced", hubs["traced"].pid):
                await ctx.worker.call(
                    "load", kind="send_message", target=hubs["traced"].grpc,
                    concurrency=plan.concurrency, warmup=0.2,
                    duration=plan.profile_seconds, channel_id="sandbox",
                )  # fmt: skip
            async with profiled(ctx, "M1-P5-traced", hubs["traced"].pid):
                await sustained_run(ctx, hubs["traced"], fake, session, "P5 traced, profiled")
        async with session.get(f"http://{sink.address()}/stats") as resp:
            got = await resp.json()
        ctx.notes.append(
            f"M1: the OTLP sink received {got['requests']:,} exports, {got['spans']:,} spans, "
            f"{got['bytes']:,} bytes"
        )
    finally:
        await session.close()
        for hub in hubs.values():
            await ctx.children.stop(hub.child)
        await ctx.children.stop(fake)
        await ctx.children.stop(sink)
    for scenario, what, per, unit, cpu in (
        ("P1", "P1 durable SendMessage (gRPC, concurrency 64)", unary, "req/s", cpu_per_call),
        (
            "P5",
            "P5 sustained dispatch to the fake SMS provider",
            dispatch,
            "msgs/s",
            cpu_per_message,
        ),
    ):
        off = summary(per["off"], unit)
        for mode, budget in COST_BUDGET.items():
            ratios = run_ratios(per[mode], per["off"])
            ratio = median_of(ratios)
            cost = None if ratio is None else round((1 - ratio) * 100, 1)
            more = median_of(run_ratios(cpu[mode], cpu["off"]))
            extra = {
                "cpu_ms_per_call": summary(cpu[mode], "ms"),
                "cpu_ms_per_call_off": summary(cpu["off"], "ms"),
                "cpu_cost_percent": None if more is None else round((more - 1) * 100, 1),
                "cpu_per": (
                    f"SendMessage at a fixed {plan.cost_rate}/s, dispatch included"
                    if scenario == "P1"
                    else "message at the provider"
                ),
            }
            row(
                ctx, f"M1-{scenario} {mode}", "M1", f"{what}, {COST_LABEL[mode]}",
                summary(per[mode], unit), off, f"the same with {COST_LABEL['off']}, same runs",
                f"cost < {budget:.0f} %", None if cost is None else cost < budget,
                ratio, ratios, cost_percent=cost,
                cost_runs_percent=[None if x is None else round((1 - x) * 100, 1) for x in ratios],
                **extra,
            )  # fmt: skip


# --------------------------------------------------------------------- main
async def amain(args: argparse.Namespace) -> int:
    began = time.monotonic()
    plan = QUICK if args.quick else FULL
    if args.runs is not None:
        plan = Plan(**{**plan.__dict__, "runs": args.runs, "cost_runs": args.runs})
    want = (
        set(args.only.split(","))
        if args.only
        else set(PG_DEFAULT if args.db == "postgresql" else ALL)
    )
    unknown = want - set(ALL)
    if unknown:
        raise SystemExit(f"unknown scenarios: {', '.join(sorted(unknown))}")
    # SIGTERM ends the run the way Ctrl-C does: through the finally below, which stops children.
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    tmp = Path(tempfile.mkdtemp(prefix="cimhub-bench-"))
    children = Children(tmp)
    atexit.register(children.kill_all_now)
    ctx = Ctx(args=args, plan=plan, children=children, tmp=tmp, db=args.db)
    suffix = "" if args.db == "sqlite" else f"-{args.db}"
    out_dir = BENCH / "results"
    log(
        f"bench: {', '.join(sorted(want))} on {args.db}, {plan.runs} run(s) per "
        f"figure{' (quick)' if args.quick else ''}; logs in {tmp}"
    )
    info = machine()
    failed = False
    try:
        if args.db == "postgresql":
            sys.path.insert(0, str(ROOT / "tests"))
            from support.postgres import PostgresServer

            ctx.pg = PostgresServer().start()
            log(f"postgresql on port {ctx.pg.port}")
        ctx.load = await Worker.start("loadgen", children)
        if want & {"P3", "P6"}:
            ctx.subs = [
                await Worker.start(f"subscribers-{i}", children) for i in range(plan.sub_workers)
            ]
        steps: list[tuple[set[str], Callable[[], Any]]] = [
            ({"P1", "P4"}, lambda: bench_unary(ctx, want)),
            ({"P2"}, lambda: bench_batch(ctx)),
            ({"P5"}, lambda: bench_dispatch(ctx)),
            ({"P3", "P6"}, lambda: bench_fanout(ctx, want)),
            ({"M1"}, lambda: bench_observability_cost(ctx)),
            ({"K1"}, lambda: bench_peer(ctx)),
        ]
        for ids, step in steps:
            if not ids & want:
                continue
            t = time.monotonic()
            try:
                await step()
            except Exception as exc:
                failed = True
                ctx.notes.append(f"{'/'.join(sorted(ids & want))} failed: {exc}")
                log(f"ERROR in {'/'.join(sorted(ids & want))}: {exc}")
                for child in list(children.children):
                    if child.name.startswith(("hub-", "bare-", "fake-")):
                        await children.stop(child)
            log(f"  ({time.monotonic() - t:.0f}s)")
    finally:
        await children.stop_all()
        if ctx.pg is not None:
            ctx.pg.stop()
        if not args.keep_logs:
            shutil.rmtree(tmp, ignore_errors=True)
    elapsed = time.monotonic() - began
    doc = {
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "db": args.db,
        "quick": bool(args.quick),
        "runs": plan.runs,
        "plan": plan.__dict__,
        "machine": info,
        "duration_seconds": round(elapsed, 1),
        "results": ctx.rows,
        "series": ctx.series,
        "profiles": ctx.profiles,
        "notes": ctx.notes,
    }
    paths = report.write_all(doc, out_dir, "latest" + suffix)
    log(f"wrote {', '.join(str(p.relative_to(ROOT)) for p in paths)} in {elapsed:.0f}s")
    print()
    print(report.markdown_table(doc))
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--quick", action="store_true", help="one short run per figure")
    parser.add_argument(
        "--runs", type=int, default=None, help="runs per figure (default 3; 1 with --quick)"
    )
    parser.add_argument("--only", help="comma-separated scenario ids, e.g. P1,P4")
    parser.add_argument("--profile", action="store_true", help="py-spy the hub for each scenario")
    parser.add_argument(
        "--profile-dir",
        type=Path,
        default=BENCH / "results" / "profiles",
        help="where --profile writes <id>.folded, <id>.txt and the flame graph <id>.svg",
    )
    parser.add_argument(
        "--keep-logs", action="store_true", help="keep the temp dir with server logs"
    )
    args = parser.parse_args()
    args.profile_dir = args.profile_dir.resolve()
    if args.runs is not None and args.runs < 1:
        parser.error("--runs must be >= 1")
    os.chdir(ROOT)
    try:
        return asyncio.run(amain(args))
    except (KeyboardInterrupt, asyncio.CancelledError):
        log("bench: interrupted; every process it started has been stopped")
        return 130


if __name__ == "__main__":
    sys.exit(main())
