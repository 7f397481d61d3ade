"""The whole of a fit around its epochs: callbacks' lifecycle, schedulers, interrupts, and the
training state that checkpoints save and a resumed fit starts from.

Owns what happens once per fit and what ``save_checkpoint`` / ``load_checkpoint`` hold; one
epoch is training.py's, the file format checkpoint.py's, each backend's state its state.py's.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from . import arrays, checks, data_args, distribute, signals, statecheck, training
from .adapter import Adapter, BatchSource
from .backend import backend_part
from .callbacks import CallbackList
from .checkpoint import load_state, save_state
from .display import EpochDisplay
from .errors import FitkitError, FitkitValueError
from .history import History, renamed_lr
from .resume import FitState, LoadedCheckpoint, as_arrays, prefixed, restore_sources, source_arrays
from .sources import checked_batch_size

if TYPE_CHECKING:
    from .model import Model


def fit(
    model: Model,
    x: Any,
    y: Any,
    *,
    batch_size: int | None,
    epochs: int,
    verbose: int,
    callbacks: Any,
    validation_split: float,
    validation_data: Any,
    shuffle: bool,
    class_weight: Any,
    sample_weight: Any,
    initial_epoch: int,
    steps_per_epoch: int | None,
    validation_steps: int | None,
    validation_freq: Any,
    log_step_freq: int | None,
    terminate_on_nan: bool,
) -> History:
    """``Model.fit`` (which documents the arguments): checks them, makes the sources, checks
    a first batch of each, then runs the epochs."""
    batch_size = checked_batch_size(x, batch_size, "fit")
    arrays.check_fit_args(
        epochs=epochs,
        batch_size=batch_size,
        validation_split=validation_split,
        initial_epoch=initial_epoch,
        steps_per_epoch=steps_per_epoch,
        log_step_freq=log_step_freq,
        verbose=verbose,
        validation_steps=validation_steps,
        validation_freq=validation_freq,
    )
    class_weight = arrays.check_class_weight(class_weight)
    train, val = data_args.fit_sources(
        model,
        x,
        y,
        sample_weight,
        class_weight,
        batch_size,
        shuffle,
        validation_split,
        validation_data,
    )
    if steps_per_epoch is None and train.one_shot and epochs - initial_epoch > 1:
        raise FitkitValueError(
            "x is a one-shot iterator (a generator), which cannot restart for a second "
            "epoch. Pass steps_per_epoch=N, or a re-iterable (a list, a Dataset/DataLoader, "
            "a tf.data.Dataset)."
        )
    start_rng = backend_part(model.runtime.adapter, "state").rng_state()  # before any pass opens
    checks.check_first(model, train, "train")
    if val is not None:
        checks.check_first(model, val, "test", "validation_data", runs_next=False)
    cbs = CallbackList(
        callbacks,
        model,
        {
            "epochs": epochs,
            "batch_size": batch_size,
            "initial_epoch": initial_epoch,
            "steps": steps_per_epoch or train.steps,
            "verbose": verbose,
        },
    )
    display = EpochDisplay(verbose if distribute.is_main_process() else 0, epochs)
    with signals.StopOnSigterm(model):  # SIGTERM stops fit at a step boundary, as Ctrl-C
        return run_fit(
            model,
            train,
            val,
            cbs=cbs,
            display=display,
            epochs=epochs,
            initial_epoch=initial_epoch,
            start_rng=start_rng,
            validation_freq=validation_freq,
            epoch_args={
                "train": train,
                "val": val,
                "cbs": cbs,
                "display": display,
                "limit": steps_per_epoch,
                "log_every": log_step_freq,
                "val_limit": validation_steps,
                "terminate_on_nan": terminate_on_nan,
            },
        )


def run_fit(
    model: Model,
    train: BatchSource,
    val: BatchSource | None,
    *,
    cbs: CallbackList,
    display: EpochDisplay,
    epochs: int,
    initial_epoch: int,
    start_rng: dict,
    validation_freq: Any,
    epoch_args: dict,
) -> History:
    """Train from ``initial_epoch`` (or where a restored backup says) to ``epochs``.

    Ctrl-C or an error stops it with the history so far in ``model.history``, the model
    usable and on_train_end run; the exception then propagates (as in Keras).
    """
    runtime = model.runtime
    adapter = runtime.adapter
    resumed, runtime.pending = runtime.pending, None  # a checkpoint loaded by hand
    state = FitState(epoch=initial_epoch, epoch_rng=start_rng)
    state.sources = {"train": train, "val": val}
    if resumed is not None:
        restore_fit(adapter, resumed, state, cbs)
    state.epochs, state.keys_checked = epochs, runtime.custom("train") is False
    runtime.fit, runtime.callbacks = state, cbs
    if resumed is None:
        model.history = History()
    model.stop_training = False
    steps = epoch_args["limit"] or train.steps
    adapter.scheduler.begin(
        epochs, steps and -(-steps // adapter.controls.gradient_accumulation_steps)
    )
    if state.keys_checked:  # a custom step's keys are known once it has run (epoch end)
        cbs.check_monitors(
            training.expected_keys(
                adapter.outputs.log_names(), val is not None, adapter.learning_rates()
            )
        )
    was_training, logs = adapter.training_mode(), {}
    try:
        training.call_hook(cbs.on_train_begin, "fit: train begin", None)
        for epoch in range(state.epoch, epochs):
            signals.at_boundary()  # (steps' boundaries are the step loop's)
            logs = training.fit_epoch(
                model, epoch, state, **epoch_args, validate_now=due(validation_freq, epoch)
            )
            if model.stop_training:
                break
        else:
            signals.at_boundary()  # a resumed run would find every epoch done
        state.completed = True
    except BaseException as err:
        stopped_at(model, state, err)
        display.close()
        adapter.set_training(was_training)
        try:
            cbs.on_train_end(logs)
        except Exception as also:  # noqa: BLE001 - the first error is the one to see; this one is noted
            err.add_note(f"on_train_end also failed: {type(also).__name__}: {also}")
        raise
    display.close()
    adapter.set_training(was_training)
    training.call_hook(cbs.on_train_end, "fit: train end", logs)
    return training.running_history(model)


def stopped_at(model: Model, state: FitState, err: BaseException) -> None:
    """Record (and for Ctrl-C, print) where an interrupted fit stopped."""
    history = training.running_history(model)
    step = state.loop.steps_done if state.loop is not None else state.step
    where = (
        f"epoch {state.epoch + 1}, step {step}"
        if state.loop is not None
        else f"after epoch {state.epoch}"
    )
    kept = f"model.history keeps {len(history)} finished epoch(s)"
    if isinstance(err, KeyboardInterrupt):
        how = (
            "terminated (SIGTERM)"
            if isinstance(err, signals.Terminated)
            else "interrupted (Ctrl-C)"
        )
        state.interrupted = f"{how} at {where}"
        print(f"\nfit {state.interrupted}; {kept}.", file=sys.stderr, flush=True)
    else:
        state.interrupted = f"stopped by {type(err).__name__} at {where}"
    history.stop_reason = history.stop_reason or state.interrupted


def due(validation_freq: int | Sequence[int], epoch: int) -> bool:
    """Keras's validation_freq: every N epochs, or the listed (1-based) epochs."""
    if isinstance(validation_freq, int):
        return (epoch + 1) % validation_freq == 0
    return epoch + 1 in validation_freq


# ---------------------------------------------------------------------- checkpoints
def save_checkpoint(model: Model, path: str) -> None:
    """The whole training state in one file: weights, optimizer, schedulers, running logs,
    RNGs, history, and inside a fit its position and callbacks' states."""
    if not distribute.is_main_process():
        return  # every rank holds the same state: rank 0 writes it
    arrays, meta = model.runtime.adapter.get_state()
    state, cbs = model.runtime.fit, model.runtime.callbacks
    history = model.history or History()
    meta["history"] = {
        "epoch": history.epoch,
        "history": history.history,
        "stop_reason": history.stop_reason,
    }
    meta["fit"] = None  # outside a fit (always present: a removed field is refused at load)
    if state is not None and not state.completed and state.interrupted is None:
        epoch = state.epoch
        step = state.loop.steps_done if state.loop is not None else state.step
        meta["fit"] = {
            "epoch": epoch,
            "step": step,
            "epochs": state.epochs,
            "global_step": state.global_step,
            "pass_step": state.pass_step,
            "callbacks": cbs.state_dicts() if cbs is not None else [],
            "data": _data_shape(cbs),
        }
        if step or state.pass_step:  # mid-pass: the RNGs as it began, to draw its order again
            arrays.update(prefixed("epoch_rng", as_arrays(state.epoch_rng)))
        arrays.update(source_arrays(state, mid_epoch=bool(step)))
    save_state(str(path), arrays, meta)


def load_checkpoint(model: Model, path: str) -> dict:
    """Restore what save_checkpoint wrote; the next fit (or the running one, from a backup)
    continues from its position. Returns where: {"epoch": 1-based epoch it resumes in,
    "step": steps of it already done, "epochs": the saving fit's epochs (None outside one)}."""
    path = str(path)
    runtime = model.runtime
    adapter = runtime.adapter
    arrays, meta = load_state(path)
    backend = meta.get("backend")
    if backend != adapter.name:
        raise FitkitValueError(
            f"{path!r} holds a {backend} training state; this model is a "
            f"{adapter.name} model. Resume with the same backend."
        )
    running = runtime.open_fit()  # a backup restored at train begin: this fit continues
    cbs = runtime.callbacks if running is not None else None
    checked(path, lambda: check_checkpoint(adapter, arrays, meta, cbs))  # before any change
    history = History()
    history.epoch = list(meta["history"]["epoch"])
    history.history = {renamed_lr(k): list(v) for k, v in meta["history"]["history"].items()}
    history.stop_reason = meta["history"]["stop_reason"]
    fit = meta["fit"]
    if fit is None:  # saved outside a fit: the next one starts after its last epoch
        fit = {
            "epochs": None,
            "epoch": len(history),
            "step": 0,
            "global_step": 0,
            "callbacks": None,
        }
    loaded = LoadedCheckpoint(path, arrays, meta, fit)
    if running is not None and cbs is not None:
        restore_fit(adapter, loaded, running, cbs)
    else:
        adapter.set_state(arrays, meta)  # the model holds it now; the next fit starts there
        runtime.pending = loaded
    model.history = history
    return {"epoch": fit["epoch"] + 1, "step": fit["step"], "epochs": fit["epochs"]}


def restore_fit(
    adapter: Adapter, loaded: LoadedCheckpoint, state: FitState, cbs: CallbackList
) -> None:
    """The one resume path: put a loaded checkpoint into a fit, the running one's (a backup
    read at train begin) or one starting (a checkpoint loaded by hand, applied again after
    the first-batch checks reset the metric states: a mid-epoch checkpoint's running logs
    must come back as they were). The same data, the callbacks' states, the whole training
    state, the position, and what the data's own passes draw from."""
    fit = loaded.fit
    check_same_data(loaded.path, fit, cbs)
    if fit["callbacks"] is not None:  # saved inside a fit, with its callbacks' states
        checked(loaded.path, lambda: statecheck.check_callbacks(fit, cbs))
        cbs.load_state_dicts(fit["callbacks"], loaded.path)
    adapter.set_state(loaded.arrays, loaded.meta)
    loaded.put_position(state)
    restore_sources(state, loaded.arrays)


def check_checkpoint(adapter: Adapter, arrays: dict, meta: dict, cbs: CallbackList | None) -> None:
    """Every field of a loaded checkpoint against the model (statecheck.py, the backend's
    state.check_state): a FitkitValueError before anything is restored."""
    statecheck.check_history(meta)
    statecheck.check_fit(meta, arrays, backend_part(adapter, "state").check_rngs, cbs)
    adapter.check_state(arrays, meta)


def checked(path: str, check: Callable[[], None]) -> None:
    """Run ``check``; a refusal that does not name the file is raised naming it."""
    try:
        check()
    except FitkitError as err:
        if repr(path) in str(err):
            raise
        raise type(err)(f"Cannot load the checkpoint {path!r}: {err}") from None


def _data_shape(cbs: CallbackList | None) -> dict:
    params = cbs.params if cbs is not None else {}
    return {"batch_size": params.get("batch_size"), "steps": params.get("steps")}


def check_same_data(path: str, fit: dict, cbs: CallbackList) -> None:
    """A resumed epoch skips the batches already done: only right with the same batches."""
    saved, now = fit.get("data", {}), _data_shape(cbs)
    if fit["step"] and saved != now:
        raise FitkitValueError(
            f"{path!r} was saved mid-epoch by a fit with batch_size={saved.get('batch_size')} "
            f"and {saved.get('steps')} steps per epoch; this fit has batch_size="
            f"{now['batch_size']} and {now['steps']}. Resume with the same data and "
            f"batch_size (or delete the backup to start again)."
        )
