"""The cimhub client commands against a real server process (`python -m server`)."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.cli import main
from support.hub import AUTH_ENV, TEST_API_ID, TEST_API_KEY

_PORTS = re.compile(r"gRPC on \S+:(\d+), HTTP on \S+:(\d+)")


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, **AUTH_ENV, "PYTHONUNBUFFERED": "1", **extra}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A hub on SQLite with the sandbox channels, as `make run` starts it."""
    db = tmp_path_factory.mktemp("cli") / "hub.db"
    env = _env(
        CIMHUB_DATABASE_URL=f"sqlite+aiosqlite:///{db}",
        CIMHUB_GRPC_PORT="0",
        CIMHUB_HTTP_PORT="0",
        CIMHUB_HOST="127.0.0.1",
        CIMHUB_SANDBOX_DELIVERY_DELAY="0.01",
        CIMHUB_HEARTBEAT_SECONDS="0.5",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "server", "serve", "--log-level", "WARNING"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        target = ""
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            found = _PORTS.search(line)
            if found:
                target = f"127.0.0.1:{found.group(1)}"
                break
        assert target, "server did not report its ports"
        yield target
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _cimhub(target: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server", *args, "--target", target],
        env=_env(CIMHUB_API_ID=TEST_API_ID, CIMHUB_API_KEY=TEST_API_KEY),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_batch_of_5000_rows_is_delivered_with_progress_and_a_result_file(
    server: str, tmp_path: Path
) -> None:
    rows = tmp_path / "rows.csv"
    with rows.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["to", "correlationId", "name"])
        for i in range(5000):
            writer.writerow([f"+4479{i:08d}", f"c{i}", f"N{i}"])
    out = tmp_path / "results.csv"
    done = _cimhub(
        server,
        "send",
        "--channel",
        "sms",
        "--from",
        "CNNECT",
        "--text",
        "Hi $(name)",
        "--batch",
        str(rows),
        "--out",
        str(out),
    )
    assert done.returncode == 0, done.stderr
    # Five requests of 1000, each reported as it is accepted.
    assert [f"accepted {n}/5000" for n in range(1000, 5001, 1000)] == re.findall(
        r"accepted \d+/5000", done.stderr
    )
    assert "final 5000/5000" in done.stderr
    assert "5000 rows: DELIVERED 5000" in done.stdout
    with out.open(newline="") as f:
        results = list(csv.DictReader(f))
    assert len(results) == 5000
    assert [r["correlationId"] for r in results] == [f"c{i}" for i in range(5000)]
    assert {r["status"] for r in results} == {"DELIVERED"}
    assert len({r["messageId"] for r in results}) == 5000


def test_tail_prints_events_as_they_happen(server: str) -> None:
    tail = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "server",
            "tail",
            "--type",
            "DeliveryStatusEvent",
            "--target",
            server,
        ],
        env=_env(CIMHUB_API_ID=TEST_API_ID, CIMHUB_API_KEY=TEST_API_KEY),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert tail.stderr is not None and tail.stdout is not None
        # Live once it says so; anything sent from now on must show up.
        assert "streaming live events" in tail.stderr.readline()
        sent = _cimhub(
            server, "send", "--channel", "sandbox", "--to", "+447900000001", "--text", "hi"
        )
        assert sent.returncode == 0, sent.stderr
        message_id = sent.stdout.split()[0]
        seen: list[str] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = tail.stdout.readline()
            seen.append(line)
            if message_id in line and "status=DELIVERED" in line:
                break
        assert any(message_id in s and "status=DELIVERED" in s for s in seen), seen
        assert all(s.split()[1] == "DeliveryStatusEvent" for s in seen if s.strip())
    finally:
        tail.terminate()
        tail.wait(timeout=10)


def test_errors_print_the_reason_and_field_path_without_a_traceback(server: str) -> None:
    bad = _cimhub(
        server, "send", "--channel", "sms", "--from", "CNNECT", "--to", "12", "--text", "x"
    )
    assert bad.returncode != 0
    assert "INVALID_ARGUMENT VALIDATION_FAILED" in bad.stderr
    assert "to[0].msisdn[0]:" in bad.stderr
    assert "Traceback" not in bad.stderr
    unauthenticated = subprocess.run(
        [sys.executable, "-m", "server", "channels", "list", "--target", server],
        env={k: v for k, v in os.environ.items() if not k.startswith("CIMHUB_API")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert unauthenticated.returncode != 0
    assert unauthenticated.stderr.startswith("error: UNAUTHENTICATED")
    assert "Traceback" not in unauthenticated.stderr


def test_templates_channels_and_sessions_commands(server: str) -> None:
    created = _cimhub(
        server,
        "templates",
        "create",
        "--code",
        "CLI_HELLO",
        "--lang",
        "en",
        "--body",
        "Hello $(name)",
        "--approve",
        "sandbox",
    )
    assert created.returncode == 0, created.stderr
    listed = _cimhub(server, "templates", "list", "--channel-id", "sandbox", "--status", "APPROVED")
    assert listed.returncode == 0 and "CLI_HELLO" in listed.stdout
    channels = _cimhub(server, "channels", "list", "--sandbox")
    assert channels.returncode == 0 and "sandbox-sms" in channels.stdout
    sessions = _cimhub(server, "sessions", "list")
    assert sessions.returncode == 0, sessions.stderr
    missing = _cimhub(server, "sessions", "close", "no-such-session")
    assert missing.returncode == 1 and "NOT_FOUND" in missing.stderr


@pytest.mark.parametrize(
    "command",
    [
        ["send"],
        ["tail"],
        ["sessions"],
        ["sessions", "list"],
        ["sessions", "close"],
        ["sessions", "resolve"],
        ["sessions", "route"],
        ["templates", "list"],
        ["templates", "create"],
        ["channels", "list"],
    ],
)
def test_help_works_on_every_subcommand(
    command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main([*command, "--help"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith("usage: cimhub")
