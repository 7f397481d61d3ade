"""fit's, validate's and predict's data arguments made into the adapter's batch sources:
in-memory data checked on the host (arrays.py), loaders and datasets handed over as they are,
validation_split and validation_data.

Owns which source each argument becomes and the refusals that name the fix; iterating them is
each adapter's data.py, iteration helpers sources.py's, the passes over them training.py's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import arrays, distribute, hf
from .errors import FitkitValueError

if TYPE_CHECKING:
    from .adapter import Adapter, BatchSource
    from .model import Model


def make_source(
    adapter: Adapter,
    x: Any,
    y: Any,
    *,
    batch_size: int | None,
    shuffle: bool,
    need_y: bool,
    sample_weight: Any = None,
    class_weight: dict | None = None,
    what: str = "x",
) -> BatchSource:
    """The adapter's batch source for one data argument (arrays, or batches of a loader).

    ``batch_size=None``: the arrays are one batch (the batch-style calls).
    """
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise FitkitValueError(f"batch_size must be a whole number >= 1; got {batch_size!r}.")
    labels = hf.label_keys(adapter)  # a dict's label keys are its targets (label_names)
    if y is None:  # a dict (or a tokenizer's BatchEncoding) of arrays holding its labels
        x, y = labels.split(x)
    # A list of numbers (or of lists of numbers) is one array; of (x, y) pairs, batches.
    if arrays.is_structure_of_arrays(x) or arrays.is_number_list(x):
        check_global_batch(batch_size)
        x, y, n = arrays.prepare_xy(x, y, need_y=need_y)
        weights = arrays.prepare_sample_weight(sample_weight, n)
        check_tensors_finite(adapter, x, y)
        return adapter.array_source(
            x,
            y,
            batch_size=batch_size or n,
            shuffle=shuffle,
            sample_weight=weights,
            class_weight=class_weight,
        )
    if x is None:
        raise FitkitValueError(
            f"{what} is None: pass inputs (arrays, tensors, a dataset, a loader…)."
        )
    if y is not None:
        raise FitkitValueError(
            f"y must be None when {what} is a {type(x).__name__} that yields (x, y) batches; "
            f"the targets come from the batches."
        )
    if sample_weight is not None:
        raise FitkitValueError(
            f"sample_weight works with in-memory arrays; {what} is a {type(x).__name__}: let it "
            f"yield (x, y, sample_weight) batches instead."
        )
    source = adapter.batch_source(
        x, batch_size=batch_size or 1, shuffle=shuffle, class_weight=class_weight
    )
    source.split_labels(labels)
    return source


def fit_sources(
    model: Model,
    x: Any,
    y: Any,
    sample_weight: Any,
    class_weight: Any,
    batch_size: int,
    shuffle: bool,
    validation_split: float,
    validation_data: Any,
) -> tuple:
    """(train, validation or None) sources for fit's data arguments."""
    need_y = not model.runtime.custom("train")
    val = None
    if validation_split:
        if validation_data is not None:
            raise FitkitValueError("Pass validation_split or validation_data, not both.")
        if y is None:
            x, y = hf.label_keys(model.runtime.adapter).split(x)
        (x, y, sample_weight), (vx, vy, vw) = split_for_validation(
            x, y, sample_weight, validation_split, need_y
        )
        val = make_source(
            model.runtime.adapter,
            vx,
            vy,
            batch_size=batch_size,
            shuffle=False,
            need_y=need_y,
            sample_weight=vw,
        )
    elif validation_data is not None:
        val = validation_source(
            model.runtime.adapter,
            validation_data,
            batch_size,
            need_y=not model.runtime.custom("test"),
        )
    train = make_source(
        model.runtime.adapter,
        x,
        y,
        batch_size=batch_size,
        shuffle=shuffle,
        need_y=need_y,
        sample_weight=sample_weight,
        class_weight=class_weight,
    )
    return train, val


def check_global_batch(batch_size: int | None) -> None:
    """Under a strategy, fit's batch_size (the global batch, Keras's convention) must divide
    across the replicas (a loader's own batch size is the backend's to check)."""
    strategy = distribute.active()
    if batch_size is not None and strategy is not None and batch_size % strategy.replicas:
        raise FitkitValueError(
            f"batch_size={batch_size} is the global batch (Keras's convention) and must "
            f"divide across the {strategy.replicas} replicas of the {strategy.name!r} "
            f"strategy; use a multiple of {strategy.replicas}, e.g. "
            f"{batch_size // strategy.replicas * strategy.replicas or strategy.replicas}."
        )


def check_tensors_finite(adapter: Adapter, x: Any, y: Any) -> None:
    """NaN / inf in tensors the user passed, found on their device (numpy is checked on the
    host by arrays.host_leaf)."""
    for label, leaf in arrays.named_leaves(x, "x") + arrays.named_leaves(y, "y"):
        if leaf is not None and type(leaf).__module__ != "numpy":
            if not adapter.is_tensor(leaf):  # the other framework's tensor: check on the host
                arrays.check_finite(arrays.to_numpy(leaf), label)
                continue
            bad = adapter.first_nonfinite(leaf)
            if bad is not None:
                raise FitkitValueError(
                    f"{label} holds {bad[1]} at row {bad[0]} (its first non-finite value). "
                    f"Replace or drop non-finite values before training."
                )


def validation_source(
    adapter: Adapter, validation_data: Any, batch_size: int, need_y: bool
) -> BatchSource:
    """``validation_data`` as (x, y), (x, y, w), [x, y] or a dataset / loader of batches."""
    what = "validation_data"
    if (
        isinstance(validation_data, (tuple, list))
        and len(validation_data) in (1, 2, 3)
        and arrays.is_structure_of_arrays(validation_data[0])
    ):
        if len(validation_data) == 1:
            raise FitkitValueError(
                "validation_data is a 1-tuple; pass (x_val, y_val) or "
                "(x_val, y_val, sample_weight_val)."
            )
        vx, vy, vw = (*validation_data, None)[:3]
        try:
            return make_source(
                adapter,
                vx,
                vy,
                batch_size=batch_size,
                shuffle=False,
                need_y=need_y,
                sample_weight=vw,
                what=what,
            )
        except FitkitValueError as err:
            raise FitkitValueError(f"validation_data: {err}") from err
    return make_source(
        adapter,
        validation_data,
        None,
        batch_size=batch_size,
        shuffle=False,
        need_y=need_y,
        what=what,
    )


def split_for_validation(
    x: Any, y: Any, sample_weight: Any, validation_split: float, need_y: bool
) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """Keras's validation_split: the last rows (before shuffling) become validation data."""
    if not arrays.is_structure_of_arrays(x):
        raise FitkitValueError(
            "validation_split works only with in-memory arrays or tensors; x is "
            f"a {type(x).__name__}. Pass validation_data=<a dataset or loader> instead."
        )
    x, y, n = arrays.prepare_xy(x, y, need_y=need_y)
    n_train = int(n * (1.0 - validation_split))
    if n_train == 0 or n_train == n:
        raise FitkitValueError(
            f"validation_split={validation_split} of {n} samples leaves "
            f"{n_train} for training and {n - n_train} for validation; both need one."
        )
    parts = [
        arrays.split_tail(v, n_train) if v is not None else (None, None)
        for v in (x, y, arrays.prepare_sample_weight(sample_weight, n))
    ]
    return tuple(p[0] for p in parts), tuple(p[1] for p in parts)
