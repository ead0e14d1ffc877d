import asyncio
import threading

import pytest

from common.batcher import MicroBatcher


async def test_concurrent_requests_share_batches_and_keep_their_order():
    calls: list[list[int]] = []
    gate = threading.Event()

    def double(items):
        calls.append(list(items))
        gate.wait(5)  # hold the first batch so the others queue up behind it
        return [2 * i for i in items]

    batcher = MicroBatcher("test", double, max_batch=100)
    first = asyncio.create_task(batcher.submit([0]))
    await asyncio.sleep(0.05)
    rest = [asyncio.create_task(batcher.submit([i, i + 100])) for i in range(1, 6)]
    await asyncio.sleep(0.05)
    gate.set()
    assert await first == [0]
    assert [await r for r in rest] == [[2 * i, 2 * i + 200] for i in range(1, 6)]
    assert len(calls) == 2 and len(calls[1]) == 10  # everything that waited ran as one batch
    batcher.close()


async def test_a_failing_batch_fails_its_callers_and_the_batcher_survives():
    def maybe_fail(items):
        if "bad" in items:
            raise ValueError("boom")
        return items

    batcher = MicroBatcher("test", maybe_fail)
    with pytest.raises(ValueError):
        await batcher.submit(["bad"])
    assert await batcher.submit(["good"]) == ["good"]
    batcher.close()


async def test_a_caller_that_gives_up_does_not_break_the_batcher():
    gate = threading.Event()

    def slow(items):
        gate.wait(5)
        return items

    batcher = MicroBatcher("test", slow)
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(batcher.submit(["late"]), timeout=0.05)
    gate.set()
    assert await batcher.submit(["next"]) == ["next"]
    batcher.close()
