"""TensorFlow summary rows: each leaf layer's output shape and parameter count.

Owns the measurement (it wraps leaf layers' ``call`` for one forward pass, since Keras 3
has no forward hooks); the facade prints the table the same way for both backends.
"""
from __future__ import annotations

from typing import Any, Callable

import keras
import numpy as np
import tensorflow as tf

from ..adapter import SummaryInfo
from ..display import shape_text
from ..arrays import map_shapes, map_structure
from ..errors import FitkitValueError
from . import data


def summary_info(adapter: Any, input_shape: Any, input_data: Any) -> SummaryInfo:
    """The summary of ``adapter.net`` run on ``input_data`` or zeros of ``input_shape``."""
    if input_data is None and input_shape is None:
        raise FitkitValueError("summary needs input_shape=(features...) without the batch "
                               "dimension, or input_data=<a batch>.")
    example = (map_structure(data.to_tensor, input_data) if input_data is not None
               else map_shapes(input_shape, lambda shape: tf.zeros((2, *shape), tf.float32)))
    return summarize(adapter.net, example, adapter.infer)


def _leaf_layers(layer: keras.layers.Layer, prefix: str = "") -> list:
    found = []
    for child in layer._flatten_layers(include_self=False, recursive=False):
        if isinstance(child, keras.layers.InputLayer):
            continue
        name = f"{prefix}{child.name}"
        subs = _leaf_layers(child, f"{name}.")
        found += subs or [(name, child)]
    return found


def _count(variables) -> int:
    return int(sum(np.prod(v.shape) for v in variables))


def summarize(net: Any, example: Any, call: Callable[[Any], Any]) -> SummaryInfo:
    """Run ``example`` once through ``net`` (inference) and record every leaf layer."""
    leaves = _leaf_layers(net) if isinstance(net, keras.layers.Layer) else []
    seen: dict[str, Any] = {}
    for name, layer in leaves:
        original = layer.call

        def recording(*args, _original=original, _name=name, **kwargs):
            out = _original(*args, **kwargs)
            seen.setdefault(_name, out)
            return out
        object.__setattr__(layer, "call", recording)  # bypass Keras attribute tracking
    try:
        call(example)
    except Exception as err:
        raise FitkitValueError(
            f"summary could not run the network on the example input: {err}. "
            f"Pass input_shape without the batch dimension, e.g. (32,) or (28, 28, 1), "
            f"or pass input_data=<a real batch>."
        ) from err
    finally:
        for _, layer in leaves:
            object.__delattr__(layer, "call")
    layers = dict(leaves)
    rows = [(f"{name} ({type(layers[name]).__name__})", shape_text(out),
             _count(layers[name].weights)) for name, out in seen.items()]
    weights = net.trainable_variables + net.non_trainable_variables
    return SummaryInfo(
        rows=rows,
        total=_count(weights),
        trainable=_count(net.trainable_variables),
        param_bytes=int(sum(np.prod(v.shape) * tf.as_dtype(v.dtype).size for v in weights)),
    )
