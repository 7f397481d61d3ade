"""``fitkit.load_exported``: run any artifact ``Model.export`` wrote (onnxruntime, torch.export,
TorchScript, SavedModel, LiteRT) without the network's class or fitkit's training code.
Imports no framework until a runtime needs it; writing artifacts is export.py's.
"""

from __future__ import annotations

import json
import os
import warnings
import zipfile
from collections.abc import Mapping
from typing import Any

import numpy as np

from .errors import FitkitTypeError, FitkitValueError
from .export import TensorInfo, flatten, require, unflatten

META_FILE = "fitkit.json"


class Runtime:
    """One artifact loaded in its runtime: flat numpy inputs in, flat numpy outputs out."""

    format = ""
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    meta: dict

    def run(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        raise NotImplementedError


class OnnxRuntime(Runtime):
    format = "onnx"

    def __init__(
        self, path: str, *, intra_op_threads: int | None = None, spinning: bool = True
    ) -> None:
        ort = require("onnxruntime")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if intra_op_threads is not None:
            options.intra_op_num_threads = intra_op_threads
        if not spinning:  # threads sleep between runs instead of spinning for a while after
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        raw = self.session.get_modelmeta().custom_metadata_map.get("fitkit")
        self.meta = json.loads(raw) if raw else {}
        self.inputs = [_info(i.name, i.shape, i.type) for i in self.session.get_inputs()]
        self.outputs = [_info(o.name, o.shape, o.type) for o in self.session.get_outputs()]
        self._names = [i.name for i in self.inputs]

    def run(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        return list(self.session.run(None, dict(zip(self._names, arrays, strict=True))))


_ORT_TYPES = {"tensor(float)": "float32", "tensor(double)": "float64", "tensor(int64)": "int64"}
_ORT_TYPES |= {"tensor(int32)": "int32", "tensor(float16)": "float16", "tensor(bool)": "bool"}


def _info(name: str, shape: Any, dtype: str) -> TensorInfo:
    dims = tuple(d if isinstance(d, int) else None for d in shape)
    return TensorInfo(name, dims, _ORT_TYPES.get(dtype, dtype))


class TorchRuntime(Runtime):
    """torch.export (.pt2) or TorchScript: flat tensors in, a tuple out (_FlatNet's shape)."""

    def __init__(self, path: str, fmt: str) -> None:
        torch = require("torch", "torch")
        self.format = fmt
        self._torch = torch
        if fmt == "torch":
            files = {META_FILE: ""}
            program = torch.export.load(path, extra_files=files)
            self.module = program.module()
        else:
            files = {META_FILE: ""}
            self.module = torch.jit.load(path, _extra_files=files, map_location="cpu")
            self.module.eval()
        self.meta = json.loads(files[META_FILE] or "{}")
        self.inputs, self.outputs = _infos_from_meta(self.meta, path)

    def run(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        torch = self._torch
        with torch.no_grad():
            out = self.module(*(torch.from_numpy(np.ascontiguousarray(a)) for a in arrays))
        out = out if isinstance(out, (tuple, list)) else (out,)
        return [o.detach().cpu().numpy() for o in out]


def _infos_from_meta(meta: Mapping, path: str) -> tuple[list[TensorInfo], list[TensorInfo]]:
    if not meta:
        raise FitkitValueError(
            f"{path} has no fitkit metadata: load_exported runs the artifacts model.export "
            f"writes (a .pt2 / TorchScript file needs their input names and structure)."
        )
    return (
        [TensorInfo.from_dict(d) for d in meta["inputs"]],
        [TensorInfo.from_dict(d) for d in meta["outputs"]],
    )


class SavedModelRuntime(Runtime):
    """A SavedModel's ``serve`` (else ``serving_default``) signature, called by input name."""

    format = "tf_saved_model"

    def __init__(self, path: str) -> None:
        tf = require("tensorflow", "tensorflow")
        self._tf = tf
        self._loaded = tf.saved_model.load(path)
        sigs = self._loaded.signatures
        self.fn = sigs["serve"] if "serve" in sigs else sigs["serving_default"]
        meta_path = os.path.join(path, "assets.extra", META_FILE)
        self.meta = {}
        if os.path.exists(meta_path):
            with open(meta_path, encoding="utf-8") as f:
                self.meta = json.load(f)
        if self.meta:
            self.inputs, self.outputs = _infos_from_meta(self.meta, path)
        else:
            specs = self.fn.structured_input_signature[1]
            self.inputs = [
                TensorInfo(n, tuple(s.shape.as_list()), s.dtype.as_numpy_dtype.__name__)
                for n, s in sorted(specs.items())
            ]
            outs = self.fn.structured_outputs
            self.outputs = [
                TensorInfo(n, tuple(s.shape.as_list()), s.dtype.as_numpy_dtype.__name__)
                for n, s in sorted(outs.items())
            ]

    def run(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        feeds = {i.name: self._tf.constant(a) for i, a in zip(self.inputs, arrays, strict=True)}
        out = self.fn(**feeds)
        return [out[o.name].numpy() for o in self.outputs]


class LiteRTRuntime(Runtime):
    """A .tflite file run by TensorFlow's LiteRT interpreter, through its signature runner."""

    format = "litert"

    def __init__(self, path: str) -> None:
        interpreter_cls = _litert_interpreter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tf.lite's notice that ai_edge_litert replaces it
            self.interpreter = interpreter_cls(model_path=path)
        keys = list(self.interpreter.get_signature_list())
        self.key = "serve" if "serve" in keys else keys[0]
        self.runner = self.interpreter.get_signature_runner(self.key)
        meta_path = path + ".json"
        self.meta = {}
        if os.path.exists(meta_path):
            with open(meta_path, encoding="utf-8") as f:
                self.meta = json.load(f)
        details_in = self.runner.get_input_details()
        details_out = self.runner.get_output_details()
        if self.meta:
            self.inputs, self.outputs = _infos_from_meta(self.meta, path)
        else:
            self.inputs = [_lite_info(n, d) for n, d in sorted(details_in.items())]
            self.outputs = [_lite_info(n, d) for n, d in sorted(details_out.items())]

    def run(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        out = self.runner(**{i.name: a for i, a in zip(self.inputs, arrays, strict=True)})
        return [np.array(out[o.name]) for o in self.outputs]


def _lite_info(name: str, detail: Mapping) -> TensorInfo:
    shape = tuple(None if d < 0 else int(d) for d in detail["shape_signature"])
    return TensorInfo(name, shape, np.dtype(detail["dtype"]).name)


def _litert_interpreter() -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter  # type: ignore[import-not-found]

        return Interpreter
    except ImportError:
        return require("tensorflow", "tensorflow").lite.Interpreter


def detect_format(path: str) -> str:
    """The format of an artifact, from its name or (for zips) its contents."""
    if os.path.isdir(path):
        if os.path.exists(os.path.join(path, "saved_model.pb")):
            return "tf_saved_model"
        raise FitkitValueError(f"{path} is a directory but not a SavedModel (no saved_model.pb).")
    if not os.path.exists(path):
        raise FitkitValueError(f"load_exported: {path} does not exist.")
    ext = os.path.splitext(path)[1].lower()
    known = {".onnx": "onnx", ".pt2": "torch", ".tflite": "litert"}
    if ext in known:
        return known[ext]
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
        if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
            return "torchscript"
        return "torch"
    with open(path, "rb") as f:
        head = f.read(8)
    if head[4:8] == b"TFL3":
        return "litert"
    return "onnx"


class ExportedModel:
    """An exported artifact, ready to run: ``predict(x)`` takes what ``model.predict`` took
    (an array, a tuple or a dict of arrays) and returns what it returned."""

    def __init__(self, runtime: Runtime, path: str) -> None:
        self.runtime = runtime
        self.path = path
        meta = runtime.meta
        self.format = runtime.format
        self.inputs = runtime.inputs
        self.outputs = runtime.outputs
        self.input_structure = meta.get(
            "input_structure", "single" if len(self.inputs) == 1 else "dict"
        )
        self.output_structure = meta.get(
            "output_structure", "single" if len(self.outputs) == 1 else "dict"
        )

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self.outputs]

    def metadata(self) -> dict:
        """What the artifact takes and returns: format, names, shapes (None: free), dtypes."""
        return {
            "format": self.format,
            "input_structure": self.input_structure,
            "inputs": [i.as_dict() for i in self.inputs],
            "output_structure": self.output_structure,
            "outputs": [o.as_dict() for o in self.outputs],
        }

    def flat_inputs(self, x: Any) -> list[np.ndarray]:
        """``x`` as one array per input, in the artifact's order, cast to its dtypes."""
        if isinstance(x, Mapping):
            missing = [n for n in self.input_names if n not in x]
            extra = [str(k) for k in x if k not in self.input_names]
            if missing or extra:
                raise FitkitValueError(
                    f"inputs {sorted(map(str, x))} do not match the artifact's inputs "
                    f"{self.input_names}" + (f" (missing {missing})" if missing else "")
                )
            leaves = [x[n] for n in self.input_names]
        elif isinstance(x, (tuple, list)) and (
            self.input_structure in ("tuple", "list") or len(self.inputs) > 1
        ):
            leaves = list(x)  # one entry per input, in order
        else:
            leaves = [x]
        if len(leaves) != len(self.inputs):
            raise FitkitValueError(
                f"the artifact takes {len(self.inputs)} inputs {self.input_names}; got "
                f"{len(leaves)}."
            )
        return [
            np.asarray(leaf, dtype=info.dtype)
            for leaf, info in zip(leaves, self.inputs, strict=True)
        ]

    def run_flat(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        return self.runtime.run(arrays)

    def structure_outputs(self, leaves: list[np.ndarray]) -> Any:
        return unflatten(self.output_structure, self.output_names, leaves)

    def predict(self, x: Any, *, batch_size: int | None = None) -> Any:
        """Outputs for ``x`` in ``model.predict``'s structure; ``batch_size`` runs it in parts."""
        arrays = self.flat_inputs(x)
        rows = len(arrays[0])
        if batch_size is None or rows <= batch_size:
            return self.structure_outputs(self.run_flat(arrays))
        parts = [
            self.run_flat([a[i : i + batch_size] for a in arrays])
            for i in range(0, rows, batch_size)
        ]
        merged = [np.concatenate(p) for p in zip(*parts, strict=True)]
        return self.structure_outputs(merged)

    def __repr__(self) -> str:
        return f"ExportedModel({self.path!r}, format={self.format!r}, inputs={self.input_names})"


def load_exported(
    path: str | os.PathLike,
    format: str | None = None,
    *,
    intra_op_threads: int | None = None,
    spinning: bool = True,
) -> ExportedModel:
    """Load an artifact ``Model.export`` wrote; ``.predict(x)`` runs it.

    ``intra_op_threads`` / ``spinning``: ONNX Runtime's session options (threads of one
    operator; whether they spin after a run), for an ONNX artifact only.

    >>> path = model.export("model.onnx", example=x[:4])   # fitkit.Model.export
    >>> fitkit.load_exported(path).predict(x[:2]).shape
    (2, 10)
    """
    path = os.fspath(path)
    fmt = format or detect_format(path)
    runtime: Runtime
    if fmt != "onnx" and (intra_op_threads is not None or not spinning):
        raise FitkitTypeError(
            f"load_exported: intra_op_threads and spinning are ONNX Runtime's options; "
            f"{path!r} is a {fmt!r} artifact. Leave them out for it."
        )
    if fmt == "onnx":
        runtime = OnnxRuntime(path, intra_op_threads=intra_op_threads, spinning=spinning)
    elif fmt in ("torch", "torchscript"):
        runtime = TorchRuntime(path, fmt)
    elif fmt == "tf_saved_model":
        runtime = SavedModelRuntime(path)
    elif fmt in ("litert", "tflite"):
        runtime = LiteRTRuntime(path)
    else:
        raise FitkitTypeError(
            f"load_exported: unknown format {fmt!r}; one of 'onnx', 'torch', 'torchscript', "
            f"'tf_saved_model', 'litert'."
        )
    return ExportedModel(runtime, path)


__all__ = ["ExportedModel", "flatten", "load_exported"]
