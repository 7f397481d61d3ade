"""Several optimizers (a GAN's generator and discriminator): what ``configure_optimizers()``
returned, read into one checked ``OptimizerSet`` with each optimizer's scheduler; the refusals
where fitkit's own step would update with one; ``SchedulerSet``, their schedulers stepped as one.

The facade hands the set to the adapter's compile; each backend's optimizers.py checks the
native optimizers and reads their rates, its state.py saves and restores every one's state.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import FitkitAttributeError, FitkitValueError
from .scheduling import Scheduler

if TYPE_CHECKING:
    from .adapter import Adapter


@dataclass(frozen=True)
class Scheduled:
    """One optimizer's scheduler: the native / portable spec, ``every`` ("epoch" | "batch")
    and the key a plateau scheduler reads."""

    spec: Any
    every: str = "epoch"
    monitor: str = "val_loss"


@dataclass(frozen=True)
class OptimizerSet:
    """Several native optimizers, in ``configure_optimizers()``'s order, and per optimizer its
    ``Scheduled`` or None."""

    optimizers: tuple
    schedules: tuple

    def __len__(self) -> int:
        return len(self.optimizers)


def is_optimizer(value: Any) -> bool:
    """A torch or Keras optimizer, recognised by its methods (no framework import)."""
    return hasattr(value, "param_groups") or hasattr(value, "apply_gradients")


def from_configured(result: Any, every: str, monitor: str) -> OptimizerSet | None:
    """The set when ``configure_optimizers()`` returned several optimizers, in one of
    Lightning's forms: ``[opt_a, opt_b]``, ``([opt_a, opt_b], [sched_a, sched_b])`` (schedulers
    matched to their optimizer, or by position) or ``[{"optimizer": opt_a, "lr_scheduler":
    ...}, {...}]``; None when it names one (controls.configured reads that).

    >>> from_configured([opt_g, opt_d], "epoch", "val_loss").optimizers == (opt_g, opt_d)
    True
    """
    if not isinstance(result, (tuple, list)):
        return None
    if len(result) > 1 and all(isinstance(r, dict) for r in result):
        for r in result:
            if "optimizer" not in r:
                raise FitkitValueError(
                    f"configure_optimizers() returned a list of dicts; each "
                    f"needs an 'optimizer' (one has keys {list(r)})."
                )
        opts = [r["optimizer"] for r in result]
        _check_optimizers(opts)
        return OptimizerSet(
            tuple(opts), tuple(scheduled(r.get("lr_scheduler"), every, monitor) for r in result)
        )
    if len(result) > 1 and all(is_optimizer(r) for r in result):
        return OptimizerSet(tuple(result), (None,) * len(result))
    if len(result) == 2 and isinstance(result[0], (tuple, list)) and len(result[0]) > 1:
        opts, scheds = result
        _check_optimizers(opts)
        scheds = (
            list(scheds)
            if isinstance(scheds, (tuple, list))
            else ([] if scheds is None else [scheds])
        )
        return OptimizerSet(tuple(opts), tuple(_pair(list(opts), scheds, every, monitor)))
    return None


def _check_optimizers(opts: Sequence[Any]) -> None:
    for i, opt in enumerate(opts):
        if not is_optimizer(opt):
            raise FitkitValueError(
                f"configure_optimizers() returned several optimizers; item "
                f"{i} is a {type(opt).__name__}, not an optimizer."
            )


def scheduled(entry: Any, every: str, monitor: str) -> Scheduled | None:
    """A scheduler as configure_optimizers gives it: the object, or Lightning's dict
    ``{"scheduler", "interval": "epoch" | "step", "monitor"}``."""
    if entry is None:
        return None
    if isinstance(entry, dict):
        interval = entry.get("interval", "epoch")
        if interval not in ("epoch", "step", "batch"):
            raise FitkitValueError(
                f"configure_optimizers(): lr_scheduler's interval must be "
                f"'epoch' or 'step'; got {interval!r}."
            )
        return Scheduled(
            entry.get("scheduler"),
            "epoch" if interval == "epoch" else "batch",
            entry.get("monitor", monitor),
        )
    return Scheduled(entry, every, monitor)


def _pair(opts: list, scheds: list, every: str, monitor: str) -> list[Scheduled | None]:
    """Each optimizer's scheduler: a torch scheduler names its optimizer; others (Keras or
    portable schedules) go by position, one per optimizer."""
    out: list[Scheduled | None] = [None] * len(opts)
    entries = [scheduled(s, every, monitor) for s in scheds]
    present = [e for e in entries if e is not None]
    owners = [getattr(e.spec, "optimizer", None) for e in present]
    if entries and len(present) == len(entries) and all(o is not None for o in owners):
        for entry, owner in zip(present, owners, strict=True):
            index = next((i for i, o in enumerate(opts) if o is owner), None)
            if index is None:
                raise FitkitValueError(
                    f"configure_optimizers(): the scheduler {type(entry.spec).__name__} was "
                    f"built on an optimizer it did not return; build it on one of them."
                )
            if out[index] is not None:
                raise FitkitValueError(
                    f"configure_optimizers() returned two schedulers for "
                    f"optimizer {index}; fitkit steps one per optimizer."
                )
            out[index] = entry
        return out
    if entries and len(entries) != len(opts):
        raise FitkitValueError(
            f"configure_optimizers() returned {len(opts)} optimizers and {len(entries)} "
            f"schedulers that do not name their optimizer; give one per optimizer, in order "
            f"(None for one without)."
        )
    return entries or out


def check_compile(optimizer: Any, controls: Any, lr: Any, manual_step: bool) -> None:
    """Refuse what fitkit cannot do with several optimizers, before anything is built: its own
    step (and ``shared_step``) update with one; clipping, accumulation and fp16 loss scaling
    act in that step; ``lr`` would not say which optimizer."""
    if not isinstance(optimizer, OptimizerSet):
        return
    n = len(optimizer)
    if not manual_step:
        raise FitkitValueError(
            f"configure_optimizers() returned {n} optimizers; fitkit's own step (and "
            f"shared_step) updates with one. Override train_step and step each one there: "
            f"opt_a, opt_b = self.optimizers() (or return one optimizer)."
        )
    used = [
        name
        for name, on in (
            ("clipnorm", controls.clipnorm is not None),
            ("clipvalue", controls.clipvalue is not None),
            ("global_clipnorm", controls.global_clipnorm is not None),
            ("gradient_accumulation_steps", controls.gradient_accumulation_steps > 1),
            ("precision='fp16'", controls.precision == "fp16"),
            ("lr", lr is not None),
        )
        if on
    ]
    if used:
        raise FitkitValueError(
            f"compile({', '.join(used)}) with {n} optimizers from configure_optimizers(): these "
            f"act in fitkit's own update, and your train_step updates each optimizer itself. "
            f"Clip or scale in train_step, and set each optimizer's rate where you build it."
        )


def one_optimizer(adapter: Adapter, what: str) -> Any:
    """The adapter's optimizer; with several, an error naming ``self.optimizers()`` (``what``,
    e.g. model.learning_rate, would not say which one)."""
    count = len(getattr(adapter, "optimizers", ()))
    if count > 1:
        raise FitkitAttributeError(
            f"{what}: this model has {count} optimizers (from configure_optimizers()); use "
            f"self.optimizers() for the list, and each optimizer's own rate."
        )
    return adapter.optimizer


def scheduler_set(
    optimizers: OptimizerSet, built: Sequence[Any], build: Callable[..., Scheduler]
) -> SchedulerSet:
    """Each optimizer's scheduler, built by the backend's ``build(spec, optimizer, every=,
    monitor=)`` on the native optimizer it steps."""
    return SchedulerSet(
        [
            Scheduler() if s is None else build(s.spec, opt, every=s.every, monitor=s.monitor)
            for s, opt in zip(optimizers.schedules, built, strict=True)  # one per optimizer
        ]
    )


def after_each(step: Callable, after: Callable[[], None]) -> Callable:
    """``step``, then ``after()`` (the per-batch schedulers of several optimizers on torch,
    whose own steps do the updates)."""

    def run(batch: Any) -> Any:
        logs = step(batch)
        after()
        return logs

    return run


class SchedulerSet(Scheduler):
    """Several optimizers' schedulers, each stepped by its own ``every``: "epoch" ones by the
    fit loop's hooks, "batch" ones after each train step (``after_update``)."""

    def __init__(self, parts: list[Scheduler]) -> None:
        self.parts = parts
        self.every = "epoch"  # the set itself: the per-batch parts step in after_update
        self.per_batch = any(p.every == "batch" for p in parts)
        self.monitor = next((p.monitor for p in parts if p.monitor), None)

    def begin(self, epochs: int, steps_per_epoch: int | None) -> None:
        for part in self.parts:
            part.begin(epochs, steps_per_epoch)

    def epoch_begin(self, epoch: int) -> None:
        for part in self.parts:
            part.epoch_begin(epoch)

    def epoch_end(self, epoch: int, logs: dict) -> None:
        for part in self.parts:
            part.epoch_end(epoch, logs)

    def after_update(self) -> None:
        for part in self.parts:
            if part.every == "batch":
                part.after_update()

    def state_dict(self) -> dict:
        return {"kind": "several", "parts": [p.state_dict() for p in self.parts]}

    def load_state_dict(self, state: dict) -> None:
        if state.get("kind") != "several" or len(state.get("parts", ())) != len(self.parts):
            raise FitkitValueError(
                f"The saved lr_schedule state is not that of {len(self.parts)} optimizers' "
                f"schedulers; compile with the configure_optimizers() it was saved with."
            )
        for part, saved in zip(self.parts, state["parts"], strict=True):  # checked above
            part.load_state_dict(saved)
