"""The Scheduler hooks the fit loop calls (begin, epoch begin/end, after each update, state),
and what both backends' schedulers share: reading compile's lr_schedule, JSON-able state.

The formulas are schedules.py's; each backend's schedules.py sets its optimizer's rate.
"""

from __future__ import annotations

import json
from typing import Any

from .errors import FitkitTypeError, FitkitValueError
from .schedules import SCHEDULES, Schedule


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
            raise FitkitValueError(
                f"Unknown lr_schedule {spec!r}; the portable names are "
                f"{', '.join(repr(n) for n in SCHEDULES)}."
            )
        return SCHEDULES[key]()
    return None


PORTABLE_KINDS = (
    f"a portable name ({', '.join(repr(n) for n in SCHEDULES)}), a "
    f"fitkit.schedules object (CosineDecay, ExponentialDecay, StepDecay, OneCycle, "
    f"WarmupCosine, Constant)"
)


def foreign(spec: Any) -> str | None:
    """'torch' for a torch lr scheduler, 'keras' for a Keras LearningRateSchedule, else None
    (told by the class's module, so neither framework is imported)."""
    for cls in type(spec).__mro__:
        module = getattr(cls, "__module__", "") or ""
        if module.startswith("torch.optim.lr_scheduler"):
            return "torch"
        if (
            module.startswith(("keras", "tf_keras", "tensorflow"))
            and cls.__name__ == "LearningRateSchedule"
        ):
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
            f"holds plain values."
        )

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
            raise FitkitValueError(
                f"This model has no lr_schedule, but the saved state has one "
                f"({state.get('kind')!r}); compile with the same lr_schedule."
            )


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
        self.t = 0  # the step whose rate is set now
        self._steps: int | None = None
        self._anchored = True  # False from begin() to the fit's first epoch_begin
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
                f"1000)), or use lr_schedule_every='epoch'."
            )
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
            self._set_rates(self.rates(epoch))
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

    def rates(self, t: float) -> list[float]:
        """Each param group's rate at step ``t``: group 0 follows the schedule, every other
        group keeps its ratio to group 0 at compile (so ``OneCycle(max_lr=...)``, an absolute
        rate, is group 0's peak and the others scale with it)."""
        first, base = self.rate(t, self.base_lrs[0]), self.base_lrs[0]
        return [first] + [
            first * (b / base) if base else self.rate(t, b) for b in self.base_lrs[1:]
        ]

    def state_dict(self) -> dict:
        return {
            "kind": "portable",
            "schedule": repr(self.schedule),
            "every": self.every,
            "t": int(self._position()),
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("kind") != "portable" or state.get("every") != self.every:
            raise FitkitValueError(
                f"The saved lr_schedule state ({state.get('kind')!r}, every="
                f"{state.get('every')!r}) does not match this model's ({self.schedule!r}, "
                f"every={self.every!r}); compile with the lr_schedule the state was saved with."
            )
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
