"""Proto conversions for MessagingService's dry run, cancels and quotas."""

from __future__ import annotations

from collections.abc import Iterable

from cim.v1 import messaging_service_pb2 as pb
from server.api.convert import status_to_proto
from server.domain.cancellation import CancelResult
from server.domain.errors import FieldViolation
from server.domain.quota import Quota
from server.domain.send_check import BatchCheck, DestinationCheck, SmsEstimate


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


def _violations(found: Iterable[FieldViolation]) -> list[pb.FieldError]:
    return [pb.FieldError(field=v.field, description=v.description) for v in found]


def _sms_to_proto(e: SmsEstimate) -> pb.SmsEstimate:
    smart = e.smart_encoding
    return pb.SmsEstimate(
        text=e.text,
        encoding=e.encoding,
        segments=e.segments,
        ucs2_characters=list(e.ucs2_characters),
        smart_encoding=pb.SmartEncoding(
            applied=smart.applied,
            replacements=[
                pb.CharacterReplacement(
                    character=r.character, replacement=r.replacement, count=r.count
                )
                for r in smart.replacements
            ],
            encoding_before=smart.encoding_before,
            encoding_after=smart.encoding_after,
            segments_before=smart.segments_before,
            segments_after=smart.segments_after,
            segments_saved=smart.segments_saved,
        ),
    )


def _destination_to_proto(c: DestinationCheck) -> pb.DestinationCheck:
    out = pb.DestinationCheck(
        correlation_id=c.correlation_id,
        destination=c.destination,
        sendable=c.sendable,
        error=c.error,
        errors=_violations(c.errors),
        channel_id=c.channel_id,
        route=list(c.route),
        type=c.type,
        text=c.text,
        consent=c.consent,
    )
    if c.sms is not None:
        out.sms.CopyFrom(_sms_to_proto(c.sms))
    return out


def check_to_proto(check: BatchCheck) -> pb.ValidateBatchResponse:
    out = pb.ValidateBatchResponse(
        results=[_destination_to_proto(c) for c in check.results],
        accepted=check.refusal is None,
    )
    if check.refusal is not None:
        err = check.refusal
        out.refusal.CopyFrom(
            pb.SendRefusal(
                status_key=err.code.value,
                reason=err.reason,
                message=err.message,
                errors=_violations(err.violations),
            )
        )
    return out
