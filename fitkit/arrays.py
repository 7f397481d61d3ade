"""Host-side checks of user data: nested structures, pandas, lengths, validation split.

Owns what is the same on every backend (structure walking, row counts, pandas columns,
the errors for mismatched or empty data). Tensors, dtypes and devices belong to the adapters.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any

from .errors import FitkitTypeError, FitkitValueError
from .mapped import is_memory_map, release_pages


def _module(obj: Any) -> str:
    return type(obj).__module__ or ""


def is_pandas(obj: Any) -> bool:
    return _module(obj).startswith("pandas")


def is_array_like(obj: Any) -> bool:
    """True for one in-memory array: numpy, pandas, a torch or tf tensor."""
    if (_module(obj) == "numpy" and type(obj).__name__ in ("ndarray", "memmap")) or is_pandas(obj):
        return True
    mod = _module(obj)
    return (
        hasattr(obj, "shape")
        and hasattr(obj, "dtype")
        and (mod.startswith("torch") or mod.startswith("tensorflow"))
    )


def is_structure_of_arrays(obj: Any) -> bool:
    """An array, or a dict / tuple / list whose leaves are arrays (multi-input data)."""
    if is_array_like(obj):
        return True
    if isinstance(obj, dict):
        return bool(obj) and all(is_structure_of_arrays(v) for v in obj.values())
    if isinstance(obj, (tuple, list)):
        return bool(obj) and all(is_array_like(v) for v in obj)
    return False


def map_structure(fn: Callable[[Any], Any], obj: Any) -> Any:
    """Apply ``fn`` to every leaf of a dict / tuple / list structure."""
    if isinstance(obj, dict):
        return {k: map_structure(fn, v) for k, v in obj.items()}
    if isinstance(obj, (tuple, list)):
        return type(obj)(map_structure(fn, v) for v in obj)
    return fn(obj)


def map_optional(fn: Callable[[Any], Any], obj: Any) -> Any:
    """``map_structure`` that keeps a missing part (None) missing."""
    return None if obj is None else map_structure(fn, obj)


def map_shapes(input_shape: Any, make: Callable[[tuple], Any]) -> Any:
    """``make(shape)`` for one shape tuple, or for each in a list / dict of shapes."""
    if isinstance(input_shape, dict):
        return {k: map_shapes(v, make) for k, v in input_shape.items()}
    if isinstance(input_shape, list) or (
        isinstance(input_shape, tuple) and input_shape and isinstance(input_shape[0], (tuple, list))
    ):
        return tuple(map_shapes(s, make) for s in input_shape)
    return make(tuple(input_shape))


def leaves(obj: Any) -> list:
    if isinstance(obj, dict):
        return [leaf for v in obj.values() for leaf in leaves(v)]
    if isinstance(obj, (tuple, list)):
        return [leaf for v in obj for leaf in leaves(v)]
    return [obj]


def named_leaves(obj: Any, what: str) -> list[tuple[str, Any]]:
    """``(label, leaf)`` pairs, labelled as the user wrote them: x, x['a'], y[1]."""
    if isinstance(obj, dict):
        return [pair for k, v in obj.items() for pair in named_leaves(v, f"{what}[{k!r}]")]
    if isinstance(obj, (tuple, list)):
        return [pair for i, v in enumerate(obj) for pair in named_leaves(v, f"{what}[{i}]")]
    return [(what, obj)]


def pandas_to_numpy(obj: Any, what: str) -> Any:
    """A DataFrame / Series as numpy, column by column; a column that is not a number is an
    error naming it. bool and nullable integer columns become numbers; integers stay int64."""
    import numpy as np

    if not hasattr(obj, "columns"):
        return _column(obj, what)
    if (
        obj.shape[1]
        and all(np.issubdtype(dt, np.floating) for dt in obj.dtypes if isinstance(dt, np.dtype))
        and len(set(obj.dtypes)) == 1
    ):
        array = obj.to_numpy()  # one float dtype: no per-column copies
        check_finite(array, what, columns=list(obj.columns))
        return array
    cols = [_column(obj.iloc[:, i], f"{what}[{name!r}]") for i, name in enumerate(obj.columns)]
    if not cols:
        raise FitkitValueError(f"{what} is a DataFrame with no columns.")
    kinds = {c.dtype.kind for c in cols}
    if "U" in kinds and kinds != {"U"}:
        text = [
            f"{what}[{name!r}]"
            for name, c in zip(obj.columns, cols, strict=True)
            if c.dtype.kind == "U"
        ]
        raise FitkitValueError(
            f"{', '.join(text)} {'has' if len(text) == 1 else 'have'} dtype str, not numbers, "
            f"beside number columns: encode the text first (.astype('category').cat.codes, "
            f"or pd.get_dummies), or pass it as its own input (a dict {{name: column}}) to a "
            f"model that vectorizes it (TextVectorization)."
        )
    dtype = np.int64 if kinds <= {"i", "u", "b"} else np.result_type(*cols, np.float32)
    return np.column_stack([c.astype(dtype, copy=False) for c in cols])


def _all_strings(col: Any) -> bool:
    """A text column: pandas' string dtype, or objects that are all strings (no missing)."""
    if str(col.dtype) not in ("object", "str", "string") or col.isna().any():
        return False
    return bool(len(col)) and all(isinstance(v, str) for v in col.to_numpy(dtype=object))


def _column(col: Any, label: str) -> Any:
    """One pandas column as a numeric numpy array (checked for missing and non-finite)."""
    import numpy as np

    dtype = col.dtype
    if isinstance(dtype, np.dtype) and (dtype.kind in "biuf"):
        array = col.to_numpy()
    elif (
        getattr(dtype, "numpy_dtype", None) is not None
        and np.dtype(dtype.numpy_dtype).kind in "biuf"
    ):  # nullable Int64, Float32, boolean
        missing = np.flatnonzero(col.isna().to_numpy())
        if missing.size:
            raise FitkitValueError(
                f"{label} has missing values (the first at row {int(missing[0])}); fill or "
                f"drop them first (df.fillna(...) / df.dropna())."
            )
        array = col.to_numpy(dtype=dtype.numpy_dtype)
    elif _all_strings(col):  # text for a model that vectorizes it itself (TextVectorization)
        return col.to_numpy(dtype=object).astype(str)
    else:
        fix = (
            ".cat.codes"
            if str(dtype) == "category"
            else ".astype('category').cat.codes, or pd.get_dummies"
        )
        raise FitkitValueError(
            f"{label} has dtype {dtype}, not numbers; encode it first (e.g. {fix})."
        )
    if array.dtype.kind in "iu" and array.dtype.itemsize < 8:
        array = array.astype(np.int64)  # e.g. int8 category codes: embeddings need int64 ids
    check_finite(array, label)
    return array


def label_stats(labels: Any) -> list:
    """[min, max, the first non-whole label or NaN] of a numpy array of labels."""
    import numpy as np

    values = np.asarray(labels).reshape(-1)
    odd = float("nan")
    if values.dtype.kind == "f":
        fractional = values[values != np.round(values)]
        odd = float(fractional[0]) if fractional.size else odd
    return [float(values.min()), float(values.max()), odd]


def check_finite(array: Any, what: str, columns: list | None = None) -> None:
    """NaN or inf in a float array is an error naming the first bad row (and column)."""
    import numpy as np

    if getattr(array, "dtype", None) is None or array.dtype.kind != "f" or not array.size:
        return
    if array.ndim == 0:
        array = array.reshape(1)
    step = max(1, (1 << 22) // max(1, int(np.prod(array.shape[1:]))))  # ~4M values a pass
    for start in range(0, len(array), step):
        finite = np.isfinite(array[start : start + step])
        if is_memory_map(array):
            release_pages(array)  # a file larger than memory is checked without holding it
        if finite.all():
            continue
        rows = finite.reshape(len(finite), -1).all(1)
        row = int(np.argmin(rows))
        col = int(np.argmin(finite[row].reshape(-1)))
        value = np.asarray(array[start + row]).reshape(-1)[col]
        where = f"{what}[{columns[col]!r}]" if columns else what
        raise FitkitValueError(
            f"{where} holds {value} at row {start + row} (its first non-finite value). Fill or "
            f"drop missing values (np.nan_to_num, df.fillna, df.dropna) before training."
        )


def host_leaf(obj: Any, what: str) -> Any:
    """pandas and python lists become numpy (checked); tensors are left for the adapter."""
    if is_pandas(obj):
        return pandas_to_numpy(obj, what)
    if isinstance(obj, (list, tuple)):
        obj = list_to_numpy(obj, what)
    if type(obj).__module__ == "numpy":
        check_finite(obj, what)
    return obj


def is_number_list(obj: Any) -> bool:
    """A list of numbers, or of equal-length lists of numbers: one array, not batches."""
    if not isinstance(obj, list):
        return False
    while isinstance(obj, (list, tuple)) and obj:
        obj = obj[0]
    return isinstance(obj, (numbers.Number, bool)) or (
        type(obj).__module__ == "numpy" and getattr(obj, "ndim", 1) == 0
    )


def list_to_numpy(obj: list | tuple, what: str) -> Any:
    import numpy as np

    try:
        array = np.asarray(obj)
    except ValueError as err:
        raise FitkitValueError(
            f"{what} is a ragged list (its rows have different lengths); "
            f"pad them to one length first. ({err})"
        ) from None
    if array.dtype == object:
        raise FitkitValueError(
            f"{what} is a ragged or mixed list; give rows of one length holding numbers only."
        )
    if array.dtype.kind == "f" and array.dtype.itemsize == 8:
        array = array.astype(np.float32)
    return array


def num_rows(obj: Any, what: str) -> int:
    """The common first dimension of every leaf; a mismatch names each length."""
    sizes = {}
    for i, leaf in enumerate(leaves(obj)):
        shape = getattr(leaf, "shape", None)
        if shape is None or len(shape) == 0:
            raise FitkitValueError(
                f"{what} has no batch dimension (a scalar): data must hold one row per sample. "
                f"For a single sample add one (x[None], np.array([label]))."
            )
        sizes[i] = int(shape[0])
    if len(set(sizes.values())) > 1:
        raise FitkitValueError(
            f"The inputs in {what} have different lengths {sorted(set(sizes.values()))}; every "
            f"input must have one row per sample."
        )
    return next(iter(sizes.values()))


def to_host(obj: Any, what: str) -> Any:
    """Every leaf of a structure through ``host_leaf``, labelled for error messages."""
    if is_pandas(obj) or is_number_list(obj):
        return host_leaf(obj, what)
    if isinstance(obj, dict):
        return {k: to_host(v, f"{what}[{k!r}]") for k, v in obj.items()}
    if isinstance(obj, (tuple, list)):
        return type(obj)(to_host(v, f"{what}[{i}]") for i, v in enumerate(obj))
    return host_leaf(obj, what)


def prepare_xy(x: Any, y: Any, *, need_y: bool) -> tuple[Any, Any, int]:
    """Check in-memory x / y, convert pandas and lists, return (x, y, n_rows)."""
    if x is None:
        raise FitkitValueError("x is None: pass the training inputs (arrays, tensors, a dataset…).")
    x = to_host(x, "x")
    n = num_rows(x, "x")
    if n == 0:
        raise FitkitValueError("x is empty (0 samples): there is nothing to train on.")
    if y is None:
        if need_y:
            raise FitkitValueError(
                "y is missing: x is an array, so targets must be passed as y "
                "(or pass a dataset / loader that yields (x, y) batches)."
            )
        return x, None, n
    y = to_host(y, "y")
    ny = num_rows(y, "y")
    if (
        ny != n
        and all(len(getattr(leaf, "shape", ())) == 1 for leaf in leaves(x))
        and all(len(getattr(leaf, "shape", ())) <= 1 and ny == 1 for leaf in leaves(y))
    ):
        raise FitkitValueError(
            f"x looks like one sample without a batch dimension (shape ({n},)) and y like its "
            f"one target. Add the batch dimension: x[None] (or x.reshape(1, -1))."
        )
    if ny != n:
        raise FitkitValueError(
            f"x and y have different lengths: x has {n} samples, y has {ny}. "
            f"They must have one row per sample."
        )
    return x, y, n


def to_numpy(value: Any) -> Any:
    """A torch or tf tensor (or anything array-like) as numpy: a host copy where needed."""
    if hasattr(value, "detach"):
        return value.detach().cpu().numpy()
    if hasattr(value, "numpy") and type(value).__module__ != "numpy":
        return value.numpy()
    return value


def prepare_sample_weight(sample_weight: Any, n: int, what: str = "sample_weight") -> Any:
    """One non-negative, finite weight per sample as a float32 (n,) array (or a 1-D tensor)."""
    if sample_weight is None:
        return None
    import numpy as np

    w = host_leaf(sample_weight, what)
    shape = tuple(getattr(w, "shape", ()))
    if shape not in ((n,), (n, 1)):
        raise FitkitValueError(
            f"{what} must hold one weight per sample, shape ({n},); got shape {shape}."
        )
    values = np.asarray(to_numpy(w), dtype=np.float32).reshape(n)  # checked on the host, once
    bad = np.flatnonzero(~np.isfinite(values) | (values < 0))
    if bad.size:
        raise FitkitValueError(
            f"{what} must be finite and >= 0; row {int(bad[0])} holds {values[bad[0]]}."
        )
    return values


def check_class_weight(class_weight: Any) -> dict | None:
    """``{class index: weight}`` with whole-number keys and non-negative weights."""
    if class_weight is None:
        return None
    if not isinstance(class_weight, dict) or not class_weight:
        raise FitkitTypeError(
            "class_weight must be a dict {class index: weight}, e.g. "
            f"{{0: 1.0, 1: 5.0}}; got {class_weight!r}."
        )
    for cls, weight in class_weight.items():
        if not isinstance(cls, numbers.Real) or not float(cls).is_integer() or cls < 0:
            raise FitkitValueError(f"class_weight keys must be class indices 0, 1, …; got {cls!r}.")
        if not (isinstance(weight, numbers.Real) and float(weight) >= 0):
            raise FitkitValueError(f"class_weight[{cls!r}] must be a number >= 0; got {weight!r}.")
    return {int(k): float(v) for k, v in class_weight.items()}


def split_tail(obj: Any, n_keep: int) -> tuple[Any, Any]:
    """Keras's validation_split: the last rows (before any shuffling) become validation."""
    return (map_structure(lambda a: a[:n_keep], obj), map_structure(lambda a: a[n_keep:], obj))


def check_fit_args(
    *,
    epochs: int,
    batch_size: int,
    validation_split: float,
    initial_epoch: int,
    steps_per_epoch: int | None,
    log_step_freq: int | None,
    verbose: int,
    validation_steps: int | None = None,
    validation_freq: Any = 1,
) -> None:
    """Validate fit's scalar arguments before any data is touched."""
    if not isinstance(epochs, int) or epochs < 0:
        raise FitkitValueError(f"epochs must be a whole number >= 0; got {epochs!r}.")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise FitkitValueError(f"batch_size must be a whole number >= 1; got {batch_size!r}.")
    if not (0.0 <= float(validation_split) < 1.0):
        raise FitkitValueError(
            f"validation_split must be in [0, 1) (a fraction of the data); got {validation_split!r}."
        )
    if not isinstance(initial_epoch, int) or initial_epoch < 0:
        raise FitkitValueError(f"initial_epoch must be a whole number >= 0; got {initial_epoch!r}.")
    for name, value in (
        ("steps_per_epoch", steps_per_epoch),
        ("log_step_freq", log_step_freq),
        ("validation_steps", validation_steps),
    ):
        if value is not None and (not isinstance(value, int) or value < 1):
            raise FitkitValueError(f"{name} must be None or a whole number >= 1; got {value!r}.")
    if verbose not in (0, 1, 2):
        raise FitkitValueError(
            f"verbose must be 0 (silent), 1 (bar + table) or 2 (one line "
            f"per epoch); got {verbose!r}."
        )
    freq_ok = (isinstance(validation_freq, int) and validation_freq >= 1) or (
        isinstance(validation_freq, (list, tuple, set, range))
        and all(isinstance(e, int) and e >= 1 for e in validation_freq)
    )
    if not freq_ok:
        raise FitkitValueError(
            f"validation_freq must be a whole number >= 1 (validate every N "
            f"epochs) or a list of 1-based epochs; got {validation_freq!r}."
        )


def check_verbose(verbose: Any, what: str) -> None:
    if verbose not in (0, 1, 2, False, True):
        raise FitkitValueError(
            f"{what}(verbose=...) must be 0 (silent) or 1 (print a summary line); got {verbose!r}."
        )
