"""Dynamic batching for ``fitkit serve``: concurrent requests joined into one forward pass (up
to max_batch_size rows, waiting at most max_wait_ms) and each caller handed its own rows.
Knows nothing of HTTP (app.py) or of the artifact's runtime (a ``run`` callable).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

# Loop turns without a new request before a batch short of max_batch_size starts: requests
# whose bytes the loop has read are parsed and queued in the next turn or two, so this joins
# what has already arrived (a lone request pays a few turns, microseconds). Without it, a
# fast forward let batches shrink to what came in during the last one (1-3 rows at 64
# clients), and the per-batch costs grew with them.
SETTLE_TURNS = 3


@dataclass
class Pending:
    """One request's inputs waiting for a batch, and the future its rows go to."""

    arrays: list[np.ndarray]
    future: asyncio.Future
    arrived: float = 0.0  # the loop's clock when queued: a batch waits max_wait from here
    rows: int = 0
    key: tuple = field(default=())

    def __post_init__(self) -> None:
        self.rows = len(self.arrays[0])
        # requests join a batch only with others of the same non-batch shapes (token inputs
        # of another length run in their own batch: nothing is padded)
        self.key = tuple((a.shape[1:], a.dtype.str) for a in self.arrays)


class Batcher:
    """Runs ``run(arrays) -> outputs`` on batches of queued requests, one batch at a time, in a
    worker thread (the event loop keeps answering while a batch runs).

    A batch starts when it is full, when ``max_wait_ms`` passed since its first request was
    queued (time it spent queued behind the batch before counts), or as soon as no other
    request is on its way in (``arriving`` counts those the app has accepted but not yet
    queued) and a few turns of the event loop brought no new one, so one lone client never
    pays the wait.
    """

    def __init__(
        self,
        run: Callable[[list[np.ndarray]], list[np.ndarray]],
        *,
        max_batch_size: int = 32,
        max_wait_ms: float = 5.0,
    ) -> None:
        if max_batch_size < 1 or max_wait_ms < 0:
            raise ValueError("max_batch_size must be >= 1 and max_wait_ms >= 0")
        self.run = run
        self.max_batch_size = int(max_batch_size)
        self.max_wait = float(max_wait_ms) / 1000.0
        self.arriving = 0
        self.batches = 0  # batches run so far (for metadata and tests)
        self._queue: asyncio.Queue[Pending | None] = asyncio.Queue()
        self._carry: collections.deque[Pending] = collections.deque()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="fitkit-batch")
        self._task: asyncio.Task | None = None

    @property
    def queued(self) -> int:
        return self._queue.qsize() + len(self._carry)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        """Finish every queued request, then stop the loop and its thread."""
        if self._task is not None:
            await self._queue.put(None)
            await self._task
            self._task = None
        self._executor.shutdown(wait=True)

    async def submit(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        """Queue one request's inputs; returns its rows of every output."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.put_nowait(Pending(arrays, future, loop.time()))  # unbounded: never waits
        return await future

    async def _next(self, timeout: float | None, carried: bool) -> Pending | bool | None:
        """The next request (with ``carried``, those set aside first); False when none came
        within ``timeout``; None: stop."""
        if carried and self._carry:
            return self._carry.popleft()
        if timeout is None:
            return await self._queue.get()
        if not self._queue.empty():
            return self._queue.get_nowait()
        if timeout <= 0:
            return False
        try:
            return await asyncio.wait_for(self._queue.get(), timeout)
        except TimeoutError:
            return False

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        stopping = False
        while not (stopping and not self._carry and self._queue.empty()):
            first = await self._next(None if not stopping else 0, carried=True)
            if first is None:
                stopping = True
                continue
            if first is False:
                continue
            assert isinstance(first, Pending)
            batch, rows = [first], first.rows
            deadline = first.arrived + self.max_wait
            quiet_turns = 0
            while rows < self.max_batch_size:
                wait = deadline - loop.time() if self.arriving > 0 and not stopping else 0.0
                item = await self._next(wait, carried=False)
                if item is False:
                    if stopping or quiet_turns >= SETTLE_TURNS or loop.time() >= deadline:
                        break
                    quiet_turns += 1
                    await asyncio.sleep(0)  # a turn of the loop: requests already read queue
                    continue
                quiet_turns = 0
                if item is None:
                    stopping = True
                    continue
                assert isinstance(item, Pending)
                if item.key != first.key or rows + item.rows > self.max_batch_size:
                    self._carry.append(item)  # starts the next batch
                    if item.key != first.key:
                        continue
                    break
                batch.append(item)
                rows += item.rows
            await self._run_batch(batch)

    async def _run_batch(self, batch: list[Pending]) -> None:
        loop = asyncio.get_running_loop()
        self.batches += 1
        try:
            arrays = (
                batch[0].arrays
                if len(batch) == 1
                else [
                    np.concatenate(parts)
                    for parts in zip(*(pending.arrays for pending in batch), strict=True)
                ]
            )
            outputs = await loop.run_in_executor(self._executor, self.run, arrays)
            if any(len(o) != sum(p.rows for p in batch) for o in outputs):
                raise ValueError("an output's first dimension is not the batch's rows")
        except Exception as err:  # noqa: BLE001 - every caller of the batch gets the error;
            # the loop itself goes on serving the next batches
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(err)
            return
        start = 0
        for p in batch:
            rows = [o[start : start + p.rows] for o in outputs]
            start += p.rows
            if not p.future.done():  # a caller that went away is skipped
                p.future.set_result(rows)
