"""Host-side checks of user data: nested structures, pandas, lengths, validation split.

Owns what is the same on every backend (structure walking, row counts, pandas columns,
the errors for mismatched or empty data). Tensors, dtypes and devices belong to the adapters.
"""
from __future__ import annotations

import numbers
from typing import Any, Callable

from .errors import FitkitTypeError, FitkitValueError


def _module(obj: Any) -> str:
    return type(obj).__module__ or ""


def is_pandas(obj: Any) -> bool:
    return _module(obj).startswith("pandas")


def is_array_like(obj: Any) -> bool:
    """True for one in-memory array: numpy, pandas, a torch or tf tensor."""
    if (_module(obj) == "numpy" and type(obj).__name__ == "ndarray") or is_pandas(obj):
        return True
    mod = _module(obj)
    return hasattr(obj, "shape") and hasattr(obj, "dtype") and (
        mod.startswith("torch") or mod.startswith("tensorflow")
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
    if isinstance(input_shape, list) or (isinstance(input_shape, tuple) and input_shape
                                         and isinstance(input_shape[0], (tuple, list))):
        return tuple(map_shapes(s, make) for s in input_shape)
    return make(tuple(input_shape))


def leaves(obj: Any) -> list:
    if isinstance(obj, dict):
        return [leaf for v in obj.values() for leaf in leaves(v)]
    if isinstance(obj, (tuple, list)):
        return [leaf for v in obj for leaf in leaves(v)]
    return [obj]


def pandas_to_numpy(obj: Any, what: str) -> Any:
    """A DataFrame / Series as a numpy array; non-numeric columns are a clear error."""
    if hasattr(obj, "columns"):
        bad = [str(c) for c, dt in obj.dtypes.items() if not _numeric_dtype(dt)]
        if bad:
            raise FitkitValueError(
                f"{what} has non-numeric columns {bad}. Encode them first "
                f"(e.g. pd.get_dummies(df, columns={bad}) or df[col].astype('category').cat.codes)."
            )
    elif not _numeric_dtype(obj.dtype):
        raise FitkitValueError(
            f"{what} (a pandas Series of dtype {obj.dtype}) is not numeric; encode it first."
        )
    return obj.to_numpy()


def _numeric_dtype(dtype: Any) -> bool:
    import numpy as np

    try:
        return np.issubdtype(np.dtype(dtype), np.number) or np.dtype(dtype) == np.bool_
    except TypeError:  # pandas extension dtypes (category, string…)
        return False


def host_leaf(obj: Any, what: str) -> Any:
    """pandas and python lists become numpy; tensors are left for the adapter."""
    if is_pandas(obj):
        return pandas_to_numpy(obj, what)
    if isinstance(obj, (list, tuple)):
        import numpy as np

        return np.asarray(obj)
    return obj


def num_rows(obj: Any, what: str) -> int:
    """The common first dimension of every leaf; a mismatch names each length."""
    sizes = {}
    for i, leaf in enumerate(leaves(obj)):
        shape = getattr(leaf, "shape", None)
        if shape is None or len(shape) == 0:
            raise FitkitValueError(f"{what} must be an array with a batch dimension; got a scalar.")
        sizes[i] = int(shape[0])
    if len(set(sizes.values())) > 1:
        raise FitkitValueError(
            f"The inputs in {what} have different lengths {sorted(set(sizes.values()))}; every "
            f"input must have one row per sample."
        )
    return next(iter(sizes.values()))


def prepare_xy(x: Any, y: Any, *, need_y: bool) -> tuple[Any, Any, int]:
    """Check in-memory x / y, convert pandas and lists, return (x, y, n_rows)."""
    if x is None:
        raise FitkitValueError("x is None: pass the training inputs (arrays, tensors, a dataset…).")
    x = map_structure(lambda v: host_leaf(v, "x"), x) if not is_pandas(x) else host_leaf(x, "x")
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
    y = map_structure(lambda v: host_leaf(v, "y"), y) if not is_pandas(y) else host_leaf(y, "y")
    ny = num_rows(y, "y")
    if ny != n:
        raise FitkitValueError(
            f"x and y have different lengths: x has {n} samples, y has {ny}. "
            f"They must have one row per sample."
        )
    return x, y, n


def prepare_sample_weight(sample_weight: Any, n: int, what: str = "sample_weight") -> Any:
    """One non-negative, finite weight per sample as a float32 (n,) array (or a 1-D tensor)."""
    if sample_weight is None:
        return None
    import numpy as np

    w = host_leaf(sample_weight, what)
    shape = tuple(getattr(w, "shape", ()))
    if shape not in ((n,), (n, 1)):
        raise FitkitValueError(
            f"{what} must hold one weight per sample, shape ({n},); got shape {shape}.")
    if hasattr(w, "detach"):  # a torch tensor: checked on the host, once
        w = w.detach().cpu().numpy()
    elif hasattr(w, "numpy") and not isinstance(w, np.ndarray):  # a tf tensor
        w = w.numpy()
    values = np.asarray(w, dtype=np.float32).reshape(n)
    bad = np.flatnonzero(~np.isfinite(values) | (values < 0))
    if bad.size:
        raise FitkitValueError(
            f"{what} must be finite and >= 0; row {int(bad[0])} holds {values[bad[0]]}.")
    return values


def check_class_weight(class_weight: Any) -> dict | None:
    """``{class index: weight}`` with whole-number keys and non-negative weights."""
    if class_weight is None:
        return None
    if not isinstance(class_weight, dict) or not class_weight:
        raise FitkitTypeError("class_weight must be a dict {class index: weight}, e.g. "
                              f"{{0: 1.0, 1: 5.0}}; got {class_weight!r}.")
    for cls, weight in class_weight.items():
        if not isinstance(cls, numbers.Real) or not float(cls).is_integer() or cls < 0:
            raise FitkitValueError(f"class_weight keys must be class indices 0, 1, …; got {cls!r}.")
        if not (isinstance(weight, numbers.Real) and weight >= 0):
            raise FitkitValueError(f"class_weight[{cls!r}] must be a number >= 0; got {weight!r}.")
    return {int(k): float(v) for k, v in class_weight.items()}


def split_tail(obj: Any, n_keep: int) -> tuple[Any, Any]:
    """Keras's validation_split: the last rows (before any shuffling) become validation."""
    return (map_structure(lambda a: a[:n_keep], obj), map_structure(lambda a: a[n_keep:], obj))


def check_fit_args(*, epochs: int, batch_size: int, validation_split: float,
                   initial_epoch: int, steps_per_epoch: int | None,
                   log_step_freq: int | None, verbose: int, validation_steps: int | None = None,
                   validation_freq: Any = 1) -> None:
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
    for name, value in (("steps_per_epoch", steps_per_epoch), ("log_step_freq", log_step_freq),
                        ("validation_steps", validation_steps)):
        if value is not None and (not isinstance(value, int) or value < 1):
            raise FitkitValueError(f"{name} must be None or a whole number >= 1; got {value!r}.")
    if verbose not in (0, 1, 2):
        raise FitkitValueError(f"verbose must be 0 (silent), 1 (bar + table) or 2 (one line "
                               f"per epoch); got {verbose!r}.")
    freq_ok = (isinstance(validation_freq, int) and validation_freq >= 1) or (
        isinstance(validation_freq, (list, tuple, set, range)) and
        all(isinstance(e, int) and e >= 1 for e in validation_freq))
    if not freq_ok:
        raise FitkitValueError(f"validation_freq must be a whole number >= 1 (validate every N "
                               f"epochs) or a list of 1-based epochs; got {validation_freq!r}.")


def check_verbose(verbose: Any, what: str) -> None:
    if verbose not in (0, 1, 2, False, True):
        raise FitkitValueError(f"{what}(verbose=...) must be 0 (silent) or 1 (print a summary "
                               f"line); got {verbose!r}.")


def require_type(value: Any, types: tuple, what: str, accepted: str) -> None:
    if not isinstance(value, types):
        raise FitkitTypeError(f"{what} must be {accepted}; got {type(value).__name__}.")
