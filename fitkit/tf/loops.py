"""Function style on TensorFlow: ``train_step``, ``valid_step`` and ``train_model`` for a native
Keras model (or tf.Module) that carries ``optimizer``, ``loss_func`` and ``metric_func``.

Owns the tf.function steps and their in-graph epoch sums; the epoch skeleton, exact means and
printout are fitkit.script's. fitkit/torch/loops.py mirrors this module name for name.
"""

from __future__ import annotations

from collections.abc import Iterable
from numbers import Number
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
import tensorflow as tf

from .. import script
from ..errors import FitkitTypeError
from .adapter import call_net

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["train_model", "train_step", "valid_step"]

_EXAMPLES = {
    "optimizer": "keras.optimizers.SGD(learning_rate=0.01)",
    "loss_func": "keras.losses.BinaryCrossentropy()",
    "metric_func": "keras.metrics.binary_accuracy  (called as metric_func(y_true, y_pred))",
}
_STEPS = "_fitkit_loop_steps"  # where a network keeps its compiled steps (a plain attribute)


def _parts(model: Any) -> tuple[Any, Any, Any]:
    """(optimizer, loss_func, metric_func) of ``model``, checked."""
    if not isinstance(model, (keras.layers.Layer, tf.Module)):
        raise FitkitTypeError(
            f"fitkit.tf.loops takes the keras.Model itself (with "
            f"model.optimizer, model.loss_func, model.metric_func set); got "
            f"{type(model).__name__}. For a torch.nn.Module use "
            f"fitkit.torch.loops."
        )
    optimizer, loss_func, metric_func = (
        script.model_attribute(model, name, example) for name, example in _EXAMPLES.items()
    )
    if not hasattr(optimizer, "apply_gradients"):
        raise FitkitTypeError(
            f"model.optimizer must be a Keras optimizer object, e.g. "
            f"model.optimizer = {_EXAMPLES['optimizer']}; got "
            f"{type(optimizer).__name__}."
        )
    for name, value in (("loss_func", loss_func), ("metric_func", metric_func)):
        if not callable(value):
            raise FitkitTypeError(
                f"model.{name} must be callable as {name}(y_true, y_pred), "
                f"e.g. model.{name} = {_EXAMPLES[name]}; got "
                f"{type(value).__name__}."
            )
    return optimizer, loss_func, metric_func


def _tensors(value: Any) -> Any:
    return tf.nest.map_structure(
        lambda v: v if isinstance(v, (tf.Tensor, tf.Variable)) else tf.convert_to_tensor(v), value
    )


def _mean(value: Any) -> tf.Tensor:
    """A batch value as a scalar: per-sample values (keras.losses functions) are averaged."""
    value = tf.convert_to_tensor(value)
    return tf.reduce_mean(value) if value.shape.rank else value


def _call_metric(metric_func: Any, labels: Any, predictions: Any) -> Any:
    """The batch's metric; a keras.metrics.Metric object is reset first, so that it gives
    this batch's value rather than its running one."""
    if isinstance(metric_func, keras.metrics.Metric):
        metric_func.reset_state()
    return metric_func(labels, predictions)


def _with_layer_losses(model: Any, loss: tf.Tensor) -> tf.Tensor:
    """Keras's layer losses (regularizers) added, as Keras's fit and evaluate add them."""
    extra = getattr(model, "losses", None)
    return loss + tf.cast(tf.add_n(extra), loss.dtype) if extra else loss


def _add_sums(sums: tf.Variable, loss: tf.Tensor, metric: Any, labels: Any) -> None:
    """sums += (loss * n, metric * n, n), n the batch's rows: exact epoch means, on the device."""
    rows = tf.cast(tf.shape(tf.nest.flatten(labels)[0])[0], tf.float64)
    metric = tf.constant(0.0, tf.float64) if metric is None else tf.cast(metric, tf.float64)
    sums.assign_add(tf.stack([tf.cast(loss, tf.float64) * rows, metric * rows, rows]))


class _Steps:
    """One network's compiled train and valid steps for its current optimizer, loss_func and
    metric_func, with each step's device sums (loss * n, metric * n, n)."""

    def __init__(self, model: Any, parts: tuple) -> None:
        self.model, self.parts = model, parts
        self.sums = {
            mode: tf.Variable(tf.zeros(3, tf.float64), trainable=False)
            for mode in ("train", "valid")
        }
        self.graph_metric: bool | None = None  # decided on the first batch
        self.functions: dict[str, Any] = {}

    def run(self, mode: str, features: Any, labels: Any) -> tuple[tf.Tensor, Any, int]:
        """(loss, metric, rows) of one batch: the loss a device tensor, the metric one too
        unless metric_func must run eagerly (then whatever it returned)."""
        features, labels = _tensors(features), _tensors(labels)
        if self.graph_metric is None:
            self.graph_metric = self._metric_traces(features, labels)
        if mode not in self.functions:
            step = self._train if mode == "train" else self._valid
            self.functions[mode] = tf.function(step, autograph=False, reduce_retracing=True)
        loss, out = self.functions[mode](features, labels)
        rows = int(tf.nest.flatten(labels)[0].shape[0] or 0)
        if self.graph_metric:
            return loss, out, rows
        metric = _call_metric(self.parts[2], labels, out)  # host sync: if metric_func reads
        if not isinstance(metric, (tf.Tensor, Number, np.generic, np.ndarray)):
            raise FitkitTypeError(
                f"model.metric_func returned {type(metric).__name__}; it must "
                f"return a number or a tensor (the batch's metric)."
            )
        return loss, metric, rows

    def _metric_traces(self, features: Any, labels: Any) -> bool:
        """Whether metric_func runs inside a graph: traced once on this batch's shapes. One that
        reads values on the host (``.numpy()``, sklearn) fails here and runs eagerly instead."""
        metric_func = self.parts[2]
        if isinstance(metric_func, keras.metrics.Metric):
            return True
        predictions = call_net(self.model, features, training=False)
        spec = lambda t: tf.TensorSpec.from_tensor(t)  # noqa: E731
        probe = tf.function(lambda y, p: _call_metric(metric_func, y, p), autograph=False)
        try:
            traced = probe.get_concrete_function(
                tf.nest.map_structure(spec, labels), tf.nest.map_structure(spec, predictions)
            )
        except Exception:  # noqa: BLE001 - any failure to trace means: run it eagerly
            return False
        return isinstance(traced.structured_outputs, tf.Tensor)

    def _finish(self, mode: str, loss: tf.Tensor, labels: Any, predictions: Any) -> tuple:
        if not self.graph_metric:
            _add_sums(self.sums[mode], loss, None, labels)
            return loss, predictions  # the metric runs eagerly on them
        metric = _mean(_call_metric(self.parts[2], labels, predictions))
        _add_sums(self.sums[mode], loss, metric, labels)
        return loss, metric

    def _train(self, features: Any, labels: Any) -> tuple:
        optimizer, loss_func, _ = self.parts
        with tf.GradientTape() as tape:
            predictions = call_net(self.model, features, training=True)
            loss = _with_layer_losses(self.model, _mean(loss_func(labels, predictions)))
        variables = self.model.trainable_variables
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
        return self._finish("train", loss, labels, predictions)

    def _valid(self, features: Any, labels: Any) -> tuple:
        predictions = call_net(self.model, features, training=False)
        loss = _with_layer_losses(self.model, _mean(self.parts[1](labels, predictions)))
        return self._finish("valid", loss, labels, predictions)


def _steps(model: Any) -> _Steps:
    """The network's compiled steps, rebuilt when optimizer, loss_func or metric_func changed.

    Kept as a plain attribute of the network (``object.__setattr__``: Keras does not track it).
    """
    parts = _parts(model)
    steps = vars(model).get(_STEPS)
    if steps is None or any(a is not b for a, b in zip(steps.parts, parts, strict=True)):
        steps = _Steps(model, parts)
        object.__setattr__(model, _STEPS, steps)
    return steps


def train_step(model: keras.Model, features: Any, labels: Any) -> tuple[float, float]:
    """One optimizer update on a batch (``training=True``); returns (loss, metric) as floats.

    The step is a tf.function, traced once per network. A ``metric_func`` that cannot run
    in a graph (one that calls ``.numpy()``, e.g. sklearn's accuracy_score) runs eagerly on
    the step's predictions instead.

    >>> loss, accuracy = train_step(model, features, labels)
    """
    loss, metric, _ = _steps(model).run("train", features, labels)
    loss, metric = script.as_floats(loss, metric)  # host sync: a lone step returns floats
    return loss, metric


def valid_step(model: keras.Model, features: Any, labels: Any) -> tuple[float, float]:
    """Loss and metric of a batch (``training=False``), in a tf.function; returns floats.

    >>> val_loss, val_accuracy = valid_step(model, features, labels)
    """
    loss, metric, _ = _steps(model).run("valid", features, labels)
    loss, metric = script.as_floats(loss, metric)  # host sync: a lone step returns floats
    return loss, metric


class _Phase:
    """Training or validation over one epoch's batches; sums in a device variable (and on
    the host for a metric_func that runs eagerly)."""

    def __init__(self, steps: _Steps, metric_name: str, mode: str) -> None:
        self.steps, self.metric_name, self.mode = steps, metric_name, mode
        self.host_metric = script.Mean()

    def begin(self) -> None:
        self.steps.sums[self.mode].assign(tf.zeros(3, tf.float64))
        self.host_metric.reset()

    def step(self, features: Any, labels: Any) -> None:
        _, metric, rows = self.steps.run(self.mode, features, labels)
        if not self.steps.graph_metric:
            self.host_metric.update(metric, rows)

    def result(self) -> dict[str, float]:
        loss_sum, metric_sum, count = self.steps.sums[self.mode].numpy().tolist()  # host sync
        count = count or float("nan")
        metric = metric_sum / count if self.steps.graph_metric else self.host_metric.result()
        return {"loss": loss_sum / count, self.metric_name: metric}


def train_model(
    model: keras.Model,
    epochs: int,
    dl_train: Iterable,
    dl_valid: Iterable | None = None,
    log_step_freq: int | None = 100,
) -> pd.DataFrame:
    """Train for ``epochs`` with the tutorial's printout; returns a pandas DataFrame with
    columns epoch, loss, <metric_name>, val_loss, val_<metric_name>.

    ``model`` carries ``optimizer`` (a Keras optimizer), ``loss_func(y_true, y_pred)``,
    ``metric_func(y_true, y_pred)`` (Keras's argument order; a tensor, a Keras metric object
    or, run eagerly, a float) and optionally ``metric_name`` (default "metric"). Steps run in
    tf.functions; epoch values are exact over samples, summed on the device and read only at
    step logs (every ``log_step_freq`` steps) and epoch ends.

    >>> dfhistory = train_model(model, epochs=3, dl_train=ds_train, dl_valid=ds_valid)
    """
    steps = _steps(model)
    metric_name = script.metric_name_of(model)
    script.check_loop_args(epochs, dl_train, dl_valid, log_step_freq)
    history = script.epoch_loop(
        _Phase(steps, metric_name, "train"),
        _Phase(steps, metric_name, "valid"),
        epochs=epochs,
        dl_train=dl_train,
        dl_valid=dl_valid,
        log_step_freq=log_step_freq,
    )
    return history.df
