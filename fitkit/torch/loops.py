"""Function style on PyTorch: ``train_step``, ``valid_step`` and ``train_model`` for a native
``nn.Module`` that carries ``optimizer``, ``loss_func`` and ``metric_func`` attributes.

Owns the torch steps; the epoch skeleton, exact means and printout are fitkit.script's.
fitkit/tf/loops.py mirrors this module name for name.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from numbers import Number
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .. import script
from ..errors import FitkitTypeError
from .adapter import call_net

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["train_model", "train_step", "valid_step"]

_EXAMPLES = {
    "optimizer": "torch.optim.SGD(model.parameters(), lr=0.01)",
    "loss_func": "torch.nn.BCELoss()",
    "metric_func": "lambda y_pred, y_true: ((y_pred > 0.5).float() == y_true).float().mean()",
}


def _parts(model: Any) -> tuple[Any, Any, Any]:
    """(optimizer, loss_func, metric_func) of ``model``, checked."""
    if not isinstance(model, torch.nn.Module):
        raise FitkitTypeError(
            f"fitkit.torch.loops takes the torch.nn.Module itself (with "
            f"model.optimizer, model.loss_func, model.metric_func set); got "
            f"{type(model).__name__}. For a Keras model use fitkit.tf.loops."
        )
    _keep_out_of_sequence(model)
    optimizer, loss_func, metric_func = (
        script.model_attribute(model, name, example) for name, example in _EXAMPLES.items()
    )
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise FitkitTypeError(
            f"model.optimizer must be a torch.optim.Optimizer over the "
            f"network's parameters, e.g. model.optimizer = "
            f"{_EXAMPLES['optimizer']}; got {type(optimizer).__name__}."
        )
    for name, value in (("loss_func", loss_func), ("metric_func", metric_func)):
        if not callable(value):
            raise FitkitTypeError(
                f"model.{name} must be callable as {name}(y_pred, y_true), "
                f"e.g. model.{name} = {_EXAMPLES[name]}; got "
                f"{type(value).__name__}."
            )
    return optimizer, loss_func, metric_func


def _keep_out_of_sequence(model: torch.nn.Module) -> None:
    """An nn.Module set as ``model.loss_func`` of an ``nn.Sequential`` becomes one of its
    layers (torch registers it), and the network's forward then calls it: move it back to a
    plain attribute, on the network's device, and say so."""
    if not isinstance(model, torch.nn.Sequential):
        return
    for name in ("loss_func", "metric_func"):
        module = dict(model.named_children()).get(name)
        if module is None:
            continue
        delattr(model, name)  # nn.Module's own removal of a registered child
        params = next(model.parameters(), None)
        if params is not None:
            module.to(params.device)
        object.__setattr__(model, name, module)
        warnings.warn(
            f"model.{name} ({type(module).__name__}) had become the last layer of "
            f"this nn.Sequential (torch registers a module set as an attribute); "
            f"fitkit made it a plain attribute again so the network's forward skips "
            f"it.",
            stacklevel=3,
        )


def _to_device(value: Any, device: torch.device | None) -> Any:
    """Tensors (and numpy arrays) of a batch on the network's device; structure kept."""
    if isinstance(value, torch.Tensor):
        return value if device is None or value.device == device else value.to(device)
    if isinstance(value, np.ndarray):
        return _to_device(torch.as_tensor(value), device)
    if isinstance(value, dict):
        return {k: _to_device(v, device) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(_to_device(v, device) for v in value)
    return value


def _detached(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, dict):
        return {k: _detached(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(_detached(v) for v in value)
    return value


def _rows(labels: Any) -> int:
    """The batch's number of samples: the first dimension of the (first) labels tensor."""
    while isinstance(labels, (dict, tuple, list)):
        labels = next(iter(labels.values())) if isinstance(labels, dict) else labels[0]
    shape = tuple(getattr(labels, "shape", ()))
    return int(shape[0]) if len(shape) else 1


def _device(model: torch.nn.Module) -> torch.device | None:
    params = next(model.parameters(), None)
    return params.device if params is not None else None


def _batch(
    model: Any,
    parts: tuple,
    features: Any,
    labels: Any,
    training: bool,
    device: torch.device | None,
) -> tuple[torch.Tensor, Any, int]:
    """(loss, metric, rows) of one batch, the loss and a tensor metric left on the device;
    with ``training`` one optimizer update first. The caller sets the mode and no_grad."""
    optimizer, loss_func, metric_func = parts
    features, labels = _to_device(features, device), _to_device(labels, device)
    predictions = call_net(model, features)
    loss = loss_func(predictions, labels)
    loss = loss.mean() if loss.ndim else loss  # a loss of per-sample values
    if training:
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        metric = metric_func(_detached(predictions), labels)
    if not isinstance(metric, (torch.Tensor, Number, np.generic, np.ndarray)):
        raise FitkitTypeError(
            f"model.metric_func returned {type(metric).__name__}; it must "
            f"return a number or a tensor (the batch's metric)."
        )
    return loss.detach(), metric, _rows(labels)


def train_step(model: torch.nn.Module, features: Any, labels: Any) -> tuple[float, float]:
    """One optimizer update on a batch in training mode; returns (loss, metric) as floats.

    >>> loss, accuracy = train_step(model, features, labels)
    """
    parts = _parts(model)
    model.train()
    loss, metric, _ = _batch(model, parts, features, labels, True, _device(model))
    loss_value, metric_value = script.as_floats(
        loss, metric
    )  # host sync: a lone step returns floats
    return loss_value, metric_value


def valid_step(model: torch.nn.Module, features: Any, labels: Any) -> tuple[float, float]:
    """Loss and metric of a batch in eval mode, without gradients; returns floats.

    >>> val_loss, val_accuracy = valid_step(model, features, labels)
    """
    parts = _parts(model)
    model.eval()
    with torch.no_grad():
        loss, metric, _ = _batch(model, parts, features, labels, False, _device(model))
    loss_value, metric_value = script.as_floats(
        loss, metric
    )  # host sync: a lone step returns floats
    return loss_value, metric_value


class _Phase:
    """Training or validation over one epoch's batches, sums kept on the device."""

    def __init__(
        self, model: torch.nn.Module, parts: tuple, metric_name: str, training: bool
    ) -> None:
        self.model, self.parts, self.metric_name, self.training = (
            model,
            parts,
            metric_name,
            training,
        )
        self.logs = script.EpochLogs()
        self.device: torch.device | None = None

    def begin(self) -> None:
        self.model.train(self.training)
        self.logs.reset()
        self.device = _device(self.model)

    def step(self, features: Any, labels: Any) -> None:
        with torch.set_grad_enabled(self.training):
            loss, metric, rows = _batch(
                self.model, self.parts, features, labels, self.training, self.device
            )
        self.logs.update(rows, **{"loss": loss, self.metric_name: metric})

    def result(self) -> dict[str, float]:
        return self.logs.result()  # host sync: one read for loss and metric


def train_model(
    model: torch.nn.Module,
    epochs: int,
    dl_train: Iterable,
    dl_valid: Iterable | None = None,
    log_step_freq: int | None = 100,
) -> pd.DataFrame:
    """Train for ``epochs`` with the tutorial's printout; returns a pandas DataFrame with
    columns epoch, loss, <metric_name>, val_loss, val_<metric_name>.

    ``model`` carries ``optimizer``, ``loss_func(y_pred, y_true)`` (a batch mean),
    ``metric_func(y_pred, y_true)`` (a tensor or a float, such as sklearn's) and optionally
    ``metric_name`` (default "metric"). Epoch values are exact over samples. Device values
    are read only at step logs (every ``log_step_freq`` steps) and epoch ends, unless
    ``metric_func`` itself returns a float. The network's train/eval mode is restored.

    >>> dfhistory = train_model(model, epochs=3, dl_train=dl_train, dl_valid=dl_valid)
    """
    parts = _parts(model)
    metric_name = script.metric_name_of(model)
    script.check_loop_args(epochs, dl_train, dl_valid, log_step_freq)
    was_training = model.training
    try:
        history = script.epoch_loop(
            _Phase(model, parts, metric_name, True),
            _Phase(model, parts, metric_name, False),
            epochs=epochs,
            dl_train=dl_train,
            dl_valid=dl_valid,
            log_step_freq=log_step_freq,
        )
    finally:
        model.train(was_training)
    return history.df
