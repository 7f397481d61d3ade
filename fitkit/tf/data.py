"""TensorFlow batch sources: in-memory tensors sliced per step, and datasets / iterables.

Owns tensor conversion and per-epoch shuffling. Host-side checks of user arrays (lengths,
pandas) are done before, by fitkit/arrays.py.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from itertools import islice
from typing import Any, Literal, NamedTuple, overload

import numpy as np
import tensorflow as tf
from tensorflow.python.eager import context

from ..arrays import leaves, map_optional
from ..errors import FitkitValueError
from ..mapped import MapReader, is_memory_map, read_ahead
from ..sources import (
    DrawsFromFramework,
    IterableSource,
    check_iterable,
    chunk_size,
    class_weight_needs_one_output,
    make_batch,
    map_style_dataset,
    one_step_each,
    remaining,
)


def to_tensor(value: Any) -> tf.Tensor:
    """One leaf as a tf tensor; floats become float32 (Keras's floatx), bools float32."""
    if isinstance(value, (tf.Tensor, tf.RaggedTensor)):  # ragged rows: as Keras's layers take them
        return tf.cast(value, tf.float32) if value.dtype in (tf.float64, tf.bool) else value
    if type(value).__module__.startswith("torch"):
        value = value.detach().cpu().numpy()  # host sync: a torch batch crossing frameworks
    array = np.asarray(value)
    if array.dtype.kind in "US" or (
        array.dtype.kind == "O"
        and array.size
        and all(isinstance(v, (str, bytes)) for v in array.flat)
    ):
        return tf.constant(array.astype(str) if array.dtype.kind == "O" else array)  # tf.string
    if array.dtype.kind not in "biuf":
        raise FitkitValueError(
            f"Data of dtype {array.dtype} is not numeric; encode it first (strings are "
            f"passed as tf.string for a model that holds its own TextVectorization or "
            f"StringLookup; rows of varying length as a tf.RaggedTensor)."
        )
    if array.dtype.kind == "f" or array.dtype == np.bool_:
        array = array.astype(np.float32, copy=False)
    elif array.dtype.kind in "iu" and (array.dtype.itemsize < 4 or array.dtype.kind == "u"):
        array = array.astype(np.int64)  # int8 category codes: ids as the torch side has them
    return tf.convert_to_tensor(array)


def integers_to_float(value: Any) -> Any:
    """Integer input leaves as float32, for a network whose first layer takes floats."""
    return map_optional(lambda t: t if t.dtype.is_floating else tf.cast(t, tf.float32), value)


def rows(batch_x: Any) -> tf.Tensor:
    """Samples in a batch as a float64 tensor (works inside tf.function)."""
    return tf.cast(tf.shape(leaves(batch_x)[0])[0], tf.float64)


class Chunk(NamedTuple):
    """Several consecutive batches (``batch_size`` rows each) for one compiled call."""

    x: Any
    y: Any
    w: Any
    batch_size: tf.Tensor

    def describe(self) -> tuple[str, int]:
        """(one batch's shapes, the number of steps) for error messages; no value is read."""
        bs, parts = int(self.batch_size), [p for p in (self.x, self.y, self.w) if p is not None]
        rows = int(leaves(self.x)[0].shape[0])
        shapes = [(min(bs, rows), *leaf.shape[1:]) for p in parts for leaf in leaves(p)]
        return ", ".join(str(tuple(s)) for s in shapes), math.ceil(rows / bs)


def class_weight_fn(table: dict) -> Any:
    """``y -> per-sample weights`` from ``{class: weight}`` (integer, one-hot or 0/1 targets);
    a class the table does not name weighs 1."""
    size = int(max(table)) + 1
    lookup = [1.0] * (size + 1)  # the last entry: classes the table does not name
    for cls, weight in table.items():
        lookup[int(cls)] = float(weight)
    lookup = tf.constant(lookup, tf.float32)

    def weigh(y: Any) -> tf.Tensor:
        if not tf.is_tensor(y):
            raise FitkitValueError(class_weight_needs_one_output(y))
        if y.shape.rank > 1 and y.shape[-1] != 1:
            labels = tf.argmax(y, -1)
        else:
            labels = tf.reshape(y, [tf.shape(y)[0], -1])[:, 0]
        if labels.dtype.is_floating:
            labels = tf.round(labels)
        labels = tf.cast(labels, tf.int32)
        return tf.gather(lookup, tf.where((labels >= 0) & (labels < size), labels, size))

    return weigh


_SHUFFLE: list = []  # fitkit's shuffle generator, made on first use (see shuffle_generator)


@overload
def shuffle_generator(create: Literal[True] = True) -> tf.random.Generator: ...
@overload
def shuffle_generator(create: bool) -> tf.random.Generator | None: ...
def shuffle_generator(create: bool = True) -> tf.random.Generator | None:
    """The generator every epoch's shuffle draws from: its state is a variable, so a backup
    can save it (TensorFlow's stateful shuffle op keeps its state out of reach). Seeded with
    the global seed, so tf.random.set_seed / fitkit.set_seed make the order repeatable; read,
    not drawn: making it moves no seed the user's own random ops or pipelines get after.
    ``create=False``: None when no shuffle made it yet."""
    if not _SHUFFLE and not create:
        return None
    if not _SHUFFLE:
        seed = getattr(context.context(), "_seed", None)  # private: no getter that draws none
        _SHUFFLE.append(
            tf.random.Generator.from_non_deterministic_state()
            if seed is None
            else tf.random.Generator.from_seed(seed)
        )
    return _SHUFFLE[0]


def reset_shuffle_generator() -> None:
    """Drop the generator: the next shuffle seeds a new one from the (new) global seed."""
    _SHUFFLE.clear()


class TensorSource(DrawsFromFramework):
    """In-memory data, shuffled by gathering each batch or chunk through a permutation (no
    second copy of the data), sliced per step or per chunk of steps.

    With a GPU, arrays move into TF memory once (a device copy). On the CPU, numpy arrays
    stay where they are and each chunk's rows are converted on their own: TensorFlow's
    whole-array conversion would peak at twice the data. A memory-mapped ``x``
    (np.memmap, np.load(mmap_mode=...)) is never read whole: each batch's rows are read
    from the map (sorted, for locality) and its pages released as the epoch goes.
    """

    one_shot = False
    predicts_in_chunks = True  # several batches' predictions per compiled call

    def __init__(
        self, x: Any, y: Any, *, batch_size: int, shuffle: bool, sample_weight: Any = None
    ) -> None:
        keep = _keep_on_host()
        self.lazy = any(keep(leaf) for leaf in leaves(x))
        self.mapped = any(is_memory_map(leaf) for leaf in leaves(x))
        convert = lambda v: v if keep(v) else to_tensor(v)  # noqa: E731
        self.x, self.y, self.w = (map_optional(convert, v) for v in (x, y, sample_weight))
        self.n = int(leaves(self.x)[0].shape[0])
        self.batch_size, self.shuffle = batch_size, shuffle
        self.steps = math.ceil(self.n / batch_size)
        self.input_map: Any = None  # applied per batch to memory-mapped inputs
        self._maps = MapReader()  # reads memory-mapped rows, releasing their pages

    def _order(self) -> Any:
        """This epoch's row order: None (as stored), or a permutation (numpy for maps)."""
        if not self.shuffle:
            return None
        seed = shuffle_generator().make_seeds(1)[:, 0]
        perm = tf.random.experimental.stateless_shuffle(tf.range(self.n), seed)
        return perm.numpy() if self.lazy else perm  # host read: once per epoch, for maps

    def _rows(self, start: int, stop: int, order: Any) -> tuple:
        """(x, y, w) of rows ``start:stop`` in ``order``; no copy beyond those rows."""
        index = None if order is None else order[start:stop]
        if index is not None and self.mapped:  # each batch's rows in file order, for all parts
            bs = self.batch_size
            index = np.concatenate([np.sort(index[i : i + bs]) for i in range(0, len(index), bs)])

        def take(t: Any) -> Any:
            if is_memory_map(t):  # only these rows are read from the file
                return to_tensor(self._maps.rows(t, start, stop, index))
            if isinstance(t, np.ndarray):  # host rows: only these are converted
                return to_tensor(t[start:stop] if index is None else t[index])
            return t[start:stop] if index is None else tf.gather(t, index)

        x = map_optional(take, self.x)
        if self.lazy and self.input_map is not None:
            x = self.input_map(x)
        return x, map_optional(take, self.y), map_optional(take, self.w)

    def _slices(self, order: Any = None, skip: int = 0) -> Iterator[tuple]:
        bs = self.batch_size
        if bs >= self.n and order is None and not self.lazy and not skip:  # one batch
            yield make_batch(self.x, self.y, self.w)
            return
        for start in range(skip * bs, self.n, bs):  # a resumed epoch starts at batch skip
            yield make_batch(*self._rows(start, min(start + bs, self.n), order))

    def __iter__(self) -> Iterator[tuple]:
        batches = self._slices(self._order())
        return read_ahead(batches) if self.mapped and self.shuffle else batches

    def batches(
        self, group: int = 1, limit: int | None = None, skip: int | None = None
    ) -> Iterator[tuple]:
        """``(item, steps)`` pairs; with ``group > 1`` an item is a Chunk of ``group`` steps.
        ``skip``: a resumed epoch, from batch ``skip`` on (``limit`` counts the skipped)."""
        skip = skip or 0
        if group == 1:
            batches = self._slices(self._order(), skip)
            batches = read_ahead(batches) if self.mapped and self.shuffle else batches
            return one_step_each(batches, remaining(limit, skip))
        return self._chunks(group, self.steps if limit is None else min(limit, self.steps), skip)

    def _chunks(self, group: int, steps: int, skip: int = 0) -> Iterator[tuple]:
        order, bs = self._order(), self.batch_size
        rows = min(self.n, steps * bs)
        size = tf.constant(bs, tf.int32)

        def chunks() -> Iterator[tuple]:
            start = skip * bs
            while start < rows:
                stop = min(start + chunk_size(group) * bs, rows)
                x, y, w = self._rows(start, stop, order)
                yield Chunk(x, y, w, size), math.ceil((stop - start) / bs)
                start = stop

        return read_ahead(chunks()) if self.mapped and self.shuffle else chunks()

    def peek(self) -> tuple:
        return next(self._slices())

    def map_inputs(self, fn: Any) -> None:
        """Convert the inputs (e.g. integers to floats for a float network): once, or per
        batch for memory-mapped inputs."""
        if self.lazy:
            self.input_map = fn
        else:
            self.x = fn(self.x)

    def targets(self) -> Any:
        return map_optional(lambda t: to_tensor(t) if isinstance(t, np.ndarray) else t, self.y)


class IteratorChunk:
    """Up to ``steps`` batches that one compiled call draws from ``iterator`` (in the graph).

    ``done`` is the number of steps the call ran: ``steps`` when the data's length is known
    (no host read), else read from the call's count once per chunk.
    """

    def __init__(self, iterator: Any, steps: int, known: bool) -> None:
        self.iterator, self.steps, self.known = iterator, steps, known
        self.count: Any = None  # set by the compiled call: steps run, as a tensor

    def describe(self) -> tuple[str, int]:
        """(the batches' shapes as the dataset declares them, the steps asked for)."""
        spec = tf.nest.flatten(self.iterator.element_spec)
        return ", ".join(str(tuple(s.shape)) for s in spec), self.steps

    def done(self) -> int:
        if self.known:
            return self.steps
        return int(self.count)  # host sync: once per chunk, only for data of unknown length


class DatasetSource(IterableSource):
    """A tf.data.Dataset: elements become batches inside the pipeline (``Dataset.map``), and
    several steps run per compiled call over its iterator, as on in-memory data.

    A ``shuffle()`` in the pipeline draws each pass's order from a seed generator inside
    TensorFlow, out of reach, that moves on by one with every iterator made over the
    dataset: so the passes are numbered, a backup saves the number, and a resumed fit makes
    (and drops) iterators up to that pass before it runs it.
    """

    predicts_in_chunks = True  # predict, too, runs several batches per call

    def __init__(self, data: Any, *, weigh: Any = None) -> None:
        super().__init__(data, to_tensor, weigh=weigh)
        self._mapped: Any = None
        # repeat()ed: every chunk runs all its steps, so none is counted on the host
        self.endless = int(data.cardinality()) == int(tf.data.INFINITE_CARDINALITY)
        self.passes = 0  # iterators made over the pipeline so far
        self._opened_index = 0  # the number of the pass peek() opened
        self._want: int | None = None  # the number the next pass must have (a resume)

    def _pipeline(self) -> Any:
        if self._mapped is None:  # built once the first-batch checks set any input_map
            self._mapped = (
                self.data
                if self._ready()
                else self.data.map(lambda *e: self._batch(e[0] if len(e) == 1 else e))
            )
        return self._mapped

    def _ready(self) -> bool:
        """Elements that already are (x, y[, w]) batches fitkit would not convert: no map."""
        spec = self.data.element_spec
        if (
            self.weigh is not None
            or self.input_map is not None
            or not (isinstance(spec, tuple) and len(spec) in (2, 3))
        ):
            return False
        return all(leaf.dtype not in (tf.float64, tf.bool) for leaf in tf.nest.flatten(spec))

    def _iterate(self, dataset: Any) -> Iterator:
        """An iterator over ``dataset`` (the pipeline, or a part of it), numbered."""
        self._pass_state = {"pass": np.array([self.passes], np.int64)}
        self.passes += 1
        return iter(dataset)

    def __iter__(self) -> Iterator[tuple]:
        return self._iterate(self._pipeline())

    def peek(self) -> tuple:
        if self._opened is None:
            self._opened_index = self.passes
            self._opened = self._iterate(self._pipeline())
            self._pending = [b for b in [next(self._opened, None)] if b is not None]
        if not self._pending:
            raise FitkitValueError("The data (a tf.data.Dataset) yielded no batches.")
        return self._pending[0]

    def map_inputs(self, fn: Any) -> None:
        super().map_inputs(fn)
        self._mapped = self._opened = None  # rebuild the pipeline with the new conversion
        self._pending = []

    def rng_state(self) -> dict:
        """The number of the next pass (the shuffle's seeds are drawn by number)."""
        index = (
            self._want
            if self._want is not None
            else self._opened_index
            if self._opened is not None
            else self.passes
        )
        return {"pass": np.array([index], np.int64)}

    def set_rng_state(self, states: dict) -> None:
        """The next pass is the one numbered ``states["pass"]``."""
        if "pass" in states:
            self._want = int(np.asarray(states["pass"]).reshape(-1)[0])

    def _pass(self, skip: int | None) -> tuple[Iterator, list]:
        """(iterator, pending batches) of the pass to run, from batch ``skip`` on: the peeked
        one when it is the one wanted, else a new one (the passes before it made and
        dropped, so the shuffle draws the wanted pass's order)."""
        want, self._want = self._want, None
        opened, pending = self._opened, self._pending
        self._opened, self._pending = None, []
        if opened is not None and (want == self._opened_index or (want is None and skip is None)):
            self._pass_state = {"pass": np.array([self._opened_index], np.int64)}
            for _ in range(len(pending), skip or 0):  # its steps done, skipped one by one
                next(opened, None)
            return opened, pending[skip or 0 :]
        if want is not None and want < self.passes:
            raise FitkitValueError(
                f"Cannot resume on this tf.data pipeline: its shuffle must draw the order of "
                f"pass {want + 1}, and {self.passes} passes were made over it already in "
                f"this process. Resume in a new process that builds the pipeline the same way "
                f"and iterates it only through fit."
            )
        while want is not None and self.passes < want:
            self._iterate(self._pipeline())  # made and dropped: the shuffle moves on one pass
        return self._iterate(self._pipeline().skip(skip) if skip else self._pipeline()), []

    def batches(
        self, group: int = 1, limit: int | None = None, skip: int | None = None
    ) -> Iterator[tuple]:
        """The peeked first batch (one step), then IteratorChunks of up to ``group`` steps.
        ``skip``: a resumed epoch: its pass (see ``set_rng_state``) from batch ``skip`` on."""
        total = (
            self.steps if limit is None else limit if self.steps is None else min(limit, self.steps)
        )
        if skip is not None:
            total = remaining(total, skip)
        iterator, pending = self._pass(skip)
        done = 0
        for batch in pending:
            yield batch, 1
            done += 1
        if group == 1:  # one batch per call (predict, batch hooks): iterate in Python
            yield from (
                (batch, 1) for batch in islice(iterator, None if total is None else total - done)
            )
            return
        while total is None or done < total:
            n = chunk_size(group) if total is None else min(chunk_size(group), total - done)
            chunk = IteratorChunk(iterator, n, known=self.steps is not None or self.endless)
            yield chunk, chunk.done
            done += chunk.done()
            if chunk.done() < n:
                return


def _keep_on_host() -> Any:
    """Which leaves stay numpy: memory maps always; every numpy array when TF has no GPU."""
    no_gpu = not tf.config.list_logical_devices("GPU")
    return lambda v: is_memory_map(v) or (no_gpu and isinstance(v, np.ndarray))


def _is_torch_dataset(data: Any) -> bool:
    """A torch map-style Dataset (a user's subclass too), not a DataLoader."""
    return map_style_dataset(data)


def batch_source(data: Any, *, batch_size: int, shuffle: bool, weigh: Any = None) -> IterableSource:
    """Batches from a tf.data.Dataset, a torch DataLoader / Dataset, or an iterable of (x, y)."""
    if _is_torch_dataset(data):
        import torch  # already imported: the user passed a torch object

        data = torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=shuffle)
    if isinstance(data, tf.data.Dataset):
        return DatasetSource(data, weigh=weigh)
    check_iterable(data)
    return IterableSource(data, to_tensor, weigh=weigh)
