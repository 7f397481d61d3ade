"""TensorFlow summary rows: each leaf layer's output shape and parameter count.

Owns the measurement: which example to run (input_data, zeros of input_shape in the
model's declared dtypes, its declared inputs, or the batch fitkit last saw), and rows that
add up to Keras's own ``count_params()``. It wraps leaf layers' ``call`` for one forward
pass, since Keras 3 has no forward hooks; the facade prints the table for both backends.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from ..adapter import SummaryInfo
from ..arrays import map_structure
from ..display import SUMMARY_NEEDS_INPUT, shape_text, summary_shapes
from ..errors import FitkitValueError
from . import data

FREE_DIM = 32  # the size given to a declared dimension of unknown size (None)


def summary_info(adapter: Any, input_shape: Any, input_data: Any) -> SummaryInfo:
    """The summary of ``adapter.net`` run on ``input_data``, zeros of ``input_shape``, or,
    with neither, on what the model declares (``keras.Input``s, or the shapes of its first
    call) or the first two rows of the last batch fitkit saw."""
    declared = declared_inputs(adapter.net)
    if input_data is not None:
        example = map_structure(data.to_tensor, input_data)
    elif input_shape is not None:
        example = zeros(summary_shapes(input_shape), declared)
    else:
        example = default_example(adapter, declared)
    return summarize(adapter.net, example, adapter.infer)


def declared_inputs(net: Any) -> Any:
    """The model's inputs as Keras tensors (a functional or built Sequential model), or None."""
    if not isinstance(net, keras.Model):
        return None
    try:
        return net.input  # a KerasTensor, or the list / dict the model was built with
    except (AttributeError, ValueError):  # subclassed, or a Sequential without inputs yet
        return None


def _declared_dtype(declared: Any, key: Any) -> Any:
    """The declared dtype of input ``key`` (a dict key or a position; None: the only one)."""
    if declared is None:
        return "float32"
    if isinstance(declared, dict):
        if key in declared:
            return declared[key].dtype
        declared = list(declared.values())
    if not isinstance(declared, (list, tuple)):
        return declared.dtype if key in (None, 0) else "float32"
    if isinstance(key, int):
        return declared[key].dtype if key < len(declared) else "float32"
    named = {getattr(t, "name", None): t for t in declared}
    if key in named:
        return named[key].dtype
    return declared[0].dtype if key is None and len(declared) == 1 else "float32"


def zeros(shapes: Any, declared: Any) -> Any:
    """A batch of 2 zeros per shape, in the dtype the model declares for that input."""
    make = lambda shape, key: tf.zeros((2, *shape), _declared_dtype(declared, key))  # noqa: E731
    if isinstance(shapes, dict):
        return {k: make(s, k) for k, s in shapes.items()}
    if isinstance(shapes, list):
        return [make(s, i) for i, s in enumerate(shapes)]
    return make(shapes, None)


def _known(shape: Any) -> tuple:
    return tuple(FREE_DIM if d is None else int(d) for d in tuple(shape)[1:])


def default_example(adapter: Any, declared: Any) -> Any:
    """With no argument: declared inputs of known size, else the last batch seen, else the
    declared inputs with free sizes filled in, else the shapes of the model's first call."""
    fully_known = declared is not None and all(
        None not in tuple(t.shape)[1:] for t in tf.nest.flatten(declared)
    )
    if declared is not None and (fully_known or adapter.example_inputs is None):
        return map_structure(lambda t: tf.zeros((2, *_known(t.shape)), t.dtype), declared)
    if adapter.example_inputs is not None:
        return map_structure(lambda t: t[:2], adapter.example_inputs)
    built = getattr(adapter.net, "_build_shapes_dict", None)  # Keras: shapes of the first call
    if isinstance(built, dict) and len(built) == 1:
        shape = next(iter(built.values()))
        if isinstance(shape, (tuple, list)) and all(d is None or isinstance(d, int) for d in shape):
            return tf.zeros((2, *_known(shape)), tf.float32)
    raise FitkitValueError(
        SUMMARY_NEEDS_INPUT + " (For a Keras model, building it with "
        "keras.Input(...) declares the input too.)"
    )


def _layer_tree(layer: Any, prefix: str = "") -> tuple[list, list]:
    """(leaf layers, weights held by non-leaf layers themselves), as (name, object) pairs."""
    leaves, own = [], []
    children = [
        c
        for c in layer._flatten_layers(include_self=False, recursive=False)
        if not isinstance(c, keras.layers.InputLayer)
    ]
    inner = {id(w) for c in children for w in c.weights}
    own += [(prefix.rstrip("."), w) for w in layer.weights if id(w) not in inner]
    for child in children:
        name = f"{prefix}{child.name}"
        if any(
            not isinstance(c, keras.layers.InputLayer)
            for c in child._flatten_layers(include_self=False, recursive=False)
        ):
            sub_leaves, sub_own = _layer_tree(child, f"{name}.")
            leaves += sub_leaves
            own += sub_own
        else:
            leaves.append((name, child))
    return leaves, own


def _count(variables: list) -> int:
    return int(sum(np.prod(v.shape) for v in variables))


def _weights(net: Any) -> tuple[list, list]:
    """(all weights, trainable ones) as Keras counts them: a Dropout's seed state is no weight."""
    if isinstance(net, keras.layers.Layer):
        return list(net.weights), list(net.trainable_weights)
    return list(net.variables), list(net.trainable_variables)  # a bare tf.Module


def summarize(net: Any, example: Any, call: Callable[[Any], Any]) -> SummaryInfo:
    """Run ``example`` once through ``net`` (inference) and record every leaf layer."""
    leaves, own = _layer_tree(net) if isinstance(net, keras.layers.Layer) else ([], [])
    seen: dict[str, Any] = {}
    wrapped = list({id(layer): layer for _, layer in leaves}.values())  # a shared layer once
    names = {id(layer): name for name, layer in reversed(leaves)}  # ... under its first name
    for layer in wrapped:
        name, original = names[id(layer)], layer.call

        def recording(
            *args: Any, _original: Any = original, _name: str = name, **kwargs: Any
        ) -> Any:
            out = _original(*args, **kwargs)
            seen.setdefault(_name, out)
            return out

        object.__setattr__(layer, "call", recording)  # bypass Keras attribute tracking
    try:
        call(example)
    except Exception as err:
        raise FitkitValueError(
            f"summary could not run the network on the example input: {str(err).rstrip('.')}. "
            f"Pass input_shape without the batch dimension, e.g. (32,) or (28, 28, 1), "
            f"or pass input_data=<a real batch>."
        ) from err
    finally:
        for layer in wrapped:
            object.__delattr__(layer, "call")
    weights, trainable = _weights(net)
    return SummaryInfo(
        rows=_rows(net, leaves, own, seen),
        total=_count(weights),
        trainable=_count(trainable),
        param_bytes=int(sum(np.prod(v.shape) * tf.as_dtype(v.dtype).size for v in weights)),
    )


def _rows(net: Any, leaves: list, own: list, seen: dict) -> list:
    """Leaves in call order, then weights no leaf row holds (a non-leaf layer's own weight,
    a leaf that never ran, a bare tf.Module's variables), each weight counted once."""
    layers, counted = dict(leaves), set[int]()

    def fresh(weights: list) -> int:
        new = [w for w in weights if id(w) not in counted]
        counted.update(id(w) for w in new)
        return _count(new)

    rows = [
        (f"{n} ({type(layers[n]).__name__})", shape_text(out), fresh(layers[n].weights))
        for n, out in seen.items()
    ]
    extra = []  # (position among rows, row)
    for name, layer in leaves:
        if name not in seen and any(id(w) not in counted for w in layer.weights):
            extra.append(
                (len(seen), (f"{name} ({type(layer).__name__})", "-", fresh(layer.weights)))
            )
    if not isinstance(net, keras.layers.Layer):
        own = [("", v) for v in _weights(net)[0]]
    for owner, weight in own:
        if id(weight) in counted:
            continue
        label = f"{owner}.{_short(weight)}" if owner else _short(weight)
        prefix = f"{owner}." if owner else ""
        position = next((i for i, n in enumerate(seen) if n.startswith(prefix)), len(seen))
        extra.append((position, (f"{label} (Variable)", str(list(weight.shape)), fresh([weight]))))
    extra.sort(key=lambda item: item[0])
    for offset, (position, row) in enumerate(extra):
        rows.insert(position + offset, row)
    return rows


def _short(weight: Any) -> str:
    name = getattr(weight, "name", "variable")
    return name.split(":")[0].rpartition("/")[2] or "variable"
