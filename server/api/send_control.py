"""Proto conversions for cancelling and quotas (MessagingService's CancelMessage,
CancelBatch and GetQuota)."""

from __future__ import annotations

from cim.v1 import messaging_service_pb2 as pb
from server.api.convert import status_to_proto
from server.domain.cancellation import CancelResult
from server.domain.quota import Quota


def cancel_result_to_proto(r: CancelResult) -> pb.CancelResult:
    return pb.CancelResult(
        message_id=r.message_id,
        outcome=pb.CancelOutcome.Value(f"CANCEL_OUTCOME_{r.outcome.value}"),
        status=status_to_proto(r.status),
    )


def quota_to_proto(q: Quota) -> pb.GetQuotaResponse:
    return pb.GetQuotaResponse(
        rate=pb.RateBudget(
            per_second=q.rate.per_second,
            burst=q.rate.burst,
            remaining=q.rate.remaining,
            full_in_ms=q.rate.full_in_ms,
        ),
        channels=[
            pb.ChannelQuota(
                channel_id=c.channel_id,
                contact_type=c.contact_type,
                tps=c.tps,
                max_in_flight=c.max_in_flight,
                in_flight=c.in_flight,
                queue_depth=c.queue_depth,
                estimated_wait_ms=c.estimated_wait_ms,
                scheduled=c.scheduled,
            )
            for c in q.channels
        ],
    )
