"""The non-finite guard of a fit: the loss or any weight turning NaN/inf stops training at
the log point where it shows (no per-step read: a NaN weight stays NaN, so a check at the
log point sees it), and a non-finite validation loss beside a finite training loss warns
that the validation data holds NaN/inf.

Owns those checks and their messages; when log points come is steps.py's and training.py's,
each backend's flag over the weights its own finite.py's.
"""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING, Any

from .adapter import WEIGHTS_FINITE, Adapter

if TYPE_CHECKING:
    from .model import Model


def nonfinite_loss(logs: dict) -> bool:
    """True when a loss in ``logs`` (the total or an output's) is NaN or infinite."""
    return any(not math.isfinite(v) for k, v in logs.items() if k == "loss" or k.endswith("_loss"))


class Guard:
    """The reads and ``stop_if`` of a training pass: True at a log point where a loss or a
    weight is not finite (a NaN in a batch can leave the loss finite, e.g. through a layer
    that maps NaN to 0, while its gradient turns the weights NaN). The weights' flag is
    computed on the device and comes with the logs' read. ``what`` says which."""

    def __init__(self, adapter: Adapter) -> None:
        self.adapter = adapter
        self.what: str | None = None
        self.weights_finite = True

    def read(self) -> dict:
        """The training logs, and the weights' flag kept aside (one host read)."""
        logs = self.adapter.read_logs("train", weights=True)
        self.weights_finite = logs.pop(WEIGHTS_FINITE, 1.0) == 1.0
        return logs

    def __call__(self, logs: dict) -> bool:
        if nonfinite_loss(logs):
            self.what = f"the loss became {logs.get('loss')}"
        elif not self.weights_finite:
            self.what = (
                f"the weights became non-finite (NaN/inf) while the loss stayed "
                f"finite ({logs.get('loss')})"
            )
        return self.what is not None


def stop(model: Model, guard: Guard, epoch: int, step: int) -> None:
    """Stop the fit where ``guard`` saw a non-finite value, saying where and why."""
    reason = f"{guard.what} at epoch {epoch + 1}, step {step}"
    cause = (
        "A batch with NaN/inf values (batches from datasets, loaders and generators are "
        "not checked before training) or too high a learning rate can do this: check "
        "the data for NaN/inf"
        if "weights" in reason
        else "Lower the learning rate or check the data for NaN/inf"
    )
    warnings.warn(
        f"fit stopped: {reason}. The history keeps the epochs so far (this last row "
        f"holds the values of the stopped epoch) and the model the weights it has "
        f"now. {cause}; pass terminate_on_nan=False to keep training.",
        stacklevel=6,
    )
    if model.history is not None:  # (a fit's: always there)
        model.history.stop_reason = reason
    model.stop_training = True


def check_validation(state: Any, epoch: int, logs: dict, val_logs: dict) -> None:
    """Warn (once a fit) when the validation loss is not finite but the training loss is:
    the validation data holds NaN/inf, which its other metrics may not show."""
    if state.warned_validation or not nonfinite_loss(val_logs) or nonfinite_loss(logs):
        return
    state.warned_validation = True
    bad = {
        f"val_{k}": v
        for k, v in val_logs.items()
        if (k == "loss" or k.endswith("_loss")) and not math.isfinite(v)
    }
    warnings.warn(
        f"The validation data gives {bad} after epoch {epoch + 1} while the training loss is "
        f"finite: the validation data (validation_data / validation_split) most likely holds "
        f"NaN or inf values (arrays are checked before training; batches from datasets, "
        f"loaders and generators are not). Its other metrics may look normal, but its loss, "
        f"and any callback monitoring it, mean nothing: clean the validation data.",
        stacklevel=6,
    )
