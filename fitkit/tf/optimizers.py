"""Keras optimizers behind the portable names.

Owns the name -> keras.optimizers mapping and the checks on native optimizers and
factories; the torch twin is fitkit/torch/optimizers.py.
"""
from __future__ import annotations

from typing import Any

import keras

from .. import specs
from ..errors import FitkitTypeError

_OPTIMIZERS = {
    "sgd": (keras.optimizers.SGD, {"learning_rate": 0.01}),
    "adam": (keras.optimizers.Adam, {"learning_rate": 1e-3}),
    "adamw": (keras.optimizers.AdamW, {"learning_rate": 1e-3}),
    "rmsprop": (keras.optimizers.RMSprop, {"learning_rate": 1e-3}),
    "adagrad": (keras.optimizers.Adagrad, {"learning_rate": 1e-3}),
    "nadam": (keras.optimizers.Nadam, {"learning_rate": 1e-3}),
    "adamax": (keras.optimizers.Adamax, {"learning_rate": 1e-3}),
    "adadelta": (keras.optimizers.Adadelta, {"learning_rate": 1e-3}),
    "adafactor": (keras.optimizers.Adafactor, {"learning_rate": 1e-3}),
}


def build_optimizer(optimizer: Any, lr: float | None, net: Any):
    """compile's ``optimizer`` (a name, a Keras optimizer or a factory) for ``net``."""
    if isinstance(optimizer, str):
        cls, kwargs = _OPTIMIZERS[specs.optimizer_name(optimizer)]
        return cls(**{**kwargs, **({"learning_rate": lr} if lr is not None else {})})
    if isinstance(optimizer, keras.optimizers.Optimizer):
        opt = optimizer
    elif callable(optimizer):
        opt = optimizer(net.trainable_variables)
        if not isinstance(opt, keras.optimizers.Optimizer):
            raise FitkitTypeError(f"The optimizer factory returned {type(opt).__name__}, "
                                  f"not a keras.optimizers.Optimizer.")
    else:
        raise FitkitTypeError(
            f"optimizer must be a name ({', '.join(specs.OPTIMIZERS)}), a keras optimizer, "
            f"or a callable params -> optimizer; got {type(optimizer).__name__}."
        )
    if lr is not None:
        opt.learning_rate = lr
    return opt
