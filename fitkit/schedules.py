"""Portable learning-rate schedules (each formula written once: the same numbers on both
backends), the Scheduler hooks the fit loop calls, and what both backends' portable schedulers
share. Native schedulers and setting an optimizer's rate belong to fitkit/{torch,tf}/schedules.py.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from .errors import FitkitTypeError, FitkitValueError

# The operations a formula may use. A formula is ``rate(t, base_lr, horizon, ops)``: with
# HOST_OPS it is plain Python (floats); with fitkit.tf.schedules.GRAPH_OPS (keras.ops) it
# runs inside a TensorFlow graph, where t and horizon are tensors.
HOST_OPS = SimpleNamespace(
    pi=math.pi, cos=math.cos, floor=math.floor, power=math.pow, minimum=min, maximum=max,
    where=lambda cond, a, b: a if cond else b)


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
        raise NotImplementedError

    def __call__(self, t: float, base_lr: float, horizon: float | None = None) -> float:
        """The rate on the host (Python floats)."""
        if horizon is None and self.needs_horizon:
            raise FitkitValueError(f"{type(self).__name__} needs the horizon (steps of the fit).")
        return float(self.rate(float(t), float(base_lr), float(horizon or 1), HOST_OPS))


def _check(name: str, value: Any, *, low: float = 0.0, strict: bool = True,
           high: float | None = None, optional: bool = False) -> None:
    if value is None and optional:
        return
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and \
        (value > low if strict else value >= low) and (high is None or value <= high)
    if not ok:
        bound = f"{'>' if strict else '>='} {low}" + (f" and <= {high}" if high is not None else "")
        raise FitkitValueError(f"{name} must be a number {bound}"
                               f"{' or None (the whole fit)' if optional else ''}; got {value!r}.")


@dataclass(frozen=True)
class Constant(Schedule):
    """The base learning rate, unchanged (a schedule that does nothing).

    >>> model.compile("sgd", "mse", lr_schedule="constant")
    """

    name = "constant"

    def rate(self, t, base_lr, horizon, ops):
        return base_lr


def _cosine(t, base_lr, horizon, ops, *, warm, decay_steps, alpha):
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

    def rate(self, t, base_lr, horizon, ops):
        return _cosine(t, base_lr, horizon, ops, warm=float(self.warmup_steps),
                       decay_steps=self.decay_steps, alpha=self.alpha)


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

    def rate(self, t, base_lr, horizon, ops):
        warm = float(self.warmup_steps) if self.warmup_steps is not None else \
            ops.maximum(ops.floor(self.warmup_pct * horizon + 0.5), 1.0)
        return _cosine(t, base_lr, horizon, ops, warm=warm, decay_steps=self.decay_steps,
                       alpha=self.alpha)


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

    def rate(self, t, base_lr, horizon, ops):
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

    def rate(self, t, base_lr, horizon, ops):
        size = float(self.step_size) if self.step_size is not None else \
            ops.maximum(ops.floor(horizon / 3.0), 1.0)
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
            raise FitkitValueError(f"OneCycle anneal_strategy must be 'cos' or 'linear'; got "
                                   f"{self.anneal_strategy!r}.")

    @property
    def needs_horizon(self) -> bool:
        return True

    def _anneal(self, start, end, pct, ops):
        if self.anneal_strategy == "linear":
            return start + (end - start) * pct
        return end + (start - end) / 2.0 * (ops.cos(ops.pi * pct) + 1.0)

    def rate(self, t, base_lr, horizon, ops):
        peak = float(self.max_lr) if self.max_lr is not None else base_lr
        first, low = peak / self.div_factor, peak / self.div_factor / self.final_div_factor
        last = ops.maximum(horizon - 1.0, 0.0)
        t = ops.minimum(t, last)
        turn = self.pct_start * horizon - 1.0  # torch's step where the rise ends
        rise = self._anneal(first, peak, t / ops.maximum(turn, 1e-12), ops)
        fall = self._anneal(peak, low, (t - turn) / ops.maximum(last - turn, 1e-12), ops)
        return ops.where(t <= turn, rise, fall)


SCHEDULES: dict[str, type[Schedule]] = {
    cls.name: cls for cls in (CosineDecay, ExponentialDecay, StepDecay, OneCycle,
                              WarmupCosine, Constant)}


def portable(spec: Any) -> Schedule | None:
    """The portable schedule ``spec`` names or is; None for anything else.

    >>> portable("cosine")
    CosineDecay(decay_steps=None, alpha=0.0, warmup_steps=0)
    """
    if isinstance(spec, Schedule):
        return spec
    if isinstance(spec, str):
        key = spec.strip().lower().replace("-", "_").replace("onecycle", "one_cycle")
        if key not in SCHEDULES:
            raise FitkitValueError(f"Unknown lr_schedule {spec!r}; the portable names are "
                                   f"{', '.join(repr(n) for n in SCHEDULES)}.")
        return SCHEDULES[key]()
    return None


PORTABLE_KINDS = (f"a portable name ({', '.join(repr(n) for n in SCHEDULES)}), a "
                  f"fitkit.schedules object (CosineDecay, ExponentialDecay, StepDecay, OneCycle, "
                  f"WarmupCosine, Constant)")


def foreign(spec: Any) -> str | None:
    """'torch' for a torch lr scheduler, 'keras' for a Keras LearningRateSchedule, else None
    (told by the class's module, so neither framework is imported)."""
    for cls in type(spec).__mro__:
        module = getattr(cls, "__module__", "") or ""
        if module.startswith("torch.optim.lr_scheduler"):
            return "torch"
        if module.startswith(("keras", "tf_keras", "tensorflow")) and \
                cls.__name__ == "LearningRateSchedule":
            return "keras"
    return None


def json_state(state: Any, owner: str) -> Any:
    """``state`` with tuples as lists, checked to be JSON-able; a clear error if it is not."""
    def plain(value: Any, where: str) -> Any:
        if isinstance(value, dict):
            return {str(k): plain(v, f"{where}[{k!r}]") for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
            return value.item()  # a numpy / torch scalar
        raise FitkitTypeError(
            f"The state of {owner} cannot be saved: {where} is a {type(value).__name__}, not "
            f"a number, string or list. Use a built-in scheduler, or one whose state_dict() "
            f"holds plain values.")
    out = plain(state, "state")
    json.dumps(out)
    return out


class Scheduler:
    """What the fit loop calls; this base does nothing (compile without an lr_schedule).

    >>> scheduler.begin(epochs=10, steps_per_epoch=100); scheduler.epoch_begin(0)
    """

    every: str = "epoch"
    monitor: str | None = None

    def begin(self, epochs: int, steps_per_epoch: int | None) -> None:
        """At fit start. ``steps_per_epoch``: optimizer updates per epoch, when known."""

    def epoch_begin(self, epoch: int) -> None:
        """Before epoch ``epoch`` (0-based) trains."""

    def epoch_end(self, epoch: int, logs: dict) -> None:
        """After the epoch's logs (validation included) are read."""

    def after_update(self) -> None:
        """After each optimizer update, when ``every == "batch"`` (torch; a no-op on TF)."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        if state:
            raise FitkitValueError(f"This model has no lr_schedule, but the saved state has one "
                                   f"({state.get('kind')!r}); compile with the same lr_schedule.")


class PortableScheduler(Scheduler):
    """A portable schedule on either backend: the horizon, the step counter and its state.

    Per epoch, the rate for epoch ``e`` is ``rate(e)``, set at epoch begin. Per batch, the
    counter starts at a loaded state's position, else at the fit's first epoch_begin
    (``initial_epoch * steps_per_epoch``), and counts updates from there. Subclasses set the
    rate on their optimizer.
    """

    def __init__(self, schedule: Schedule, every: str, base_lrs: list[float]) -> None:
        self.schedule, self.every, self.monitor = schedule, every, None
        self.base_lrs = [float(b) for b in base_lrs]
        self.horizon: int | None = None
        self.t = 0                       # the step whose rate is set now
        self._steps: int | None = None
        self._anchored = True            # False from begin() to the fit's first epoch_begin
        self._loaded: int | None = None  # a position loaded before begin(), for it to reuse

    def begin(self, epochs: int, steps_per_epoch: int | None) -> None:
        if self.every == "epoch":
            horizon = epochs
        elif steps_per_epoch is not None:
            horizon = epochs * steps_per_epoch
        elif self.schedule.needs_horizon:
            raise FitkitValueError(
                f"lr_schedule={self.schedule!r} with lr_schedule_every='batch' runs to the end "
                f"of the fit, whose length in batches is not known here: pass steps_per_epoch "
                f"to fit, or give the schedule its own length (e.g. CosineDecay(decay_steps="
                f"1000)), or use lr_schedule_every='epoch'.")
        else:
            horizon = None
        self.horizon, self._steps = horizon, steps_per_epoch
        self._set_horizon(horizon)
        self._anchored = self._loaded is not None  # a resumed fit starts where the state was
        if self._loaded is not None:
            self._seek(self._loaded)  # again: the horizon (and TF's iterations) are known now
            self._loaded = None

    def epoch_begin(self, epoch: int) -> None:
        self._loaded = None  # a state loaded during this fit is used: not one for the next
        if self.every == "epoch":
            self.t = epoch
            self._set_rates([self.rate(epoch, b) for b in self.base_lrs])
        elif not self._anchored:  # the fit's first epoch: initial_epoch * steps_per_epoch
            self._anchored = True
            self._seek(epoch * (self._steps or 0))

    def epoch_end(self, epoch: int, logs: dict) -> None:
        self._loaded = None

    def rate(self, t: float, base_lr: float) -> float:
        """The host rate at step ``t``; the base lr while a needed horizon is unknown."""
        if self.horizon is None and self.schedule.needs_horizon:
            return base_lr
        return self.schedule(t, base_lr, self.horizon or 1)

    def state_dict(self) -> dict:
        return {"kind": "portable", "schedule": repr(self.schedule), "every": self.every,
                "t": int(self._position())}

    def load_state_dict(self, state: dict) -> None:
        if state.get("kind") != "portable" or state.get("every") != self.every:
            raise FitkitValueError(
                f"The saved lr_schedule state ({state.get('kind')!r}, every="
                f"{state.get('every')!r}) does not match this model's ({self.schedule!r}, "
                f"every={self.every!r}); compile with the lr_schedule the state was saved with.")
        if self.every == "batch":
            self._loaded, self._anchored = int(state["t"]), True
            self._seek(self._loaded)

    # the backend's part
    def _set_horizon(self, horizon: int | None) -> None:
        """Tell the device the horizon (TF's graph schedule reads it); host: nothing."""

    def _set_rates(self, rates: list[float]) -> None:
        raise NotImplementedError

    def _seek(self, t: int) -> None:
        """Per batch: make ``t`` the current step."""
        raise NotImplementedError

    def _position(self) -> int:
        return self.t
