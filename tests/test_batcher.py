"""The serving batcher in process (asyncio, no server): a full queue runs at once without the
wait, a lone request does not wait, requests a loop turn apart share a batch, one queued
behind a running batch waits at most max_wait from when it was queued, each caller gets its
rows (mixed sizes and shapes).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np

from fitkit.serving.batcher import Batcher

LONG_WAIT_MS = 5_000  # a wait no test may pay: passing means the batcher did not wait it


def _recording_run(sizes: list[int], seconds: float = 0.0) -> Any:
    def run(arrays: list[np.ndarray]) -> list[np.ndarray]:
        sizes.append(len(arrays[0]))
        if seconds:
            time.sleep(seconds)
        return [arrays[0] * 10.0]

    return run


def test_a_full_batch_runs_at_once_without_the_wait() -> None:
    sizes: list[int] = []

    async def main() -> float:
        batcher = Batcher(_recording_run(sizes), max_batch_size=8, max_wait_ms=LONG_WAIT_MS)
        batcher.start()
        batcher.arriving = 1  # a caller on its way in: a batch short of 8 rows would wait
        start = time.perf_counter()
        replies = await asyncio.gather(
            *(batcher.submit([np.full((1, 2), float(i))]) for i in range(8))
        )
        took = time.perf_counter() - start
        for i, (rows,) in enumerate(replies):
            np.testing.assert_array_equal(rows, np.full((1, 2), 10.0 * i))
        batcher.arriving = 0
        await batcher.stop()
        return took

    took = asyncio.run(main())
    assert sizes == [8]
    assert took < 1.0, f"a full batch waited {took:.2f} s"


def test_a_lone_request_does_not_wait() -> None:
    sizes: list[int] = []

    async def main() -> float:
        batcher = Batcher(_recording_run(sizes), max_batch_size=8, max_wait_ms=LONG_WAIT_MS)
        batcher.start()
        start = time.perf_counter()
        await batcher.submit([np.ones((3, 2))])
        took = time.perf_counter() - start
        await batcher.stop()
        return took

    assert asyncio.run(main()) < 1.0 and sizes == [3]


def test_requests_queued_a_loop_turn_apart_share_a_batch() -> None:
    """No caller counts as on its way in, yet a request queued one turn of the event loop
    after another (the loop parsing bytes it had already read) joins its batch."""
    sizes: list[int] = []

    async def main() -> None:
        batcher = Batcher(_recording_run(sizes), max_batch_size=8, max_wait_ms=LONG_WAIT_MS)
        batcher.start()
        first = asyncio.ensure_future(batcher.submit([np.ones((1, 2))]))
        await asyncio.sleep(0)
        second = asyncio.ensure_future(batcher.submit([np.ones((2, 2))]))
        await asyncio.gather(first, second)
        await batcher.stop()

    asyncio.run(main())
    assert sizes == [3]


def test_the_wait_counts_from_when_a_request_was_queued() -> None:
    """A request queued while a batch runs has waited by the time that batch ends: the next
    batch starts max_wait after it was queued, not max_wait after the forward ended."""
    sizes: list[int] = []
    forward_s, wait_ms = 0.5, 300.0

    async def main() -> float:
        batcher = Batcher(_recording_run(sizes, forward_s), max_batch_size=8, max_wait_ms=wait_ms)
        batcher.start()
        first = asyncio.ensure_future(batcher.submit([np.ones((1, 2))]))
        await asyncio.sleep(0.05)  # the first batch (1 row) is running
        batcher.arriving = 1  # more callers seem on their way: the next batch waits for them
        start = time.perf_counter()
        await batcher.submit([np.ones((1, 2))])
        took = time.perf_counter() - start
        await first
        batcher.arriving = 0
        await batcher.stop()
        return took

    took = asyncio.run(main())
    assert sizes == [1, 1]
    # the rest of the first forward (0.45 s) + the second forward (0.5 s): the wait (0.3 s)
    # passed while the first ran. Waiting it again after the first would make this 1.25 s.
    assert took < forward_s * 2 + 0.1, f"{took:.2f} s"


def test_each_caller_gets_its_rows_across_mixed_sizes_and_shapes() -> None:
    sizes: list[int] = []
    rng = np.random.default_rng(0)
    requests = [rng.standard_normal((int(rng.integers(1, 6)), 2 + i % 2)) for i in range(40)]

    async def main() -> list:
        batcher = Batcher(_recording_run(sizes), max_batch_size=10, max_wait_ms=50)
        batcher.start()
        batcher.arriving = 1
        replies = await asyncio.gather(*(batcher.submit([r]) for r in requests))
        batcher.arriving = 0
        await batcher.stop()
        return replies

    replies = asyncio.run(main())
    for request, (rows,) in zip(requests, replies, strict=True):
        np.testing.assert_array_equal(rows, request * 10.0)
    assert max(sizes) <= 10 and sum(sizes) == sum(len(r) for r in requests)
    assert len(sizes) < len(requests)
