"""Rate limiting: an in-process token bucket per API key, and one per client address for
failed authentications.

Each key may make `rate_per_s` requests a second on average and save up to `burst` for a
spike. That alone does not stop guessing: every guessed key is a new key with a full bucket.
`FailedAuthLimiter` therefore also counts, per client address, the requests whose key was
refused; an address out of tokens gets 429 for any key until it has waited. The buckets live
in this process: several gateway replicas each allow the full rate.

The address is the connection's peer as uvicorn reports it; behind a reverse proxy, uvicorn
must trust the proxy's `X-Forwarded-For` (`FORWARDED_ALLOW_IPS`), or every client shares the
proxy's address and one guesser locks everyone out.
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

    def wait_s(self, key: str) -> float:
        """Seconds until `key` has a token (0.0 when it has one now); nothing is taken."""
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                return 0.0
            tokens = min(
                self._burst, bucket.tokens + (self._clock() - bucket.updated_at) * self._rate
            )
            return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self._rate

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


def _retry_after(wait_s: float) -> int:
    return max(1, math.ceil(wait_s))


class FailedAuthLimiter:
    """Failed authentications per client address: `burst` refusals, then one per
    `1 / rate_per_s` seconds. While an address is over, every request from it that carries an
    API key gets 429 `auth_rate_limited` before its key is looked at, right or wrong: a guesser
    must not learn that a guess was right."""

    def __init__(
        self, rate_per_s: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._buckets = TokenBucketLimiter(rate_per_s, burst, clock)

    def check(self, address: str) -> None:
        """Raise 429 `auth_rate_limited` with `Retry-After` while `address` is over."""
        wait_s = self._buckets.wait_s(address)
        if wait_s > 0:
            retry_after = _retry_after(wait_s)
            raise ApiError(
                status.HTTP_429_TOO_MANY_REQUESTS,
                "auth_rate_limited",
                f"too many requests with unknown or revoked API keys from your address; "
                f"retry in {retry_after} s",
                "check the API key you send (rondo login), then wait for Retry-After seconds",
                headers={"Retry-After": str(retry_after)},
            )

    def record_failure(self, address: str) -> None:
        """Count one refused key from `address`."""
        self._buckets.acquire(address)
