"""Learning-rate schedulers on torch: builds compile's ``lr_schedule`` (a torch scheduler, a
factory, or a portable schedule) and steps it in the Scheduler hooks. The formulas live in
fitkit/schedules.py, the hook calls in the fit loop and train step; twin: fitkit/tf/schedules.py.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau

from ..errors import FitkitTypeError, FitkitValueError
from ..scheduling import PORTABLE_KINDS, PortableScheduler, Scheduler, foreign, json_state, portable
from .optimizers import set_rates

_KINDS = (
    f"{PORTABLE_KINDS}, a torch.optim.lr_scheduler object built on the optimizer given "
    f"to compile, or a factory optimizer -> scheduler "
    f"(e.g. lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=10))"
)


def build_scheduler(
    spec: Any, optimizer: torch.optim.Optimizer, *, every: str, monitor: str
) -> Scheduler:
    """compile's ``lr_schedule`` as a Scheduler (one that does nothing when ``spec`` is None).

    >>> s = build_scheduler("cosine", opt, every="epoch", monitor="val_loss")
    >>> s.begin(epochs=10, steps_per_epoch=None); s.epoch_begin(0)
    """
    if spec is None:
        return Scheduler()
    schedule = portable(spec)
    if schedule is not None:
        return PortableOnOptimizer(
            schedule, every, [float(g["lr"]) for g in optimizer.param_groups], optimizer
        )
    if foreign(spec) == "keras":
        raise FitkitTypeError(
            f"lr_schedule is a Keras {type(spec).__name__}, and this model is a torch one. Pass "
            f"a torch scheduler factory (e.g. lambda opt: torch.optim.lr_scheduler."
            f"CosineAnnealingLR(opt, T_max=10)) or a portable schedule ('cosine', "
            f"fitkit.schedules.CosineDecay(...))."
        )
    if not isinstance(spec, LRScheduler) and callable(spec):
        made = spec(optimizer)
        if not isinstance(made, LRScheduler):
            raise FitkitTypeError(
                f"The lr_schedule factory returned {type(made).__name__}, not "
                f"a torch.optim.lr_scheduler scheduler."
            )
        spec = made
    if not isinstance(spec, LRScheduler):
        raise FitkitTypeError(f"lr_schedule must be {_KINDS}; got {type(spec).__name__}.")
    if spec.optimizer is not optimizer:
        raise FitkitValueError(
            f"lr_schedule ({type(spec).__name__}) was built on another optimizer than the one "
            f"the model trains with (compile builds a new one for a name such as 'adam'). Pass "
            f"the optimizer object itself to compile, or a factory: lr_schedule=lambda opt: "
            f"{type(spec).__name__}(opt, ...)."
        )
    return NativeScheduler(spec, every, monitor)


class NativeScheduler(Scheduler):
    """A torch scheduler, stepped at each epoch end (or after each update, ``every='batch'``);
    ReduceLROnPlateau steps at epoch end with ``logs[monitor]``.

    >>> from torch.optim.lr_scheduler import StepLR
    >>> NativeScheduler(StepLR(opt, step_size=2), "epoch", "val_loss")  # doctest: +ELLIPSIS
    <fitkit.torch.schedules.NativeScheduler object at ...>
    """

    def __init__(self, scheduler: LRScheduler, every: str, monitor: str) -> None:
        self.scheduler, self.every = scheduler, every
        self.plateau = scheduler if isinstance(scheduler, ReduceLROnPlateau) else None
        self.monitor = monitor if self.plateau else None
        self._seen = False  # the monitor was in an earlier epoch's logs (validation_freq > 1)
        if self.plateau and every == "batch":
            raise FitkitValueError(
                "ReduceLROnPlateau steps once per epoch, on lr_schedule_monitor: use "
                "lr_schedule_every='epoch' with it."
            )

    def begin(self, epochs: int, steps_per_epoch: int | None) -> None:
        self._seen = False

    def epoch_end(self, epoch: int, logs: dict) -> None:
        if self.plateau:
            if self.monitor not in logs:
                if self._seen:
                    return  # no validation this epoch (validation_freq)
                raise FitkitValueError(
                    f"lr_schedule_monitor={self.monitor!r} is not in the logs of epoch "
                    f"{epoch + 1} (keys: {', '.join(logs) or 'none'}). Pass validation_data "
                    f"(or validation_split) to fit, or compile with lr_schedule_monitor set to "
                    f"one of those keys."
                )
            self._seen = True
            self.plateau.step(float(logs[self.monitor]))
        elif self.every == "epoch":
            self.scheduler.step()

    def after_update(self) -> None:
        self.scheduler.step()

    def state_dict(self) -> dict:
        return {
            "kind": "torch",
            "class": type(self.scheduler).__name__,
            "every": self.every,
            "state": json_state(self.scheduler.state_dict(), type(self.scheduler).__name__),
        }

    def load_state_dict(self, state: dict) -> None:
        name = type(self.scheduler).__name__
        if state.get("kind") != "torch" or state.get("class") != name:
            saved = state.get("class") or state.get("kind")
            raise FitkitValueError(
                f"The saved lr_schedule state ({saved!r}) does not match "
                f"this model's {name}; compile with the lr_schedule the "
                f"state was saved with."
            )
        self.scheduler.load_state_dict(state["state"])


class PortableOnOptimizer(PortableScheduler):
    """A portable schedule on a torch optimizer: each param group's lr is set from a Python
    counter (per batch, in ``after_update``: no device sync), the ratios between groups kept.

    >>> from fitkit.schedules import CosineDecay
    >>> PortableOnOptimizer(CosineDecay(), "batch", [0.1], opt)  # doctest: +ELLIPSIS
    <fitkit.torch.schedules.PortableOnOptimizer object at ...>
    """

    def __init__(
        self, schedule: Any, every: str, base_lrs: list[float], optimizer: torch.optim.Optimizer
    ) -> None:
        super().__init__(schedule, every, base_lrs)
        self.optimizer = optimizer

    def after_update(self) -> None:
        self._seek(self.t + 1)

    def _set_rates(self, rates: list[float]) -> None:
        set_rates(self.optimizer, rates)

    def _seek(self, t: int) -> None:
        self.t = t
        self._set_rates(self.rates(t))
