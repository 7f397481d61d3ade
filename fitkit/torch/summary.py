"""Torch summary rows: each leaf module's output shape (forward hooks) and parameter count.

Owns the measurement: which example to run (input_data, zeros of input_shape, or the batch
fitkit last saw), integer inputs, and rows that add up to the total. The facade prints the
table (display.summary_table) the same way for both backends.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterable, Set
from typing import Any

import torch

from ..adapter import SummaryInfo
from ..arrays import leaves, map_structure
from ..display import SUMMARY_NEEDS_INPUT, shape_text, summary_shapes
from ..errors import FitkitValueError
from . import data

# Modules whose first argument is a tensor of indices: an input they read becomes int64 zeros.
INDEX_MODULES = (torch.nn.Embedding, torch.nn.EmbeddingBag)


def summary_info(adapter: Any, input_shape: Any, input_data: Any) -> SummaryInfo:
    """The summary of ``adapter.net`` run on ``input_data``, zeros of ``input_shape``, or
    the first two rows of the last batch fitkit saw (fit, validate, predict, *_on_batch)."""
    recorder = Recorder(adapter.net, adapter.infer)
    if input_data is not None:
        recorder.run_or_explain(
            map_structure(
                lambda v: data.to_tensor(v, adapter.device, adapter.float_dtype), input_data
            )
        )
    elif input_shape is not None:
        run_zeros(recorder, summary_shapes(input_shape), adapter.device, adapter.float_dtype)
    elif adapter.example_inputs is not None:
        recorder.run_or_explain(map_structure(lambda t: t[:2], adapter.example_inputs))
    else:
        raise FitkitValueError(SUMMARY_NEEDS_INPUT)
    return recorder.info()


def zeros(
    shapes: Any,
    device: torch.device,
    float_dtype: torch.dtype,
    integer: Set[int] = frozenset(),
) -> Any:
    """A batch of 2 zeros per shape; inputs whose position is in ``integer`` are int64."""
    count = itertools.count()

    def make(shape: tuple) -> torch.Tensor:
        dtype = torch.int64 if next(count) in integer else float_dtype
        return torch.zeros((2, *shape), device=device, dtype=dtype)

    if isinstance(shapes, dict):
        return {k: make(s) for k, s in shapes.items()}
    if isinstance(shapes, list):
        return tuple(make(s) for s in shapes)
    return make(shapes)


def index_error(err: Exception) -> bool:
    """Whether a failed forward looks like floats reaching an integer-only op. An embedding
    given floats raises a plain RuntimeError ("Expected tensor for argument #1 'indices' to
    have one of the following scalar types: Long, Int"), so its text is read;
    tests/torch/test_torch_errors.py pins it on the pinned torch."""
    return isinstance(err, (IndexError, TypeError)) or bool(
        re.search(r"\b(long|int\d*|index|indices|dtype|scalar types?)\b", str(err), re.IGNORECASE)
    )


def run_zeros(
    recorder: Recorder, shapes: Any, device: torch.device, float_dtype: torch.dtype
) -> None:
    """Run zeros of ``shapes``, finding the integer inputs when floats fail.

    The rule: every input starts as float zeros. While a forward fails with an index or
    dtype error, the inputs an ``nn.Embedding``/``nn.EmbeddingBag`` received (the tensor
    itself or a view of it) as floats become int64 zeros, and it runs again. If that finds
    nothing more, each remaining input is tried as int64 in turn, then all of them.
    The first combination that runs is the one summarised.
    """
    n = len(shapes) if isinstance(shapes, (dict, list)) else 1
    integer: set[int] = set()
    while True:
        try:
            return recorder.run(zeros(shapes, device, float_dtype, integer))
        except Exception as err:  # noqa: BLE001 - retried below, re-raised if nothing works
            last = err  # after the integer inputs found so far: the error worth reporting
            found = recorder.index_inputs - integer
            if not (index_error(err) and found):
                break
            integer |= found
    if index_error(last):
        tries = [integer | {i} for i in range(n) if i not in integer] + [set(range(n))]
        for ints in dict.fromkeys(frozenset(t) for t in tries):
            try:
                return recorder.run(zeros(shapes, device, float_dtype, set(ints)))
            except Exception:  # noqa: BLE001 - the next combination may run
                continue
    raise _failed(last) from last


def _failed(err: Exception) -> FitkitValueError:
    return FitkitValueError(
        f"summary could not run the network on the example input: {str(err).rstrip('.')}. "
        f"Pass input_shape without the batch dimension, e.g. (32,) or (1, 28, 28), "
        f"or pass input_data=<a real batch>."
    )


class Recorder:
    """Forward hooks for one summary: each leaf's first output, and which inputs feed an
    index module (``index_inputs``: positions among the example's leaves)."""

    def __init__(self, net: torch.nn.Module, call: Callable[[Any], Any]) -> None:
        self.net, self.call = net, call
        self.modules = dict(net.named_modules())
        self.leaves = {
            n: None
            for n, m in self.modules.items()  # an ordered set; a
            if next(m.children(), None) is None
        }  # childless root is its own leaf
        self.seen: dict[str, Any] = {}
        self.index_inputs: set[int] = set()
        self._storages: list[int | None] = []  # None: not a tensor, or empty

    def run_or_explain(self, example: Any) -> None:
        try:
            self.run(example)
        except Exception as err:
            raise _failed(err) from err

    def run(self, example: Any) -> None:
        self.seen, self.index_inputs = {}, set()
        self._storages = [_storage(t) for t in leaves(example)]
        handles = [self.modules[n].register_forward_hook(self._hook(n)) for n in self.leaves]
        handles += [
            m.register_forward_pre_hook(self._index_hook)
            for m in self.modules.values()
            if isinstance(m, INDEX_MODULES)
        ]
        try:
            self.call(example)
        finally:
            for handle in handles:
                handle.remove()

    def _hook(self, name: str) -> Callable:
        def hook(module: torch.nn.Module, inputs: Any, output: Any) -> None:
            self.seen.setdefault(name, output)

        return hook

    def _index_hook(self, module: torch.nn.Module, inputs: tuple) -> None:
        storage = _storage(inputs[0]) if inputs else None
        if storage is not None:
            self.index_inputs |= {i for i, s in enumerate(self._storages) if s == storage}

    def _label(self, name: str) -> str:
        kind = type(self.modules[name]).__name__
        return f"{name} ({kind})" if name else kind

    def info(self) -> SummaryInfo:
        """Rows: leaves in call order, then parameters no leaf row holds (a root-level
        cls token, a positional embedding, a leaf that never ran), each counted once."""
        counted: set[int] = set()

        def own(params: Iterable[torch.nn.Parameter]) -> int:
            fresh = [p for p in params if id(p) not in counted]
            counted.update(id(p) for p in fresh)
            return sum(p.numel() for p in fresh)

        rows = [
            (self._label(n), shape_text(out), own(self.modules[n].parameters(recurse=False)))
            for n, out in self.seen.items()
        ]
        extra: list[tuple[int, tuple]] = []  # (position among rows, row)
        for full, param in self.net.named_parameters():
            if id(param) in counted:
                continue
            owner = full.rpartition(".")[0]
            if owner in self.leaves:  # a leaf that did not run: its row, without a shape
                row = (self._label(owner), "-", own(self.modules[owner].parameters(recurse=False)))
            else:
                row = (f"{full} (Parameter)", str(list(param.shape)), own([param]))
            extra.append((_position(list(self.seen), owner), row))
        extra.sort(key=lambda item: item[0])  # stable: registration order within a position
        for offset, (position, row) in enumerate(extra):
            rows.insert(position + offset, row)
        params = list(self.net.parameters())
        return SummaryInfo(
            rows=rows,
            total=sum(p.numel() for p in params),
            trainable=sum(p.numel() for p in params if p.requires_grad),
            param_bytes=sum(p.numel() * p.element_size() for p in params),
        )


def _position(names: list[str], owner: str) -> int:
    """Where a module's own parameters go: before the first row inside it, else at the end."""
    prefix = f"{owner}." if owner else ""
    return next((i for i, n in enumerate(names) if n.startswith(prefix)), len(names))


def _storage(tensor: Any) -> int | None:
    if not isinstance(tensor, torch.Tensor) or tensor.numel() == 0:
        return None
    return tensor.untyped_storage().data_ptr()
