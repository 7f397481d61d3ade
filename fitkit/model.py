"""The facade: fitkit.Model. Owns the public methods and their argument checks.

Knows nothing of torch or tensorflow: every backend difference is an Adapter method
(see adapter.py). The loops and first-batch checks live in training.py, output structure
in outputs.py; device values are read only through ``Adapter.read_logs`` at log points.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Iterable, Mapping, Sequence

from . import arrays, checks, distribute, fitting, specs, training
from .backend import adapter_module, backend_for, backend_part
from .callbacks import Callback, CallbackList
from .controls import configured, training_controls
from .display import EpochDisplay, format_logs, summary_table
from .errors import FitkitValueError, NotCompiledError
from .history import History
from .sources import unpack


class Model:
    """Wrap a native network (torch.nn.Module or keras.Model) to train it Keras-style.

    >>> model = fitkit.Model(net)
    >>> model.compile(optimizer="adam", loss="mse", metrics=["mae"])
    >>> history = model.fit(x, y, epochs=5, validation_split=0.2)
    """

    def __init__(self, net: Any, *, device: Any = None) -> None:
        self.backend: str = backend_for(net)
        self._adapter = adapter_module(self.backend).Adapter(net, device=device)
        self._compiled = False
        self._steps_per_execution: int | str = "auto"
        self._functions: dict[str, Callable] = {}
        self.stop_training = False
        self.history: History | None = None
        self._fit_state: Any = None      # resume.FitState of the running (or last) fit
        self._fit_callbacks: Any = None  # its CallbackList, for checkpoints
        self._resume: Any = None         # a state load_checkpoint restored, for the next fit
        self._last_on_batch: str | None = None  # "train" / "test": the last batch-style call
        self._shared = type(self).shared_step is not Model.shared_step  # read every step

    # ------------------------------------------------------------------ native objects
    @property
    def net(self) -> Any:
        """The native network."""
        return self._adapter.net

    @property
    def optimizer(self) -> Any:
        return self._adapter.optimizer

    @property
    def loss_fn(self) -> Any:
        """compile's ``loss``, as it was given."""
        return self._adapter.loss_fn

    @property
    def learning_rate(self) -> float:
        self._require_compiled("learning_rate")
        return self._adapter.get_learning_rate()

    @learning_rate.setter
    def learning_rate(self, value: float) -> None:
        self._require_compiled("learning_rate")
        self._adapter.set_learning_rate(float(value))

    @property
    def metrics_names(self) -> list[str]:
        """The keys of the logs dicts, in order: loss, each output's loss, then metrics.

        Per-output names are known once the network's outputs have been seen.
        """
        self._require_compiled("metrics_names")
        return self._adapter.outputs.log_names()

    # ------------------------------------------------------------------ compile
    def compile(self, optimizer: Any = None, loss: Any = None,
                metrics: Sequence[Any] | Mapping[str, Any] | None = None, *,
                loss_weights: Sequence[float] | Mapping[str, float] | None = None,
                output: str | int | None = None, lr: float | None = None,
                lr_schedule: Any = None, lr_schedule_every: str = "epoch",
                lr_schedule_monitor: str = "val_loss", clipnorm: float | None = None,
                clipvalue: float | None = None, global_clipnorm: float | None = None,
                gradient_accumulation_steps: int = 1, precision: str = "32",
                jit_compile: bool = False, steps_per_execution: int | str = "auto",
                run_eagerly: bool = False) -> "Model":
        """Choose optimizer (default "adam"), loss and metrics; strings mean the same on both
        backends. A subclass may choose optimizer and schedule in ``configure_optimizers``.

        ``loss``, ``loss_weights`` and ``metrics`` may be dicts by output name or lists in
        output order for a network with several outputs (as Keras takes them); ``output``
        names the one output (dict key or position) to train when the network returns several.
        ``lr_schedule``: a torch lr_scheduler (or a factory ``optimizer -> scheduler``), a Keras
        LearningRateSchedule, or a portable one ("cosine", fitkit.schedules.*), stepped each
        epoch or each batch (``lr_schedule_every``); a plateau scheduler reads
        ``lr_schedule_monitor``. ``clipnorm`` / ``global_clipnorm`` / ``clipvalue`` clip
        gradients as Keras's optimizers do; ``gradient_accumulation_steps=N`` updates once
        every N batches. ``precision``: "32", "bf16" or "fp16" (mixed precision).
        ``jit_compile``: torch.compile the step (torch) / XLA (TensorFlow).
        ``steps_per_execution``: steps a graph backend (TensorFlow) runs per compiled call;
        "auto" picks 32, or fewer when a callback has batch hooks.
        ``run_eagerly``: run TensorFlow steps as plain Python, for debugging (torch always is).

        >>> model.compile("adam", "cross_entropy", metrics=["accuracy"], lr=1e-3)
        """
        if loss is None and not (self._custom("train") or self._custom("test")):
            raise FitkitValueError("compile needs a loss, e.g. loss='mse' or loss='cross_entropy' "
                                   "(or override train_step to train without one).")
        if isinstance(metrics, (str, specs.MetricSpec)):
            metrics = [metrics]
        if type(self).configure_optimizers is not Model.configure_optimizers:
            optimizer, lr_schedule, lr_schedule_every, lr_schedule_monitor = configured(
                self.configure_optimizers(), optimizer, lr_schedule, lr_schedule_every,
                lr_schedule_monitor)
        controls = training_controls(
            clipnorm=clipnorm, clipvalue=clipvalue, global_clipnorm=global_clipnorm,
            gradient_accumulation_steps=gradient_accumulation_steps, precision=precision,
            jit_compile=jit_compile, lr_schedule=lr_schedule, lr=lr,
            lr_schedule_every=lr_schedule_every, lr_schedule_monitor=lr_schedule_monitor,
            steps_per_execution=steps_per_execution)
        self._adapter.compile("adam" if optimizer is None else optimizer, loss, metrics or [],
                              lr, controls.precision, loss_weights=loss_weights,
                              output=output, run_eagerly=bool(run_eagerly), controls=controls)
        self._steps_per_execution = steps_per_execution
        self._functions.clear()
        self._compiled = True
        return self

    # ------------------------------------------------------------------ class style
    def train_step(self, batch: tuple) -> dict:
        """One optimisation step on ``batch`` = (x, y) or (x, y, sample_weight); returns logs.

        Override it with backend-native code (see ``unpack_batch``, ``compute_loss``,
        ``update_metrics``, ``autocast``); return a dict of device values. Or override
        ``shared_step`` alone: fitkit then does the update (with the training controls).
        """
        if self._shares_step():
            return self._adapter.shared_train_step(batch, self.shared_step)
        return self._adapter.train_step(batch, self.compute_loss)

    def test_step(self, batch: tuple) -> dict:
        """One evaluation step; updates the metrics; returns a dict of device values."""
        if self._shares_step():
            return self._adapter.shared_test_step(batch, self.shared_step)
        return self._adapter.test_step(batch, self.compute_loss)

    def shared_step(self, batch: tuple) -> dict:
        """Override to write one step for training and validation (the tutorial's
        LightModel): return ``{"loss": loss, "accuracy": ...}`` of device values; fitkit
        differentiates "loss" and updates in training, and averages every value exactly
        over the samples. ``self(x)`` runs the network in the step's mode.

        >>> def shared_step(self, batch):
        ...     x, y = self.unpack_batch(batch)[:2]
        ...     y_pred = self(x)
        ...     return {"loss": F.binary_cross_entropy(y_pred, y), "acc": ((y_pred > 0.5) == y).float().mean()}
        """
        raise NotImplementedError

    def __call__(self, *inputs: Any) -> Any:
        """The network on ``inputs`` in the current step's mode (train or inference)."""
        return self._adapter.call(inputs[0] if len(inputs) == 1 else inputs)

    def _shares_step(self) -> bool:
        return self._shared

    def predict_step(self, batch: tuple) -> Any:
        """The network's outputs for ``batch = (x, None)``."""
        return self._adapter.predict_step(batch)

    def compute_loss(self, x: Any, y: Any, y_pred: Any, sample_weight: Any = None) -> Any:
        """The compiled loss, weighted per output and per sample (plus Keras's layer losses)."""
        return self._adapter.compute_loss(x, y, y_pred, sample_weight)

    def update_metrics(self, y: Any, y_pred: Any, sample_weight: Any = None) -> None:
        """Accumulate the compiled metrics on the device (for custom train/test steps)."""
        self._adapter.update_metrics(y, y_pred, sample_weight)

    @staticmethod
    def unpack_batch(batch: Any) -> tuple[Any, Any, Any]:
        """``(x, y, sample_weight)`` of a batch; missing parts are None.

        >>> x, y, w = self.unpack_batch(batch)
        """
        return unpack(batch)

    def autocast(self) -> Any:
        """The compiled precision as a context manager, for custom steps.

        >>> with self.autocast():
        ...     y_pred = self.net(x)
        """
        return self._adapter.autocast()

    def configure_optimizers(self) -> Any:
        """Override to choose the optimizer (and a schedule) in code, as Lightning does:
        return an optimizer, ``(optimizer, scheduler)``, or ``{"optimizer": ..., "lr_scheduler":
        scheduler or {"scheduler": ..., "interval": "epoch" | "step", "monitor": ...}}``.
        compile calls it; pass no optimizer to compile then.

        >>> def configure_optimizers(self):
        ...     opt = torch.optim.SGD(self.net.parameters(), lr=0.1)
        ...     return opt, torch.optim.lr_scheduler.StepLR(opt, step_size=10)
        """
        return None

    def _custom(self, mode: str) -> bool:
        """True when a subclass overrides ``<mode>_step`` (or ``shared_step``, for train and
        test): it uses the data its own way."""
        return getattr(type(self), f"{mode}_step") is not getattr(Model, f"{mode}_step") or \
            (mode != "predict" and self._shares_step())

    # ------------------------------------------------------------------ fit
    def fit(self, x: Any = None, y: Any = None, *, batch_size: int = 32, epochs: int = 1,
            verbose: int = 1, callbacks: Iterable[Callback] | None = None,
            validation_split: float = 0.0, validation_data: Any = None, shuffle: bool = True,
            class_weight: Mapping[int, float] | None = None, sample_weight: Any = None,
            initial_epoch: int = 0, steps_per_epoch: int | None = None,
            validation_steps: int | None = None, validation_freq: int | Sequence[int] = 1,
            log_step_freq: int | None = None, terminate_on_nan: bool = True) -> History:
        """Train for ``epochs``; returns a History (also kept as ``model.history``).

        A loss that turns NaN or infinite stops training at the next log point (a step log
        or the epoch end), with a warning and the history kept; ``terminate_on_nan=False``
        trains on. A failing step raises a FitkitError naming the epoch, step and shapes.

        >>> model.fit(x, y, batch_size=64, epochs=10, validation_data=(xv, yv))
        """
        self._require_compiled("fit")
        arrays.check_fit_args(epochs=epochs, batch_size=batch_size,
                              validation_split=validation_split, initial_epoch=initial_epoch,
                              steps_per_epoch=steps_per_epoch, log_step_freq=log_step_freq,
                              verbose=verbose, validation_steps=validation_steps,
                              validation_freq=validation_freq)
        class_weight = arrays.check_class_weight(class_weight)
        train, val = training.fit_sources(
            self, x, y, sample_weight, class_weight, batch_size, shuffle, validation_split,
            validation_data)
        if steps_per_epoch is None and train.one_shot and epochs - initial_epoch > 1:
            raise FitkitValueError(
                "x is a one-shot iterator (a generator), which cannot restart for a second "
                "epoch. Pass steps_per_epoch=N, or a re-iterable (a list, a Dataset/DataLoader, "
                "a tf.data.Dataset).")
        start_rng = backend_part(self._adapter, "state").rng_state()  # before any pass opens
        self._check_first(train, "train")
        if val is not None:
            self._check_first(val, "test", what="validation_data")
        cbs = CallbackList(callbacks, self, {
            "epochs": epochs, "batch_size": batch_size, "initial_epoch": initial_epoch,
            "steps": steps_per_epoch or train.steps, "verbose": verbose})
        display = EpochDisplay(verbose if distribute.is_main_process() else 0, epochs)
        return fitting.run_fit(
            self, train, val, cbs=cbs, display=display, epochs=epochs,
            initial_epoch=initial_epoch, start_rng=start_rng, validation_freq=validation_freq,
            epoch_args={"train": train, "val": val, "cbs": cbs, "display": display,
                        "limit": steps_per_epoch, "log_every": log_step_freq,
                        "val_limit": validation_steps, "terminate_on_nan": terminate_on_nan})

    def _check_first(self, source: Any, mode: str, what: str = "", *,
                     run_network: bool = True) -> tuple:
        return checks.check_first(self, source, mode, what, run_network=run_network)

    def _function(self, mode: str) -> Callable:
        """The compiled step for ``mode``, built once per compile (tf.function on TensorFlow)."""
        if mode not in self._functions:
            step = getattr(self, f"{mode}_step")
            self._functions[mode] = self._adapter.make_function(step, mode)
        return self._functions[mode]

    def _require_compiled(self, what: str) -> None:
        if not self._compiled:
            raise NotCompiledError(
                f"{what} needs a compiled model: call model.compile(optimizer=..., loss=...) first."
            )

    # ------------------------------------------------------------------ evaluate / predict
    def validate(self, x: Any = None, y: Any = None, *, batch_size: int = 32,
                 sample_weight: Any = None, steps: int | None = None, verbose: int = 0,
                 callbacks: Iterable[Callback] | None = None,
                 return_dict: bool = True) -> dict[str, float] | list[float]:
        """Loss and metrics over ``(x, y)``, exact over samples. ``evaluate`` is the same.

        ``return_dict=False`` gives a list in ``metrics_names`` order, as Keras does.

        >>> model.validate(x_val, y_val)
        {'loss': 0.31, 'accuracy': 0.9}
        """
        self._require_compiled("validate")
        arrays.check_verbose(verbose, "validate")
        source = training.make_source(self._adapter, x, y, batch_size=batch_size, shuffle=False,
                                      need_y=not self._custom("test"),
                                      sample_weight=sample_weight)
        self._check_first(source, "test")
        was_training = self._adapter.training_mode()
        try:
            logs = training.evaluate(self, source, CallbackList(callbacks, self, {}), steps)
        finally:
            self._adapter.set_training(was_training)
        if verbose and distribute.is_main_process():
            print(f"validate - {format_logs(logs)}", flush=True)
        return logs if return_dict else list(logs.values())

    evaluate = validate

    def predict(self, x: Any, *, batch_size: int = 32, verbose: int = 0,
                callbacks: Iterable[Callback] | None = None) -> Any:
        """Outputs for ``x`` as numpy (a tuple / dict of arrays for multi-output networks).

        >>> probs = model.predict(x_test, batch_size=256)
        """
        arrays.check_verbose(verbose, "predict")
        start = time.perf_counter()
        source = training.make_source(self._adapter, x, None, batch_size=batch_size,
                                      shuffle=False, need_y=False)
        self._check_first(source, "predict")
        was_training = self._adapter.training_mode()
        try:
            out = training.predict(self, source, CallbackList(callbacks, self, {}))
        finally:
            self._adapter.set_training(was_training)
        if verbose and distribute.is_main_process():
            rows = arrays.leaves(out)[0].shape[0]
            print(f"predict - {rows} samples in {time.perf_counter() - start:.2f}s", flush=True)
        return out

    # ------------------------------------------------------------------ batch style
    def train_on_batch(self, x: Any, y: Any = None, *, sample_weight: Any = None,
                       class_weight: Mapping[int, float] | None = None,
                       reset_metrics: bool = True) -> dict[str, float]:
        """One step on one batch; returns that batch's logs (running ones if not reset)."""
        return training.on_batch(self, "train", x, y, sample_weight, class_weight,
                                 reset_metrics)

    def test_on_batch(self, x: Any, y: Any = None, *, sample_weight: Any = None,
                      reset_metrics: bool = True) -> dict[str, float]:
        """Evaluate one batch; returns its logs (running ones if ``reset_metrics=False``)."""
        return training.on_batch(self, "test", x, y, sample_weight, None, reset_metrics)

    def predict_on_batch(self, x: Any) -> Any:
        """Outputs for one batch, as numpy."""
        batch = training.one_batch(self, x, None, None, None, "predict")
        was_training = self._adapter.training_mode()
        self._adapter.set_training(False)
        try:
            return self._adapter.outputs_to_numpy([self._function("predict")(batch)])
        finally:
            self._adapter.set_training(was_training)

    def reset_metrics(self) -> None:
        """Zero the running loss and metric states (train and test)."""
        self._adapter.reset_logs("train")
        self._adapter.reset_logs("test")

    # ------------------------------------------------------------------ weights, summary
    def save_weights(self, path: str) -> None:
        """Save the network's weights (torch: .safetensors or .pt; TensorFlow: .weights.h5)."""
        self._adapter.save_weights(str(path))

    def load_weights(self, path: str, *, strict: bool = True) -> dict[str, list[str]]:
        """Load weights saved by ``save_weights``; the whole file is checked first.

        ``strict=False`` loads the entries that match and returns what it skipped
        (``{"missing": [...], "unexpected": [...], "mismatched": [...]}``).
        """
        return self._adapter.load_weights(str(path), strict=strict)

    def get_weights(self) -> list:
        """The network's weights (and buffers / statistics) as numpy arrays, as Keras gives."""
        return backend_part(self._adapter, "state").get_weights(self._adapter)

    def set_weights(self, weights: list) -> None:
        """Set what ``get_weights`` returned (same number and shapes)."""
        backend_part(self._adapter, "state").set_weights(self._adapter, list(weights))

    def save_checkpoint(self, path: str) -> None:
        """Save the whole training state (weights, optimizer, schedulers, RNGs, history, and
        inside a fit its position) atomically in one file; ``load_checkpoint`` resumes it.

        >>> model.save_checkpoint("run/state.fitkit")
        """
        self._require_compiled("save_checkpoint")
        fitting.save_checkpoint(self, path)

    def load_checkpoint(self, path: str) -> dict:
        """Restore a ``save_checkpoint`` file; the next ``fit`` continues from where it was
        saved (same data and batch size). Returns ``{"epoch", "step", "epochs"}``.

        >>> model.load_checkpoint("run/state.fitkit"); model.fit(x, y, epochs=10)
        """
        self._require_compiled("load_checkpoint")
        return fitting.load_checkpoint(self, path)

    def summary(self, input_shape: Any = None, *, input_data: Any = None,
                print_fn: Callable[[str], Any] | None = print):
        """Print layer (type), output shape and params; return them as a DataFrame.

        With no arguments it uses a built Keras model's inputs, or a batch fitkit has seen.

        >>> model.summary(input_shape=(32,))
        """
        import pandas as pd

        info = self._adapter.summary(input_shape, input_data)
        if print_fn is not None:
            print_fn(summary_table(info.rows, info.total, info.trainable, info.param_bytes))
        return pd.DataFrame(info.rows, columns=["layer", "output_shape", "params"])

    def __repr__(self) -> str:
        return f"fitkit.Model({type(self.net).__name__}, backend={self.backend!r})"

