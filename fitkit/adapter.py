"""The Adapter protocol: the operations a backend provides to the backend-free facade.

Owns the contract only. ``fitkit/torch/adapter.py`` and ``fitkit/tf/adapter.py`` each
implement it once; the facade (model.py) calls nothing else of a backend.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator, Protocol

Batch = tuple  # (x, y); y is None for prediction. x may be a tensor, a tuple or a dict of them.


class BatchSource(Protocol):
    """Batches of one data argument, already on the adapter's device."""

    steps: int | None  # batches per pass, when known
    one_shot: bool     # a generator: it cannot restart, so it continues across epochs

    def __iter__(self) -> Iterator[Batch]: ...  # one pass; reshuffled when shuffling
    def batches(self, group: int = 1, limit: int | None = None) -> Iterator[tuple[Any, int]]:
        """(item, n_steps) pairs for one pass: a batch, or several for one compiled call."""
    def peek(self) -> Batch: ...                # the first batch, without consuming it
    def targets(self) -> Any: ...               # every target in memory, or None


@dataclass
class SummaryInfo:
    """What an adapter measures for ``Model.summary``; display.summary_table prints it."""

    rows: list[tuple[str, str, int]]  # ("name (Type)", "[-1, 64]", params)
    total: int
    trainable: int
    param_bytes: int


class Adapter(Protocol):
    name: str   # "torch" | "tensorflow"
    net: Any
    metrics: list   # the compiled metric objects
    loss_spec: Any  # specs.LossSpec: what fitkit knows of the compiled loss
    optimizer: Any
    loss_fn: Any

    def __init__(self, net: Any, *, device: Any = None) -> None: ...

    # compile
    def compile(self, optimizer: Any, loss: Any, metrics: Any, lr: float | None,
                precision: str) -> None: ...
    def get_learning_rate(self) -> float: ...
    def set_learning_rate(self, value: float) -> None: ...

    # data
    def array_source(self, x: Any, y: Any, *, batch_size: int, shuffle: bool) -> BatchSource: ...
    def batch_source(self, data: Any, *, batch_size: int, shuffle: bool) -> BatchSource: ...
    def output_tail(self, x: Any) -> tuple:
        """One checked forward pass (inference): output shape past the batch dim, () if several."""
    def label_range(self, labels: Any) -> tuple[float, float]: ...  # host sync
    def build_states(self, mode: Any, width: int) -> None:
        """Metric states (and anything else) that must exist before the first step."""

    # steps (the defaults behind Model.train_step & co.)
    def train_step(self, batch: Batch, compute_loss: Callable) -> dict: ...
    def test_step(self, batch: Batch, compute_loss: Callable) -> dict: ...
    def predict_step(self, batch: Batch) -> Any: ...
    def compute_loss(self, x: Any, y: Any, y_pred: Any) -> Any: ...
    def update_metrics(self, y: Any, y_pred: Any) -> None: ...
    def make_function(self, step: Callable[[Batch], Any], mode: str) -> Callable[[Any], Any]:
        """The step, compiled where the backend compiles, taking the items of ``batches``."""
    def set_training(self, training: bool) -> None: ...

    # logs: device-resident until read
    def reset_logs(self, mode: str) -> None: ...
    def read_logs(self, mode: str) -> dict[str, float]: ...
    def outputs_to_numpy(self, outputs: list) -> Any: ...

    # weights, summary
    def save_weights(self, path: str) -> None: ...
    def load_weights(self, path: str) -> None: ...
    def summary(self, input_shape: Any, input_data: Any) -> SummaryInfo: ...
