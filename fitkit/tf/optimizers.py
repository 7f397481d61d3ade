"""Keras optimizers behind the portable names.

Owns the name -> keras.optimizers mapping and the checks on native optimizers and
factories; the torch twin is fitkit/torch/optimizers.py.
"""

from __future__ import annotations

from typing import Any

import keras

from .. import specs
from ..errors import FitkitAttributeError, FitkitTypeError, FitkitValueError
from ..history import lr_columns
from ..identifiers import KerasIdentifier

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


def build_optimizer(optimizer: Any, lr: float | None, net: Any) -> Any:
    """compile's ``optimizer`` (a name, a Keras optimizer or a factory) for ``net``."""
    if isinstance(optimizer, KerasIdentifier):  # a Keras class name or dict: as Keras builds it
        optimizer = keras.optimizers.get(optimizer.as_keras())
    if isinstance(optimizer, str):
        cls, kwargs = _OPTIMIZERS[specs.optimizer_name(optimizer)]
        return with_lr_pointer(
            cls(**{**kwargs, **({"learning_rate": lr} if lr is not None else {})})
        )
    if isinstance(optimizer, keras.optimizers.Optimizer):
        opt = optimizer
    elif callable(optimizer):
        opt = optimizer(net.trainable_variables)
        if not isinstance(opt, keras.optimizers.Optimizer):
            raise FitkitTypeError(
                f"The optimizer factory returned {type(opt).__name__}, "
                f"not a keras.optimizers.Optimizer."
            )
    else:
        raise FitkitTypeError(
            f"optimizer must be a name ({', '.join(specs.OPTIMIZERS)}), a keras optimizer, "
            f"or a callable params -> optimizer; got {type(optimizer).__name__}."
        )
    if lr is not None:
        opt.learning_rate = lr
    return with_lr_pointer(opt)


def build_several(given: Any, replicas: Any) -> list:
    """Several Keras optimizers (an ``optimizer_sets.OptimizerSet``), each checked; each one
    is built on the variables its first ``apply_gradients`` names, as Keras builds it.
    Not under a strategy (``replicas``), yet."""
    if replicas is not None:
        raise FitkitValueError(
            "Several optimizers under a distribution strategy are not "
            "supported yet; train with one."
        )
    for i, opt in enumerate(given.optimizers):
        if not isinstance(opt, keras.optimizers.Optimizer):
            raise FitkitTypeError(
                f"configure_optimizers() returned several optimizers; item "
                f"{i} is a {type(opt).__name__}, not a keras optimizer."
            )
    return [with_lr_pointer(opt) for opt in given.optimizers]


def rate(opt: Any) -> float:
    """An optimizer's learning rate now (a schedule's at its step)."""
    # host sync: a variable read, once per epoch (for the lr column)
    return float(keras.ops.convert_to_numpy(opt.learning_rate))


def several_rates(opts: list) -> dict[str, float]:
    """The history's learning-rate columns of several optimizers: ``learning_rate-opt<i>``."""
    return {lr_columns([None], optimizer=i)[0]: rate(opt) for i, opt in enumerate(opts)}


_POINTERS: dict[type, type] = {}  # optimizer class -> its subclass with the ``lr`` pointer


def with_lr_pointer(opt: Any) -> Any:
    """Make ``opt.lr`` (TF 2 tutorials' ``model.optimizer.lr.assign(...)``, which Keras 3
    removed) an error naming ``model.learning_rate``: reading it failed with a bare
    AttributeError, and setting it did nothing at all. The optimizer stays an instance of
    its class (a subclass adds only that property)."""
    cls = type(opt)
    if "lr" in vars(cls) or getattr(cls, "_fitkit_pointer", False):
        return opt
    if cls not in _POINTERS:

        def refuse(self: Any, value: Any = None) -> None:
            raise FitkitAttributeError(
                "Keras 3 optimizers have no 'lr' (TF 2's optimizer.lr); use "
                "model.learning_rate (read it, or set it: model.learning_rate = 1e-4) or "
                "model.optimizer.learning_rate."
            )

        _POINTERS[cls] = type(
            cls.__name__,
            (cls,),
            {
                "lr": property(refuse, refuse),
                "_fitkit_pointer": True,
                "__module__": cls.__module__,
                "__qualname__": cls.__qualname__,
            },
        )
    opt.__class__ = _POINTERS[cls]
    return opt
