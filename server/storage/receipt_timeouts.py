"""Messages whose receipt never came: which to ask the provider about, which to give up on.

A message stays SUBMITTED until its provider reports on it. Once the receipt
timeout has passed since its last change, the receipt sweep either asks the
provider (where the channel's adapter can be asked) or moves it to EXPIRED
with the reason in its history. Asking happens outside any transaction; the
message is claimed for it by moving its receipt_query_at on, so replicas
sweeping at once never ask twice.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy import or_, select, update

from server.domain.status import DeliveryStatus
from server.storage import messages as msgs
from server.storage.message_schema import attempts, messages
from server.storage.tx import Tx


@dataclass(frozen=True, slots=True)
class ReceiptRules:
    """How long to wait for a receipt, and how to go on asking for it."""

    timeout_ms: int
    # Between two questions about one message, and after a question that failed.
    query_interval_ms: int
    # "Still on its way" answers after which the message is given up.
    query_limit: int
    # Past the timeout, no message waits longer than this, failed questions or not.
    query_ceiling_ms: int


@dataclass(frozen=True, slots=True)
class Unconfirmed:
    """A message to ask its provider about."""

    message_id: str
    channel_id: str  # the channel that carried it: its provider knows the id
    provider_message_id: str
    queries: int


@dataclass(frozen=True, slots=True)
class Taken:
    expired: int
    to_ask: list[Unconfirmed]
    # Rows looked at; fewer than the limit means none are left for this round.
    seen: int


def _waited(rules: ReceiptRules) -> str:
    return f"no receipt from the provider within {rules.timeout_ms // 1000} s of submission"


async def take(tx: Tx, rules: ReceiptRules, askable: Collection[str], limit: int) -> Taken:
    """Expire the messages that cannot or may no longer be asked about, and
    claim the others for one question each."""
    now = tx.now
    rows = (
        await tx.conn.execute(
            select(
                messages.c.id,
                messages.c.channel_id,
                messages.c.provider_message_id,
                messages.c.receipt_queries,
                messages.c.updated_at,
            )
            .where(
                messages.c.status == DeliveryStatus.SUBMITTED.value,
                messages.c.updated_at < now - rules.timeout_ms,
                or_(messages.c.receipt_query_at.is_(None), messages.c.receipt_query_at <= now),
            )
            .order_by(messages.c.updated_at)
            .limit(limit)
            # Replicas sweeping at once split the work instead of doing it twice.
            .with_for_update(skip_locked=True)
        )
    ).all()
    carriers = await _carriers(tx, [r.id for r in rows]) if rows else {}
    expired, to_ask = 0, []
    for row in rows:
        channel_id = carriers.get(row.id, row.channel_id)
        if channel_id not in askable or not row.provider_message_id:
            reason = f"{_waited(rules)}; channel {channel_id} offers no status query"
        elif row.updated_at < now - rules.timeout_ms - rules.query_ceiling_ms:
            reason = (
                f"{_waited(rules)}; status queries gave no final status "
                f"in the {rules.query_ceiling_ms // 1000} s after that"
                if rules.query_ceiling_ms
                else _waited(rules)  # asking is switched off
            )
        else:
            to_ask.append(
                Unconfirmed(row.id, channel_id, row.provider_message_id, row.receipt_queries)
            )
            continue
        await msgs.set_status(tx, row.id, DeliveryStatus.EXPIRED, reason=reason)
        expired += 1
    if to_ask:
        await tx.conn.execute(
            update(messages)
            .where(messages.c.id.in_([u.message_id for u in to_ask]))
            .values(receipt_query_at=now + rules.query_interval_ms)
        )
    return Taken(expired, to_ask, len(rows))


async def _carriers(tx: Tx, message_ids: list[str]) -> dict[str, str]:
    """message id -> the channel of its last accepted attempt (a fallback's, say)."""
    rows = await tx.conn.execute(
        select(attempts.c.message_id, attempts.c.channel_id)
        .where(attempts.c.message_id.in_(message_ids), attempts.c.outcome == "ACCEPTED")
        .order_by(attempts.c.id)
    )
    return {r.message_id: r.channel_id for r in rows}


async def still_on_its_way(tx: Tx, message_id: str, said: str, rules: ReceiptRules) -> bool:
    """Count an answer that was not final; at the limit the message is EXPIRED.
    Returns whether it was."""
    row = (
        await tx.conn.execute(
            select(messages.c.status, messages.c.receipt_queries).where(messages.c.id == message_id)
        )
    ).first()
    if row is None or row.status != DeliveryStatus.SUBMITTED.value:
        return False  # a receipt came in the meantime
    queries = row.receipt_queries + 1
    # Not updated_at: the ceiling counts from the message's last real change.
    await tx.conn.execute(
        update(messages).where(messages.c.id == message_id).values(receipt_queries=queries)
    )
    if queries < rules.query_limit:
        return False
    reason = f"{_waited(rules)}; after {queries} status queries the provider still says {said!r}"
    return await msgs.set_status(tx, message_id, DeliveryStatus.EXPIRED, reason=reason)
