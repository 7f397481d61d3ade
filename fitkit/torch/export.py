"""torch's side of ``Model.export``: the network behind flat positional tensors, traced and
written as torch.export (.pt2), ONNX or TorchScript with fitkit's metadata inside; ``save``
refuses. Signatures and the check against predict are fitkit/export.py's.
"""

from __future__ import annotations

import json
import logging
import warnings
from typing import Any

import torch

from ..custom_steps import CustomSteps
from ..errors import FitkitTypeError, FitkitValueError
from ..export import Signature, flatten, require, unflatten
from .adapter import call_net

META_FILE = "fitkit.json"  # the metadata's name inside .pt2 / TorchScript archives


def to_numpy(value: Any) -> Any:
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value


def declared_inputs(net: Any) -> None:
    """torch modules declare no input shapes (TensorFlow's twin reads Keras's Inputs)."""
    return None


class _FlatNet(torch.nn.Module):
    """The network (or a class-style ``predict_step``) taking and returning flat tensors."""

    def __init__(self, model: Any, signature: Signature, out_structure: str) -> None:
        super().__init__()
        self.net = model.net
        self._model = model if type(model).predict_step is not CustomSteps.predict_step else None
        self._structure = signature.structure
        self._names = [i.name for i in signature.inputs]
        self._out_structure = out_structure

    def forward(self, *flat: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = unflatten(self._structure, self._names, list(flat))
        if self._model is not None:
            y = self._model.predict_step((x, None))
        else:
            y = call_net(self.net, x)
        if hasattr(y, "to_tuple") and not isinstance(y, dict):
            y = dict(y)  # a Hugging Face ModelOutput: its fields by name
        return tuple(flatten(y, "output")[2])


def _dynamic_shapes(signature: Signature) -> tuple:
    batch = torch.export.Dim("batch")
    shapes = []
    for info in signature.inputs:
        dims: dict[int, Any] = {0: batch}
        for axis, size in enumerate(info.shape[1:], start=1):
            if size is None:
                dims[axis] = torch.export.Dim.AUTO  # specialised where the net needs a size
        shapes.append(dims)
    return (tuple(shapes),)  # one entry: _FlatNet.forward takes *flat


def _example(signature: Signature, device: torch.device) -> tuple[torch.Tensor, ...]:
    return tuple(torch.as_tensor(a, device=device) for a in signature.example)


def export(
    model: Any, path: str, fmt: str, signature: Signature, meta: dict, options: dict
) -> None:
    """Trace the network and write it as ``fmt`` (torch, onnx or torchscript) at ``path``."""
    net = model.net
    device = next((p.device for p in net.parameters()), torch.device("cpu"))
    flat = _FlatNet(model, signature, meta["output_structure"])
    args = _example(signature, device)
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            if fmt == "torch":
                _export_program(flat, args, signature, path, meta, options)
            elif fmt == "torchscript":
                traced = torch.jit.trace(flat, args, **options)
                torch.jit.save(traced, path, _extra_files={META_FILE: json.dumps(meta)})
            else:
                _export_onnx(flat, args, signature, path, meta, options)
    finally:
        net.train(was_training)


def _export_program(
    flat: _FlatNet, args: tuple, signature: Signature, path: str, meta: dict, options: dict
) -> None:
    try:
        program = torch.export.export(
            flat, args, dynamic_shapes=_dynamic_shapes(signature), **options
        )
    except Exception as err:  # torch.export's many error types, explained
        raise FitkitValueError(
            f"export(format='torch'): torch.export could not trace the network with a free "
            f"batch dimension ({type(err).__name__}: {str(err)[:800]}). format='torchscript' "
            f"or 'onnx' may still work."
        ) from err
    _fixed_dims(meta, [_program_shape(program, name) for name in _user_inputs(program)])
    torch.export.save(program, path, extra_files={META_FILE: json.dumps(meta)})


def _user_inputs(program: Any) -> list[str]:
    return list(program.graph_signature.user_inputs)


def _program_shape(program: Any, name: str) -> list[Any]:
    node = next(n for n in program.graph.nodes if n.op == "placeholder" and n.name == name)
    # a specialised size may still be a SymInt: it prints as its number
    return [int(str(d)) if str(d).isdigit() else None for d in node.meta["val"].shape]


def _fixed_dims(meta: dict, shapes: list[list[Any]]) -> None:
    """Where the traced network needed a size (a free length it specialised), the metadata
    says that size, so that callers are told before the runtime fails."""
    if len(shapes) != len(meta["inputs"]):
        return
    for entry, shape in zip(meta["inputs"], shapes, strict=True):
        if len(shape) == len(entry["shape"]):
            entry["shape"] = [None, *shape[1:]]  # the batch stays free in every case


def _specialise(flat: _FlatNet, args: tuple, signature: Signature, meta: dict) -> None:
    """Free lengths the network needs fixed (a flatten before a Linear), found by a trace:
    the ONNX exporter would keep them as symbols that fail at run time."""
    if all(d is not None for i in signature.inputs for d in i.shape[1:]):
        return
    try:
        program = torch.export.export(flat, args, dynamic_shapes=_dynamic_shapes(signature))
    except Exception:  # noqa: BLE001 - the exporter below reports what fails
        return
    _fixed_dims(meta, [_program_shape(program, name) for name in _user_inputs(program)])
    for info, entry in zip(signature.inputs, meta["inputs"], strict=True):
        info.shape = tuple(entry["shape"])


def _export_onnx(
    flat: _FlatNet, args: tuple, signature: Signature, path: str, meta: dict, options: dict
) -> None:
    onnx = require("onnx")
    require("onnxscript")
    options.setdefault("dynamo", True)
    options.setdefault("verbose", False)
    kwargs: dict[str, Any] = {
        "input_names": [i.name for i in signature.inputs],
        "output_names": [o["name"] for o in meta["outputs"]],
    }
    if options["dynamo"]:
        _specialise(flat, args, signature, meta)
        kwargs["dynamic_shapes"] = _dynamic_shapes(signature)
    else:
        kwargs["dynamic_axes"] = {i.name: [0] for i in signature.inputs}
    # torch's exporter logs a line per torchvision operator it cannot register when
    # torchvision is absent: noise for every network that uses none of them
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's deprecation and progress notes
            torch.onnx.export(flat, args, path, **kwargs, **options)
    finally:
        registration.setLevel(level)
    proto = onnx.load(path)
    for value, entry in zip(proto.graph.input, meta["inputs"], strict=True):
        for dim, size in zip(value.type.tensor_type.shape.dim, entry["shape"], strict=True):
            if size is not None:
                dim.dim_value = size  # not a symbol to other ONNX tools either
    entry = proto.metadata_props.add()
    entry.key, entry.value = "fitkit", json.dumps(meta)
    onnx.save(proto, path)


def save(model: Any, path: str) -> None:
    raise FitkitTypeError(
        "model.save writes a whole-model file on TensorFlow (.keras); torch has no such format "
        "that runs without the network's code. Use model.export(path, format='torch' | 'onnx' "
        "| 'torchscript') for inference, model.save_checkpoint(path) to resume training, or "
        "model.save_weights(path) for the weights."
    )
