"""The platform's one notion of "now": timezone-aware UTC, injectable for tests.

Every timestamp that crosses a boundary (events, database rows, API answers) is aware UTC;
code that decides by time takes a `Clock` so tests can move time without sleeping.
"""

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)
