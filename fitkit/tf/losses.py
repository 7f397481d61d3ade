"""TensorFlow losses behind the portable names, in Keras's argument order ``(y, y_pred)``.

Owns the name -> keras.losses mapping and what fitkit knows of native Keras losses; the
torch side (fitkit/torch/losses.py) writes the same formulas by hand.
"""
from __future__ import annotations

from typing import Any, Callable

import keras

from ..errors import FitkitTypeError
from ..specs import LossSpec, loss_spec

_FACTORIES: dict[str, Callable[[], Any]] = {
    "mse": keras.losses.MeanSquaredError,
    "mae": keras.losses.MeanAbsoluteError,
    "huber": lambda: keras.losses.Huber(delta=1.0),
    "cross_entropy": lambda: keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    "bce_with_logits": lambda: keras.losses.BinaryCrossentropy(from_logits=True),
    "bce": keras.losses.BinaryCrossentropy,
    "categorical_crossentropy": keras.losses.CategoricalCrossentropy,
    "sparse_categorical_crossentropy": keras.losses.SparseCategoricalCrossentropy,
}

# Native Keras losses whose meaning fitkit knows; Keras aligns ranks itself (strict=False).
_NATIVE_TASKS = {
    keras.losses.MeanSquaredError: "regression", keras.losses.MeanAbsoluteError: "regression",
    keras.losses.Huber: "regression", keras.losses.BinaryCrossentropy: "binary",
    keras.losses.CategoricalCrossentropy: "categorical",
    keras.losses.SparseCategoricalCrossentropy: "sparse",
}


def build_loss(loss: Any) -> tuple[Callable, LossSpec]:
    """A loss callable ``(y, y_pred) -> scalar`` and what fitkit knows of its meaning."""
    if isinstance(loss, str):
        spec = loss_spec(loss)
        return _FACTORIES[spec.name](), spec
    if callable(loss):
        task = _NATIVE_TASKS.get(type(loss))
        from_logits = bool(getattr(loss, "get_config", dict)().get("from_logits", False))
        return loss, LossSpec(getattr(loss, "name", type(loss).__name__), task, from_logits,
                              strict=False)
    raise FitkitTypeError(
        f"loss must be a name (e.g. 'mse', 'cross_entropy'), a keras.losses.Loss or a callable "
        f"(y, y_pred) -> scalar; got {type(loss).__name__}."
    )
