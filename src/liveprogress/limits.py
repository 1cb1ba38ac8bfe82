"""Per-socket rate limiting: a token bucket, refilled continuously."""

from __future__ import annotations

import time


class TokenBucket:
    """Allows ``rate`` events a second on average, and bursts of up to ``burst``."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._at = time.monotonic()

    def take(self) -> bool:
        """Spend one token if there is one; False when the rate is exceeded."""
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True
