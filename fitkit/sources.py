"""Backend-free iteration over user-supplied batches: (x, y) unpacking, peeking, generators.

Owns the bookkeeping every adapter needs for loaders, datasets and generators (a one-shot
generator continues across epochs; peeking does not lose a batch) and which of them make
their own batches (fit's batch_size is refused with those). Adapters supply the raw
iterable and the leaf conversion (tensors, dtypes, devices).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from itertools import chain, islice
from typing import Any

from .arrays import is_number_list, is_structure_of_arrays, map_structure
from .errors import FitkitValueError


def split_batch(item: Any) -> tuple[Any, Any, Any]:
    """A yielded element as (x, y, w): ``(x, y, w)``, ``(x, y)``, ``(x,)``, a dict with
    "x", "y" and optionally "sample_weight", or a bare x."""
    if isinstance(item, (tuple, list)) and len(item) in (1, 2, 3):
        return (*item, None, None)[:3]
    if isinstance(item, dict) and "x" in item:
        return item["x"], item.get("y"), item.get("sample_weight")
    return item, None, None


def make_batch(x: Any, y: Any, w: Any) -> tuple:
    """The batch tuple steps receive: ``(x, y)``, or ``(x, y, w)`` with sample weights."""
    return (x, y) if w is None else (x, y, w)


def unpack(batch: Any) -> tuple[Any, Any, Any]:
    """A step's batch as (x, y, sample_weight); y and sample_weight may be None.

    >>> x, y, w = fitkit.unpack(batch)
    """
    if isinstance(batch, tuple) and len(batch) in (1, 2, 3):
        return (*batch, None, None)[:3]
    return batch, None, None


def class_weight_needs_one_output(y: Any) -> str:
    return (
        f"class_weight works with one output's targets; y is a {type(y).__name__} "
        f"(several outputs). Pass sample_weight=... built from the classes you want "
        f"weighted instead."
    )


def check_iterable(data: Any) -> None:
    if not hasattr(data, "__iter__"):
        raise FitkitValueError(
            f"Unsupported data type {type(data).__name__}. Pass numpy arrays, pandas, tensors, "
            f"a torch Dataset/DataLoader, a tf.data.Dataset, or an iterable of (x, y) batches."
        )


def map_style_dataset(data: Any) -> bool:
    """A torch map-style Dataset (fitkit batches it with ``batch_size``), told by its classes
    so torch is not imported; a DataLoader or an IterableDataset is not one."""
    classes = {(c.__module__, c.__name__) for c in type(data).__mro__}
    return ("torch.utils.data.dataset", "Dataset") in classes and (
        "torch.utils.data.dataset",
        "IterableDataset",
    ) not in classes


def own_batch_size(data: Any) -> int | None:
    """The batch size a loader or dataset makes its batches with, where it can be known
    without drawing a batch: a DataLoader's, a tf.data.Dataset's ``batch(n)`` (or a static
    batch dimension); None otherwise (a generator, a list of batches)."""
    if hasattr(data, "batch_sampler"):  # a torch DataLoader
        size = getattr(data, "batch_size", None)
        size = size if size is not None else getattr(data.batch_sampler, "batch_size", None)
        return size if isinstance(size, int) else None
    if not hasattr(data, "element_spec"):
        return None
    dataset = data
    while dataset is not None:  # the pipeline's stages, last first, up to its batch(n)
        size = getattr(dataset, "_batch_size", None)
        if size is not None:
            try:
                return int(size)
            except (TypeError, ValueError):  # a symbolic size: not known here
                return None
        dataset = getattr(dataset, "_input_dataset", None)
    leaves = [s for s in _leaves(data.element_spec) if getattr(s, "shape", None) is not None]
    first = leaves[0].shape if leaves else None
    return first[0] if first is not None and first.rank and first[0] is not None else None


def _leaves(spec: Any) -> list:
    if isinstance(spec, dict):
        return [leaf for v in spec.values() for leaf in _leaves(v)]
    if isinstance(spec, (tuple, list)):
        return [leaf for v in spec for leaf in _leaves(v)]
    return [spec]


DEFAULT_BATCH_SIZE = 32  # fit / validate / predict's batch_size when left out


def checked_batch_size(x: Any, batch_size: int | None, call: str) -> int:
    """``batch_size`` (32 when left out). Given with data that makes its own batches (a
    DataLoader, a tf.data.Dataset, a generator, a list of batches) it would be ignored:
    refused, as Keras does, naming the data's own batch size. A torch map-style Dataset is
    batched with it."""
    if batch_size is None:
        return DEFAULT_BATCH_SIZE
    if x is None or is_structure_of_arrays(x) or is_number_list(x) or map_style_dataset(x):
        return batch_size
    size = own_batch_size(x)
    own = f"batches of {size}" if size is not None else "batches of the size it was made with"
    raise FitkitValueError(
        f"{call}(batch_size={batch_size!r}) is for in-memory data, but x is a "
        f"{type(x).__name__}, which makes its own batches ({own}); batch_size would be "
        f"ignored. Drop batch_size, or set the size where the batches are made "
        f"(DataLoader(..., batch_size=n), dataset.batch(n))."
    )


class DrawsFromFramework:
    """The random state of a source whose passes draw from the framework's RNGs alone
    (in-memory data): nothing of its own, so nothing for a backup to save."""

    def rng_state(self) -> dict:
        """What the next pass draws from, besides the framework's RNGs: nothing."""
        return {}

    def pass_rng_state(self) -> dict:
        """What the running pass drew from, besides the framework's RNGs: nothing."""
        return {}

    def set_rng_state(self, states: dict) -> None:
        """Nothing to set: the framework's RNGs decide the next pass."""


class IterableSource:
    """Batches of an iterable; ``restart()`` gives a fresh pass, or None for a one-shot one.

    ``own_rng`` (get() / set() of arrays): generators of the data's own that a pass draws
    from (a DataLoader's ``generator=``), recorded as each pass opens so a backup saves them.
    """

    predicts_in_chunks = False  # predict runs one batch per call

    def __init__(
        self,
        data: Any,
        convert: Callable[[Any], Any],
        *,
        restart: Callable[[], Iterable] | None = None,
        weigh: Callable[[Any], Any] | None = None,
        own_rng: Any = None,
    ) -> None:
        self.data, self.convert, self.weigh = data, convert, weigh
        self.own_rng = own_rng
        self.one_shot = isinstance(data, Iterator)  # a generator: it continues across epochs
        self.restart = restart or (lambda: data)
        self.steps = length(data)
        self._pending: list = []
        self._opened: Iterator | None = None  # a pass begun by peek(), resumed by the next
        self._opened_state: dict = {}  # what the peeked pass drew from
        self._pass_state: dict = {}  # what the running pass drew from
        self.input_map: Callable[[Any], Any] | None = None
        self.label_keys: Any = None  # hf.LabelKeys: dict batches' targets (split_labels)

    def _open(self) -> Iterator:
        """A new pass; what it draws from (the data's own generators) is recorded first."""
        self._pass_state = self.own_rng.get() if self.own_rng is not None else {}
        return iter(self.restart())

    def _raw(self) -> Iterator:
        if self.one_shot:
            pending, self._pending = self._pending, []
            return chain(pending, self.data)
        if self._opened is not None:  # reuse the peeked pass: a loader is opened once
            opened, pending = self._opened, self._pending
            self._opened, self._pending = None, []
            self._pass_state = self._opened_state
            return chain(pending, opened)
        return self._open()

    def _batch(self, item: Any) -> tuple:
        x, y, w = split_batch(item)
        if y is None and self.label_keys is not None:  # a dict batch holding its labels
            x, y = self.label_keys.split(x)
        convert = self._convert
        x, y = convert(x), convert(y)
        if w is not None:
            w = convert(w)
        if self.input_map is not None:
            x = self.input_map(x)
        if self.weigh is not None and y is not None:  # class_weight, times any sample weight
            w = self.weigh(y) if w is None else w * self.weigh(y)
        return make_batch(x, y, w)

    def _convert(self, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, (dict, tuple, list)):
            return map_structure(self.convert, value)
        return self.convert(value)  # the usual case, once per leaf and step: no structure walk

    def __iter__(self) -> Iterator[tuple]:
        return map(self._batch, self._raw())

    def batches(
        self, group: int = 1, limit: int | None = None, skip: int | None = None
    ) -> Iterator[tuple[Any, int]]:
        """``(batch, 1)`` pairs for the step loop; loaders run one step per call.

        ``skip`` (a resumed epoch): a fresh pass whose first ``skip`` batches are dropped
        unconverted; ``limit`` still counts them.
        """
        if skip is None:
            return one_step_each(self, limit)
        return one_step_each(map(self._batch, self._fresh(skip)), remaining(limit, skip))

    def _fresh(self, skip: int) -> Iterator:
        """Raw items of a new pass (not the peeked one), after the first ``skip``."""
        if not self.one_shot:
            self._opened, self._pending = None, []
        return islice(self._raw(), skip, None)

    def peek(self) -> tuple:
        if self.one_shot:
            if not self._pending:
                self._pending = [x for x in [next(self.data, None)] if x is not None]
            item = self._pending[0] if self._pending else None
        elif self._opened is not None:
            item = self._pending[0] if self._pending else None
        else:
            self._opened = self._open()
            self._opened_state = self._pass_state
            self._pending = [x for x in [next(self._opened, None)] if x is not None]
            item = self._pending[0] if self._pending else None
        if item is None:
            raise FitkitValueError(f"The data ({type(self.data).__name__}) yielded no batches.")
        return self._batch(item)

    def targets(self) -> Any:
        return None

    def rng_state(self) -> dict:
        """The data's own random state that its next pass draws from (a loader's own
        generator), as arrays; {} when a pass draws from the framework's RNGs alone."""
        if self._opened is not None:  # the next pass is the peeked one, drawn already
            return self._opened_state
        return self.own_rng.get() if self.own_rng is not None else {}

    def pass_rng_state(self) -> dict:
        """The data's own random state that the running pass drew from as it opened."""
        return self._pass_state

    def set_rng_state(self, states: dict) -> None:
        """The next pass draws as from ``states`` (what ``rng_state`` returned); a pass that
        ``peek`` opened before is dropped, to be opened again when the pass runs."""
        if self.own_rng is not None and states:
            self.own_rng.set(states)
        if not self.one_shot:  # a generator continues: its next item was drawn as it is
            self._opened, self._pending = None, []

    def map_inputs(self, fn: Callable[[Any], Any]) -> None:
        """Convert every batch's inputs (e.g. integers to floats for a float network)."""
        self.input_map = fn

    def split_labels(self, keys: Any) -> None:
        """Take a dict batch's label keys as its targets (an ``hf.LabelKeys``)."""
        self.label_keys = keys


def chunk_size(group: int | Callable[[], int]) -> int:
    """Steps for the next compiled call: ``batches``' group, or a callable read per chunk (a
    pass continued across epochs sizes each chunk to its epoch's remaining steps)."""
    return group() if callable(group) else group


def remaining(limit: int | None, skip: int) -> int | None:
    return None if limit is None else max(limit - skip, 0)


def one_step_each(batches: Iterable, limit: int | None = None) -> Iterator[tuple[Any, int]]:
    """``(batch, 1)`` pairs for the step loop, at most ``limit`` of them."""
    return ((batch, 1) for batch in islice(batches, limit))


def length(data: Any) -> int | None:
    """Batches per pass when the data knows it (len(), or a tf.data cardinality)."""
    if hasattr(data, "cardinality"):
        n = int(data.cardinality())
        return n if n >= 0 else None
    try:
        return len(data)
    except TypeError:
        return None
