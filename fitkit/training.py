"""The loops behind fit, validate and predict, and the data sources they read.

Owns what happens once per epoch and once per pass (sources, log points, history rows, a
resumed epoch's pass, errors that name the epoch and step); the whole fit around the epochs
is fitting.py's, the first-batch checks checks.py's. Per-step work belongs to the adapter's
compiled steps and the bookkeeping to steps.StepLoop; argument checks to the facade.
"""

from __future__ import annotations

import math
import re
import time
from contextlib import contextmanager
from itertools import chain
from typing import Any

from . import arrays, checks, distribute, finite, hf, streams
from .backend import backend_part
from .callbacks import CallbackList
from .display import EpochDisplay, format_logs
from .errors import FitkitError, FitkitValueError, StepFailedError
from .history import is_lr_column
from .resume import FitState, unprefixed
from .sources import checked_batch_size
from .steps import StepLoop

AUTO_STEPS_PER_EXECUTION = 32  # steps per compiled call when nothing needs each step


# ---------------------------------------------------------------------- data sources
def make_source(
    adapter: Any,
    x: Any,
    y: Any,
    *,
    batch_size: int | None,
    shuffle: bool,
    need_y: bool,
    sample_weight: Any = None,
    class_weight: dict | None = None,
    what: str = "x",
):
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
    model: Any,
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
    need_y = not model._custom("train")
    val = None
    if validation_split:
        if validation_data is not None:
            raise FitkitValueError("Pass validation_split or validation_data, not both.")
        if y is None:
            x, y = hf.label_keys(model._adapter).split(x)
        (x, y, sample_weight), (vx, vy, vw) = split_for_validation(
            x, y, sample_weight, validation_split, need_y
        )
        val = make_source(
            model._adapter,
            vx,
            vy,
            batch_size=batch_size,
            shuffle=False,
            need_y=need_y,
            sample_weight=vw,
        )
    elif validation_data is not None:
        val = validation_source(
            model._adapter, validation_data, batch_size, need_y=not model._custom("test")
        )
    train = make_source(
        model._adapter,
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


def check_tensors_finite(adapter: Any, x: Any, y: Any) -> None:
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


def validation_source(adapter: Any, validation_data: Any, batch_size: int, need_y: bool):
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


def split_for_validation(x: Any, y: Any, sample_weight: Any, validation_split: float, need_y: bool):
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


# ---------------------------------------------------------------------- loops
def batch_shapes(item: Any) -> str:
    """Shapes of a batch (or chunk) for error messages, without reading any value."""
    return ", ".join(
        str(tuple(leaf.shape)) for leaf in arrays.leaves(item) if hasattr(leaf, "shape")
    )


def run_steps(loop: StepLoop, fn: Any, where: str) -> None:
    """Run ``fn`` on every item of ``loop``; a failure names the step and the batch shapes.

    One ``try`` around the whole loop: free on the usual path (zero-cost exceptions).
    """
    try:
        for item in loop:
            fn(item)
    except (FitkitError, KeyboardInterrupt):
        raise
    except Exception as err:
        _raise_failed(where, loop.steps_done + 1, loop.item, err)


def call_hook(hook: Any, where: str, *args: Any) -> None:
    """A callback hook outside the step loop; a failure names where it happened."""
    try:
        hook(*args)
    except (FitkitError, KeyboardInterrupt):
        raise
    except Exception as err:
        raise StepFailedError(f"{where}: a callback failed: {type(err).__name__}: {err}") from err


def one_batch(
    model: Any, x: Any, y: Any, sample_weight: Any, class_weight: Any, mode: str
) -> tuple:
    """The checked batch of a batch-style call (``train_on_batch`` and friends)."""
    source = make_source(
        model._adapter,
        x,
        y,
        batch_size=None,
        shuffle=False,
        need_y=mode != "predict" and not model._custom(mode),
        sample_weight=sample_weight,
        class_weight=arrays.check_class_weight(class_weight),
    )
    # The first call checks against a forward pass; later ones reuse the output shapes.
    return checks.check_first(
        model, source, mode, "", run_network=model._adapter.example_inputs is None
    )


def on_batch(
    model: Any,
    mode: str,
    x: Any,
    y: Any,
    sample_weight: Any,
    class_weight: Any,
    reset_metrics: bool,
) -> dict[str, float]:
    """``train_on_batch`` / ``test_on_batch``: one step, its logs (running ones if not reset)."""
    model._require_compiled(f"{mode}_on_batch")
    batch = one_batch(model, x, y, sample_weight, class_weight, mode)
    if not reset_metrics and model._last_on_batch not in (None, mode):
        # train and test share metric states: they hold the other mode's batches now
        model._adapter.reset_logs(model._last_on_batch)
    model._last_on_batch = mode
    model._adapter.set_training(mode == "train")
    run = lambda b: model._adapter.run_batch(  # noqa: E731
        model._function(mode), b, mode, reset_metrics
    )
    return run_one(run, batch, f"{mode}_on_batch")


def run_one(fn: Any, batch: Any, where: str) -> Any:
    """``fn(batch)`` for the batch-style calls, with the same error as ``run_steps``."""
    try:
        return fn(batch)
    except (FitkitError, KeyboardInterrupt):
        raise
    except Exception as err:
        _raise_failed(where, None, batch, err)


def _raise_failed(where: str, step: int | None, item: Any, err: Exception) -> None:
    """A FitkitError raised inside a step (TensorFlow wraps those raised while tracing) as
    it is; any other error as a StepFailedError naming the step(s) and shapes."""
    cause: BaseException | None = err
    while cause is not None:
        if isinstance(cause, FitkitError):
            raise cause from None
        cause = cause.__cause__ or cause.__context__
    describe = getattr(item, "describe", None)
    shapes, n_steps = describe() if describe else (batch_shapes(item), 1)
    if step is not None:
        where += (
            f", step {step}"
            if n_steps == 1
            else f", steps {step}-{step + n_steps - 1} (run in one call)"
        )
    text = _lead_with_cause(re.sub(r"\x1b\[[0-9;]*m", "", str(err)).strip())  # Keras colours
    if len(text) > 600:  # the whole message stays in the chained cause
        text = text[:600] + " …"
    if checks.is_cuda_assert(text):
        text += f" ({checks.CUDA_ASSERT})"
    raise StepFailedError(
        f"{where} failed on a batch of shapes [{shapes}]: {type(err).__name__}: {text}"
    ) from err


def _lead_with_cause(text: str) -> str:
    """A traced TensorFlow error ("in user code:" and the frames through fitkit's step) as
    its cause first: the error the user's loss or layer raised, then where."""
    lines = text.splitlines()
    frames = [i for i, line in enumerate(lines) if line.lstrip().startswith('File "')]
    if not text.startswith("in user code:") or not frames:
        return text
    cause = " ".join(line.strip() for line in lines[frames[-1] + 2 :] if line.strip())
    cause = re.sub(r"^\w+(Error|Exception): ", "", cause)  # the outer message names the type
    return (
        f"{cause} (raised in the traced step; the frames are in the chained cause)"
        if cause
        else text
    )


def steps_per_call(model: Any, cbs: CallbackList, kind: str, log_every: int | None) -> int:
    """Steps per compiled call: the user's number, or 'auto' (all that no hook or log point
    needs to see one by one)."""
    if model._steps_per_execution != "auto":
        return model._steps_per_execution
    every = [n for n in (cbs.step_interval(kind), log_every) if n]
    return math.gcd(AUTO_STEPS_PER_EXECUTION, *every)


def fit_epoch(
    model: Any,
    epoch: int,
    state: FitState,
    *,
    train,
    val,
    cbs: CallbackList,
    display: EpochDisplay,
    limit: int | None,
    log_every: int | None,
    val_limit: int | None,
    validate_now: bool,
    terminate_on_nan: bool,
) -> dict[str, float]:
    """One epoch: hooks, train steps, validation, display, the history row; returns the logs.

    With ``terminate_on_nan``, a non-finite loss or weight at a log point (a step log or
    the epoch end; finite.py) ends the epoch there and stops training with a warning.
    A resumed epoch (``state.resume_step``) continues where the backup was made: its begin
    hooks ran before the backup, and its running logs came back with the state.
    """
    adapter = model._adapter
    start = time.perf_counter()
    resumed = state.resume_step
    state.epoch, state.step = epoch, resumed or 0
    if not resumed:
        call_hook(cbs.on_epoch_begin, f"fit: epoch {epoch + 1} begin", epoch, None)
        adapter.scheduler.epoch_begin(epoch)
        adapter.reset_logs("train")
    adapter.set_training(True)
    display.begin_epoch(epoch, limit or train.steps)
    if resumed:
        display.advance(resumed)
    group = steps_per_call(model, cbs, "train", log_every)
    guard = finite.Guard(adapter) if terminate_on_nan else None
    read = guard.read if guard else lambda: adapter.read_logs("train")
    loop = StepLoop(
        open_pass(adapter, state, train, group, limit),
        kind="train",
        callbacks=cbs,
        display=display,
        log_every=log_every,
        read_logs=read,
        steps_done=resumed or 0,
        stop_if=guard,
        stop_requested=lambda: model.stop_training,
    )
    state.loop, state.resume_step = loop, None
    run_steps(loop, model._function("train"), f"fit: epoch {epoch + 1}")
    adapter.finish_epoch()  # a last, partial window of accumulated gradients
    state.step = loop.steps_done
    logs = read()  # host sync: epoch end
    if guard is not None and (guard.what is not None or guard(logs)):
        finite.stop(model, guard, epoch, loop.steps_done)
        validate_now = False
    if val is not None and validate_now:
        val_logs = evaluate(model, val, cbs, val_limit, f"fit: validation after epoch {epoch + 1}")
        finite.check_validation(state, epoch, logs, val_logs)
        logs.update({f"val_{k}": v for k, v in val_logs.items()})
    logs.update(adapter.learning_rates())  # one column per param group (history.lr_columns)
    display.end_epoch(epoch, logs, time.perf_counter() - start)
    streams.end_epoch(model, state, epoch, loop.steps_done, limit, loop.stopped)
    if not state.keys_checked:  # a custom step: its keys are known now
        cbs.check_monitors(
            expected_keys(
                [k for k in logs if not k.startswith("val_") and not is_lr_column(k)],
                val is not None,
                adapter.learning_rates(),
            )
        )
        state.keys_checked = True
    model.history.append(epoch, logs)
    adapter.scheduler.epoch_end(epoch, logs)
    state.global_step += loop.steps_done - (resumed or 0)
    state.epoch, state.step, state.loop = epoch + 1, 0, None
    if not state.pass_step:  # the next epoch's pass takes its own snapshot
        state.epoch_rng = {}
    call_hook(cbs.on_epoch_end, f"fit: end of epoch {epoch + 1}", epoch, logs)
    return logs


def expected_keys(train_keys: list, with_validation: bool, lr_keys: Any) -> list[str]:
    """The keys every epoch's logs will hold (validation ones when there is validation, and
    ``lr_keys``: the adapter's learning-rate columns)."""
    keys = list(train_keys)
    return keys + ([f"val_{k}" for k in keys] if with_validation else []) + list(lr_keys)


def open_pass(adapter: Any, state: FitState, train: Any, group: int, limit: int | None):
    """This epoch's batches, with the RNGs as the pass began recorded (or, when resuming,
    put back while the pass opens and skips what was done, so it draws the same order).
    With steps_per_epoch (``limit``), one pass goes on across epochs (streams.py)."""
    if limit is not None:
        return streams.epoch_batches(adapter, state, train, group, limit)
    rngs = backend_part(adapter, "state")
    if not state.epoch_rng:  # a new epoch (or one resumed at its start): the RNGs as they are
        state.epoch_rng = rngs.rng_state()
    if state.resume_step is None:
        return train.batches(group, limit)
    if not state.resume_step:  # a fresh pass, not the one a first-batch check opened
        return train.batches(group, limit, skip=0)
    now = rngs.rng_state()
    rngs.set_rng_state(state.epoch_rng)
    train.set_rng_state(unprefixed("source", state.epoch_rng))  # a loader's own generator
    batches = iter(train.batches(group, limit, skip=state.resume_step))
    first = next(batches, None)  # the order (and a loader's sampler seed) is drawn by now
    rngs.set_rng_state(now)
    return batches if first is None else chain([first], batches)


@contextmanager
def kept_mode(adapter: Any):
    """The network's train/eval mode as it was, after an evaluation or prediction."""
    was_training = adapter.training_mode()
    try:
        yield
    finally:
        adapter.set_training(was_training)


def validate_data(
    model: Any,
    x: Any,
    y: Any,
    *,
    batch_size: int | None,
    sample_weight: Any,
    steps: int | None,
    verbose: int,
    callbacks: Any,
) -> dict[str, float]:
    """``Model.validate``: a first-batch check, then one pass over ``(x, y)``."""
    arrays.check_verbose(verbose, "validate")
    batch_size = checked_batch_size(x, batch_size, "validate")
    source = make_source(
        model._adapter,
        x,
        y,
        batch_size=batch_size,
        shuffle=False,
        need_y=not model._custom("test"),
        sample_weight=sample_weight,
    )
    checks.check_first(model, source, "test")
    with kept_mode(model._adapter):
        logs = evaluate(model, source, CallbackList(callbacks, model, {}), steps)
    if verbose and distribute.is_main_process():
        print(f"validate - {format_logs(logs)}", flush=True)
    return logs


def predict_data(
    model: Any, x: Any, *, batch_size: int | None, verbose: int, callbacks: Any
) -> Any:
    """``Model.predict``: a first-batch check, then every batch's outputs as numpy."""
    arrays.check_verbose(verbose, "predict")
    start = time.perf_counter()
    batch_size = checked_batch_size(x, batch_size, "predict")
    source = make_source(
        model._adapter, x, None, batch_size=batch_size, shuffle=False, need_y=False
    )
    checks.check_first(model, source, "predict")
    with kept_mode(model._adapter):
        out = predict(model, source, CallbackList(callbacks, model, {}))
    if verbose and distribute.is_main_process():
        rows = arrays.leaves(out)[0].shape[0]
        print(f"predict - {rows} samples in {time.perf_counter() - start:.2f}s", flush=True)
    return out


def evaluate(
    model: Any, source: Any, cbs: CallbackList, limit: int | None = None, where: str = "validate"
) -> dict[str, float]:
    """Loss and metrics over one pass of ``source`` (at most ``limit`` steps)."""
    adapter = model._adapter
    adapter.set_training(False)
    adapter.reset_logs("test")
    cbs.on_test_begin(None)
    loop = StepLoop(
        source.batches(steps_per_call(model, cbs, "test", None), limit),
        kind="test",
        callbacks=cbs,
        read_logs=lambda: adapter.read_logs("test"),
    )
    run_steps(loop, model._function("test"), where)
    logs = adapter.read_logs("test")  # host sync: end of evaluation
    cbs.on_test_end(logs)
    return logs


def predict(model: Any, source: Any, cbs: CallbackList) -> Any:
    """Outputs of every batch of ``source``, merged into numpy arrays once at the end."""
    adapter = model._adapter
    adapter.set_training(False)
    predict_fn, outputs = model._function("predict"), []
    cbs.on_predict_begin(None)
    group = steps_per_call(model, cbs, "predict", None) if source.predicts_in_chunks else 1
    loop = StepLoop(source.batches(group), kind="predict", callbacks=cbs, read_logs=dict)
    run_steps(loop, lambda batch: outputs.append(predict_fn(batch)), "predict")
    cbs.on_predict_end(None)
    return adapter.outputs_to_numpy(outputs)  # host sync: one copy at the end
