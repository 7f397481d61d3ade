"""What a config's ``data`` callable returned, read as named splits (train, val, test,
predict), and each split as the arguments of fit / validate / predict.

Owns the rule (docs/config.md states it) and its refusals; calling the callable and the
model's methods is runner.py's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import FitkitValueError

SPLITS = ("train", "val", "test", "predict")
_RULE = (
    "Return one of: {'train': ..., 'val': ..., 'test': ..., 'predict': ...} (any of these "
    "keys), (train, val), (x, y) arrays, or one loader / tf.data.Dataset; each split is an "
    "(x, y) or (x, y, sample_weight) tuple, a loader or a dataset."
)
# the split each command reads, in order of preference
WANTED = {"fit": ("train",), "validate": ("val", "test"), "predict": ("predict", "test")}


def _array_like(value: Any) -> bool:
    # arrays, tensors, DataFrames have a shape; a dict is one of several named inputs
    return hasattr(value, "shape") or isinstance(value, Mapping)


def _is_arrays(value: Any) -> bool:
    return isinstance(value, (tuple, list)) and len(value) in (2, 3) and _array_like(value[0])


def _is_batches(value: Any) -> bool:
    """A loader, dataset or generator: iterable, with no shape of its own."""
    if _array_like(value) or isinstance(value, (str, bytes, tuple, list)):
        return False
    return hasattr(value, "__iter__") or (
        hasattr(value, "__getitem__") and hasattr(value, "__len__")
    )


def _is_split(value: Any) -> bool:
    return _is_arrays(value) or _is_batches(value)


def read(result: Any, key: str) -> dict[str, Any]:
    """The splits in ``result`` (what ``key``'s callable returned), by name."""
    if isinstance(result, Mapping) and result and all(k in SPLITS for k in result):
        for name, split in result.items():
            # predict needs no targets: its split may be inputs alone
            if not (_is_split(split) or (name == "predict" and _array_like(split))):
                raise FitkitValueError(
                    f"{key} returned {name!r} as a {type(split).__name__}, which is no split. "
                    + _RULE
                )
        return dict(result)
    if isinstance(result, (tuple, list)) and len(result) == 2:
        first, second = result
        if _is_split(first) and _is_split(second):
            return {"train": first, "val": second}
        if _array_like(first) and _array_like(second):
            return {"train": tuple(result)}
        raise FitkitValueError(
            f"{key} returned a pair of {type(first).__name__} and {type(second).__name__}: "
            f"neither (train, val) nor (x, y) arrays. Fix: return a dict such as "
            f"{{'train': ..., 'val': ...}}. " + _RULE
        )
    if _is_arrays(result) and len(result) == 3:
        return {"train": tuple(result)}
    if _is_batches(result):
        return {"train": result}
    raise FitkitValueError(f"{key} returned a {type(result).__name__}. " + _RULE)


def pick(splits: Mapping[str, Any], command: str) -> tuple[str, Any]:
    """The split ``command`` uses (``WANTED``), or an error naming what is there."""
    for name in WANTED[command]:
        if name in splits:
            return name, splits[name]
    wanted = " or ".join(repr(n) for n in WANTED[command])
    raise FitkitValueError(
        f"fitkit {command} needs the data's {wanted} split; the data section's callable "
        f"returned {', '.join(map(repr, splits)) or 'none'}. Fix: return a dict with {wanted}."
    )


def as_arguments(split: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """A split as positional and keyword arguments of fit / validate / predict (predict
    takes the first positional one)."""
    if _is_arrays(split):
        x, y, *rest = split
        return (x, y), ({"sample_weight": rest[0]} if rest else {})
    return (split,), {}


def first_inputs(split: Any, rows: int) -> Any:
    """The inputs of the first ``rows`` samples (or the first batch): export traces with them."""
    if _is_arrays(split) or _array_like(split):
        x = split[0] if _is_arrays(split) else split
        if isinstance(x, Mapping):
            return {k: v[:rows] for k, v in x.items()}
        return x[:rows]
    batch = next(iter(split))
    return batch[0] if isinstance(batch, (tuple, list)) else batch
