"""Torch losses behind the portable names, in torch's argument order ``(y_pred, y)``.

Owns the formulas; Keras-named losses take probabilities and clip as Keras does, so the
same name gives the same value on both backends. Native losses are used as they are.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F

from ..errors import FitkitTypeError
from ..specs import LossSpec, loss_spec

EPSILON = 1e-7  # Keras's clipping epsilon for probability losses


def _bce(y_pred, y):
    p = y_pred.clamp(EPSILON, 1.0 - EPSILON)
    y = y.to(p.dtype)
    return -(y * torch.log(p) + (1.0 - y) * torch.log(1.0 - p)).mean()


def _categorical(y_pred, y):
    p = (y_pred / y_pred.sum(-1, keepdim=True)).clamp(EPSILON, 1.0 - EPSILON)
    return -(y.to(p.dtype) * torch.log(p)).sum(-1).mean()


def _sparse_categorical(y_pred, y):
    p = (y_pred / y_pred.sum(-1, keepdim=True)).clamp(EPSILON, 1.0 - EPSILON)
    return F.nll_loss(torch.log(p), y.long())


_FUNCTIONS: dict[str, Callable] = {
    "mse": lambda p, y: F.mse_loss(p, y.to(p.dtype)),
    "mae": lambda p, y: F.l1_loss(p, y.to(p.dtype)),
    "huber": lambda p, y: F.huber_loss(p, y.to(p.dtype), delta=1.0),
    "cross_entropy": lambda p, y: F.cross_entropy(p, y.long()),
    "bce_with_logits": lambda p, y: F.binary_cross_entropy_with_logits(p, y.to(p.dtype)),
    "bce": _bce,
    "categorical_crossentropy": _categorical,
    "sparse_categorical_crossentropy": _sparse_categorical,
}

# Native losses whose meaning fitkit knows: (task, from_logits) for shape checks and accuracy.
_NATIVE_TASKS = {
    torch.nn.MSELoss: ("regression", False), torch.nn.L1Loss: ("regression", False),
    torch.nn.SmoothL1Loss: ("regression", False), torch.nn.HuberLoss: ("regression", False),
    torch.nn.BCELoss: ("binary", False), torch.nn.BCEWithLogitsLoss: ("binary", True),
    torch.nn.CrossEntropyLoss: ("class", True), torch.nn.NLLLoss: ("sparse", False),
}


def build_loss(loss: Any) -> tuple[Callable, LossSpec]:
    """A loss callable ``(y_pred, y) -> scalar`` and what fitkit knows of its meaning."""
    if isinstance(loss, str):
        spec = loss_spec(loss)
        return _FUNCTIONS[spec.name], spec
    if callable(loss):
        task, from_logits = _NATIVE_TASKS.get(type(loss), (None, False))
        return loss, LossSpec(type(loss).__name__, task, from_logits)
    raise FitkitTypeError(
        f"loss must be a name (e.g. 'mse', 'cross_entropy'), a torch loss module or a callable "
        f"(y_pred, y) -> scalar; got {type(loss).__name__}."
    )
