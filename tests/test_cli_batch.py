"""`cimhub send --batch`: bad rows are refused one by one, every row is reported,
and --resume sends only what is left, without sending anything twice."""

from __future__ import annotations

import asyncio
import csv
from pathlib import Path

import pytest

from server.app import Hub
from server.cli import main
from server.domain.paging import MESSAGES
from support.hub import TEST_API_ID, TEST_API_KEY, running_hub

BAD = {3: "12", 8: "not-a-number"}


def _write_rows(path: Path, bad: dict[int, str]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["to", "correlationId", "name"])
        for number in range(1, 13):
            writer.writerow([bad.get(number, f"+4479111{number:05d}"), f"c{number}", f"N{number}"])


def _results(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


async def _cimhub(hub: Hub, *args: str) -> int:
    target = ["--target", f"127.0.0.1:{hub.grpc_port}"]
    keys = ["--api-id", TEST_API_ID, "--api-key", TEST_API_KEY]
    send = ["send", "--channel", "sms", "--from", "CNNECT", "--text", "Hi $(name)"]
    return await asyncio.to_thread(main, [*send, *args, *target, *keys])


async def _message_ids(hub: Hub) -> list[str]:
    page = await hub.store.messages.list_messages(
        "default", page=MESSAGES.request("default", 500, "")
    )
    return sorted(m.id for m in page.items)


async def test_bad_rows_are_reported_and_resume_sends_the_rest_once(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows, out = tmp_path / "rows.csv", tmp_path / "results.csv"
    _write_rows(rows, BAD)
    async with running_hub(db_url) as hub:
        # Two malformed numbers: the other ten are sent, and the run says it failed.
        assert await _cimhub(hub, "--batch", str(rows), "--out", str(out)) == 3
        first = _results(out)
        assert [r["row"] for r in first] == [str(n) for n in range(1, 13)]
        for r in first:
            if int(r["row"]) in BAD:
                assert r["messageId"] == "" and r["status"] == "REJECTED"
                assert r["errorCode"] and r["field"] == "to" and r["error"], r
            else:
                assert r["messageId"] and r["status"] == "DELIVERED" and not r["errorCode"], r
        sent = sorted(r["messageId"] for r in first if r["messageId"])
        assert await _message_ids(hub) == sent
        assert "12 rows: DELIVERED 10, REJECTED 2" in capsys.readouterr().out

        # A result file that lost the ids of rows the server had accepted (the
        # run was killed before it wrote them): resuming gets the same messages.
        lost = tmp_path / "lost.csv"
        with lost.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(first[0]))
            writer.writeheader()
            writer.writerows({**r, "messageId": "", "status": ""} for r in first)
        assert await _cimhub(hub, "--batch", str(rows), "--resume", str(lost)) == 3
        again = _results(lost)
        assert [r["messageId"] for r in again] == [r["messageId"] for r in first]
        assert await _message_ids(hub) == sent

        # With the two numbers fixed, resuming sends those two rows only.
        _write_rows(rows, {})
        assert await _cimhub(hub, "--batch", str(rows), "--resume", str(out)) == 0
        final = _results(out)
        assert [r["row"] for r in final] == [str(n) for n in range(1, 13)]
        assert all(r["messageId"] and not r["errorCode"] for r in final)
        for before, after in zip(first, final, strict=True):
            if before["messageId"]:
                assert after["messageId"] == before["messageId"]
        assert len(await _message_ids(hub)) == 12
        assert sorted(r["messageId"] for r in final) == await _message_ids(hub)


async def test_a_request_the_server_refuses_as_a_whole_still_reports_every_row(
    db_url: str, tmp_path: Path
) -> None:
    rows, out = tmp_path / "rows.csv", tmp_path / "results.csv"
    _write_rows(rows, {})
    async with running_hub(db_url) as hub:
        # An SMS text far over the cap refuses the request, not one row.
        args = ["--batch", str(rows), "--out", str(out), "--text", "x" * 5000]
        assert await _cimhub(hub, *args) == 3
        results = _results(out)
        assert len(results) == 12
        assert all(not r["messageId"] and r["errorCode"] and r["field"] for r in results)
        assert await _message_ids(hub) == []
