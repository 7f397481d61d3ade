"""TensorFlow losses behind the portable names, reduced by Keras itself.

Owns the name -> keras.losses mapping, what fitkit knows of native Keras losses, and
sample weighting of plain callables. Every built loss is called
``fn(y_true, y_pred, sample_weight)``, Keras's own order; fitkit/torch/losses.py writes
the same formulas by hand.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import tensorflow as tf

from ..errors import FitkitTypeError, FitkitValueError
from ..identifiers import KerasIdentifier
from ..specs import LossSpec, loss_spec

_FACTORIES: dict[str, Callable[[], Any]] = {
    "mse": keras.losses.MeanSquaredError,
    "mae": keras.losses.MeanAbsoluteError,
    "huber": lambda: keras.losses.Huber(delta=1.0),
    "log_cosh": keras.losses.LogCosh,
    "poisson": keras.losses.Poisson,
    "cross_entropy": lambda: keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    "bce_with_logits": lambda: keras.losses.BinaryCrossentropy(from_logits=True),
    "bce": keras.losses.BinaryCrossentropy,
    "hinge": keras.losses.Hinge,
    "categorical_hinge": keras.losses.CategoricalHinge,
    "kl_divergence": keras.losses.KLDivergence,
    "categorical_crossentropy": keras.losses.CategoricalCrossentropy,
    "sparse_categorical_crossentropy": keras.losses.SparseCategoricalCrossentropy,
}

# Native Keras losses whose meaning fitkit knows; Keras aligns ranks itself (strict=False).
_NATIVE_TASKS = {
    keras.losses.MeanSquaredError: "regression",
    keras.losses.MeanAbsoluteError: "regression",
    keras.losses.Huber: "regression",
    keras.losses.BinaryCrossentropy: "binary",
    keras.losses.CategoricalCrossentropy: "categorical",
    keras.losses.SparseCategoricalCrossentropy: "sparse",
}


def reduce(values: tf.Tensor, sample_weight: tf.Tensor | None) -> tf.Tensor:
    """Keras's "sum over batch size": weighted sum / number of values (weights per sample)."""
    if sample_weight is None:
        return tf.reduce_mean(values)
    w = tf.cast(tf.reshape(sample_weight, [-1] + [1] * (values.shape.rank - 1)), values.dtype)
    return tf.reduce_sum(values * w) / tf.cast(tf.size(values), values.dtype)


def _keras_loss(loss: Any) -> Callable:
    return lambda y, p, w: loss(y, p, sample_weight=w)


def _callable(fn: Callable) -> Callable:
    """A plain ``fn(y, y_pred)``: per-sample values are reduced as Keras reduces them."""

    def call(y: Any, p: Any, w: Any) -> Any:
        value = fn(y, p)
        if value.shape.rank == 0:
            if w is not None:
                raise FitkitValueError(
                    f"sample_weight / class_weight need one loss value per sample, but the loss "
                    f"{getattr(fn, '__name__', type(fn).__name__)} returns a scalar. Use a "
                    f"portable loss name, a keras.losses.Loss, or a callable that returns "
                    f"per-sample values."
                )
            return value
        return reduce(value, w)

    return call


def keras_loss(loss: Any) -> Any:
    """compile's loss as Keras's own compile takes it: a name becomes the Keras loss it
    means here ("cross_entropy" takes logits); Keras losses and callables stay as they are."""
    return _FACTORIES[loss_spec(loss).name]() if isinstance(loss, str) else loss


def build_loss(loss: Any) -> tuple[Callable, LossSpec]:
    """A loss ``fn(y_true, y_pred, sample_weight) -> scalar`` and what fitkit knows of it."""
    if isinstance(loss, KerasIdentifier):  # a Keras class name or dict: as Keras builds it
        loss = keras.losses.get(loss.as_keras())
    if isinstance(loss, str):
        spec = loss_spec(loss)
        return _keras_loss(_FACTORIES[spec.name]()), spec
    if isinstance(loss, keras.losses.Loss):
        task = _NATIVE_TASKS.get(type(loss))
        from_logits = bool(loss.get_config().get("from_logits", False))
        return _keras_loss(loss), LossSpec(loss.name, task, from_logits, strict=False)
    if callable(loss):
        name = getattr(loss, "__name__", type(loss).__name__)
        return _callable(loss), LossSpec(name, None, False, strict=False)
    raise FitkitTypeError(
        f"loss must be a name (e.g. 'mse', 'cross_entropy'), a keras.losses.Loss or a callable "
        f"(y, y_pred) -> scalar; got {type(loss).__name__}."
    )
