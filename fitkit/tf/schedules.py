"""Learning-rate schedules on TensorFlow: builds compile's ``lr_schedule`` (a Keras schedule or
a portable one) and puts its rate in the Keras optimizer (per batch: in the graph, from
``optimizer.iterations``). Formulas: fitkit/schedules.py; twin: fitkit/torch/schedules.py.
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import keras
import tensorflow as tf

from ..errors import FitkitTypeError, FitkitValueError
from ..schedules import Schedule
from ..scheduling import PORTABLE_KINDS, PortableScheduler, Scheduler, foreign, portable

# fitkit.schedules.HOST_OPS's twin: the same formulas, traced into the step's graph.
GRAPH_OPS = SimpleNamespace(
    pi=math.pi,
    cos=keras.ops.cos,
    floor=keras.ops.floor,
    power=keras.ops.power,
    minimum=keras.ops.minimum,
    maximum=keras.ops.maximum,
    where=keras.ops.where,
)

_KINDS = f"{PORTABLE_KINDS}, or a keras.optimizers.schedules.LearningRateSchedule"


def build_scheduler(spec: Any, optimizer: Any, *, every: str, monitor: str) -> Scheduler:
    """compile's ``lr_schedule`` as a Scheduler (one that does nothing when ``spec`` is None).

    >>> s = build_scheduler("cosine", keras.optimizers.SGD(0.1), every="batch",
    ...                     monitor="val_loss")
    >>> s.begin(epochs=10, steps_per_epoch=100); s.epoch_begin(0)
    """
    _release(optimizer)  # a schedule an earlier compile put on this optimizer
    if spec is None:
        return Scheduler()
    schedule = portable(spec)
    if schedule is None and not isinstance(spec, keras.optimizers.schedules.LearningRateSchedule):
        if foreign(spec) == "torch":
            raise FitkitTypeError(
                f"lr_schedule is a torch {type(spec).__name__}, and this model is a TensorFlow "
                f"one. Pass a keras.optimizers.schedules.LearningRateSchedule (e.g. "
                f"keras.optimizers.schedules.CosineDecay(1e-3, decay_steps=1000)) or a portable "
                f"schedule ('cosine', fitkit.schedules.CosineDecay(...))."
            )
        raise FitkitTypeError(f"lr_schedule must be {_KINDS}; got {type(spec).__name__}.")
    base = _base_lr(optimizer, spec)
    if schedule is not None:
        return PortableOnOptimizer(schedule, every, base, optimizer)
    return NativeScheduler(spec, every, optimizer)


class _Installed(keras.optimizers.schedules.LearningRateSchedule):
    """A schedule fitkit made the optimizer's learning rate; it keeps the lr variable it
    replaced, so that a later compile without it gives that variable back."""

    def __init__(self, original: Any) -> None:
        super().__init__()
        self.original = original


class _Native(_Installed):
    """A user's Keras schedule, evaluated at ``optimizer.iterations`` as Keras does."""

    def __init__(self, schedule: Any, original: Any) -> None:
        super().__init__(original)
        self.schedule = schedule

    def __call__(self, step: Any) -> Any:
        return self.schedule(step)

    def get_config(self) -> dict:
        return self.schedule.get_config()


class _Graph(_Installed):
    """A portable schedule in the graph: rate(iterations - offset, base_lr, horizon).

    ``horizon`` and ``offset`` are variables, so a second fit of another length needs no
    retrace; a horizon of 0 (no fit yet) holds the base rate where the schedule needs one.
    """

    def __init__(self, schedule: Schedule, base_lr: float, original: Any, iterations: Any):
        super().__init__(original)
        self.schedule, self.base_lr = schedule, float(base_lr)
        self.horizon = tf.Variable(0.0, trainable=False, dtype=tf.float32, name="fitkit_lr_horizon")
        self.offset = tf.Variable(
            tf.cast(iterations, tf.int64), trainable=False, name="fitkit_lr_offset"
        )

    def __call__(self, step: Any) -> Any:
        t = tf.cast(tf.cast(step, tf.int64) - self.offset, tf.float32)
        horizon = tf.convert_to_tensor(self.horizon)
        rate = tf.cast(self.schedule.rate(t, self.base_lr, horizon, GRAPH_OPS), tf.float32)
        if self.schedule.needs_horizon:
            rate = tf.where(horizon > 0.0, rate, self.base_lr)
        return rate

    def get_config(self) -> dict:
        return {"schedule": repr(self.schedule), "base_lr": self.base_lr}


class NativeScheduler(Scheduler):
    """A Keras LearningRateSchedule: per batch it is the optimizer's learning rate (Keras's
    way, from ``optimizer.iterations``); per epoch it is evaluated at each epoch's number.

    >>> NativeScheduler(keras.optimizers.schedules.ExponentialDecay(0.1, 1, 0.9), "epoch", opt)
    """

    def __init__(self, schedule: Any, every: str, optimizer: Any) -> None:
        self.schedule, self.every, self.optimizer, self.monitor = schedule, every, optimizer, None
        if every == "batch":
            _install(optimizer, _Native(schedule, _inner(optimizer)._learning_rate))

    def epoch_begin(self, epoch: int) -> None:
        if self.every == "epoch":
            self.optimizer.learning_rate = self.schedule(epoch)  # a device assign: no sync

    def state_dict(self) -> dict:
        # per batch the position is optimizer.iterations, saved with the optimizer
        return {"kind": "keras", "class": type(self.schedule).__name__, "every": self.every}

    def load_state_dict(self, state: dict) -> None:
        name = type(self.schedule).__name__
        if state.get("kind") != "keras" or state.get("class") != name:
            saved = state.get("class") or state.get("kind")
            raise FitkitValueError(
                f"The saved lr_schedule state ({saved!r}) does not match "
                f"this model's {name}; compile with the lr_schedule the "
                f"state was saved with."
            )


class PortableOnOptimizer(PortableScheduler):
    """A portable schedule on a Keras optimizer: per epoch the lr variable is set on the host;
    per batch the rate is computed in the graph from ``optimizer.iterations``.

    >>> PortableOnOptimizer(CosineDecay(), "batch", 0.1, opt)
    """

    def __init__(self, schedule: Schedule, every: str, base_lr: float, optimizer: Any) -> None:
        super().__init__(schedule, every, [base_lr])
        self.optimizer = optimizer
        self.graph: _Graph | None = None
        if every == "batch":
            self.graph = _Graph(
                schedule, base_lr, _inner(optimizer)._learning_rate, optimizer.iterations
            )
            _install(optimizer, self.graph)

    def _set_horizon(self, horizon: int | None) -> None:
        if self.graph is not None:
            self.graph.horizon.assign(float(horizon or 0))

    def _set_rates(self, rates: list[float]) -> None:
        self.optimizer.learning_rate = rates[0]

    def _seek(self, t: int) -> None:
        self.t = t
        if self.graph is not None:  # per batch only (per epoch, the rate is set on the host)
            # device ops only: iterations is not read on the host
            self.graph.offset.assign(tf.cast(self.optimizer.iterations, tf.int64) - t)

    def _position(self) -> int:
        if self.graph is None:
            return self.t
        return int(tf.cast(self.optimizer.iterations, tf.int64) - self.graph.offset)


def _inner(optimizer: Any) -> Any:
    """The optimizer that owns the learning rate (a LossScaleOptimizer's inner one)."""
    return getattr(optimizer, "inner_optimizer", optimizer)


def _base_lr(optimizer: Any, spec: Any) -> float:
    """The optimizer's learning rate at compile; it must be a float (a variable)."""
    lr = optimizer.learning_rate
    if not isinstance(lr, keras.Variable):
        current = type(_inner(optimizer)._learning_rate).__name__
        raise FitkitValueError(
            f"The optimizer's learning_rate is already a schedule ({current}); "
            f"lr_schedule={spec!r} needs a float one. Build the optimizer with a float "
            f"learning_rate and pass the schedule as lr_schedule, or drop lr_schedule."
        )
    return float(keras.ops.convert_to_numpy(lr))


def _install(optimizer: Any, schedule: _Installed) -> None:
    """Make ``schedule`` the optimizer's learning rate. Keras's setter would also untrack the
    lr variable; keeping it tracked keeps the optimizer's variables (and files) the same with
    or without a schedule."""
    _inner(optimizer)._learning_rate = schedule


def _release(optimizer: Any) -> None:
    """Give back the lr variable a schedule fitkit installed replaced (recompiling)."""
    inner = _inner(optimizer)
    current = getattr(inner, "_learning_rate", None)
    if isinstance(current, _Installed):
        inner._learning_rate = current.original
