"""TensorFlow's side of ``Model.export`` and ``Model.save``: one tf.function over named inputs,
written as a SavedModel (``serve`` signature), LiteRT (.tflite) or ONNX (tf2onnx); ``save``
writes a compiled .keras archive. Signatures and the check against predict: fitkit/export.py.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from typing import Any

import keras
import tensorflow as tf

from ..custom_steps import CustomSteps
from ..errors import FitkitTypeError, FitkitValueError
from ..export import Signature, flatten, require, unflatten
from ..identifiers import KerasIdentifier
from .adapter import call_net
from .losses import keras_loss

META_FILE = "fitkit.json"


def to_numpy(value: Any) -> Any:
    return value.numpy() if isinstance(value, (tf.Tensor, tf.Variable)) else value


def declared_inputs(net: Any) -> Any:
    """A functional or Sequential Keras model's own Inputs (shape and dtype), or None."""
    if not isinstance(net, keras.Model) or not getattr(net, "inputs", None):
        return None
    try:
        declared = net.input  # a functional model's structure: a dict, a list or one tensor
    except (AttributeError, ValueError):
        declared = net.inputs  # a Sequential model never called yet
    if isinstance(declared, (list, tuple)) and len(declared) == 1:
        return declared[0]
    return declared


def _serving_fn(model: Any, signature: Signature, meta: dict, as_dict: bool) -> Callable:
    net = model.net
    custom = type(model).predict_step is not CustomSteps.predict_step
    names = [i.name for i in signature.inputs]
    out_names = [o["name"] for o in meta["outputs"]]

    def serve(*flat: tf.Tensor) -> Any:
        x = unflatten(signature.structure, names, list(flat))
        y = model.predict_step((x, None)) if custom else call_net(net, x, training=False)
        leaves = flatten(y, "output")[2]
        if as_dict:
            return dict(zip(out_names, leaves, strict=True))
        return tuple(leaves)

    return serve


def _specs(signature: Signature, free: bool) -> list[tf.TensorSpec]:
    return [
        tf.TensorSpec(
            (None, *(d if free else a.shape[axis + 1] for axis, d in enumerate(i.shape[1:]))),
            tf.as_dtype(i.dtype),
            name=i.name,
        )
        for i, a in zip(signature.inputs, signature.example, strict=True)
    ]


def _traced(model: Any, signature: Signature, meta: dict, as_dict: bool) -> tuple[Any, list]:
    """The traced function: free sequence lengths where the network takes them, else the
    traced batch's lengths (the metadata says which)."""
    fn = tf.function(_serving_fn(model, signature, meta, as_dict))
    try:
        specs = _specs(signature, free=True)
        fn.get_concrete_function(*specs)
    except Exception:  # noqa: BLE001 - a network that needs known lengths: fixed below
        specs = _specs(signature, free=False)
        fn = tf.function(_serving_fn(model, signature, meta, as_dict))
        fn.get_concrete_function(*specs)
        for info, spec, entry in zip(signature.inputs, specs, meta["inputs"], strict=True):
            info.shape = (None, *spec.shape.as_list()[1:])
            entry["shape"] = list(info.shape)
    return fn, specs


def export(
    model: Any, path: str, fmt: str, signature: Signature, meta: dict, options: dict
) -> None:
    """Trace the network and write it as ``fmt`` (tf_saved_model, litert or onnx) at ``path``."""
    if fmt == "onnx":
        _export_onnx(model, path, signature, meta, options)
    elif fmt == "tf_saved_model":
        _write_saved_model(model, path, signature, meta)
    else:
        _export_litert(model, path, signature, meta, options)


def _write_saved_model(model: Any, path: str, signature: Signature, meta: dict) -> None:
    # Keras's ExportArchive tracks the variables so that LiteRT's converter can read them
    fn, specs = _traced(model, signature, meta, as_dict=True)
    archive = keras.export.ExportArchive()
    archive.track(model.net)
    archive.add_endpoint("serve", fn.python_function, input_signature=specs)
    archive.write_out(path, verbose=False)
    os.makedirs(os.path.join(path, "assets.extra"), exist_ok=True)
    with open(os.path.join(path, "assets.extra", META_FILE), "w", encoding="utf-8") as f:
        json.dump(meta, f)


def _export_litert(model: Any, path: str, signature: Signature, meta: dict, options: dict) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        _write_saved_model(model, tmp, signature, meta)
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp, signature_keys=["serve"])
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.TFLITE_BUILTINS,
            tf.lite.OpsSet.SELECT_TF_OPS,
        ]
        converter.experimental_enable_resource_variables = True
        for key, value in options.items():
            setattr(converter, key, value)  # e.g. optimizations=[tf.lite.Optimize.DEFAULT]
        blob = converter.convert()
    with open(path, "wb") as f:
        f.write(blob)
    with open(path + ".json", "w", encoding="utf-8") as f:  # .tflite has no free-form metadata
        json.dump(meta, f)


def _export_onnx(model: Any, path: str, signature: Signature, meta: dict, options: dict) -> None:
    tf2onnx = require("tf2onnx")
    onnx = require("onnx")
    fn, specs = _traced(model, signature, meta, as_dict=False)
    opset = int(options.pop("opset", 17))
    try:
        proto, _ = tf2onnx.convert.from_function(fn, input_signature=specs, opset=opset, **options)
    except Exception as err:  # tf2onnx's own errors, named
        raise FitkitValueError(
            f"export(format='onnx'): tf2onnx could not convert the network "
            f"({type(err).__name__}: {str(err)[:500]}). format='tf_saved_model' or 'litert' "
            f"export it without ONNX."
        ) from err
    _rename(proto, [i.name for i in proto.graph.input], [i.name for i in signature.inputs])
    _rename(proto, [o.name for o in proto.graph.output], [o["name"] for o in meta["outputs"]])
    entry = proto.metadata_props.add()
    entry.key, entry.value = "fitkit", json.dumps(meta)
    onnx.save(proto, path)


def _rename(proto: Any, old: list[str], new: list[str]) -> None:
    """Give the graph's inputs / outputs fitkit's names (tf2onnx adds ':0' and 'Identity')."""
    mapping = {o: n for o, n in zip(old, new, strict=True) if o != n}
    if not mapping:
        return
    graph = proto.graph
    for value in [*graph.input, *graph.output]:
        value.name = mapping.get(value.name, value.name)
    for node in graph.node:
        node.input[:] = [mapping.get(n, n) for n in node.input]
        node.output[:] = [mapping.get(n, n) for n in node.output]


def _keras_loss_arg(loss: Any) -> Any:
    if isinstance(loss, dict):
        return {k: _keras_loss_arg(v) for k, v in loss.items()}
    if isinstance(loss, (list, tuple)):
        return [_keras_loss_arg(v) for v in loss]
    if isinstance(loss, KerasIdentifier):
        return keras.losses.get(loss.as_keras())
    return keras_loss(loss)


def save(model: Any, path: str) -> None:
    """A .keras archive that keras.models.load_model opens compiled, optimizer state included."""
    net = model.net
    if not isinstance(net, keras.Model):
        raise FitkitTypeError(
            f"model.save writes a .keras archive, which needs a keras.Model; the network is a "
            f"{type(net).__name__}. Use model.export(path, format='tf_saved_model') instead."
        )
    if not path.endswith(".keras"):
        raise FitkitValueError(
            f"model.save writes a Keras archive: the path must end in '.keras' (got {path!r}); "
            f"for a SavedModel use model.export(path, format='tf_saved_model')."
        )
    adapter = model.runtime.adapter
    if adapter.optimizer is not None and adapter.loss_fn is not None:
        # Keras saves a compile config and optimizer variables only for a model it compiled:
        # compile it with fitkit's own optimizer object (its state is kept, not rebuilt)
        net.compile(optimizer=adapter.optimizer, loss=_keras_loss_arg(adapter.loss_fn))
    net.save(path)
