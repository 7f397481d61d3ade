"""Torch batch sources: in-memory tensors sliced on the device, and loaders / iterables.

Owns tensor conversion, device placement, per-epoch shuffling and, under DDP, each process's
share of every global batch. Host-side checks of user arrays (lengths, pandas) are done
before, by fitkit/arrays.py; the process group is fitkit/torch/distribute.py's.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from itertools import count, islice
from typing import Any

import numpy as np
import torch

from ..arrays import leaves, map_optional
from ..errors import FitkitValueError
from ..mapped import MapReader, is_memory_map, read_ahead
from ..sources import (
    DrawsFromFramework,
    IterableSource,
    check_iterable,
    class_weight_needs_one_output,
    make_batch,
    one_step_each,
    remaining,
)
from .state import loader_rngs


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
    dtype = value.dtype
    if dtype is not float_dtype and (value.is_floating_point() or dtype is torch.bool):
        value = value.to(float_dtype)  # bool targets become 0/1 floats
    elif dtype in _NARROW_INTS:
        value = value.long()  # int8 category codes: embeddings and losses need int64 ids
    if device.type == "cpu":  # the usual CPU case, once per leaf and step: no device object
        return value if value.is_cpu else value.cpu()
    if value.device != device:
        if device.type == "cuda" and not value.is_pinned():
            value = value.pin_memory()  # a pinned source makes the copy truly asynchronous
        value = value.to(device, non_blocking=True)
    return value


_NARROW_INTS = frozenset(
    (torch.int8, torch.int16, torch.uint8, torch.uint16, torch.uint32, torch.uint64)
)


def integers_to_float(value: Any, float_dtype: torch.dtype) -> Any:
    """Integer input leaves as floats, for a network whose first layer takes floats."""
    return map_optional(lambda t: t.to(float_dtype) if not t.is_floating_point() else t, value)


def class_weight_fn(table: dict, device: torch.device) -> Any:
    """``y -> per-sample weights`` from ``{class: weight}`` (integer, one-hot or 0/1 targets);
    a class the table does not name weighs 1."""
    size = int(max(table)) + 1
    lookup = torch.ones(size + 1, dtype=torch.float32)  # the last entry: classes not named
    for cls, weight in table.items():
        lookup[int(cls)] = float(weight)
    lookup = lookup.to(device)

    def weigh(y: Any) -> torch.Tensor:
        if not isinstance(y, torch.Tensor):
            raise FitkitValueError(class_weight_needs_one_output(y))
        labels = (
            y.argmax(-1) if y.dim() > 1 and y.shape[-1] > 1 else y.reshape(y.shape[0], -1)[:, 0]
        )
        labels = labels.round().long() if labels.is_floating_point() else labels.long()
        return lookup[torch.where((labels >= 0) & (labels < size), labels, size)]

    return weigh


def rows(batch_x: Any) -> int:
    """Samples in a batch, read from a shape (no device sync)."""
    return (batch_x if isinstance(batch_x, torch.Tensor) else leaves(batch_x)[0]).shape[0]


def fits_on_device(nbytes: int, device: torch.device) -> bool:
    """In-memory data goes to an accelerator once when it takes at most half its free memory."""
    if device.type != "cuda":
        return True
    free, _ = torch.cuda.mem_get_info(device)
    return nbytes <= free // 2


# Below this size a shuffle gathers the whole data set once per epoch (fastest); above it,
# each batch is gathered through the permutation, so no second copy of the data is made.
WHOLE_GATHER_BYTES = 64 << 20


def shuffle_order(n: int, device: torch.device | None) -> torch.Tensor:
    """A pass's order from torch's CPU generator whatever the device (one seed, one order on
    CPU and GPU, in memory or memory-mapped), sent to ``device`` without waiting for it."""
    perm = torch.randperm(n)
    if device is None or device.type != "cuda":
        return perm if device is None else perm.to(device)
    return perm.pin_memory().to(device, non_blocking=True)


class TensorSource(DrawsFromFramework):
    """In-memory data: contiguous tensors, shuffled through a permutation, views per step.

    Data that fits lives on the device (copied once); larger data stays in pinned host
    memory and each batch is copied with ``non_blocking=True``, so the copy overlaps compute.
    A memory-mapped ``x`` (np.memmap, np.load(mmap_mode=...)) is never read whole: each
    batch's rows are read from the map (sorted, for locality) and converted on their own.
    """

    one_shot = False
    predicts_in_chunks = False  # eager torch gains nothing from grouping steps

    def __init__(
        self,
        x: Any,
        y: Any,
        *,
        batch_size: int,
        shuffle: bool,
        device: torch.device,
        float_dtype: torch.dtype,
        sample_weight: Any = None,
    ) -> None:
        host = torch.device("cpu")
        self.lazy = any(is_memory_map(leaf) for leaf in leaves(x))

        def to_host(v: Any) -> Any:
            if isinstance(v, torch.Tensor) or is_memory_map(v):
                return v
            return to_tensor(v, host, float_dtype)

        parts = [map_optional(to_host, v) for v in (x, y, sample_weight)]
        self.nbytes = sum(
            t.nbytes if is_memory_map(t) else t.numel() * t.element_size()
            for part in parts
            if part is not None
            for t in leaves(part)
        )
        self.resident = not self.lazy and fits_on_device(self.nbytes, device)
        place = device if self.resident else host
        convert = lambda v: v if is_memory_map(v) else to_tensor(v, place, float_dtype)  # noqa
        parts = [map_optional(convert, v) for v in parts]
        self.pinned = not self.resident and not self.lazy and device.type == "cuda"
        if self.pinned:
            parts = [map_optional(lambda t: t.pin_memory(), v) for v in parts]
        self.x, self.y, self.w = parts
        self.n = rows(self.x)
        self.batch_size, self.shuffle, self.device = batch_size, shuffle, device
        self.float_dtype = float_dtype
        self.steps = math.ceil(self.n / batch_size)
        self.input_map: Any = None  # applied per batch to memory-mapped inputs
        self._maps = MapReader()  # reads memory-mapped rows, releasing their pages

    def _slices(self, x: Any, y: Any, w: Any, order: Any = None, skip: int = 0) -> Iterator[tuple]:
        bs = self.batch_size
        first = skip * bs  # a resumed epoch starts at its next batch
        if bs >= self.n and self.resident and order is None and not skip:  # one batch
            yield make_batch(x, y, w)
            return
        if (
            self.resident
            and order is None
            and w is None
            and isinstance(x, torch.Tensor)
            and isinstance(y, (torch.Tensor, type(None)))
        ):
            for start in range(first, self.n, bs):  # fast path: one tensor each, views only
                yield x[start : start + bs], None if y is None else y[start : start + bs]
            return
        for start in range(first, self.n, bs):
            index = None if order is None else order[start : start + bs]
            if index is not None and self.lazy:
                index = index.sort().values  # rows in file order: fewer pages touched
            take = lambda t, index=index, start=start: self._take(t, start, index)  # noqa
            batch_x = map_optional(take, x)
            if self.lazy and self.input_map is not None:
                batch_x = self.input_map(batch_x)
            yield make_batch(batch_x, *(map_optional(take, v) for v in (y, w)))

    def _take(self, t: Any, start: int, index: Any) -> torch.Tensor:
        """One batch of ``t``: rows ``start:start+bs``, or the rows ``index`` names."""
        if is_memory_map(t):  # only these rows are read from the file
            part = self._maps.rows(
                t, start, start + self.batch_size, None if index is None else index.numpy()
            )
            return to_tensor(part, self.device, self.float_dtype)
        if index is not None:
            part = t[index if index.device == t.device else index.to(t.device)]
        else:
            part = t[start : start + self.batch_size]
        if self.resident:
            return part
        if self.pinned and index is not None:
            part = part.pin_memory()
        return part.to(self.device, non_blocking=True)

    def __iter__(self) -> Iterator[tuple]:
        return self._pass()

    def _pass(self, skip: int = 0) -> Iterator[tuple]:
        """One pass (its order drawn now), from batch ``skip`` on."""
        parts = (self.x, self.y, self.w)
        if not self.shuffle:
            return self._slices(*parts, skip=skip)
        perm = shuffle_order(self.n, self.device if self.resident else None)
        if self.lazy:  # rows read from the file by a thread, ahead of the steps
            return read_ahead(self._slices(*parts, order=perm, skip=skip))
        if self.nbytes > WHOLE_GATHER_BYTES or skip:  # each batch gathered on its own
            return self._slices(*parts, order=perm, skip=skip)
        take = lambda t: t[perm]  # noqa: E731
        if self.pinned:  # the gathered copy is pinned again for async copies
            take = lambda t: t[perm].pin_memory()  # noqa: E731
        return self._slices(*(map_optional(take, v) for v in parts))

    def batches(
        self, group: int = 1, limit: int | None = None, skip: int | None = None
    ) -> Iterator[tuple]:
        """``(batch, 1)`` pairs: eager torch gains nothing from grouping steps per call.
        ``skip``: a resumed epoch, from batch ``skip`` on (``limit`` counts the skipped)."""
        return one_step_each(self._pass(skip or 0), remaining(limit, skip or 0))

    def peek(self) -> tuple:
        return next(self._slices(self.x, self.y, self.w))

    def map_inputs(self, fn: Any) -> None:
        """Convert the inputs (e.g. integers to floats for a float network): once, or per
        batch for memory-mapped inputs."""
        if self.lazy:
            self.input_map = fn
        else:
            self.x = fn(self.x)

    def targets(self) -> Any:
        return (
            None
            if self.y is None
            else map_optional(
                lambda t: (
                    to_tensor(t, torch.device("cpu"), self.float_dtype) if is_memory_map(t) else t
                ),
                self.y,
            )
        )


def _is_tf_dataset(data: Any) -> bool:
    return type(data).__module__.startswith("tensorflow") and hasattr(data, "as_numpy_iterator")


class PrefetchingSource(IterableSource):
    """Batches of a loader copied to a CUDA device on a side stream (pinned, non-blocking):
    the host runs ahead of the GPU, so a copy overlaps the previous step's kernels. None is
    read before the loop asks (a generator across epochs would lose one per epoch)."""

    def __init__(self, data: Any, convert: Any, *, device: torch.device, **kwargs: Any) -> None:
        super().__init__(data, convert, **kwargs)
        self.device = device
        self.stream = torch.cuda.Stream(device)

    def __iter__(self) -> Iterator[tuple]:
        raw, current = iter(self._raw()), torch.cuda.current_stream(self.device)

        for item in raw:
            with torch.cuda.stream(self.stream):
                batch = self._batch(item)
            current.wait_stream(self.stream)  # this step's kernels wait for its copies
            for tensor in leaves(batch):
                if isinstance(tensor, torch.Tensor):
                    tensor.record_stream(current)  # freed only after this step's kernels
            yield batch


def batch_source(
    data: Any,
    *,
    batch_size: int,
    shuffle: bool,
    device: torch.device,
    float_dtype: torch.dtype,
    weigh: Any = None,
    comm: Any = None,
) -> IterableSource:
    """Batches from a DataLoader, a Dataset, a tf.data.Dataset or any iterable of (x, y).

    ``comm`` (DDP, fitkit/torch/distribute.py): each process keeps its share of every batch.
    """
    convert = lambda v: to_tensor(v, device, float_dtype)  # noqa: E731
    kwargs: dict = {"weigh": weigh}
    plan = None
    kind: Callable[..., IterableSource]
    if _is_tf_dataset(data):
        kind, kwargs["restart"] = IterableSource, data.as_numpy_iterator
    else:
        if comm is not None:  # a map-style dataset goes on a DistributedSampler
            data, kwargs["restart"], plan = comm.loader(data, batch_size, shuffle)
        if isinstance(data, torch.utils.data.Dataset) and not isinstance(
            data, torch.utils.data.IterableDataset
        ):
            data = torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=shuffle)
        check_iterable(data)
        kwargs["own_rng"] = loader_rngs(data)  # a loader's own generator, saved by backups
        kind = PrefetchingSource if device.type == "cuda" else IterableSource
        if device.type == "cuda":
            kwargs["device"] = device
    if comm is None:
        return kind(data, convert, **kwargs)
    source = _SHARDED[kind](data, convert, **kwargs)
    source.shard(comm, plan)
    return source


# ---------------------------------------------------------------------- DDP: shares
class Share(tuple):
    """A batch holding this process's share of a global batch (DDP): ``total`` rows over
    every process in this step, ``positions`` of these rows in the pass (None if shuffled)."""

    total: int = 0
    positions: range | None = None


def share(batch: tuple, total: int, positions: range | None) -> Share:
    out = Share(batch)
    out.total, out.positions = total, positions
    return out


def split_rows(total: int, world: int, rank: int) -> tuple[int, int]:
    """This process's rows ``[lo, hi)`` of a global batch of ``total`` rows: contiguous
    blocks, the first ``total % world`` processes one row more (none when ``total < world``:
    an empty step, which weighs nothing)."""
    base, extra = divmod(total, world)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (rank < extra)


def check_divisible(batch_size: int, world: int, what: str = "batch_size") -> None:
    if batch_size % world:
        raise FitkitValueError(
            f"{what}={batch_size} does not divide by the {world} processes: under DDP it is the "
            f"global batch, and a DistributedSampler gives each process the same number of "
            f"rows. Pass a multiple of {world}."
        )


class ShardedTensorSource(TensorSource):
    """In-memory data under DDP: every process holds all rows and takes its block of each
    global batch of ``batch_size`` rows, in an order drawn on rank 0 and broadcast, so each
    global batch holds the rows single-process training sees (shares differ by a row when
    it does not divide: the loss weighting keeps that exact). ``peek`` gives the whole
    first batch: the checks (and a batch-style call's step) run alike on every process."""

    def __init__(self, *args: Any, comm: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.comm = comm

    def _slices(self, x: Any, y: Any, w: Any, order: Any = None, skip: int = 0) -> Iterator[tuple]:
        bs, world, rank = self.batch_size, self.comm.world_size, self.comm.rank
        for start in range(skip * bs, self.n, bs):
            total = min(bs, self.n - start)
            lo, hi = split_rows(total, world, rank)
            a, b = start + lo, start + hi
            index = None if order is None else order[a:b]
            if index is not None and self.lazy:
                index = index.sort().values  # rows in file order: fewer pages touched
            take = lambda t, a=a, b=b, index=index: self._rows(t, a, b, index)  # noqa: E731
            batch_x = map_optional(take, x)
            if self.lazy and self.input_map is not None:
                batch_x = self.input_map(batch_x)
            batch = make_batch(batch_x, *(map_optional(take, v) for v in (y, w)))
            yield share(batch, total, range(a, b) if order is None else None)

    def _rows(self, t: Any, a: int, b: int, index: Any) -> torch.Tensor:
        """Rows ``a:b`` of ``t``, or the rows ``index`` names, on the device."""
        if is_memory_map(t):
            part = self._maps.rows(t, a, b, None if index is None or a == b else index.numpy())
            return to_tensor(part, self.device, self.float_dtype)
        if index is None:
            part = t[a:b]
        else:
            part = t[index if index.device == t.device else index.to(t.device)]
        if self.resident:
            return part
        if self.pinned and index is not None:
            part = part.pin_memory()
        return part.to(self.device, non_blocking=True)

    def _pass(self, skip: int = 0) -> Iterator[tuple]:
        parts = (self.x, self.y, self.w)
        if not self.shuffle:
            return self._slices(*parts, skip=skip)
        perm = shuffle_order(self.n, self.device if self.resident else None)
        batches = self._slices(*parts, order=self.comm.broadcast(perm), skip=skip)
        return read_ahead(batches) if self.lazy else batches

    def peek(self) -> tuple:
        return next(TensorSource._slices(self, self.x, self.y, self.w))


class _Item:
    """A raw item of a sharded pass and its index in the pass."""

    __slots__ = ("index", "item")

    def __init__(self, item: Any, index: int) -> None:
        self.item, self.index = item, index


class ShardedBatches(IterableSource):
    """Mixin over the iterable sources under DDP: each pass keeps this process's share.

    With a ``plan`` (a map-style dataset on a DistributedSampler: distribute.py's
    ``distributed_loader``) the loader yields this process's batches; the rows the sampler
    repeats to even the processes out are cut off, and a pass stops after the global
    batches one process would see. Without, every process reads every batch and keeps its
    block of rows: the iterable must yield the same batches everywhere (seed it alike).
    """

    def shard(self, comm: Any, plan: tuple | None) -> None:
        self.comm, self.plan, self.offset = comm, plan, 0
        if plan is not None:
            self.steps = plan[2]

    def _raw(self) -> Iterator:
        raw = super()._raw()
        self.offset = 0
        if self.plan is not None:
            raw = islice(raw, self.plan[2])
        return map(_Item, raw, count())

    def _batch(self, item: Any) -> tuple:
        if not isinstance(item, _Item):  # a peeked batch (the checks): the whole of it
            return super()._batch(item)
        batch = super()._batch(item.item)
        world, rank, got = self.comm.world_size, self.comm.rank, rows(batch[0])
        if self.plan is None:
            lo, hi = split_rows(got, world, rank)
            positions: range | None
            total, positions = got, range(self.offset + lo, self.offset + hi)
            self.offset += got
        else:
            n, size, _, shuffled = self.plan
            per, k = size // world, item.index
            lo, hi = 0, min(got, max(0, -(-(n - rank) // world) - k * per))  # real rows
            total, first = min(size, n - k * size), rank + world * k * per
            positions = None if shuffled else range(first, first + world * hi, world)
        if (lo, hi) != (0, got):
            batch = tuple(map_optional(lambda t: t[lo:hi], part) for part in batch)
        return share(batch, total, positions)


class ShardedIterableSource(ShardedBatches, IterableSource):
    pass


class ShardedPrefetchingSource(ShardedBatches, PrefetchingSource):
    pass


_SHARDED = {IterableSource: ShardedIterableSource, PrefetchingSource: ShardedPrefetchingSource}
