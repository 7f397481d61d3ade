"""Torch batch sources: in-memory tensors sliced on the device, and loaders / iterables.

Owns tensor conversion, device placement and per-epoch shuffling. Host-side checks of
user arrays (lengths, pandas) are done before, by fitkit/arrays.py.
"""
from __future__ import annotations

import math
from typing import Any, Iterator

import numpy as np
import torch

from ..arrays import leaves, map_structure
from ..errors import FitkitValueError
from ..sources import IterableSource, check_iterable, one_step_each


def to_tensor(value: Any, device: torch.device, float_dtype: torch.dtype) -> torch.Tensor:
    """One leaf as a tensor on ``device``; floats take the network's dtype, labels stay integer."""
    if not isinstance(value, torch.Tensor):
        if hasattr(value, "numpy") and not isinstance(value, np.ndarray):
            value = value.numpy()  # host sync: a tf tensor crossing frameworks
        array = np.asarray(value)
        if array.dtype.kind not in "biuf":
            raise FitkitValueError(f"Data of dtype {array.dtype} is not numeric; encode it first.")
        if not array.flags.writeable:  # pandas copy-on-write hands out read-only views
            array = array.copy()
        value = torch.from_numpy(np.ascontiguousarray(array))
    if (value.is_floating_point() or value.dtype == torch.bool) and value.dtype != float_dtype:
        value = value.to(float_dtype)  # bool targets become 0/1 floats
    return value.to(device, non_blocking=True)


def rows(batch_x: Any) -> int:
    """Samples in a batch, read from a shape (no device sync)."""
    return leaves(batch_x)[0].shape[0]


def fits_on_device(nbytes: int, device: torch.device) -> bool:
    """In-memory data goes to an accelerator once when it takes at most half its free memory."""
    if device.type != "cuda":
        return True
    free, _ = torch.cuda.mem_get_info(device)
    return nbytes <= free // 2


class TensorSource:
    """In-memory data: contiguous tensors, one gather per epoch to shuffle, views per step.

    Data that fits lives on the device (copied once); larger data stays in pinned host
    memory and each batch is copied with ``non_blocking=True``, so the copy overlaps compute.
    """

    one_shot = False

    def __init__(self, x: Any, y: Any, *, batch_size: int, shuffle: bool,
                 device: torch.device, float_dtype: torch.dtype) -> None:
        host = torch.device("cpu")
        to_host = lambda v: v if isinstance(v, torch.Tensor) else \
            to_tensor(v, host, float_dtype)  # noqa: E731
        x, y = map_structure(to_host, x), None if y is None else map_structure(to_host, y)
        nbytes = sum(t.numel() * t.element_size()
                     for t in leaves(x) + (leaves(y) if y is not None else []))
        self.resident = fits_on_device(nbytes, device)
        place = device if self.resident else host
        convert = lambda v: to_tensor(v, place, float_dtype)  # noqa: E731
        self.x = map_structure(convert, x)
        self.y = None if y is None else map_structure(convert, y)
        self.pinned = not self.resident and device.type == "cuda"
        if self.pinned:
            pin = lambda t: t.pin_memory()  # noqa: E731
            self.x = map_structure(pin, self.x)
            self.y = None if self.y is None else map_structure(pin, self.y)
        self.n = rows(self.x)
        self.batch_size, self.shuffle, self.device = batch_size, shuffle, device
        self.steps = math.ceil(self.n / batch_size)

    def _slices(self, x: Any, y: Any) -> Iterator[tuple]:
        bs = self.batch_size
        if self.resident and isinstance(x, torch.Tensor) and isinstance(y, (torch.Tensor,
                                                                           type(None))):
            for start in range(0, self.n, bs):  # fast path: one tensor each, views only
                yield x[start:start + bs], None if y is None else y[start:start + bs]
            return
        device, resident = self.device, self.resident
        for start in range(0, self.n, bs):
            def cut(t, start=start):
                part = t[start:start + bs]
                return part if resident else part.to(device, non_blocking=True)
            yield map_structure(cut, x), None if y is None else map_structure(cut, y)

    def __iter__(self) -> Iterator[tuple]:
        x, y = self.x, self.y
        if self.shuffle:
            perm = torch.randperm(self.n, device=self.device if self.resident else "cpu")
            take = lambda t: t[perm]  # noqa: E731
            if self.pinned:  # the gathered copy is pinned again for async copies
                take = lambda t: t[perm].pin_memory()  # noqa: E731
            x = map_structure(take, x)
            y = None if y is None else map_structure(take, y)
        return self._slices(x, y)

    def batches(self, group: int = 1, limit: int | None = None) -> Iterator[tuple]:
        """``(batch, 1)`` pairs: eager torch gains nothing from grouping steps per call."""
        return one_step_each(self, limit)

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
