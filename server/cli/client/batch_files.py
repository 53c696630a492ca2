"""The files of `cimhub send --batch`: the CSV of rows in, the result file out.

A result file lists every row with its message id or the reason it was
refused; --resume reads it back to send only the rows without a message id.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from server.cli.client.connection import CliError

RESULT_COLUMNS = (
    "row",
    "correlationId",
    "destination",
    "messageId",
    "status",
    "errorCode",
    "field",
    "error",
)


@dataclass
class Row:
    number: int
    correlation_id: str
    destination: str
    substitutions: dict[str, str]
    message_id: str = ""
    status: str = ""
    error_code: str = ""
    field: str = ""
    error: str = ""

    def refuse(self, code: str, field: str, why: str) -> None:
        self.status, self.error_code, self.field, self.error = "REJECTED", code, field, why


def read_rows(path: Path) -> list[Row]:
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or "to" not in reader.fieldnames:
            raise CliError(f"{path}: the first line must name the columns, including 'to'")
        rows = []
        for number, record in enumerate(reader, start=1):
            to = (record.pop("to") or "").strip()
            correlation = (record.pop("correlationId", "") or "").strip() or f"row-{number}"
            subs = {k: v or "" for k, v in record.items() if k}
            rows.append(Row(number, correlation, to, subs))
    if not rows:
        raise CliError(f"{path}: no rows")
    return rows


def read_results(path: Path) -> dict[int, tuple[str, str]]:
    """Row number -> (message id, status) of the rows an earlier run had accepted."""
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None or not {"row", "messageId"} <= set(reader.fieldnames):
                raise CliError(f"{path}: not a result file of 'cimhub send --batch'")
            return {
                int(r["row"]): (r["messageId"], r.get("status") or "")
                for r in reader
                if r.get("messageId") and (r.get("row") or "").isdigit()
            }
    except OSError as exc:
        raise CliError(f"{path}: {exc.strerror}") from exc


def write_results(path: Path, rows: Sequence[Row]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(RESULT_COLUMNS)
        for r in rows:
            writer.writerow(
                (
                    r.number,
                    r.correlation_id,
                    r.destination,
                    r.message_id,
                    r.status,
                    r.error_code,
                    r.field,
                    r.error,
                )
            )


def summary(rows: Sequence[Row]) -> str:
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.status or "UNKNOWN"] = counts.get(r.status or "UNKNOWN", 0) + 1
    parts = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    return f"{len(rows)} rows: {parts}"
