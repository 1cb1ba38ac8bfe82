"""FairThreads: sync jobs share the threads between owners, in turns."""

from __future__ import annotations

import asyncio
import threading

from liveprogress.threads import FairThreads


async def test_owners_waiting_for_a_thread_take_turns():
    threads = FairThreads(workers=1, per_owner=1)
    order: list[str] = []
    gate = threading.Event()

    def work(name: str) -> str:
        if name == "a1":
            gate.wait(5)  # holds the only thread while the others line up
        order.append(name)
        return name

    try:
        first = asyncio.create_task(threads.run("a", lambda: work("a1")))
        await asyncio.sleep(0.05)
        rest = [
            asyncio.create_task(threads.run(owner, lambda name=name: work(name)))
            for owner, name in [("a", "a2"), ("a", "a3"), ("b", "b1"), ("c", "c1")]
        ]
        await asyncio.sleep(0.05)
        gate.set()
        assert await first == "a1"
        await asyncio.gather(*rest)
    finally:
        threads.shutdown()
    # "a" came first and had two more: the others each get a turn in between.
    assert order == ["a1", "a2", "b1", "c1", "a3"]


async def test_an_owner_holds_at_most_its_share_and_a_cancel_while_waiting_frees_nothing():
    threads = FairThreads(workers=3, per_owner=2)
    gate = threading.Event()
    try:
        held = [asyncio.create_task(threads.run("a", lambda: gate.wait(5))) for _ in range(3)]
        await asyncio.sleep(0.05)
        assert threads.running("a") == 2
        # A third thread is free, but not for "a": "b" gets it at once.
        assert await asyncio.wait_for(threads.run("b", lambda: "b"), 2) == "b"
        held[2].cancel()
        gate.set()
        await asyncio.gather(*held, return_exceptions=True)
        assert threads.running("a") == 0
        # Every thread is free again.
        results = await asyncio.gather(*(threads.run("c", lambda: 1) for _ in range(6)))
        assert sum(results) == 6
    finally:
        threads.shutdown()
