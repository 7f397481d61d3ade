"""Callbacks that watch one logged quantity: EarlyStopping and ReduceLROnPlateau, with the
rules they share (which direction is better, what is an improvement, argument checks) and
the small helpers of the other ready-made families; files, schedules and events live beside.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from numbers import Integral, Real
from typing import TYPE_CHECKING, Any, Literal, overload

import numpy as np

from ..errors import FitkitTypeError, FitkitValueError
from .base import Callback

if TYPE_CHECKING:
    from ..model import Model

# Name parts of quantities that grow as a model gets better; anything else is minimised.
_HIGHER_IS_BETTER = {
    "acc",
    "accuracy",
    "auc",
    "precision",
    "recall",
    "f1",
    "fbeta",
    "r2",
    "iou",
    "dice",
    "specificity",
    "sensitivity",
    "map",
    "ndcg",
}


# ---------------------------------------------------------------------- shared helpers
def check_count(owner: str, arg: str, value: Any) -> int:
    """A whole number >= 0 (patience, cooldown, start_from_epoch …), else a clear error."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 0:
        raise FitkitValueError(f"{owner}({arg}=...) takes a whole number >= 0; got {value!r}.")
    return int(value)


def is_step_count(value: Any) -> bool:
    """A whole number of training steps >= 1 (a bool is not one): save and log frequencies."""
    return not isinstance(value, bool) and isinstance(value, Integral) and int(value) >= 1


@overload
def check_number(
    owner: str, arg: str, value: Any, *, allow_none: Literal[False] = False
) -> float: ...
@overload
def check_number(owner: str, arg: str, value: Any, *, allow_none: bool) -> float | None: ...
def check_number(owner: str, arg: str, value: Any, *, allow_none: bool = False) -> float | None:
    """A finite real number (or None where allowed), else a clear error."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        extra = " or None" if allow_none else ""
        raise FitkitValueError(f"{owner}({arg}=...) takes a finite number{extra}; got {value!r}.")
    return float(value)


def check_monitor(owner: str, monitor: Any) -> str:
    if not isinstance(monitor, str) or not monitor:
        raise FitkitTypeError(
            f"{owner}(monitor=...) takes a log key such as 'val_loss' or "
            f"'accuracy'; got {monitor!r}."
        )
    return monitor


def direction(owner: str, monitor: str, mode: Any) -> str:
    """'min' or 'max': the mode given, or for 'auto' the one the monitored name implies.

    'auto' maximises accuracy-like quantities (accuracy, auc, precision, recall, f1, r2,
    iou …, also per output and with the 'val_' prefix) and minimises everything else.
    """
    if mode in ("min", "max"):
        return mode
    if mode != "auto":
        raise FitkitValueError(f"{owner}(mode=...) must be 'auto', 'min' or 'max'; got {mode!r}.")
    name = monitor[4:] if monitor.startswith("val_") else monitor
    parts = set(name.lower().split("_"))
    if "loss" in parts or not parts & _HIGHER_IS_BETTER:
        return "min"
    return "max"


class Improvement:
    """``is_better(value, reference)``: by at least ``min_delta`` in the better direction.

    A reference of None (nothing seen yet) is always beaten; a NaN never beats anything.

    >>> Improvement("EarlyStopping", "val_accuracy", "auto", 0.01)(0.9, 0.85)
    True
    """

    def __init__(self, owner: str, monitor: str, mode: Any, min_delta: Any) -> None:
        self.mode = direction(owner, monitor, mode)
        self.min_delta = abs(check_number(owner, "min_delta", min_delta))

    def __call__(self, value: float, reference: float | None) -> bool:
        if reference is None:
            return not math.isnan(value)
        if self.mode == "min":
            return value < reference - self.min_delta
        return value > reference + self.min_delta


def monitored_value(cb: Any, logs: Mapping | None, what: str) -> float | None:
    """``logs[cb.monitor]`` as a float, or None (with one warning per fit) when this epoch's
    logs lack it (an epoch without validation under ``validation_freq > 1``)."""
    value = (logs or {}).get(cb.monitor)
    if value is None:
        if not getattr(cb, "_warned_missing", False):
            cb._warned_missing = True
            warnings.warn(
                f"{type(cb).__name__}: {cb.monitor!r} is not in this epoch's logs "
                f"({', '.join(logs or {}) or 'none'}); {what} skips the epochs "
                f"without it.",
                stacklevel=4,
            )
        return None
    return float(value)


def resumed(model: Model) -> bool:
    """True in a fit that continues a backup: the history already holds epochs at train begin."""
    history = getattr(model, "history", None)
    return history is not None and len(history) > 0


# ---------------------------------------------------------------------- EarlyStopping
class EarlyStopping(Callback):
    """Stop training when ``monitor`` has stopped improving (Keras's arguments and rules).

    >>> model.fit(x, y, validation_split=0.2, epochs=100,
    ...           callbacks=[fitkit.callbacks.EarlyStopping("val_loss", patience=3)])

    ``patience`` epochs without an improvement of at least ``min_delta`` stop training;
    ``baseline``: training also stops if the value has not beaten it after ``patience``
    epochs. ``start_from_epoch``: the first epochs (warm-up) are not watched.
    ``restore_best_weights``: at the end of training the weights of the best epoch come
    back (via ``model.get_weights()`` / ``model.set_weights()``). Why training stopped is
    kept in ``model.history.stop_reason``.
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        min_delta: float = 0,
        patience: int = 0,
        verbose: int = 0,
        mode: str = "auto",
        baseline: float | None = None,
        restore_best_weights: bool = False,
        start_from_epoch: int = 0,
    ) -> None:
        super().__init__()
        name = "EarlyStopping"
        self.monitor = check_monitor(name, monitor)
        self.is_better = Improvement(name, self.monitor, mode, min_delta)
        self.mode, self.min_delta = self.is_better.mode, self.is_better.min_delta
        self.patience = check_count(name, "patience", patience)
        self.verbose = verbose
        self.baseline = check_number(name, "baseline", baseline, allow_none=True)
        self.restore_best_weights = bool(restore_best_weights)
        self.start_from_epoch = check_count(name, "start_from_epoch", start_from_epoch)
        self._reset()

    def _reset(self) -> None:
        self.wait = 0
        self.best: float | None = None
        self.best_epoch = 0
        self.stopped_epoch = 0
        self.best_weights: list | None = None
        self._resumed_without_weights = False
        self._warned_missing = False

    def on_train_begin(self, logs: Mapping | None = None) -> None:
        if not resumed(self.model):  # a resumed run keeps the state it was given
            self._reset()

    def on_epoch_end(self, epoch: int, logs: Mapping | None = None) -> None:
        if epoch < self.start_from_epoch:
            return
        current = monitored_value(self, logs, "early stopping")
        if current is None:
            return
        if (
            self.restore_best_weights
            and self.best_weights is None
            and not self._resumed_without_weights
        ):
            self.best_weights, self.best_epoch = self.model.get_weights(), epoch
        self.wait += 1
        if self.is_better(current, self.best):
            self.best, self.best_epoch = current, epoch
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
                self._resumed_without_weights = False
            if self.baseline is None or self.is_better(current, self.baseline):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True
            if self.model.history is not None:  # (a fit's: always there)
                self.model.history.stop_reason = f"EarlyStopping: {self._why()}"

    def _why(self) -> str:
        if self.best is None:
            return f"{self.monitor} had no value for {self.wait} epochs"
        best = f"best {self.best:.4g} at epoch {self.best_epoch + 1}"
        if self.baseline is not None and not self.is_better(self.best, self.baseline):
            return (
                f"{self.monitor} did not beat the baseline {self.baseline:.4g} in "
                f"{self.wait} epochs ({best})"
            )
        return f"{self.monitor} did not improve for {self.wait} epochs ({best})"

    def on_train_end(self, logs: Mapping | None = None) -> None:
        restored = False
        if self.restore_best_weights and self.best_weights is not None:
            self.model.set_weights(self.best_weights)
            restored = True
        elif self.restore_best_weights and self._resumed_without_weights:
            warnings.warn(
                "EarlyStopping(restore_best_weights=True): the best epoch came "
                "before the resume and its weights were not in the backup; the "
                "model keeps its final weights.",
                stacklevel=3,
            )
        if self.verbose:
            line = (
                f"Epoch {self.stopped_epoch + 1}: early stopping: {self._why()}"
                if self.stopped_epoch
                else ""
            )
            if restored:
                what = f"restored the weights of epoch {self.best_epoch + 1}"
                line = f"{line}; {what}." if line else f"EarlyStopping: {what}."
            if line:
                print(line, flush=True)

    @property
    def state_key(self) -> str:
        return self._key(monitor=self.monitor, mode=self.mode)

    def state_dict(self) -> dict:
        return {
            "wait": self.wait,
            "best": self.best,
            "best_epoch": self.best_epoch,
            "stopped_epoch": self.stopped_epoch,
        }

    def load_state_dict(self, state: dict) -> None:
        self.wait, self.best = int(state["wait"]), state["best"]
        self.best_epoch, self.stopped_epoch = int(state["best_epoch"]), int(state["stopped_epoch"])
        # The weights of the best epoch are not in the (JSON) state: a later better epoch
        # records them again; if none comes, on_train_end says so.
        self.best_weights = None
        self._resumed_without_weights = self.restore_best_weights and self.best is not None


# ---------------------------------------------------------------------- ReduceLROnPlateau
class ReduceLROnPlateau(Callback):
    """Multiply the learning rate by ``factor`` when ``monitor`` stops improving (Keras's rules).

    >>> model.fit(x, y, validation_split=0.2, epochs=50,
    ...           callbacks=[fitkit.callbacks.ReduceLROnPlateau(factor=0.5, patience=5)])

    After ``patience`` epochs without an improvement of at least ``min_delta`` the rate is
    lowered (never below ``min_lr``), then ``cooldown`` epochs pass before watching again.
    The history's ``lr`` column shows the rate each epoch trained with. With several torch
    param groups every group is multiplied by ``factor`` (their ratios are kept; ``min_lr``
    bounds group 0's rate) and the history has one ``lr-…`` column per group.
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        factor: float = 0.1,
        patience: int = 10,
        verbose: int = 0,
        mode: str = "auto",
        min_delta: float = 1e-4,
        cooldown: int = 0,
        min_lr: float = 0.0,
    ) -> None:
        super().__init__()
        name = "ReduceLROnPlateau"
        self.monitor = check_monitor(name, monitor)
        self.factor = check_number(name, "factor", factor)
        if not 0.0 < self.factor < 1.0:
            raise FitkitValueError(
                f"ReduceLROnPlateau(factor=...) multiplies the learning rate "
                f"and must be between 0 and 1 (e.g. 0.1); got {factor!r}."
            )
        self.is_better = Improvement(name, self.monitor, mode, min_delta)
        self.mode, self.min_delta = self.is_better.mode, self.is_better.min_delta
        self.patience = check_count(name, "patience", patience)
        self.verbose = verbose
        self.cooldown = check_count(name, "cooldown", cooldown)
        self.min_lr = check_number(name, "min_lr", min_lr)
        if self.min_lr < 0:
            raise FitkitValueError(f"ReduceLROnPlateau(min_lr=...) must be >= 0; got {min_lr!r}.")
        self._reset()

    def _reset(self) -> None:
        self.best: float | None = None
        self.wait = 0
        self.cooldown_counter = 0
        self._warned_missing = False

    def on_train_begin(self, logs: Mapping | None = None) -> None:
        if not resumed(self.model):  # a resumed run keeps the state it was given
            self._reset()

    def in_cooldown(self) -> bool:
        """True in the ``cooldown`` epochs after a reduction (no further reduction then)."""
        return self.cooldown_counter > 0

    def on_epoch_end(self, epoch: int, logs: Mapping | None = None) -> None:
        current = monitored_value(self, logs, "the learning-rate reduction")
        if current is None:
            return
        if self.in_cooldown():
            self.cooldown_counter -= 1
            self.wait = 0
        if self.is_better(current, self.best):
            self.best, self.wait = current, 0
            return
        if self.in_cooldown():
            return
        self.wait += 1
        if self.wait < self.patience:
            return
        old = float(self.model.learning_rate)
        # Compared in float32, as Keras does: a float32 rate read back is never "above" min_lr.
        if np.float32(old) > np.float32(self.min_lr):
            new = max(old * self.factor, self.min_lr)
            self.model.learning_rate = new
            if self.verbose:
                print(
                    f"Epoch {epoch + 1}: ReduceLROnPlateau reducing learning rate to {new:.4g}.",
                    flush=True,
                )
            self.cooldown_counter, self.wait = self.cooldown, 0

    @property
    def state_key(self) -> str:
        return self._key(monitor=self.monitor, mode=self.mode)

    def state_dict(self) -> dict:
        return {"best": self.best, "wait": self.wait, "cooldown_counter": self.cooldown_counter}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.wait = state["best"], int(state["wait"])
        self.cooldown_counter = int(state["cooldown_counter"])
