"""Generated requests against the served OpenAPI document, with a valid key: never a
5xx, and with every check schemathesis has, the document and the server agree.

The hub runs on its own event loop in a thread, because schemathesis calls the
API with a blocking HTTP client.
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import CHECKS, load_all_checks
from schemathesis.core.failures import FailureGroup
from schemathesis.generation.modes import GenerationMode

from support import contract_checks
from support.hub import AUTH_HEADERS
from support.inbound import TOKEN, inbound_hub

TOTAL = 650  # an upper bound per operation; deduplication leaves well over 500
# Cases per operation and mode for the all-checks run.
EACH = 15


@pytest.fixture
def hub_url(tmp_path: Path) -> Iterator[str]:
    ready: dict[str, Any] = {}
    started = threading.Event()
    stop: asyncio.Event | None = None
    loop: asyncio.AbstractEventLoop | None = None

    async def serve() -> None:
        nonlocal stop, loop
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        db = f"sqlite+aiosqlite:///{tmp_path / 'fuzz.db'}"
        try:
            async with inbound_hub(db) as hub:
                ready["url"] = f"http://127.0.0.1:{hub.http_port}"
                started.set()
                await stop.wait()
        finally:
            started.set()

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    assert started.wait(60) and "url" in ready, "hub did not start"
    try:
        yield ready["url"]
    finally:
        assert loop is not None and stop is not None
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)


def _operations(hub_url: str) -> tuple[list[Any], int]:
    """The served document's operations, less the event stream, and how many
    schemathesis could not read."""
    spec = requests.get(f"{hub_url}/openapi.json", timeout=10).json()
    schema = schemathesis.openapi.from_dict(spec)
    loaded = list(schema.get_all_operations())
    # An operation schemathesis cannot read is the document's problem, reported
    # by the OpenAPI tests; here it is only counted.
    unreadable = [r for r in loaded if not hasattr(r, "ok")]
    operations = [
        r.ok()
        for r in loaded
        # Event streams never end by themselves; their handshake is covered elsewhere.
        if hasattr(r, "ok") and "stream" not in r.ok().path
    ]
    return operations, len(unreadable)


def test_generated_requests_never_get_a_server_error(hub_url: str) -> None:
    operations, unreadable = _operations(hub_url)
    per_operation = math.ceil(TOTAL / len(operations))
    headers = {**AUTH_HEADERS, "x-verify-token": TOKEN}
    counts: dict[str, int] = {}
    failures: list[str] = []
    session = requests.Session()

    for operation in operations:
        label = f"{operation.method.upper()} {operation.path}"

        @settings(
            max_examples=per_operation,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
        )
        @given(case=operation.as_strategy(), label=st.just(label))
        def run(case: Any, label: str) -> None:
            response = case.call(base_url=hub_url, session=session, headers=headers, timeout=15)
            counts[label] = counts.get(label, 0) + 1
            if response.status_code >= 500:
                failures.append(f"{label} -> {response.status_code}: {response.text[:300]}")

        run()

    total = sum(counts.values())
    print(
        f"\nschemathesis: {total} requests over {len(counts)} operations,"
        f" {len(failures)} with a 5xx; {unreadable} operations unreadable"
    )
    assert total >= 500
    assert failures == []


@pytest.mark.slow  # about sixteen hundred requests, each judged by every check
def test_every_check_finds_the_document_and_the_server_agree(hub_url: str) -> None:
    """Valid and invalid requests by the document, each judged by every check
    schemathesis has: the server takes what the document allows, refuses what
    it does not, and answers as the document says.

    Two checks run narrowed as support/contract_checks.py says, and only there:
    a 400 for a rule no JSON Schema can state (a stored id, two fields
    compared) is not a refusal of valid data, and a dry run that reports in
    its 200 the refusal a send would give has not accepted invalid data.
    """
    operations, unreadable = _operations(hub_url)
    assert unreadable == 0
    load_all_checks()
    checks = [c for c in CHECKS.get_all() if c.__name__ not in contract_checks.REPLACED]
    assert len(checks) >= 14, [c.__name__ for c in checks]
    headers = {**AUTH_HEADERS, "x-verify-token": TOKEN}
    session = requests.Session()
    sent: dict[str, int] = {}
    failures: list[str] = []

    def judge(case: Any, label: str) -> None:
        sent[label] = sent.get(label, 0) + 1
        try:
            case.call_and_validate(
                base_url=hub_url, session=session, headers=headers, checks=checks, timeout=15
            )
        except FailureGroup as group:
            failures.extend(f"{label} {type(f).__name__}: {f}"[:500] for f in group.exceptions)

    unmutable = 0
    for operation in operations:
        label = f"{operation.method.upper()} {operation.path}"
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(
                max_examples=EACH,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
                derandomize=True,
            )
            @given(case=operation.as_strategy(generation_mode=mode), label=st.just(label))
            def run(case: Any, label: str) -> None:
                judge(case, label)

            try:
                run()
            except Unsatisfiable:
                # Nothing in the operation can be made invalid (no parameter, no body).
                assert mode is GenerationMode.NEGATIVE, label
                unmutable += 1

    total = sum(sent.values())
    print(
        f"\nall checks: {total} requests over {len(sent)} operations, {len(failures)} failures;"
        f" {unmutable} operations have nothing to make invalid"
    )
    assert total >= 1500
    assert failures == []
