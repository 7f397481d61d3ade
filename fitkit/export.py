"""``Model.export`` and ``Model.save``: argument checks, the input signature (from the data the
model has seen, ``example=`` or ``input_signature=``) and the check of a written artifact against
``model.predict``. Tracing and writing are each backend's ``export.py``; running is exported.py.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ._version import __version__
from .backend import backend_part
from .display import summary_shapes
from .errors import FitkitError, FitkitTypeError, FitkitValueError

if TYPE_CHECKING:
    from .model import Model

FORMATS = {
    "torch": ("torch", "onnx", "torchscript"),
    "tensorflow": ("tf_saved_model", "litert", "onnx"),
}
EXPORT_EXTRA = "pip install 'fitkit[export]'"
EXAMPLE_ROWS = 8  # rows of seen data an export traces and checks with
_SEQ_LEN = 5  # a free sequence dimension's length in a batch made from input_signature


class MissingExtraError(FitkitError, ImportError):
    """An optional package that export or serve needs is not installed."""


def require(module: str, extra: str = "export") -> Any:
    """Import an optional package, or raise an error naming the extra that installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MissingExtraError(
            f"{module} is needed here but is not installed ({err}). Install it with: "
            f"pip install 'fitkit[{extra}]'"
        ) from None


@dataclass
class TensorInfo:
    """One named input or output: its shape (None where free) and numpy dtype name."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str

    def as_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TensorInfo:
        return cls(str(d["name"]), tuple(d["shape"]), str(d["dtype"]))


def flatten(value: Any, prefix: str) -> tuple[str, list[str], list[Any]]:
    """(structure, names, leaves) of an array, a tuple, a list or a dict of arrays."""
    if isinstance(value, Mapping):
        return "dict", [str(k) for k in value], list(value.values())
    if isinstance(value, (tuple, list)):
        kind = "list" if isinstance(value, list) else "tuple"
        return kind, [f"{prefix}_{i}" for i in range(len(value))], list(value)
    return "single", [prefix], [value]


def unflatten(structure: str, names: Sequence[str], leaves: Sequence[Any]) -> Any:
    """The inverse of ``flatten``."""
    if structure == "dict":
        return dict(zip(names, leaves, strict=True))
    if structure == "tuple":
        return tuple(leaves)
    if structure == "list":
        return list(leaves)
    return leaves[0]


@dataclass
class Signature:
    """What an export traces with: the inputs' structure, names, free shapes and a batch."""

    structure: str
    inputs: list[TensorInfo]
    example: list[np.ndarray]

    def example_structure(self, rows: int | None = None) -> Any:
        leaves = self.example if rows is None else [a[:rows] for a in self.example]
        return unflatten(self.structure, [i.name for i in self.inputs], leaves)


def _is_shape(value: Any) -> bool:
    return isinstance(value, (tuple, list)) and all(
        d is None or isinstance(d, (int, np.integer)) for d in value
    )


def _spec_leaf(spec: Any) -> tuple[tuple[int | None, ...], str]:
    """(shape, dtype) of one input_signature entry: a shape, or an object with shape and dtype."""
    if _is_shape(spec):
        return tuple(None if d is None else int(d) for d in spec), "float32"
    shape = getattr(spec, "shape", None)
    if shape is None:
        raise FitkitTypeError(
            f"input_signature: each input is a shape with the batch dimension first, such as "
            f"(None, 4), or a spec with .shape and .dtype (tf.TensorSpec, keras.InputSpec); got "
            f"{spec!r}."
        )
    dims = tuple(None if d is None else int(d) for d in tuple(shape))
    dtype = getattr(spec, "dtype", None) or "float32"
    return dims, np.dtype(getattr(dtype, "as_numpy_dtype", dtype)).name


def _leaves_of_signature(signature: Any) -> tuple[str, list[str], list[Any]]:
    if _is_shape(signature) or hasattr(signature, "shape"):
        return "single", ["input"], [signature]
    if isinstance(signature, (tuple, list)) and len(signature) == 1 and not _is_shape(signature):
        return "single", ["input"], [signature[0]]  # Keras writes [spec] for one input
    return flatten(signature, "input")


def _with_batch(input_shape: Any) -> Any:
    """summary's ``input_shape`` (per sample, read as summary reads it) as a signature with a
    free batch dimension."""
    shapes = summary_shapes(input_shape)
    if isinstance(shapes, dict):
        return {k: (None, *shape) for k, shape in shapes.items()}
    if isinstance(shapes, list):
        return [(None, *shape) for shape in shapes]
    return (None, *shapes)


def signature_from(model: Model, example: Any, input_signature: Any) -> Signature:
    """The inputs to trace with: ``example``, else ``input_signature``, else seen data (a
    batch of fit / validate / predict, else what ``summary`` was given)."""
    adapter = model.runtime.adapter
    part = backend_part(adapter, "export")
    if example is not None and input_signature is not None:
        raise FitkitValueError("export: give example= or input_signature=, not both.")
    summarized = model.runtime.summary_inputs
    if (
        example is None
        and input_signature is None
        and adapter.example_inputs is None
        and summarized
    ):
        input_shape, input_data = summarized
        if input_data is not None:
            example = input_data
        else:
            input_signature = _with_batch(input_shape)
    if example is None and input_signature is None and adapter.example_inputs is None:
        input_signature = part.declared_inputs(model.net)  # a Keras model's own Inputs
    if input_signature is not None:
        structure, names, specs = _leaves_of_signature(input_signature)
        infos, arrays = [], []
        rng = np.random.default_rng(0)
        for name, spec in zip(names, specs, strict=True):
            shape, dtype = _spec_leaf(spec)
            if not shape:
                raise FitkitValueError(f"input_signature: input {name!r} needs a batch dimension.")
            infos.append(TensorInfo(name, (None, *shape[1:]), dtype))
            concrete = [EXAMPLE_ROWS] + [_SEQ_LEN if d is None else d for d in shape[1:]]
            if np.issubdtype(np.dtype(dtype), np.integer):
                arrays.append(rng.integers(0, 2, size=concrete).astype(dtype))
            else:
                arrays.append(rng.standard_normal(concrete).astype(dtype))
        return Signature(structure, infos, arrays)
    seen = example if example is not None else adapter.example_inputs
    if seen is None:
        raise FitkitValueError(
            "export needs the inputs' shapes: call fit, predict or validate first, or pass "
            "example=<a batch of inputs> or input_signature=<shapes such as [(None, 4)]>."
        )
    structure, names, leaves = flatten(seen, "input")
    arrays = [np.asarray(part.to_numpy(leaf))[:EXAMPLE_ROWS] for leaf in leaves]
    if any(a.ndim == 0 for a in arrays):
        raise FitkitValueError("export: every input needs a batch dimension (got a scalar).")
    if len({len(a) for a in arrays}) != 1:
        raise FitkitValueError(
            "export: the inputs' batch dimensions differ: "
            + ", ".join(f"{n} {a.shape}" for n, a in zip(names, arrays, strict=True))
        )
    infos = [
        # integer inputs of rank 2+ are token ids: their sequence length stays free
        TensorInfo(
            n, (None, *((None,) if _is_tokens(a) else a.shape[1:2]), *a.shape[2:]), a.dtype.name
        )
        for n, a in zip(names, arrays, strict=True)
    ]
    return Signature(structure, infos, arrays)


def _is_tokens(a: np.ndarray) -> bool:
    return a.ndim >= 2 and np.issubdtype(a.dtype, np.integer)


def _check_format(backend: str, fmt: str) -> str:
    fmt = str(fmt).strip().lower()
    if fmt == "tflite":
        fmt = "litert"
    if fmt not in FORMATS[backend]:
        other = "tensorflow" if backend == "torch" else "torch"
        hint = (
            f" ({fmt!r} is a {other} format: a {backend} network exports as one of these)"
            if fmt in FORMATS[other]
            else ""
        )
        raise FitkitValueError(
            f"export: unknown format {fmt!r} for a {backend} network{hint}. Valid formats: "
            + ", ".join(repr(f) for f in FORMATS[backend])
        )
    return fmt


def export(
    model: Model,
    path: str | os.PathLike,
    format: str = "onnx",
    *,
    example: Any = None,
    input_signature: Any = None,
    verify: bool = True,
    atol: float = 1e-4,
    rtol: float = 1e-3,
    **options: Any,
) -> str:
    """Write ``model`` as an artifact of ``format`` at ``path``, then check it against predict."""
    fmt = _check_format(model.backend, format)
    path = os.fspath(path)
    signature = signature_from(model, example, input_signature)
    reference = model.predict(signature.example_structure(), batch_size=len(signature.example[0]))
    out_structure, out_names, out_leaves = flatten(reference, "output")
    outputs = [
        TensorInfo(n, (None, *np.shape(a)[1:]), np.asarray(a).dtype.name)
        for n, a in zip(out_names, out_leaves, strict=True)
    ]
    meta = {
        "fitkit": __version__,
        "format": fmt,
        "backend": model.backend,
        "input_structure": signature.structure,
        "inputs": [i.as_dict() for i in signature.inputs],
        "output_structure": out_structure,
        "outputs": [o.as_dict() for o in outputs],
    }
    part = backend_part(model.runtime.adapter, "export")
    part.export(model, path, fmt, signature, meta, options)
    if verify:
        check_artifact(model, path, signature, reference, atol=atol, rtol=rtol)
    return path


def check_artifact(
    model: Model, path: str, signature: Signature, reference: Any, *, atol: float, rtol: float
) -> None:
    """Run the written artifact (as load_exported would) and compare it with predict, on the
    traced batch and on a smaller one (the batch dimension must stay free)."""
    from .exported import load_exported

    artifact = load_exported(path)
    rows = len(signature.example[0])
    _compare(artifact.predict(signature.example_structure()), reference, atol, rtol, rows)
    if rows > 1:
        small = rows // 2 + 1 if rows > 2 else 1
        try:
            got = artifact.predict(signature.example_structure(small))
        except Exception as err:  # the runtime's own error, named below
            raise FitkitValueError(
                f"export: the artifact at {path} runs on a batch of {rows} but not of {small}: "
                f"its batch dimension is fixed ({type(err).__name__}: {err})"
            ) from err
        expected = model.predict(signature.example_structure(small), batch_size=small)
        _compare(got, expected, atol, rtol, small)


def _compare(got: Any, expected: Any, atol: float, rtol: float, rows: int) -> None:
    _, names, want = flatten(expected, "output")
    _, _, have = flatten(got, "output")
    for name, w, h in zip(names, want, have, strict=True):
        w, h = np.asarray(w), np.asarray(h)
        if w.shape != h.shape:
            raise FitkitValueError(
                f"export check: output {name!r} has shape {h.shape} in the artifact but "
                f"{w.shape} from model.predict (batch of {rows})."
            )
        if w.size and not np.allclose(h, w, atol=atol, rtol=rtol, equal_nan=True):
            diff = float(np.nanmax(np.abs(h.astype(np.float64) - w.astype(np.float64))))
            raise FitkitValueError(
                f"export check: output {name!r} of the artifact differs from model.predict by "
                f"up to {diff:.3g} (atol={atol:g}, rtol={rtol:g}, batch of {rows}). Pass "
                f"atol=/rtol= to accept it, or verify=False to skip the check."
            )


def save(model: Model, path: str | os.PathLike) -> str:
    """``model.save``: the backend's whole-model file (TensorFlow: a compiled .keras archive)."""
    path = os.fspath(path)
    backend_part(model.runtime.adapter, "export").save(model, path)
    return path
