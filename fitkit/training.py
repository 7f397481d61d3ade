"""The loops behind fit, validate and predict, and the batch-style calls.

Owns what happens once per epoch and once per pass (log points, history rows, a resumed
epoch's pass, errors that name the epoch and step); the whole fit around the epochs is
fitting.py's, the data sources data_args.py's, the first-batch checks checks.py's. Per-step
work belongs to the adapter's compiled steps and the bookkeeping to steps.StepLoop.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import chain
from typing import TYPE_CHECKING, Any

from . import arrays, checks, distribute, finite, framework_errors, streams
from .backend import backend_part
from .callbacks import CallbackList
from .data_args import make_source
from .display import EpochDisplay, format_logs
from .errors import FitkitError, StepFailedError
from .history import History, is_lr_column
from .resume import FitState, unprefixed
from .sources import checked_batch_size
from .steps import StepLoop

if TYPE_CHECKING:
    from .adapter import Adapter, BatchSource
    from .model import Model

AUTO_STEPS_PER_EXECUTION = 32  # steps per compiled call when nothing needs each step


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
    except Exception as err:  # noqa: BLE001 - a step runs user code: any error is named
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
    model: Model, x: Any, y: Any, sample_weight: Any, class_weight: Any, mode: str
) -> tuple:
    """The checked batch of a batch-style call (``train_on_batch`` and friends)."""
    source = make_source(
        model.runtime.adapter,
        x,
        y,
        batch_size=None,
        shuffle=False,
        need_y=mode != "predict" and not model.runtime.custom(mode),
        sample_weight=sample_weight,
        class_weight=arrays.check_class_weight(class_weight),
    )
    # The first call checks against a forward pass; later ones reuse the output shapes.
    return checks.check_first(
        model, source, mode, "", run_network=model.runtime.adapter.example_inputs is None
    )


def on_batch(
    model: Model,
    mode: str,
    x: Any,
    y: Any,
    sample_weight: Any,
    class_weight: Any,
    reset_metrics: bool,
) -> dict[str, float]:
    """``train_on_batch`` / ``test_on_batch``: one step, its logs (running ones if not reset)."""
    runtime = model.runtime
    runtime.require_compiled(f"{mode}_on_batch")
    batch = one_batch(model, x, y, sample_weight, class_weight, mode)
    if not reset_metrics and runtime.last_on_batch not in (None, mode):
        # train and test share metric states: they hold the other mode's batches now
        runtime.adapter.reset_logs(runtime.last_on_batch)
    runtime.last_on_batch = mode
    runtime.adapter.set_training(mode == "train")
    step = runtime.function(mode)
    return run_one(
        lambda b: runtime.adapter.run_batch(step, b, mode, reset_metrics), batch, f"{mode}_on_batch"
    )


def run_one(fn: Any, batch: Any, where: str) -> Any:
    """``fn(batch)`` for the batch-style calls, with the same error as ``run_steps``."""
    try:
        return fn(batch)
    except (FitkitError, KeyboardInterrupt):
        raise
    except Exception as err:  # noqa: BLE001 - a step runs user code: any error is named
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
    if framework_errors.is_cuda_assert(err):
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


def steps_per_call(model: Model, cbs: CallbackList, kind: str, log_every: int | None) -> int:
    """Steps per compiled call: the user's number, or 'auto' (all that no hook or log point
    needs to see one by one)."""
    chosen = model.runtime.steps_per_execution
    if isinstance(chosen, int):  # compile checked it: a whole number >= 1, or "auto"
        return chosen
    every = [n for n in (cbs.step_interval(kind), log_every) if n]
    return math.gcd(AUTO_STEPS_PER_EXECUTION, *every)


def fit_epoch(
    model: Model,
    epoch: int,
    state: FitState,
    *,
    train: BatchSource,
    val: BatchSource | None,
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
    adapter = model.runtime.adapter
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
    run_steps(loop, model.runtime.function("train"), f"fit: epoch {epoch + 1}")
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
    running_history(model).append(epoch, logs)
    adapter.scheduler.epoch_end(epoch, logs)
    state.global_step += loop.steps_done - (resumed or 0)
    state.epoch, state.step, state.loop = epoch + 1, 0, None
    if not state.pass_step:  # the next epoch's pass takes its own snapshot
        state.epoch_rng = {}
    call_hook(cbs.on_epoch_end, f"fit: end of epoch {epoch + 1}", epoch, logs)
    return logs


def running_history(model: Model) -> History:
    """The fit's history: run_fit's, or the one a backup restored at train begin."""
    if model.history is None:  # only if a callback dropped it: the fit's rows are lost
        model.history = History()
    return model.history


def expected_keys(train_keys: list, with_validation: bool, lr_keys: Any) -> list[str]:
    """The keys every epoch's logs will hold (validation ones when there is validation, and
    ``lr_keys``: the adapter's learning-rate columns)."""
    keys = list(train_keys)
    return keys + ([f"val_{k}" for k in keys] if with_validation else []) + list(lr_keys)


def open_pass(
    adapter: Adapter, state: FitState, train: BatchSource, group: int, limit: int | None
) -> Iterator[tuple[Any, int]]:
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
def kept_mode(adapter: Adapter) -> Iterator[None]:
    """The network's train/eval mode as it was, after an evaluation or prediction."""
    was_training = adapter.training_mode()
    try:
        yield
    finally:
        adapter.set_training(was_training)


def validate_data(
    model: Model,
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
        model.runtime.adapter,
        x,
        y,
        batch_size=batch_size,
        shuffle=False,
        need_y=not model.runtime.custom("test"),
        sample_weight=sample_weight,
    )
    checks.check_first(model, source, "test")
    with kept_mode(model.runtime.adapter):
        logs = evaluate(model, source, CallbackList(callbacks, model, {}), steps)
    if verbose and distribute.is_main_process():
        print(f"validate - {format_logs(logs)}", flush=True)
    return logs


def predict_data(
    model: Model, x: Any, *, batch_size: int | None, verbose: int, callbacks: Any
) -> Any:
    """``Model.predict``: a first-batch check, then every batch's outputs as numpy."""
    arrays.check_verbose(verbose, "predict")
    start = time.perf_counter()
    batch_size = checked_batch_size(x, batch_size, "predict")
    source = make_source(
        model.runtime.adapter, x, None, batch_size=batch_size, shuffle=False, need_y=False
    )
    checks.check_first(model, source, "predict")
    with kept_mode(model.runtime.adapter):
        out = predict(model, source, CallbackList(callbacks, model, {}))
    if verbose and distribute.is_main_process():
        rows = arrays.leaves(out)[0].shape[0]
        print(f"predict - {rows} samples in {time.perf_counter() - start:.2f}s", flush=True)
    return out


def evaluate(
    model: Model, source: Any, cbs: CallbackList, limit: int | None = None, where: str = "validate"
) -> dict[str, float]:
    """Loss and metrics over one pass of ``source`` (at most ``limit`` steps)."""
    adapter = model.runtime.adapter
    adapter.set_training(False)
    adapter.reset_logs("test")
    cbs.on_test_begin(None)
    loop = StepLoop(
        source.batches(steps_per_call(model, cbs, "test", None), limit),
        kind="test",
        callbacks=cbs,
        read_logs=lambda: adapter.read_logs("test"),
    )
    run_steps(loop, model.runtime.function("test"), where)
    logs = adapter.read_logs("test")  # host sync: end of evaluation
    cbs.on_test_end(logs)
    return logs


def predict(model: Model, source: Any, cbs: CallbackList) -> Any:
    """Outputs of every batch of ``source``, merged into numpy arrays once at the end."""
    adapter = model.runtime.adapter
    adapter.set_training(False)
    predict_fn, outputs = model.runtime.function("predict"), []
    cbs.on_predict_begin(None)
    group = steps_per_call(model, cbs, "predict", None) if source.predicts_in_chunks else 1
    loop = StepLoop(source.batches(group), kind="predict", callbacks=cbs, read_logs=dict)
    run_steps(loop, lambda batch: outputs.append(predict_fn(batch)), "predict")
    cbs.on_predict_end(None)
    return adapter.outputs_to_numpy(outputs)  # host sync: one copy at the end
