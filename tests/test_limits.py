from __future__ import annotations

import time

from liveprogress.limits import TokenBucket


def test_burst_then_the_sustained_rate():
    bucket = TokenBucket(rate=10, burst=5)
    assert [bucket.take() for _ in range(6)] == [True] * 5 + [False]
    time.sleep(0.25)  # 2.5 tokens back
    assert [bucket.take() for _ in range(3)] == [True, True, False]


def test_never_more_than_the_burst_after_a_rest():
    bucket = TokenBucket(rate=1000, burst=3)
    time.sleep(0.05)
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
