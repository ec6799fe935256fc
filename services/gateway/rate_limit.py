"""Per-API-key rate limiting: an in-process token bucket per key.

Each key may make `rate_per_s` requests a second on average and save up to `burst` for a
spike. The buckets live in this process: several gateway replicas each allow the full rate.
"""

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from fastapi import status

from rondo.gateway.errors import ApiError

# Beyond this many keys, buckets that have refilled completely are forgotten.
PRUNE_ABOVE_KEYS = 10_000


@dataclass
class _Bucket:
    tokens: float
    updated_at: float


class TokenBucketLimiter:
    """Thread-safe (sync dependencies run in a thread pool); `clock` is monotonic seconds."""

    def __init__(
        self, rate_per_s: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._rate = rate_per_s
        self._burst = float(burst)
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def acquire(self, key: str) -> float:
        """Take one token for `key`: 0.0 when the request may go ahead, otherwise the seconds
        until a token is available (nothing taken)."""
        with self._lock:
            now = self._clock()
            bucket = self._buckets.get(key)
            if bucket is None:
                if len(self._buckets) >= PRUNE_ABOVE_KEYS:
                    self._prune(now)
                bucket = self._buckets[key] = _Bucket(tokens=self._burst, updated_at=now)
            bucket.tokens = min(self._burst, bucket.tokens + (now - bucket.updated_at) * self._rate)
            bucket.updated_at = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return 0.0
            return (1.0 - bucket.tokens) / self._rate

    def _prune(self, now: float) -> None:
        full_after = self._burst / self._rate
        for key in [k for k, b in self._buckets.items() if now - b.updated_at >= full_after]:
            del self._buckets[key]

    def check(self, key: str) -> None:
        """Raise 429 `rate_limited` with `Retry-After` (whole seconds) when `key` is over."""
        wait_s = self.acquire(key)
        if wait_s > 0:
            retry_after = max(1, math.ceil(wait_s))
            raise ApiError(
                status.HTTP_429_TOO_MANY_REQUESTS,
                "rate_limited",
                f"too many requests with this API key; retry in {retry_after} s",
                "slow down: wait for Retry-After seconds between bursts",
                headers={"Retry-After": str(retry_after)},
            )
