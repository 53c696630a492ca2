"""Two of schemathesis' checks, narrowed to what /openapi.json can state.

``positive_data_acceptance`` and ``negative_data_rejection`` as schemathesis
has them, except for the two answers contract_rules.py describes: a 400 for
rules no JSON Schema can state, and a dry run's 200 reporting the refusal a
send would give. Every other check runs as it is. The same module serves the
pytest run and the command line:

    PYTHONPATH=tests SCHEMATHESIS_HOOKS=support.contract_checks \\
      schemathesis run http://127.0.0.1:8080/openapi.json --checks all \\
      --exclude-checks positive_data_acceptance,negative_data_rejection ...
"""

from __future__ import annotations

from typing import Any

import schemathesis
from schemathesis.core.failures import AcceptedNegativeData
from schemathesis.openapi.checks import RejectedPositiveData
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

from support.contract_rules import reported_refusal, unstated_only

# The built-in checks these two stand for.
REPLACED = ("positive_data_acceptance", "negative_data_rejection")


def _body(response: Any) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


@schemathesis.check
def positive_data_acceptance_as_stated(ctx: Any, response: Any, case: Any) -> bool | None:
    """Valid data is accepted, unless refused only for rules the document cannot state."""
    try:
        return positive_data_acceptance(ctx, response, case)
    except RejectedPositiveData:
        if unstated_only(case.operation.label, response.status_code, _body(response)):
            return None
        raise


@schemathesis.check
def negative_data_rejection_as_stated(ctx: Any, response: Any, case: Any) -> bool | None:
    """Invalid data is refused; a dry run reports the refusal in its 200 instead."""
    try:
        return negative_data_rejection(ctx, response, case)
    except AcceptedNegativeData:
        if reported_refusal(case.operation.label, response.status_code, _body(response)):
            return None
        raise
