"""AIP-158 page arguments, checked before they reach storage."""

from __future__ import annotations

import re

from server.domain.errors import FieldViolation, invalid

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
_TOKEN = re.compile(r"^\d{1,20}:[0-9a-f-]{1,64}$")


def page_args(page_size: int, page_token: str) -> tuple[int, str]:
    problems = []
    if page_size < 0:
        problems.append(FieldViolation("pageSize", "must not be negative"))
    if page_token and not _TOKEN.match(page_token):
        problems.append(FieldViolation("pageToken", "not a token this server issued"))
    if problems:
        raise invalid(problems)
    return min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE), page_token
