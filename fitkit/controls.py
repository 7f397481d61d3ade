"""Training controls chosen at compile: gradient clipping, gradient accumulation, precision,
jit compilation, and how a learning-rate schedule steps.

Owns the checks of these arguments and the one record (``TrainingControls``) the adapters
read; what each control does in a step is each adapter's job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import FitkitValueError
from .optimizer_sets import from_configured, scheduled

_PRECISIONS = {
    "32": "32",
    "float32": "32",
    "fp32": "32",
    "32-true": "32",
    "bf16": "bf16",
    "bfloat16": "bf16",
    "bf16-mixed": "bf16",
    "mixed_bfloat16": "bf16",
    "fp16": "fp16",
    "16": "fp16",
    "float16": "fp16",
    "16-mixed": "fp16",
    "mixed_float16": "fp16",
}


@dataclass(frozen=True)
class TrainingControls:
    """What compile chose; every field off by default.

    ``clipnorm`` clips each gradient's norm, ``global_clipnorm`` all of them together (torch's
    ``clip_grad_norm_``), ``clipvalue`` each element: Keras's meanings, on both backends.
    """

    clipnorm: float | None = None
    clipvalue: float | None = None
    global_clipnorm: float | None = None
    gradient_accumulation_steps: int = 1
    precision: str = "32"  # "32" | "bf16" | "fp16"
    jit_compile: bool = False
    lr_schedule: Any = None  # native scheduler, factory, Keras schedule, or portable
    lr_schedule_every: str = "epoch"  # "epoch" | "batch"
    lr_schedule_monitor: str = "val_loss"  # what a plateau scheduler reads at epoch end

    @property
    def clips(self) -> bool:
        return any(v is not None for v in (self.clipnorm, self.clipvalue, self.global_clipnorm))


def _positive(name: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise FitkitValueError(f"{name} must be a positive number or None; got {value!r}.")
    return float(value)


def training_controls(
    *,
    clipnorm: Any = None,
    clipvalue: Any = None,
    global_clipnorm: Any = None,
    gradient_accumulation_steps: Any = 1,
    precision: Any = "32",
    jit_compile: Any = False,
    lr_schedule: Any = None,
    lr_schedule_every: Any = "epoch",
    lr_schedule_monitor: Any = "val_loss",
    lr: Any = None,
    steps_per_execution: Any = "auto",
) -> TrainingControls:
    """compile's control arguments, checked; each error names the argument and the fix."""
    if steps_per_execution != "auto" and (
        not isinstance(steps_per_execution, int) or steps_per_execution < 1
    ):
        raise FitkitValueError(
            f"steps_per_execution must be 'auto' or a whole number >= 1; "
            f"got {steps_per_execution!r}."
        )
    if lr is not None and (isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0):
        raise FitkitValueError(f"lr must be a positive number; got {lr!r}.")
    if clipnorm is not None and global_clipnorm is not None:
        raise FitkitValueError(
            "Pass clipnorm (each gradient) or global_clipnorm (all gradients together), not both."
        )
    steps = gradient_accumulation_steps
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise FitkitValueError(
            f"gradient_accumulation_steps must be a whole number >= 1; got {steps!r}."
        )
    key = str(precision).lower()
    if key not in _PRECISIONS:
        raise FitkitValueError(f"precision must be '32', 'bf16' or 'fp16'; got {precision!r}.")
    if lr_schedule_every not in ("epoch", "batch"):
        raise FitkitValueError(
            f"lr_schedule_every must be 'epoch' or 'batch'; got {lr_schedule_every!r}."
        )
    if not isinstance(lr_schedule_monitor, str):
        raise FitkitValueError(
            f"lr_schedule_monitor must be a log key such as 'val_loss'; "
            f"got {lr_schedule_monitor!r}."
        )
    return TrainingControls(
        clipnorm=_positive("clipnorm", clipnorm),
        clipvalue=_positive("clipvalue", clipvalue),
        global_clipnorm=_positive("global_clipnorm", global_clipnorm),
        gradient_accumulation_steps=steps,
        precision=_PRECISIONS[key],
        jit_compile=bool(jit_compile),
        lr_schedule=lr_schedule,
        lr_schedule_every=lr_schedule_every,
        lr_schedule_monitor=lr_schedule_monitor,
    )


def configured(
    result: Any, optimizer: Any, lr_schedule: Any, every: str, monitor: str
) -> tuple[Any, Any, str, str]:
    """compile's (optimizer, lr_schedule, every, monitor) from ``configure_optimizers()``'s
    result: an optimizer, (optimizer, scheduler), ([optimizer], [scheduler]) or Lightning's
    dict ``{"optimizer", "lr_scheduler": scheduler | {"scheduler", "interval", "monitor"}}``.
    Several optimizers come back as one ``optimizer_sets.OptimizerSet`` (no lr_schedule)."""
    if optimizer is not None or lr_schedule is not None:
        raise FitkitValueError(
            "configure_optimizers() chooses the optimizer and schedule; "
            "pass neither optimizer= nor lr_schedule= to compile."
        )
    several = from_configured(result, every, monitor)
    if several is not None:  # a GAN's: each optimizer with its own scheduler
        return several, None, every, monitor
    if isinstance(result, (tuple, list)) and len(result) == 1 and isinstance(result[0], dict):
        result = result[0]  # Lightning's [{"optimizer": ..., "lr_scheduler": ...}]
    scheduler: Any = None
    if isinstance(result, dict):
        if "optimizer" not in result:
            raise FitkitValueError(
                f"configure_optimizers() returned a dict without "
                f"'optimizer' (keys: {list(result)})."
            )
        result, scheduler = result["optimizer"], result.get("lr_scheduler")
    elif isinstance(result, (tuple, list)):
        if len(result) != 2:
            raise FitkitValueError(
                "configure_optimizers() may return an optimizer or "
                "(optimizer, scheduler); got a sequence of "
                f"{len(result)}."
            )
        result, scheduler = result
    if isinstance(result, (tuple, list)):
        result = _only(result, "optimizer")
    if isinstance(scheduler, (tuple, list)):
        scheduler = _only(scheduler, "scheduler")
    if isinstance(scheduler, dict):  # {"scheduler", "interval", "monitor"}
        entry = scheduled(scheduler, every, monitor)
        if entry is not None:  # a dict always makes an entry
            scheduler, every, monitor = entry.spec, entry.every, entry.monitor
    if result is None:
        raise FitkitValueError(
            "configure_optimizers() returned no optimizer; return one "
            "(e.g. torch.optim.Adam(self.net.parameters()))."
        )
    return result, scheduler, every, monitor


def _only(items: Any, what: str) -> Any:
    if len(items) != 1:
        raise FitkitValueError(
            f"configure_optimizers() returned {len(items)} {what}s with one optimizer; fitkit "
            f"steps one scheduler per optimizer."
            if what == "scheduler"
            else f"configure_optimizers() returned {len(items)} optimizers; return one or more."
        )
    return items[0]
