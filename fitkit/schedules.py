"""Portable learning-rate schedules: each formula written once, so a schedule gives the same
numbers on both backends. The hooks the fit loop calls are scheduling.py's; native schedulers
and setting an optimizer's rate belong to fitkit/{torch,tf}/schedules.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from .errors import FitkitValueError

__all__ = [
    "Constant",
    "CosineDecay",
    "ExponentialDecay",
    "OneCycle",
    "Schedule",
    "StepDecay",
    "WarmupCosine",
]

# The operations a formula may use. A formula is ``rate(t, base_lr, horizon, ops)``: with
# HOST_OPS it is plain Python (floats); with fitkit.tf.schedules.GRAPH_OPS (keras.ops) it
# runs inside a TensorFlow graph, where t and horizon are tensors (hence Any in the types).
HOST_OPS = SimpleNamespace(
    pi=math.pi,
    cos=math.cos,
    floor=math.floor,
    power=math.pow,
    minimum=min,
    maximum=max,
    where=lambda cond, a, b: a if cond else b,
)


class Schedule:
    """A learning rate as a function of the step ``t`` (an epoch, or a batch).

    ``base_lr`` is the optimizer's learning rate at compile; ``horizon`` the steps of the whole
    fit (epochs, or epochs * steps_per_epoch when stepped per batch), known when fit begins.

    >>> round(CosineDecay()(t=5, base_lr=0.1, horizon=10), 6)
    0.05
    """

    name = "schedule"

    @property
    def needs_horizon(self) -> bool:
        """True when an argument left None means 'the whole fit'."""
        return False

    def rate(self, t: Any, base_lr: Any, horizon: Any, ops: Any) -> Any:
        """The formula, written with ``ops`` only (HOST_OPS, or keras.ops inside a graph)."""
        raise NotImplementedError

    def __call__(self, t: float, base_lr: float, horizon: float | None = None) -> float:
        """The rate on the host (Python floats)."""
        if horizon is None and self.needs_horizon:
            raise FitkitValueError(f"{type(self).__name__} needs the horizon (steps of the fit).")
        return float(self.rate(float(t), float(base_lr), float(horizon or 1), HOST_OPS))


def _check(
    name: str,
    value: Any,
    *,
    low: float = 0.0,
    strict: bool = True,
    high: float | None = None,
    optional: bool = False,
) -> None:
    if value is None and optional:
        return
    ok = (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and (value > low if strict else value >= low)
        and (high is None or value <= high)
    )
    if not ok:
        bound = f"{'>' if strict else '>='} {low}" + (f" and <= {high}" if high is not None else "")
        raise FitkitValueError(
            f"{name} must be a number {bound}"
            f"{' or None (the whole fit)' if optional else ''}; got {value!r}."
        )


@dataclass(frozen=True)
class Constant(Schedule):
    """The base learning rate, unchanged (a schedule that does nothing).

    >>> model.compile("sgd", "mse", lr_schedule="constant")
    """

    name = "constant"

    def rate(self, t: Any, base_lr: Any, horizon: Any, ops: Any) -> Any:
        return base_lr


def _cosine(
    t: Any,
    base_lr: Any,
    horizon: Any,
    ops: Any,
    *,
    warm: Any,
    decay_steps: int | None,
    alpha: float,
) -> Any:
    """Linear warmup over ``warm`` steps, then cosine decay over ``decay_steps`` (None: to
    the horizon), as keras.optimizers.schedules.CosineDecay."""
    decay = float(decay_steps) if decay_steps is not None else ops.maximum(horizon - warm, 1.0)
    rising = base_lr * t / ops.maximum(warm, 1.0)
    s = ops.minimum(ops.maximum(t - warm, 0.0), decay)
    cosine = 0.5 * (1.0 + ops.cos(ops.pi * s / decay))
    return ops.where(t < warm, rising, base_lr * ((1.0 - alpha) * cosine + alpha))


@dataclass(frozen=True)
class CosineDecay(Schedule):
    """Cosine decay from the base lr to ``alpha * base_lr`` over ``decay_steps``.

    As keras.optimizers.schedules.CosineDecay (and torch's CosineAnnealingLR with
    ``eta_min = alpha * base_lr``): with ``warmup_steps`` the rate first rises linearly from 0
    to the base lr, then decays over ``decay_steps`` more steps, then stays at the end value.
    ``decay_steps=None``: to the end of the fit (the horizon less the warmup).

    >>> model.compile("sgd", "mse", lr_schedule=CosineDecay(alpha=0.01))
    """

    decay_steps: int | None = None
    alpha: float = 0.0
    warmup_steps: int = 0
    name = "cosine"

    def __post_init__(self) -> None:
        _check("CosineDecay decay_steps", self.decay_steps, optional=True)
        _check("CosineDecay alpha", self.alpha, strict=False, high=1.0)
        _check("CosineDecay warmup_steps", self.warmup_steps, strict=False)

    @property
    def needs_horizon(self) -> bool:
        return self.decay_steps is None

    def rate(self, t: Any, base_lr: Any, horizon: Any, ops: Any) -> Any:
        return _cosine(
            t,
            base_lr,
            horizon,
            ops,
            warm=float(self.warmup_steps),
            decay_steps=self.decay_steps,
            alpha=self.alpha,
        )


@dataclass(frozen=True)
class WarmupCosine(Schedule):
    """Linear warmup from 0 to the base lr over ``warmup_steps``, then cosine decay to
    ``alpha * base_lr`` over ``decay_steps`` (None: to the end of the fit).

    ``warmup_steps=None``: ``warmup_pct`` of the fit (at least one step). The same numbers as
    keras.optimizers.schedules.CosineDecay(0.0, decay_steps, alpha, warmup_target=base_lr,
    warmup_steps=warmup_steps).

    >>> model.compile("adamw", "cross_entropy", lr_schedule=WarmupCosine(500),
    ...               lr_schedule_every="batch")
    """

    warmup_steps: int | None = None
    decay_steps: int | None = None
    alpha: float = 0.0
    warmup_pct: float = 0.1
    name = "warmup_cosine"

    def __post_init__(self) -> None:
        _check("WarmupCosine warmup_steps", self.warmup_steps, strict=False, optional=True)
        _check("WarmupCosine decay_steps", self.decay_steps, optional=True)
        _check("WarmupCosine alpha", self.alpha, strict=False, high=1.0)
        _check("WarmupCosine warmup_pct", self.warmup_pct, strict=False, high=1.0)

    @property
    def needs_horizon(self) -> bool:
        return self.decay_steps is None or self.warmup_steps is None

    def rate(self, t: Any, base_lr: Any, horizon: Any, ops: Any) -> Any:
        warm = (
            float(self.warmup_steps)
            if self.warmup_steps is not None
            else ops.maximum(ops.floor(self.warmup_pct * horizon + 0.5), 1.0)
        )
        return _cosine(
            t, base_lr, horizon, ops, warm=warm, decay_steps=self.decay_steps, alpha=self.alpha
        )


@dataclass(frozen=True)
class ExponentialDecay(Schedule):
    """``base_lr * decay_rate ** (t / decay_steps)`` (floored exponent with ``staircase``).

    As keras.optimizers.schedules.ExponentialDecay, and torch's ExponentialLR(gamma=decay_rate)
    for ``decay_steps=1``. ``decay_rate=None``: the rate that reaches 1% of the base lr at the
    end of the fit.

    >>> model.compile("sgd", "mse", lr_schedule=ExponentialDecay(decay_rate=0.9))
    """

    decay_rate: float | None = None
    decay_steps: int = 1
    staircase: bool = False
    name = "exponential"

    def __post_init__(self) -> None:
        _check("ExponentialDecay decay_rate", self.decay_rate, optional=True)
        _check("ExponentialDecay decay_steps", self.decay_steps)

    @property
    def needs_horizon(self) -> bool:
        return self.decay_rate is None

    def rate(self, t: Any, base_lr: Any, horizon: Any, ops: Any) -> Any:
        p = t / float(self.decay_steps)
        if self.staircase:
            p = ops.floor(p)
        if self.decay_rate is not None:
            return base_lr * ops.power(float(self.decay_rate), p)
        return base_lr * ops.power(0.01, p * float(self.decay_steps) / ops.maximum(horizon, 1.0))


@dataclass(frozen=True)
class StepDecay(Schedule):
    """``base_lr * gamma ** floor(t / step_size)``, as torch's StepLR.

    ``step_size=None``: a third of the fit, so the rate drops twice.

    >>> model.compile("sgd", "mse", lr_schedule=StepDecay(step_size=30, gamma=0.1))
    """

    step_size: int | None = None
    gamma: float = 0.1
    name = "step"

    def __post_init__(self) -> None:
        _check("StepDecay step_size", self.step_size, optional=True)
        _check("StepDecay gamma", self.gamma)

    @property
    def needs_horizon(self) -> bool:
        return self.step_size is None

    def rate(self, t: Any, base_lr: Any, horizon: Any, ops: Any) -> Any:
        size = (
            float(self.step_size)
            if self.step_size is not None
            else ops.maximum(ops.floor(horizon / 3.0), 1.0)
        )
        return base_lr * ops.power(float(self.gamma), ops.floor(t / size))


@dataclass(frozen=True)
class OneCycle(Schedule):
    """The 1cycle policy: from ``max_lr / div_factor`` up to ``max_lr`` over ``pct_start`` of
    the fit, then down to ``max_lr / (div_factor * final_div_factor)``; as torch's OneCycleLR
    (learning rate only: no momentum cycling). ``max_lr=None``: the base lr.

    >>> model.compile("sgd", "mse", lr=0.1, lr_schedule="one_cycle", lr_schedule_every="batch")
    """

    max_lr: float | None = None
    pct_start: float = 0.3
    div_factor: float = 25.0
    final_div_factor: float = 1e4
    anneal_strategy: str = "cos"
    name = "one_cycle"

    def __post_init__(self) -> None:
        _check("OneCycle max_lr", self.max_lr, optional=True)
        _check("OneCycle pct_start", self.pct_start, high=1.0)
        _check("OneCycle div_factor", self.div_factor)
        _check("OneCycle final_div_factor", self.final_div_factor)
        if self.anneal_strategy not in ("cos", "linear"):
            raise FitkitValueError(
                f"OneCycle anneal_strategy must be 'cos' or 'linear'; got {self.anneal_strategy!r}."
            )

    @property
    def needs_horizon(self) -> bool:
        return True

    def _anneal(self, start: Any, end: Any, pct: Any, ops: Any) -> Any:
        if self.anneal_strategy == "linear":
            return start + (end - start) * pct
        return end + (start - end) / 2.0 * (ops.cos(ops.pi * pct) + 1.0)

    def rate(self, t: Any, base_lr: Any, horizon: Any, ops: Any) -> Any:
        peak = float(self.max_lr) if self.max_lr is not None else base_lr
        first, low = peak / self.div_factor, peak / self.div_factor / self.final_div_factor
        last = ops.maximum(horizon - 1.0, 0.0)
        t = ops.minimum(t, last)
        turn = self.pct_start * horizon - 1.0  # torch's step where the rise ends
        rise = self._anneal(first, peak, t / ops.maximum(turn, 1e-12), ops)
        fall = self._anneal(peak, low, (t - turn) / ops.maximum(last - turn, 1e-12), ops)
        return ops.where(t <= turn, rise, fall)


SCHEDULES: dict[str, type[Schedule]] = {
    cls.name: cls
    for cls in (CosineDecay, ExponentialDecay, StepDecay, OneCycle, WarmupCosine, Constant)
}
