"""Step bookkeeping for one pass over a batch source: step count, batch hooks, log points.

Owns the small iterator the facade's loops run through, so that each loop reads as
``for batch in steps: run(batch)``. It reads device values only through ``read_logs``,
and only at log points or when a batch hook actually looks at its logs. Between steps it
beats for ``fitkit launch`` (heartbeat.py) and lets a SIGTERM stop training (signals.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from . import heartbeat, signals
from .callbacks import CallbackList
from .display import EpochDisplay


class LazyLogs(Mapping):
    """Logs handed to batch hooks: read from the device only if a hook looks at them."""

    def __init__(self, read: Callable[[], dict]) -> None:
        self._read = read
        self._logs: dict | None = None

    def _values(self) -> dict:
        if self._logs is None:
            self._logs = self._read()  # host sync: only when a hook reads its logs
        return self._logs

    def __getitem__(self, key: str) -> float:
        return self._values()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values())

    def __len__(self) -> int:
        return len(self._values())


class StepLoop:
    """Yields the items of one pass and does the per-step bookkeeping around each one.

    ``batches`` yields ``(item, n_steps)``: an item is one batch, or a chunk of several
    steps that the adapter runs in one call; hooks and log points then see the chunk end.
    ``n_steps`` may be a callable, read after the call, when the data's length is unknown.
    """

    def __init__(
        self,
        batches: Iterable[tuple[Any, int]],
        *,
        kind: str,
        callbacks: CallbackList,
        read_logs: Callable[[], dict],
        display: EpochDisplay | None = None,
        log_every: int | None = None,
        stop_if: Callable[[dict], bool] | None = None,
        steps_done: int = 0,
        stop_requested: Callable[[], bool] | None = None,
    ) -> None:
        self.batches = batches
        self.callbacks = callbacks
        self.read_logs = read_logs
        self.display = display
        self.log_every = log_every
        self.kind = kind
        self.begin_hook = f"on_{kind}_batch_begin"
        self.end_hook = f"on_{kind}_batch_end"
        self.steps_done = steps_done  # a resumed epoch starts counting where it was
        self.stop_if = stop_if  # looks at each log point's logs; True ends the pass there
        self.stopped = False
        self.stop_requested = stop_requested  # a batch hook set model.stop_training
        self.item: Any = None  # the item being run, for error messages

    def __iter__(self) -> Iterator[Any]:
        beat = heartbeat.beater(self.kind)  # None unless under fitkit launch
        begin = self.callbacks.wants(self.begin_hook)
        end = self.callbacks.wants(self.end_hook)
        display, log_every = self.display, self.log_every
        boundary = signals.at_boundary if self.kind == "train" else None  # SIGTERM stops here
        batches = iter(self.batches)
        try:
            while True:
                if beat is not None:
                    beat(heartbeat.WAITING, self.steps_done)
                try:
                    item, n_steps = next(batches)
                except StopIteration:
                    return
                self.item = item
                if beat is not None:
                    beat(heartbeat.BEGIN, self.steps_done)
                if begin:
                    self.callbacks.call_batch(self.begin_hook, self.steps_done, None)
                if beat is not None:
                    beat(heartbeat.RUNNING, self.steps_done)
                yield item  # the caller runs the step(s) here
                if not isinstance(n_steps, int):  # known after the call (unknown length)
                    n_steps = n_steps()
                before, self.steps_done = self.steps_done, self.steps_done + n_steps
                if beat is not None:
                    beat(heartbeat.END, before)
                if display is not None:
                    display.advance(n_steps)
                if end:
                    self.callbacks.call_batch(
                        self.end_hook, self.steps_done - 1, LazyLogs(self.read_logs)
                    )
                    if self.stop_requested is not None and self.stop_requested():
                        self.stopped = True  # as Keras: the epoch ends after this step
                        return
                if (
                    log_every
                    and display is not None
                    and self.steps_done // log_every > before // log_every
                ):
                    logs = self.read_logs()  # host sync: log point
                    display.step_log(self.steps_done, logs)
                    if self.stop_if is not None and self.stop_if(logs):
                        self.stopped = True
                        return
                if boundary is not None:
                    boundary()
        finally:
            if beat is not None:
                heartbeat.left_loop()  # out of a step loop: not timed by the launcher
