"""The checks of a first batch before any step: shapes, the network's forward pass, targets
against losses, metric states built for the kind of target.

Owns what is checked before a fit/validate/predict call's first step (the forward pass once
per kind of input since compile) and the messages that name the fix; the loops that run
afterwards are training.py's, target rules targets.py's.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from . import arrays, framework_errors, hf, targets
from .backend import backend_part
from .errors import FitkitError, FitkitValueError
from .outputs import prediction, target
from .resume import same_rngs
from .sources import unpack

if TYPE_CHECKING:
    from .adapter import Adapter
    from .model import Model


def check_first(
    model: Model,
    source: Any,
    mode: str,
    what: str = "",
    *,
    run_network: bool = True,
    runs_next: bool = True,
) -> tuple:
    """Check ``source``'s first batch for ``mode``, unless a custom step uses the data its own
    way; returns the batch as the steps will see it.

    The checks draw from no RNG a step or the user's code draws from: every one is put back
    as it was (a forward pass may draw even in inference mode, and a metric may too), so a
    fit equals a hand-written loop seeded alike. The pass ``peek`` opens is the one that
    runs next when ``runs_next``, and what opening it drew (a loader's order) stays drawn,
    as a loop's ``for batch in loader`` would draw it. Fit's validation data runs only after
    an epoch: with ``runs_next=False`` the RNGs go back to before the pass opened, and a pass
    that drew from them is opened again when it runs (one that drew from generators of its
    own, which nothing else draws from, is kept; so is a generator's, which cannot reopen).
    """
    adapter = model.runtime.adapter
    if runs_next and not run_network:  # a batch-style call after its first: nothing draws
        return _check_first(model, source, mode, what, source.peek(), run_network)
    rngs = backend_part(adapter, "state")
    # a generator cannot open its pass again: what its first item drew stays drawn
    before = None if runs_next or source.one_shot else (rngs.all_rngs(adapter), source.rng_state())
    batch = source.peek()
    opened = rngs.all_rngs(adapter)
    try:
        return _check_first(model, source, mode, what, batch, run_network)
    finally:
        rngs.set_all_rngs(adapter, opened if before is None else before[0])
        if before is not None and not same_rngs(before[0], opened):
            source.set_rng_state(before[1])  # drawn again when it runs


def _check_first(
    model: Model, source: Any, mode: str, what: str, batch: tuple, run_network: bool
) -> tuple:
    runtime = model.runtime
    if runtime.custom(mode):
        runtime.adapter.example_inputs = unpack(batch)[0]
        return batch
    # A kind of input (structure, dtypes, shapes past the batch) that passed a forward pass
    # needs no other: the targets are still checked (against the output shapes it gave),
    # and a new kind of target, whose metric states are built anew, is tried with one.
    kind = (mode, batch_kind(batch))
    seen = run_network and kind in runtime.checked_kinds
    try:
        rebuilt = check_batch(
            runtime.adapter,
            batch,
            source,
            with_loss=mode != "predict",
            run_network=run_network and not seen,
        )
        if rebuilt and seen:
            check_batch(runtime.adapter, batch, source, with_loss=True)
    except FitkitValueError as err:
        if not what:
            raise
        raise FitkitValueError(f"{what}: {err}") from err
    if rebuilt:
        runtime.functions.clear()  # compiled steps hold the old metric states
    if runtime.adapter.example_inputs is not unpack(batch)[0]:
        return source.peek()  # the check converted the inputs (integers to floats)
    if run_network:  # inputs converted by the check are checked again, each time
        runtime.checked_kinds.add(kind)
    return batch


def batch_kind(batch: tuple) -> tuple:
    """What a forward pass's verdict on a batch depends on: the structure of its parts and
    each leaf's type, dtype and shape past the batch dimension (hashable)."""

    def kind(value: Any) -> tuple:
        if isinstance(value, dict):
            return "dict", tuple((key, kind(v)) for key, v in value.items())
        if isinstance(value, (tuple, list)):  # namedtuples too: read, never rebuilt
            return type(value).__name__, tuple(kind(v) for v in value)
        shape = getattr(value, "shape", None)
        dims = None if shape is None else tuple(shape)[1:]
        return type(value).__name__, str(getattr(value, "dtype", "")), dims

    return kind(unpack(batch))


def check_batch(
    adapter: Adapter, batch: tuple, source: Any, *, with_loss: bool, run_network: bool = True
) -> bool:
    """Check one batch against the network and the losses before any step; build states.

    Returns True when metric states were rebuilt for another kind of target (one-hot after
    integer labels): compiled steps that hold the old states must be rebuilt too.

    The forward pass (inference mode) catches inputs the network cannot take; each output's
    targets are checked against its loss (shapes, label range over all in-memory labels,
    probabilities for probability losses) and its metric states are built.
    """
    x, y, w = unpack(batch)
    adapter.example_inputs = x
    outputs = adapter.outputs
    check_batch_dimension(x, y)
    if not with_loss:
        if run_network:
            forward_checked(adapter, x, source)
        return False
    own = outputs.loss_arg is None  # compile(loss=None): the network's own loss trains it
    if y is None and not own:
        raise FitkitValueError(
            "The data yields inputs only; training and evaluation need "
            "(x, y) batches (or pass y=... with array inputs)."
        )
    y_pred = forward_checked(adapter, x, source) if run_network or outputs.heads is None else None
    if own and y_pred is not None:
        hf.check_own_loss(y_pred, hf.label_keys(adapter), x)
    heads = outputs.ensure(y_pred)
    if y_pred is not None:
        for head in heads:
            value = prediction(head, y_pred)
            head.tail = tuple(value.shape[1:]) if adapter.is_tensor(value) else None
    every_target: list = []  # read on first need: most losses check no labels

    def labels(head: Any, y_t: Any) -> Any:
        """All of this output's in-memory labels, else this batch's."""
        if not every_target:
            every_target.append(source.targets())
        return y_t if every_target[0] is None else target(head, every_target[0], outputs.n_targets)

    rebuilt = False
    for head in heads:
        if head.loss is None and not head.metrics:
            continue
        if y is None:
            raise FitkitValueError(
                f"The metrics {[m.name for m in head.metrics]} need targets, "
                f"but the data yields inputs only: give (x, y) batches, or "
                f"dict batches holding the label keys."
            )
        y_t = target(head, y, outputs.n_targets)
        mode, width = targets.check_output(
            head.spec,
            head.portable,
            (y_t.shape[0], *(head.tail or ())),
            tuple(y_t.shape),
            # each read only if a rule needs it, within this call: this loop's head and y_t
            lambda: adapter.label_range(labels(head, y_t)),  # noqa: B023
            lambda: (
                _min_max(adapter.value_range(prediction(head, y_pred)))  # noqa: B023
                if y_pred is not None
                else (0.0, 1.0)
            ),
            (lambda: adapter.probability_stats(prediction(head, y_pred)))  # noqa: B023
            if y_pred is not None
            else None,
        )
        if not head.built or head.mode != mode:  # another kind of target: fresh states
            rebuilt = rebuilt or head.built
            adapter.build_metric_states(head, mode, width)
            head.mode = mode
        if y_pred is not None and head.metrics:
            try_metrics(adapter, head, y_t, prediction(head, y_pred), w)
    return rebuilt


def try_metrics(adapter: Adapter, head: Any, y: Any, y_pred: Any, w: Any) -> None:
    """A metric that fails on this output's first batch fails here, not at step 1, and is
    named: each one is tried alone, so the error is the failing metric's own."""
    try:
        adapter.update_head(head, y, y_pred, w)
    except FitkitError:
        raise
    except Exception as err:  # noqa: BLE001 - a metric is user code: any error is named below
        metric, cause = _failing_metric(adapter, head, y, y_pred, w, err)
        output = f" of output {head.name!r}" if head.prefix else ""
        text = str(cause)
        kind = framework_errors.said(cause, framework_errors.METRIC_WORDS)
        if kind == framework_errors.DEVICE:
            fix = (
                "A metric function gets the batch where the network runs: write it with the "
                "framework's ops, or move values to the host first (.cpu(), a wait each step)"
            )
        elif kind == framework_errors.SHAPE:
            fix = (
                "Give each output metrics that fit its predictions and targets, e.g. "
                "metrics={'cls': ['accuracy'], 'reg': ['mae']}"
            )
        else:
            fix = "Fix the metric (its traceback is chained below), or leave it out of compile"
        raise FitkitValueError(
            f"The metric {metric.name!r}{output} failed on a first batch (predictions of "
            f"shape {tuple(y_pred.shape)}, targets of shape {tuple(y.shape)}): "
            f"{type(cause).__name__}: {text}. {fix}."
        ) from cause
    finally:
        for metric in head.metrics:
            metric.reset()


def _failing_metric(
    adapter: Adapter, head: Any, y: Any, y_pred: Any, w: Any, err: Exception
) -> tuple[Any, Exception]:
    """(the metric that raises, its exception): ``head``'s metrics tried one at a time."""
    if len(head.metrics) > 1:
        for metric in head.metrics:
            try:
                adapter.update_head(replace(head, metrics=[metric]), y, y_pred, w)
            except Exception as own:  # noqa: BLE001 - user code: its error, whatever it is
                return metric, own
    return head.metrics[0], err


def _min_max(values: list[float]) -> tuple[float, float]:
    """The [min, max] an adapter read, as the pair targets.check_output takes."""
    low, high = values
    return low, high


def check_batch_dimension(x: Any, y: Any) -> None:
    """A batch whose parts have no common first dimension is a single sample, not a batch."""
    parts = arrays.leaves(x) + (arrays.leaves(y) if y is not None else [])
    shapes = [tuple(getattr(leaf, "shape", ())) for leaf in parts]
    if any(len(s) == 0 for s in shapes) or len({s[0] for s in shapes}) > 1:
        raise FitkitValueError(
            f"The data yields parts of shapes {shapes} with no common batch dimension: it looks "
            f"like single samples, not batches. Batch it: DataLoader(..., batch_size=32), "
            f"dataset.batch(32); for one sample add the batch dimension (x[None])."
        )


def forward_checked(adapter: Adapter, x: Any, source: Any = None) -> Any:
    """One inference pass on a first batch; a failure says what failed and on what inputs.

    Integer inputs that a float network refuses are converted to floats (as Keras's layers
    cast them), here and in every later batch of ``source``.
    """
    try:
        return adapter.infer(x)
    except Exception as err:  # noqa: BLE001 - the user's network may raise anything: diagnosed below
        first = err
    if (
        source is not None
        and not framework_errors.is_cuda_assert(first)
        and any(not _is_float(leaf) for leaf in arrays.leaves(x))
    ):
        try:
            x_float = adapter.integers_to_float(x)
            y_pred = adapter.infer(x_float)
        except Exception:  # noqa: BLE001 - floats did not help either: the first error is the one
            pass
        else:
            source.map_inputs(adapter.integers_to_float)
            adapter.example_inputs = x_float
            return y_pred
    shapes = ", ".join(
        f"{tuple(leaf.shape)} {getattr(leaf, 'dtype', '')}" for leaf in arrays.leaves(x)
    )
    raise FitkitValueError(
        f"The network failed on a first batch of inputs ({shapes}): {_diagnose(first)} "
        f"[{type(first).__name__}: {first}]".rstrip()
    ) from first


def _is_float(leaf: Any) -> bool:
    dtype = str(getattr(leaf, "dtype", ""))
    return "float" in dtype or "bfloat" in dtype


CUDA_ASSERT = (
    "a CUDA kernel's assert failed, most often an index out of range (an Embedding "
    "id >= num_embeddings, a class label >= the number of classes). CUDA cannot go "
    "on in this process: restart it, and run a batch with device='cpu' for the "
    "exact error."
)

_DIAGNOSES = {
    framework_errors.SHAPE: "the input width does not match the network's first layer (and, "
    "for several inputs, x must be a tuple or dict in the order or names the network takes).",
    framework_errors.INDEX: "an index is out of range: an Embedding got an id >= its number of "
    "embeddings (input_dim / num_embeddings); size it to the vocabulary.",
    framework_errors.CUDA_ASSERT: CUDA_ASSERT,
    framework_errors.DTYPE: "the inputs have a dtype the network does not take: integer ids for "
    "embeddings, floats otherwise (x.astype('float32')).",
}


def _diagnose(err: Exception) -> str:
    kind = framework_errors.forward_kind(err)
    if kind is None:
        return "check the inputs' width and dtype against the network's first layer."
    return _DIAGNOSES[kind]
