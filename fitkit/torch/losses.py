"""Torch losses behind the portable names, reduced as Keras reduces them.

Owns the formulas (Keras-named losses take probabilities and clip as Keras does, so the
same name gives the same value on both backends) and sample weighting. Every built loss
is called ``fn(y_true, y_pred, sample_weight)``; a native torch loss keeps its own
``(y_pred, y)`` order inside. Matching losses to outputs is fitkit/outputs.py's job.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import FitkitTypeError, FitkitValueError
from ..identifiers import KerasIdentifier, portable_loss
from ..specs import LossSpec, loss_spec

_EPSILON = 1e-7  # Keras's clipping epsilon for probability losses


def _align(p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Keras's rank alignment: (N,) targets for an (N, 1) output, and the reverse."""
    if y.dim() == p.dim() - 1 and p.shape[-1] == 1:
        return y.unsqueeze(-1)
    if y.dim() == p.dim() + 1 and y.shape[-1] == 1:
        return y.squeeze(-1)
    return y


def _float(p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return _align(p, y).to(p.dtype)


def _probs(y_pred: torch.Tensor) -> torch.Tensor:
    return (y_pred / y_pred.sum(-1, keepdim=True)).clamp(_EPSILON, 1.0 - _EPSILON)


def _sparse(logp: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample negative log-likelihood of integer labels, class axis last."""
    y = y.reshape(logp.shape[:-1]).long()
    return F.nll_loss(logp.reshape(-1, logp.shape[-1]), y.reshape(-1), reduction="none").reshape(
        y.shape
    )


def _bce(p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    y = _float(p, y)
    p = p.clamp(_EPSILON, 1.0 - _EPSILON)
    return -(y * torch.log(p) + (1.0 - y) * torch.log(1.0 - p))


def _hinge(p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    y = _float(p, y)
    y = torch.where(y == 0, -torch.ones_like(y), y)  # 0/1 labels become -1/1, as in Keras
    return torch.relu(1.0 - y * p)


def _categorical_hinge(p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    y = y.to(p.dtype)
    pos = (y * p).sum(-1)
    neg = ((1.0 - y) * p).amax(-1)
    return torch.relu(neg - pos + 1.0)


def _kl(p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    y = y.to(p.dtype).clamp(_EPSILON, 1.0)
    return (y * torch.log(y / p.clamp(_EPSILON, 1.0))).sum(-1)


def _log_cosh(p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    d = p - _float(p, y)
    return d + F.softplus(-2.0 * d) - torch.log(torch.tensor(2.0, dtype=d.dtype))


# Unreduced values: per element, or per sample for losses that sum over the class axis.
_VALUES: dict[str, Callable] = {
    "mse": lambda p, y: (p - _float(p, y)) ** 2,
    "mae": lambda p, y: (p - _float(p, y)).abs(),
    "huber": lambda p, y: F.huber_loss(p, _float(p, y), delta=1.0, reduction="none"),
    "log_cosh": _log_cosh,
    "poisson": lambda p, y: p - _float(p, y) * torch.log(p + _EPSILON),
    "cross_entropy": lambda p, y: _sparse(F.log_softmax(p, -1), y),
    "bce_with_logits": lambda p, y: F.binary_cross_entropy_with_logits(
        p, _float(p, y), reduction="none"
    ),
    "bce": _bce,
    "hinge": _hinge,
    "categorical_hinge": _categorical_hinge,
    "kl_divergence": _kl,
    "categorical_crossentropy": lambda p, y: -(y.to(p.dtype) * torch.log(_probs(p))).sum(-1),
    "sparse_categorical_crossentropy": lambda p, y: _sparse(torch.log(_probs(p)), y),
}

# Native losses whose meaning fitkit knows: (task, from_logits) for shape checks and accuracy.
_NATIVE_TASKS = {
    torch.nn.MSELoss: ("regression", False),
    torch.nn.L1Loss: ("regression", False),
    torch.nn.SmoothL1Loss: ("regression", False),
    torch.nn.HuberLoss: ("regression", False),
    torch.nn.BCELoss: ("binary", False),
    torch.nn.BCEWithLogitsLoss: ("binary", True),
    torch.nn.CrossEntropyLoss: ("class", True),
    torch.nn.NLLLoss: ("sparse", False),
}


def reduce(values: torch.Tensor, sample_weight: torch.Tensor | None) -> torch.Tensor:
    """Keras's "sum over batch size": weighted sum / number of values (weights per sample)."""
    if sample_weight is None:
        return values.mean()
    w = sample_weight.to(values.dtype).reshape(-1, *([1] * (values.dim() - 1)))
    return (values * w).sum() / values.numel()


# Unweighted means that torch computes in one call: the same values as reduce(_VALUES[...]),
# a few ops fewer per step (the step of a small network is mostly per-op overhead).
_MEANS: dict[str, Callable] = {
    "mse": F.mse_loss,
    "mae": F.l1_loss,
    "huber": lambda p, y: F.huber_loss(p, y, delta=1.0),
    "bce_with_logits": F.binary_cross_entropy_with_logits,
}


def _portable(name: str) -> Callable:
    values, mean = _VALUES[name], _MEANS.get(name)
    if name == "cross_entropy":
        return _cross_entropy
    if mean is None:
        return lambda y, p, w: reduce(values(p, y), w)

    def fused(y: torch.Tensor, p: torch.Tensor, w: Any) -> torch.Tensor:
        if w is None:
            y_aligned = _float(p, y)
            if y_aligned.shape == p.shape:
                return mean(p, y_aligned)
        return reduce(values(p, y), w)

    return fused


def _cross_entropy(y: torch.Tensor, p: torch.Tensor, w: Any) -> torch.Tensor:
    """Unweighted (N, C) logits, the usual case, as torch's fused log-softmax + NLL mean."""
    if w is None and p.dim() == 2:
        return F.cross_entropy(p, y.reshape(-1).long())
    return reduce(_VALUES["cross_entropy"](p, y), w)


def _native(loss: Any) -> Callable:
    """A torch loss module or callable ``(y_pred, y)``; weights need per-sample values."""
    unreduced = None
    if isinstance(loss, torch.nn.Module) and getattr(loss, "reduction", None) == "mean":
        unreduced = copy.copy(loss)
        unreduced.reduction = "none"  # type: ignore[assignment]  # typed Tensor | Module; a loss keeps a str

    def call(y: Any, p: Any, w: Any) -> torch.Tensor:
        if w is None:
            value = loss(p, y)
            return value if value.dim() == 0 else value.mean()
        value = (unreduced or loss)(p, y)
        if value.dim() == 0:
            raise FitkitValueError(
                f"sample_weight / class_weight need one loss value per sample, but the loss "
                f"{type(loss).__name__} returns a scalar. Use a portable loss name, a torch loss "
                f"module (fitkit sets reduction='none'), or a callable that returns per-sample "
                f"values."
            )
        return reduce(value, w)

    return call


def build_loss(loss: Any) -> tuple[Callable, LossSpec]:
    """A loss ``fn(y_true, y_pred, sample_weight) -> scalar`` and what fitkit knows of it."""
    if isinstance(loss, KerasIdentifier):  # a Keras class name or dict: its portable twin
        loss = portable_loss(loss)
    if isinstance(loss, str):
        spec = loss_spec(loss)
        return _portable(spec.name), spec
    if callable(loss):
        task, from_logits = _NATIVE_TASKS.get(type(loss), (None, False))
        return _native(loss), LossSpec(type(loss).__name__, task, from_logits)
    raise FitkitTypeError(
        f"loss must be a name (e.g. 'mse', 'cross_entropy'), a torch loss module or a callable "
        f"(y_pred, y) -> scalar; got {type(loss).__name__}."
    )
