"""The HTTP helpers every sink shares: Retry-After as delay-seconds or an HTTP-date."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from relay.sinks.httpcheck import parse_retry_after


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("30", 30.0),
        ("0", 0.0),
        ("1.5", 1.5),
        (format_datetime(datetime(2030, 1, 1, 0, 2, tzinfo=UTC), usegmt=True), 120.0),
        ("Tue, 01 Jan 2030 00:02:00 GMT", 120.0),
        ("Mon, 31 Dec 2029 23:00:00 GMT", 0.0),  # in the past: retry now
        ("-5", None),
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    """Retry-After is delay-seconds or an HTTP-date (relative to now); anything else is ignored."""
    now = datetime(2030, 1, 1, tzinfo=UTC).timestamp()
    assert parse_retry_after(value, now=now) == expected
