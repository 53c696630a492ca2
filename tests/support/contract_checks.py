"""Two of schemathesis' checks, narrowed to what /openapi.json can state.

``positive_data_acceptance`` and ``negative_data_rejection`` as schemathesis
has them, except for the two answers contract_rules.py describes: a 400 for
rules no JSON Schema can state, and a dry run's 200 reporting the refusal a
send would give. Every other check runs as it is.

The same module serves the pytest run and the command line. From the
repository root, ``schemathesis.toml`` loads it as the run's hooks, and
lets the built-in ``positive_data_acceptance`` take a 400 so that the
narrowed check here judges every 400 instead:

    schemathesis run http://127.0.0.1:8080/openapi.json --checks all \\
      -H "x-api-id: ..." -H "x-api-key: ..." -H "x-verify-token: ..."
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import schemathesis
from schemathesis.checks import CHECKS
from schemathesis.config._checks import POSITIVE_DATA_ACCEPTANCE_EXPECTED_STATUSES
from schemathesis.core.failures import AcceptedNegativeData
from schemathesis.core.transport import expand_status_codes
from schemathesis.openapi.checks import RejectedPositiveData
from schemathesis.specs.openapi.checks import (
    is_unexpected_http_status_case,
    negative_data_rejection,
)

from .contract_rules import reported_refusal, unstated_only

# The built-in checks these two stand for.
REPLACED = ("positive_data_acceptance", "negative_data_rejection")
# What valid data may be answered with: schemathesis' own defaults, never the
# run's configuration (which widens the built-in check's list for the 400).
_ACCEPTED = expand_status_codes(POSITIVE_DATA_ACCEPTANCE_EXPECTED_STATUSES)


Check = Callable[[Any, Any, Any], "bool | None"]


def _check(function: Check) -> Check:
    """Register once: pytest imports this module by one name, a run's hooks by another."""
    if function.__name__ not in CHECKS.get_all_names():
        schemathesis.check(function)
    return function


def _body(response: Any) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


@_check
def positive_data_acceptance_as_stated(ctx: Any, response: Any, case: Any) -> bool | None:
    """Valid data is accepted, unless refused only for rules the document cannot state."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or is_unexpected_http_status_case(case):
        return None
    status = response.status_code
    if status in _ACCEPTED or unstated_only(case.operation.label, status, _body(response)):
        return None
    raise RejectedPositiveData(
        operation=case.operation.label,
        message="Valid data should have been accepted, or refused with a 400 naming "
        "a rule the document cannot state\n"
        f"Expected: {', '.join(POSITIVE_DATA_ACCEPTANCE_EXPECTED_STATUSES)}",
        status_code=status,
        allowed_statuses=POSITIVE_DATA_ACCEPTANCE_EXPECTED_STATUSES,
    )


@_check
def negative_data_rejection_as_stated(ctx: Any, response: Any, case: Any) -> bool | None:
    """Invalid data is refused; a dry run reports the refusal in its 200 instead."""
    try:
        return negative_data_rejection(ctx, response, case)
    except AcceptedNegativeData:
        if reported_refusal(case.operation.label, response.status_code, _body(response)):
            return None
        raise
