"""Callbacks about what happens during training: TensorBoard, TerminateOnNaN, LambdaCallback.

Owns which values go to TensorBoard under which names (Keras's layout), the per-batch NaN
stop, and hooks made of plain functions; writing event files is each backend's
``events`` module (fitkit/torch/events.py, fitkit/tf/events.py).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from typing import Any

from .. import distribute
from ..backend import backend_module
from ..errors import FitkitError, FitkitTypeError, FitkitValueError
from ..history import LR_KEY, is_lr_column
from .base import Callback
from .monitor import is_step_count


# ---------------------------------------------------------------------- TensorBoard
class TensorBoard(Callback):
    """Write the logs as TensorBoard scalars, in Keras's layout.

    >>> fitkit.callbacks.TensorBoard("logs/run1")   # then: tensorboard --logdir logs

    Two runs, ``<log_dir>/train`` and ``<log_dir>/validation``, hold ``epoch_<key>`` at each
    epoch (validation keys without their 'val_' prefix, so the curves share a chart) and,
    with ``write_lr``, ``epoch_learning_rate`` (``epoch_learning_rate-<group>`` per torch
    param group when there are several). ``update_freq=N`` (or ``"batch"``, N=1) also
    writes ``batch_<key>`` of the running training logs every N steps, counted across
    epochs; ``"epoch"`` (the default) adds no work per step. Needs the ``tensorboard``
    package: ``pip install "fitkit[tensorboard]"``.
    """

    def __init__(
        self, log_dir: str = "logs", update_freq: str | int = "epoch", write_lr: bool = True
    ) -> None:
        super().__init__()
        if not isinstance(log_dir, (str, os.PathLike)):
            raise FitkitTypeError(
                f"TensorBoard(log_dir=...) takes a folder path such as "
                f"'logs/run1'; got {type(log_dir).__name__}."
            )
        if update_freq == "batch":
            update_freq = 1
        if update_freq != "epoch" and not is_step_count(update_freq):
            raise FitkitValueError(
                f"TensorBoard(update_freq=...) takes 'epoch', 'batch' or a "
                f"number of steps >= 1; got {update_freq!r}."
            )
        self.log_dir = os.fspath(log_dir)
        self.update_freq = update_freq
        self.write_lr = bool(write_lr)
        self.global_step = 0  # training steps seen by the batch hook, across epochs
        self._last_batch = -1
        self._writers: dict[str, Any] = {}
        if update_freq != "epoch":
            self.step_interval = int(update_freq)

    def _writer(self, run: str) -> Any:
        writer = self._writers.get(run)
        if writer is None and not distribute.is_main_process():
            writer = self._writers[run] = _NoWriter()  # rank 0 writes the events
        if writer is None:
            try:
                events = backend_module(self.model.backend, "events")
                writer = events.EventWriter(os.path.join(self.log_dir, run))
            except ImportError as err:
                if "tensorboard" not in str(err):
                    raise
                raise FitkitError(
                    f"The TensorBoard callback needs the tensorboard package ({err}). Install "
                    f'it with: pip install "fitkit[tensorboard]"'
                ) from err
            self._writers[run] = writer
        return writer

    def on_train_begin(self, logs: Mapping | None = None) -> None:
        if os.path.isfile(self.log_dir):
            raise FitkitValueError(
                f"TensorBoard: log_dir {self.log_dir!r} is a file; give a "
                f"folder for the event files."
            )
        self._writer("train")  # fails now, not after the first epoch, without tensorboard

    def on_epoch_begin(self, epoch: int, logs: Mapping | None = None) -> None:
        self._last_batch = -1

    def uses(self, hook: str) -> bool:
        if hook == "on_train_batch_end":  # only step logging needs it
            return self.update_freq != "epoch"
        return super().uses(hook)

    def on_train_batch_end(self, batch: int, logs: Mapping | None = None) -> None:
        # Called once per compiled call, with its last step's index: count the difference.
        before = self.global_step
        self.global_step += batch - self._last_batch
        self._last_batch = batch
        every = self.step_interval  # int(update_freq): this hook runs only with one
        if every and self.global_step // every > before // every and logs:
            writer = self._writer("train")
            for key, value in logs.items():
                writer.scalar(f"batch_{key}", value, self.global_step)

    def on_epoch_end(self, epoch: int, logs: Mapping | None = None) -> None:
        logs = logs or {}
        train = self._writer("train")
        for key, value in logs.items():
            if is_lr_column(key):  # lr, or one param group's lr-<group>
                if self.write_lr:
                    train.scalar(f"epoch_learning_rate{key[len(LR_KEY) :]}", value, epoch)
            elif key.startswith("val_"):
                self._writer("validation").scalar(f"epoch_{key[4:]}", value, epoch)
            else:
                train.scalar(f"epoch_{key}", value, epoch)
        for writer in self._writers.values():
            writer.flush()

    def on_train_end(self, logs: Mapping | None = None) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers = {}

    @property
    def state_key(self) -> str:
        return self._key(log_dir=self.log_dir)

    def state_dict(self) -> dict:
        return {"global_step": self.global_step, "last_batch": self._last_batch}

    def load_state_dict(self, state: dict) -> None:
        self.global_step, self._last_batch = int(state["global_step"]), int(state["last_batch"])


# ---------------------------------------------------------------------- TerminateOnNaN
class TerminateOnNaN(Callback):
    """Stop training at the first step whose loss is NaN or infinite (Keras's callback).

    >>> model.fit(x, y, callbacks=[fitkit.callbacks.TerminateOnNaN()])

    It reads the loss after every step, which costs a host synchronisation per step.
    ``fit(terminate_on_nan=True)``, the default, already stops on a non-finite loss at each
    log point (``log_step_freq`` steps and the epoch end) without that cost; use this
    callback only to stop at the very step.
    """

    def __init__(self) -> None:
        super().__init__()
        self._epoch = 0

    def on_epoch_begin(self, epoch: int, logs: Mapping | None = None) -> None:
        self._epoch = epoch

    def on_train_batch_end(self, batch: int, logs: Mapping | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            reason = (
                f"TerminateOnNaN: the loss became {float(loss)} at epoch "
                f"{self._epoch + 1}, step {batch + 1}"
            )
            print(
                f"Epoch {self._epoch + 1}, step {batch + 1}: invalid loss, terminating training.",
                flush=True,
            )
            self.model.stop_training = True
            if self.model.history is not None:  # (a fit's: always there)
                self.model.history.stop_reason = reason


# ---------------------------------------------------------------------- LambdaCallback
_HOOK_NAMES = tuple(name for name in vars(Callback) if name.startswith("on_"))
_ALIASES = {"on_batch_begin": "on_train_batch_begin", "on_batch_end": "on_train_batch_end"}


def _caller(hook: str) -> Callable:
    def call(self: LambdaCallback, *args: Any) -> Any:
        fn = self.functions.get(hook)
        return None if fn is None else fn(*args)

    call.__name__, call.__qualname__ = hook, f"LambdaCallback.{hook}"
    call.__doc__ = getattr(Callback, hook).__doc__  # when it is called, what logs hold
    return call


_CALLERS = {hook: _caller(hook) for hook in _HOOK_NAMES}


class LambdaCallback(Callback):
    """A callback made of plain functions, one per hook (Keras's arguments).

    >>> fitkit.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: print(logs["loss"]))

    Each function takes the hook's arguments: ``(epoch, logs)`` for epoch hooks,
    ``(batch, logs)`` for batch hooks, ``(logs)`` for train / test / predict begin and end.
    Any other hook name (``on_test_end=...``; ``on_batch_end`` means ``on_train_batch_end``)
    works as a keyword. Hooks not given are not run, so batch hooks cost nothing unless given.
    """

    def __init__(
        self,
        on_epoch_begin: Callable | None = None,
        on_epoch_end: Callable | None = None,
        on_train_begin: Callable | None = None,
        on_train_end: Callable | None = None,
        on_train_batch_begin: Callable | None = None,
        on_train_batch_end: Callable | None = None,
        **kwargs: Callable,
    ) -> None:
        super().__init__()
        given = {
            "on_epoch_begin": on_epoch_begin,
            "on_epoch_end": on_epoch_end,
            "on_train_begin": on_train_begin,
            "on_train_end": on_train_end,
            "on_train_batch_begin": on_train_batch_begin,
            "on_train_batch_end": on_train_batch_end,
        }
        for name, fn in kwargs.items():
            hook = _ALIASES.get(name, name)
            if hook not in _HOOK_NAMES:
                raise FitkitTypeError(
                    f"LambdaCallback got an unknown hook {name!r}; hooks are: "
                    f"{', '.join(_HOOK_NAMES)}."
                )
            if given.get(hook) is not None and fn is not None:
                raise FitkitTypeError(
                    f"LambdaCallback got {hook!r} twice (as {name!r}); pass one function per hook."
                )
            given[hook] = fn if fn is not None else given.get(hook)
        self.functions = {h: fn for h, fn in given.items() if fn is not None}
        for hook, fn in self.functions.items():
            if not callable(fn):
                raise FitkitTypeError(
                    f"LambdaCallback({hook}=...) takes a function; got {type(fn).__name__}."
                )

    def uses(self, hook: str) -> bool:
        return hook in self.functions  # hooks not given are not run (batch ones cost nothing)


for _hook, _call in _CALLERS.items():  # every hook calls the function given for it, if any
    setattr(LambdaCallback, _hook, _call)


class _NoWriter:
    """The writer of a process that is not the main one: every rank runs the same hooks
    (reading logs is a collective under DDP), only rank 0 writes."""

    def scalar(self, tag: str, value: float, step: int) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...
