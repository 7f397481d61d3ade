"""LearningRateScheduler: a user's function of the epoch sets the learning rate each epoch.

Owns calling the schedule and checking what it returns; the rate itself is the facade's
``model.learning_rate`` (compile's ``lr_schedule`` covers native schedulers and per-step ones).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from numbers import Real
from typing import Any

from ..errors import FitkitTypeError, FitkitValueError
from .base import Callback


def _arity(schedule: Callable) -> int:
    """2 for ``schedule(epoch, lr)``, 1 for ``schedule(epoch)`` (both Keras's forms)."""
    try:
        signature = inspect.signature(schedule)
    except (TypeError, ValueError):  # a builtin without a signature: Keras's form
        return 2
    for args in ((0, 0.1), (0,)):
        try:
            signature.bind(*args)
            return len(args)
        except TypeError:
            continue
    raise FitkitTypeError(
        f"LearningRateScheduler(schedule=...) is called as schedule(epoch, lr) or "
        f"schedule(epoch); {getattr(schedule, '__name__', schedule)!r} takes {signature}."
    )


class LearningRateScheduler(Callback):
    """Set the learning rate at the start of each epoch to ``schedule(epoch, lr)``.

    >>> fitkit.callbacks.LearningRateScheduler(lambda epoch, lr: lr * 0.9 if epoch else lr)

    ``epoch`` counts from 0 and ``lr`` is the current rate; a one-argument
    ``schedule(epoch)`` works too. The history's ``lr`` column shows each epoch's rate. With
    several torch param groups ``lr`` is group 0's and the new rate is group 0's; every other
    group is scaled by the same factor (see ``Model.learning_rate``).
    """

    def __init__(self, schedule: Callable[..., float], verbose: int = 0) -> None:
        super().__init__()
        if not callable(schedule):
            raise FitkitTypeError(
                f"LearningRateScheduler(schedule=...) takes a function "
                f"(epoch, lr) -> new lr; got {type(schedule).__name__}."
            )
        self.schedule = schedule
        self.verbose = verbose
        self._args = _arity(schedule)

    def on_epoch_begin(self, epoch: int, logs: Mapping | None = None) -> None:
        if self._args == 2:
            lr = self.schedule(epoch, float(self.model.learning_rate))
        else:
            lr = self.schedule(epoch)
        lr = _checked(lr, epoch)
        self.model.learning_rate = lr
        if self.verbose:
            print(
                f"Epoch {epoch + 1}: LearningRateScheduler setting learning rate to {lr:.4g}.",
                flush=True,
            )


def _checked(lr: Any, epoch: int) -> float:
    if (
        not isinstance(lr, Real)
        and hasattr(lr, "__float__")
        and tuple(getattr(lr, "shape", (1,))) == ()
    ):
        lr = float(lr)  # a 0-d array or framework tensor
    if isinstance(lr, bool) or not isinstance(lr, Real):
        raise FitkitTypeError(
            f"LearningRateScheduler: schedule({epoch}, lr) returned "
            f"{type(lr).__name__} {lr!r}; it must return a number "
            f"(the new learning rate)."
        )
    if not math.isfinite(lr) or lr < 0:
        raise FitkitValueError(
            f"LearningRateScheduler: schedule({epoch}, lr) returned {lr!r}; "
            f"a learning rate is a finite number >= 0."
        )
    return float(lr)
