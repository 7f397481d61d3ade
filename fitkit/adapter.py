"""The Adapter protocol: the operations a backend provides to the backend-free facade.

Owns the contract only: every attribute and method the backend-free modules use of an adapter.
``fitkit/torch/adapter.py`` and ``fitkit/tf/adapter.py`` each implement it once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .controls import TrainingControls
    from .outputs import CompiledOutputs

WEIGHTS_FINITE = "__weights_finite__"  # read_logs(mode, weights=True): 1.0 when every
# weight of the network is finite (read with the logs, in the same transfer)
Batch = tuple  # (x, y) or (x, y, sample_weight); y is None for prediction. x may be a tensor,
# a tuple or a dict of them (see sources.unpack).


class BatchSource(Protocol):
    """Batches of one data argument, already on the adapter's device."""

    steps: int | None  # batches per pass, when known
    one_shot: bool  # a generator: it cannot restart, so it continues across epochs
    predicts_in_chunks: bool  # predict may run several batches per call (Chunk items)

    def __iter__(self) -> Iterator[Batch]: ...  # one pass; reshuffled when shuffling
    def batches(
        self, group: int = 1, limit: int | None = None, skip: int | None = None
    ) -> Iterator[tuple[Any, int]]:
        """(item, n_steps) pairs for one pass: a batch, or several for one compiled call
        (``group`` steps, or as many as a callable ``group`` says when the chunk is made);
        ``skip``: a fresh pass from that step on (None: reuse the pass ``peek`` opened)."""

    def peek(self) -> Batch: ...  # the first batch, without consuming it
    def targets(self) -> Any: ...  # every target in memory, or None
    def map_inputs(self, fn: Callable[[Any], Any]) -> None: ...  # convert every batch's x
    def split_labels(self, keys: Any) -> None: ...  # hf.LabelKeys: a dict batch's targets
    # What a pass draws from besides the framework's RNGs (a loader's own generator), as
    # arrays: for the next pass, for the running one, and set for the next (a resume).
    def rng_state(self) -> dict: ...
    def pass_rng_state(self) -> dict: ...
    def set_rng_state(self, states: dict) -> None: ...


@dataclass
class SummaryInfo:
    """What an adapter measures for ``Model.summary``; display.summary_table prints it."""

    rows: list[tuple[str, str, int]]  # ("name (Type)", "[-1, 64]", params)
    total: int
    trainable: int
    param_bytes: int


class Adapter(Protocol):
    name: str  # "torch" | "tensorflow"
    net: Any
    metrics: list  # every compiled metric object (all outputs), in log order
    outputs: CompiledOutputs  # losses, weights and metrics per output (None before compile,
    # when the core does not read it)
    optimizer: Any
    optimizers: list  # every optimizer: [optimizer], or the several configure_optimizers gave
    loss_fn: Any  # compile's loss, as given
    example_inputs: Any  # a batch of inputs fitkit has seen (for summary), or None
    label_names: tuple  # dict batches' label keys (Model's label_names, set by the facade)
    scheduler: Any  # the lr scheduler compile built (backend's schedules.py), or None
    accumulation: Any  # pending accumulated gradients (and fp16 loss scale, torch) with
    # state() -> dict[str, numpy array] and load(dict), for checkpoints; None when off
    controls: TrainingControls  # compile's training controls (every one off before compile)

    def __init__(self, net: Any, *, device: Any = None) -> None: ...

    # compile
    def compile(
        self,
        optimizer: Any,
        loss: Any,
        metrics: Any,
        lr: float | None,
        precision: str,
        *,
        loss_weights: Any = None,
        output: Any = None,
        run_eagerly: bool = False,
        controls: Any = None,
    ) -> None:
        """``controls``: a controls.TrainingControls (clipping, accumulation, precision, jit,
        lr schedule); None means every control off."""

    def build_scheduler(self, spec: Any, every: str, monitor: str) -> None:
        """Set ``scheduler`` from compile's lr_schedule (None: no scheduler)."""

    def finish_epoch(self) -> None:
        """Apply a pending partial window of gradient accumulation; the fit loop calls it at
        each epoch end, before validation."""

    def get_learning_rate(self) -> float:
        """The rate (torch: param group 0's)."""

    def set_learning_rate(self, value: float) -> None:
        """Set it (torch: group 0's to ``value``, every other group by the same factor)."""

    def learning_rates(self) -> dict[str, float]:
        """The history's rate columns (history.lr_columns): ``lr``, or one per param group."""

    def autocast(self) -> Any: ...  # the compiled precision, as a context manager

    # data
    def array_source(
        self,
        x: Any,
        y: Any,
        *,
        batch_size: int,
        shuffle: bool,
        sample_weight: Any = None,
        class_weight: dict | None = None,
    ) -> BatchSource: ...
    def batch_source(
        self, data: Any, *, batch_size: int, shuffle: bool, class_weight: dict | None = None
    ) -> BatchSource: ...
    def infer(self, x: Any) -> Any:
        """One forward pass in inference mode (the train/eval mode is kept)."""

    def is_tensor(self, value: Any) -> bool: ...
    def integers_to_float(self, x: Any) -> Any: ...
    # host reads for the checks before training, once each
    def label_range(self, labels: Any) -> list: ...  # [min, max, a non-whole value or NaN]
    def value_range(self, value: Any) -> list: ...  # [min, max]
    def probability_stats(self, value: Any) -> list: ...  # [min, max, row sums' min, max]
    def first_nonfinite(self, tensor: Any) -> tuple[int, float] | None: ...
    def build_metric_states(self, head: Any, mode: Any, width: int) -> None:
        """Metric states (and anything else) that must exist before the first step."""

    def update_head(self, head: Any, y: Any, y_pred: Any, sample_weight: Any) -> None: ...

    # steps (the defaults behind Model.train_step & co.)
    def train_step(self, batch: Batch, compute_loss: Callable) -> dict: ...
    def test_step(self, batch: Batch, compute_loss: Callable) -> dict: ...
    def shared_train_step(self, batch: Batch, shared_step: Callable[[Batch], dict]) -> dict:
        """A class style's ``shared_step`` as the train step: its "loss" drives the update."""

    def shared_test_step(self, batch: Batch, shared_step: Callable[[Batch], dict]) -> dict: ...
    def call(self, x: Any) -> Any:
        """The network on ``x`` in its current mode (``self(x)`` in a class-style step)."""

    def predict_step(self, batch: Batch) -> Any: ...
    def compute_loss(self, x: Any, y: Any, y_pred: Any, sample_weight: Any = None) -> Any: ...
    def update_metrics(self, y: Any, y_pred: Any, sample_weight: Any = None) -> None: ...
    def runs_own_step(self, mode: str) -> bool:
        """True when the native network brings its own step for ``mode`` (a keras.Model
        overriding train_step): fitkit runs it, and the data is the step's to read."""

    def make_function(self, step: Callable[[Batch], Any], mode: str) -> Callable[[Any], Any]:
        """The step, compiled where the backend compiles, taking the items of ``batches``."""

    def run_batch(
        self, function: Callable[[Any], Any], batch: Any, mode: str, reset: bool
    ) -> dict[str, float]:
        """A batch-style call: the logs reset (when ``reset``), one step, the logs read."""

    def set_training(self, training: bool | None) -> None: ...
    def training_mode(self) -> bool | None: ...

    # logs: device-resident until read
    def reset_logs(self, mode: str) -> None: ...
    def read_logs(self, mode: str, weights: bool = False) -> dict[str, float]:
        """Every log in one host read; ``weights``: with WEIGHTS_FINITE (finite.Guard)."""

    def outputs_to_numpy(self, outputs: list) -> Any: ...

    # weights, whole training state (checkpoints), summary
    def get_state(self) -> tuple[dict, dict]: ...  # (numpy arrays, JSON meta): state.py
    def set_state(self, arrays: dict, meta: dict) -> None: ...
    def check_state(self, arrays: dict, meta: dict) -> None: ...  # refuses before set_state
    def save_weights(self, path: str) -> None: ...
    def load_weights(self, path: str, strict: bool = True) -> dict: ...
    def summary(self, input_shape: Any, input_data: Any) -> SummaryInfo: ...
