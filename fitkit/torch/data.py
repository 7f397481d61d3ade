"""Torch batch sources: in-memory tensors sliced on the device, and loaders / iterables.

Owns tensor conversion, device placement and per-epoch shuffling. Host-side checks of
user arrays (lengths, pandas) are done before, by fitkit/arrays.py.
"""
from __future__ import annotations

import math
from itertools import islice
from typing import Any, Iterator

import numpy as np
import torch

from ..arrays import leaves, map_structure
from ..errors import FitkitValueError
from ..sources import IterableSource, check_iterable


def to_tensor(value: Any, device: torch.device, float_dtype: torch.dtype) -> torch.Tensor:
    """One leaf as a tensor on ``device``; floats take the network's dtype, labels stay integer."""
    if not isinstance(value, torch.Tensor):
        if hasattr(value, "numpy") and not isinstance(value, np.ndarray):
            value = value.numpy()  # a tf tensor or similar
        array = np.asarray(value)
        if array.dtype == np.bool_:
            array = array.astype(np.float32)
        if array.dtype.kind not in "biuf":
            raise FitkitValueError(f"Data of dtype {array.dtype} is not numeric; encode it first.")
        if not array.flags.writeable:  # pandas copy-on-write hands out read-only views
            array = array.copy()
        value = torch.from_numpy(np.ascontiguousarray(array))
    if value.is_floating_point() and value.dtype != float_dtype:
        value = value.to(float_dtype)
    elif value.dtype == torch.bool:
        value = value.to(float_dtype)
    return value.to(device, non_blocking=True)


def rows(batch_x: Any) -> int:
    """Samples in a batch, read from a shape (no device sync)."""
    return leaves(batch_x)[0].shape[0]


class TensorSource:
    """In-memory data: contiguous tensors on the device, one gather per epoch to shuffle."""

    one_shot = False

    def __init__(self, x: Any, y: Any, *, batch_size: int, shuffle: bool,
                 device: torch.device, float_dtype: torch.dtype) -> None:
        convert = lambda v: to_tensor(v, device, float_dtype)  # noqa: E731
        self.x = map_structure(convert, x)
        self.y = None if y is None else map_structure(convert, y)
        self.n = rows(self.x)
        self.batch_size, self.shuffle, self.device = batch_size, shuffle, device
        self.steps = math.ceil(self.n / batch_size)

    def _slices(self, x: Any, y: Any) -> Iterator[tuple]:
        bs = self.batch_size
        if isinstance(x, torch.Tensor) and (y is None or isinstance(y, torch.Tensor)):
            for start in range(0, self.n, bs):  # fast path: one tensor each, views only
                yield x[start:start + bs], None if y is None else y[start:start + bs]
            return
        for start in range(0, self.n, bs):
            cut = lambda t: t[start:start + bs]  # noqa: E731
            yield map_structure(cut, x), None if y is None else map_structure(cut, y)

    def __iter__(self) -> Iterator[tuple]:
        x, y = self.x, self.y
        if self.shuffle:
            perm = torch.randperm(self.n, device=self.device)
            take = lambda t: t[perm]  # noqa: E731
            x = map_structure(take, x)
            y = None if y is None else map_structure(take, y)
        return self._slices(x, y)

    def batches(self, group: int = 1, limit: int | None = None) -> Iterator[tuple]:
        """``(batch, 1)`` pairs: eager torch gains nothing from grouping steps per call."""
        return ((batch, 1) for batch in islice(self, limit))

    def peek(self) -> tuple:
        return next(self._slices(self.x, self.y))

    def targets(self) -> Any:
        return self.y


def _is_tf_dataset(data: Any) -> bool:
    return type(data).__module__.startswith("tensorflow") and hasattr(data, "as_numpy_iterator")


def batch_source(data: Any, *, batch_size: int, shuffle: bool, device: torch.device,
                 float_dtype: torch.dtype) -> IterableSource:
    """Batches from a DataLoader, a Dataset, a tf.data.Dataset or any iterable of (x, y)."""
    convert = lambda v: to_tensor(v, device, float_dtype)  # noqa: E731
    if _is_tf_dataset(data):
        return IterableSource(data, convert, restart=data.as_numpy_iterator)
    if isinstance(data, torch.utils.data.Dataset) and not isinstance(
            data, torch.utils.data.IterableDataset):
        data = torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=shuffle)
    check_iterable(data)
    return IterableSource(data, convert)
