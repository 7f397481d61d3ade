"""The facade: fitkit.Model. Owns the public methods and their argument checks.

Knows nothing of torch or tensorflow: every backend difference is an Adapter method
(see adapter.py). The steps a subclass overrides live in custom_steps.py, the fit in
fitting.py, an epoch and the passes in training.py, output structure in outputs.py; device
values are read only through ``Adapter.read_logs`` at log points.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from . import fitting, hf, identifiers, specs, training
from .backend import backend_for, backend_module, backend_part
from .callbacks import Callback
from .controls import configured, training_controls
from .custom_steps import CustomSteps
from .display import summary_table
from .history import History
from .optimizer_sets import check_compile, one_optimizer
from .outputs import with_weighted
from .runtime import Runtime


class Model(CustomSteps):
    """Wrap a native network (torch.nn.Module or keras.Model) to train it Keras-style.

    >>> model = fitkit.Model(net)
    >>> model.compile(optimizer="adam", loss="mse", metrics=["mae"])
    >>> history = model.fit(x, y, epochs=5, validation_split=0.2)

    ``label_names``: the keys of dict batches that are the targets (default ``["labels"]``,
    as Hugging Face's ``TrainingArguments(label_names=...)``); the other keys are keyword
    inputs. See docs/huggingface.md.
    """

    def __init__(
        self, net: Any, *, device: Any = None, label_names: Sequence[str] | None = None
    ) -> None:
        self.backend: str = backend_for(net)
        adapter = backend_module(self.backend, "adapter").Adapter(net, device=device)
        adapter.label_names = hf.check_label_names(label_names)
        # fitkit's own state of this model (the adapter, compiled steps, the running fit):
        # what fitting, training, checks and callbacks read; not for user code
        self.runtime = Runtime(adapter, steps=self)
        self.stop_training = False
        self.history: History | None = None

    # ------------------------------------------------------------------ native objects
    @property
    def net(self) -> Any:
        """The native network (a torch.nn.Module or keras.Model); fit trains it in place.

        >>> fitkit.Model(net).net is net
        True
        """
        return self.runtime.adapter.net

    @property
    def optimizer(self) -> Any:
        """The native optimizer compile built or was given (None before compile); with several
        from ``configure_optimizers``, an error naming ``self.optimizers()``.

        >>> model.compile("adam", "mse")  # doctest: +ELLIPSIS
        fitkit.Model(...)
        >>> type(model.optimizer).__name__
        'Adam'
        """
        return one_optimizer(self.runtime.adapter, "model.optimizer")

    @property
    def loss_fn(self) -> Any:
        """compile's ``loss``, as it was given.

        >>> model.compile("adam", "mse")  # doctest: +ELLIPSIS
        fitkit.Model(...)
        >>> model.loss_fn
        'mse'
        """
        return self.runtime.adapter.loss_fn

    @property
    def learning_rate(self) -> float:
        """The optimizer's learning rate now, to read or set between steps (on both backends;
        TF 2's ``optimizer.lr`` is refused with a FitkitAttributeError naming this). With
        several torch param groups it is group 0's; setting it gives group 0 the value and
        scales every other group by the same factor (their ratios are kept).

        >>> model.learning_rate = 0.5
        >>> model.learning_rate
        0.5
        """
        self.runtime.require_compiled("learning_rate")
        one_optimizer(self.runtime.adapter, "model.learning_rate")
        return self.runtime.adapter.get_learning_rate()

    @learning_rate.setter
    def learning_rate(self, value: float) -> None:
        self.runtime.require_compiled("learning_rate")
        one_optimizer(self.runtime.adapter, "model.learning_rate")
        self.runtime.adapter.set_learning_rate(float(value))

    @property
    def metrics_names(self) -> list[str]:
        """The keys of the logs dicts, in order: loss, each output's loss, then metrics.

        Per-output names are known once the network's outputs have been seen.

        >>> model.compile("adam", "cross_entropy", metrics=["accuracy"])  # doctest: +ELLIPSIS
        fitkit.Model(...)
        >>> logs = model.train_on_batch(x[:32], y[:32]); model.metrics_names
        ['loss', 'accuracy']
        """
        self.runtime.require_compiled("metrics_names")
        return self.runtime.adapter.outputs.log_names()

    # ------------------------------------------------------------------ compile
    def compile(
        self,
        optimizer: Any = None,
        loss: Any = None,
        metrics: Sequence[Any] | Mapping[str, Any] | None = None,
        *,
        weighted_metrics: Sequence[Any] | Mapping[str, Any] | None = None,
        loss_weights: Sequence[float] | Mapping[str, float] | None = None,
        output: str | int | None = None,
        lr: float | None = None,
        lr_schedule: Any = None,
        lr_schedule_every: str = "epoch",
        lr_schedule_monitor: str = "val_loss",
        clipnorm: float | None = None,
        clipvalue: float | None = None,
        global_clipnorm: float | None = None,
        gradient_accumulation_steps: int = 1,
        precision: str = "32",
        jit_compile: bool = False,
        steps_per_execution: int | str = "auto",
        run_eagerly: bool = False,
    ) -> Model:
        """Choose optimizer (default "adam"), loss and metrics; strings mean the same on both
        backends (a subclass may choose optimizer and schedule in ``configure_optimizers``).

        ``metrics`` ignore sample and class weights; ``weighted_metrics`` apply them (Keras's
        rule; a weighted twin of a plain metric logs as ``weighted_<name>``).
        Several outputs: ``loss``, ``loss_weights``, ``metrics`` as dicts by output name or
        lists in output order (as Keras takes them); ``output`` trains just one (key or index).
        ``lr_schedule``: a torch scheduler (or ``optimizer -> scheduler``), a Keras
        LearningRateSchedule or a portable one ("cosine", fitkit.schedules.*), stepped per
        ``lr_schedule_every`` ("epoch" / "batch"); a plateau one reads ``lr_schedule_monitor``.
        ``clipnorm`` / ``global_clipnorm`` / ``clipvalue`` as Keras's optimizers;
        ``gradient_accumulation_steps=N`` updates every N batches; ``precision`` "32", "bf16"
        or "fp16"; ``jit_compile``: torch.compile / XLA; ``steps_per_execution``: steps per
        compiled TensorFlow call ("auto": 32, fewer for batch hooks); ``run_eagerly``: plain
        Python TensorFlow steps, for debugging. ``loss=None``: the ``loss`` the network's
        output carries trains it (a Hugging Face model given its labels); refused at the first
        batch when there is none.

        >>> model.compile("adam", "cross_entropy", metrics=["accuracy"], lr=1e-3)
        """
        optimizer, loss, metrics = identifiers.parse_compile(optimizer, loss, metrics)
        weighted_metrics = identifiers.parse_compile(None, None, weighted_metrics)[2]
        if isinstance(metrics, (str, specs.MetricSpec, identifiers.KerasIdentifier)):
            metrics = [metrics]
        metrics = with_weighted(metrics, weighted_metrics)
        if type(self).configure_optimizers is not CustomSteps.configure_optimizers:
            optimizer, lr_schedule, lr_schedule_every, lr_schedule_monitor = configured(
                self.configure_optimizers(),
                optimizer,
                lr_schedule,
                lr_schedule_every,
                lr_schedule_monitor,
            )
        controls = training_controls(
            clipnorm=clipnorm,
            clipvalue=clipvalue,
            global_clipnorm=global_clipnorm,
            gradient_accumulation_steps=gradient_accumulation_steps,
            precision=precision,
            jit_compile=jit_compile,
            lr_schedule=lr_schedule,
            lr=lr,
            lr_schedule_every=lr_schedule_every,
            lr_schedule_monitor=lr_schedule_monitor,
            steps_per_execution=steps_per_execution,
        )
        check_compile(optimizer, controls, lr, type(self).train_step is not CustomSteps.train_step)
        self.runtime.adapter.compile(
            "adam" if optimizer is None else optimizer,
            loss,
            metrics or [],
            lr,
            controls.precision,
            loss_weights=loss_weights,
            output=output,
            run_eagerly=bool(run_eagerly),
            controls=controls,
        )
        self.runtime.steps_per_execution = steps_per_execution
        self.runtime.functions.clear()
        self.runtime.checked_kinds.clear()  # another loss or metrics: checked anew
        self.runtime.compiled = True
        return self

    # ------------------------------------------------------------------ fit
    def fit(
        self,
        x: Any = None,
        y: Any = None,
        *,
        batch_size: int | None = None,
        epochs: int = 1,
        verbose: int = 1,
        callbacks: Iterable[Callback] | None = None,
        validation_split: float = 0.0,
        validation_data: Any = None,
        shuffle: bool = True,
        class_weight: Mapping[int, float] | None = None,
        sample_weight: Any = None,
        initial_epoch: int = 0,
        steps_per_epoch: int | None = None,
        validation_steps: int | None = None,
        validation_freq: int | Sequence[int] = 1,
        log_step_freq: int | None = None,
        terminate_on_nan: bool = True,
    ) -> History:
        """Train for ``epochs``; returns a History (also kept as ``model.history``).

        ``batch_size`` (default 32) batches in-memory data and a torch map-style Dataset; a
        DataLoader, tf.data.Dataset or generator makes its own batches, so passing it is refused.

        A loss that turns NaN or infinite stops training at the next log point (a step log
        or the epoch end), with a warning and the history kept; ``terminate_on_nan=False``
        trains on. A failing step raises a FitkitError naming the epoch, step and shapes.

        >>> model.fit(x, y, batch_size=64, epochs=10, validation_data=(xv, yv))
        """
        self.runtime.require_compiled("fit")
        return fitting.fit(
            self,
            x,
            y,
            batch_size=batch_size,
            epochs=epochs,
            verbose=verbose,
            callbacks=callbacks,
            validation_split=validation_split,
            validation_data=validation_data,
            shuffle=shuffle,
            class_weight=class_weight,
            sample_weight=sample_weight,
            initial_epoch=initial_epoch,
            steps_per_epoch=steps_per_epoch,
            validation_steps=validation_steps,
            validation_freq=validation_freq,
            log_step_freq=log_step_freq,
            terminate_on_nan=terminate_on_nan,
        )

    # ------------------------------------------------------------------ evaluate / predict
    def validate(
        self,
        x: Any = None,
        y: Any = None,
        *,
        batch_size: int | None = None,
        sample_weight: Any = None,
        steps: int | None = None,
        verbose: int = 0,
        callbacks: Iterable[Callback] | None = None,
        return_dict: bool = True,
    ) -> dict[str, float] | list[float]:
        """Loss and metrics over ``(x, y)``, exact over samples. ``evaluate`` is the same.

        ``return_dict=False`` gives a list in ``metrics_names`` order, as Keras does.
        ``batch_size`` (default 32) as in ``fit``: refused with a loader, dataset or generator.

        >>> model.validate(x_val, y_val)  # doctest: +ELLIPSIS
        {'loss': ..., 'accuracy': ...}
        """
        self.runtime.require_compiled("validate")
        logs = training.validate_data(
            self,
            x,
            y,
            batch_size=batch_size,
            steps=steps,
            sample_weight=sample_weight,
            verbose=verbose,
            callbacks=callbacks,
        )
        return logs if return_dict else list(logs.values())

    evaluate = validate

    def predict(
        self,
        x: Any,
        *,
        batch_size: int | None = None,
        verbose: int = 0,
        callbacks: Iterable[Callback] | None = None,
    ) -> Any:
        """Outputs for ``x`` as numpy (a tuple / dict of arrays for multi-output networks).
        ``batch_size`` (default 32) as in ``fit``: refused with a loader, dataset or generator.

        >>> probs = model.predict(x_test, batch_size=256)
        """
        return training.predict_data(
            self, x, batch_size=batch_size, verbose=verbose, callbacks=callbacks
        )

    # ------------------------------------------------------------------ batch style
    def train_on_batch(
        self,
        x: Any,
        y: Any = None,
        *,
        sample_weight: Any = None,
        class_weight: Mapping[int, float] | None = None,
        reset_metrics: bool = True,
        return_dict: bool = False,
    ) -> Any:
        """One step on one batch; returns what Keras returns: the loss alone when there are no
        metrics, else a list in ``metrics_names`` order, or a dict with ``return_dict=True``
        (that batch's values, running ones if ``reset_metrics=False``).

        >>> logs = model.train_on_batch(x[:32], y[:32]); dict(zip(model.metrics_names, logs))  # doctest: +ELLIPSIS
        {'loss': ..., 'accuracy': ...}
        """
        logs = training.on_batch(self, "train", x, y, sample_weight, class_weight, reset_metrics)
        return logs if return_dict else self._in_names_order(logs)

    def test_on_batch(
        self,
        x: Any,
        y: Any = None,
        *,
        sample_weight: Any = None,
        reset_metrics: bool = True,
        return_dict: bool = False,
    ) -> Any:
        """Evaluate one batch; returns as ``train_on_batch`` does (running values if
        ``reset_metrics=False``).

        >>> model.test_on_batch(x_val[:32], y_val[:32], reset_metrics=False, return_dict=True)  # doctest: +ELLIPSIS
        {'loss': ..., 'accuracy': ...}
        """
        logs = training.on_batch(self, "test", x, y, sample_weight, None, reset_metrics)
        return logs if return_dict else self._in_names_order(logs)

    def _in_names_order(self, logs: dict[str, float]) -> Any:
        # Keras's flattening: metrics_names first, then any other key a custom step logged;
        # one value alone is returned bare
        names = [n for n in self.metrics_names if n in logs]
        values = [logs[n] for n in names] + [v for k, v in logs.items() if k not in names]
        return values[0] if len(values) == 1 else values

    def predict_on_batch(self, x: Any) -> Any:
        """Outputs for one batch, as numpy.

        >>> model.predict_on_batch(x[:8]).shape
        (8, 10)
        """
        batch = training.one_batch(self, x, None, None, None, "predict")
        with training.kept_mode(self.runtime.adapter):
            self.runtime.adapter.set_training(False)
            return self.runtime.adapter.outputs_to_numpy([self.runtime.function("predict")(batch)])

    def reset_metrics(self) -> None:
        """Zero the running loss and metric states (train and test).

        >>> model.reset_metrics()          # a hand-written epoch of train_on_batch calls
        """
        self.runtime.adapter.reset_logs("train")
        self.runtime.adapter.reset_logs("test")

    # ------------------------------------------------------------------ weights, summary
    def save_weights(self, path: str) -> None:
        """Save the network's weights (torch: .safetensors or .pt; TensorFlow: .weights.h5).

        >>> model.save_weights("net.safetensors")
        """
        self.runtime.adapter.save_weights(str(path))

    def load_weights(self, path: str, *, strict: bool = True) -> dict[str, list[str]]:
        """Load weights saved by ``save_weights``; the whole file is checked first.

        ``strict=False`` loads the entries that match and returns what it skipped
        (``{"missing": [...], "unexpected": [...], "mismatched": [...]}``).

        >>> model.save_weights("net.safetensors")
        >>> model.load_weights("net.safetensors", strict=False)
        {'missing': [], 'unexpected': [], 'mismatched': []}
        """
        return self.runtime.adapter.load_weights(str(path), strict=strict)

    def get_weights(self) -> list:
        """The network's weights (and buffers / statistics) as numpy arrays, as Keras gives.

        >>> weights = fitkit.Model(torch.nn.Linear(4, 2)).get_weights()  # shapes (2, 4), (2,)
        """
        return backend_part(self.runtime.adapter, "state").get_weights(self.runtime.adapter)

    def set_weights(self, weights: list) -> None:
        """Set what ``get_weights`` returned (same number and shapes).

        >>> twin.set_weights(model.get_weights())
        """
        backend_part(self.runtime.adapter, "state").set_weights(self.runtime.adapter, list(weights))

    def save_checkpoint(self, path: str) -> None:
        """Save the whole training state (weights, optimizer, schedulers, RNGs, history, and
        inside a fit its position) atomically in one file; ``load_checkpoint`` resumes it.

        >>> model.save_checkpoint("run/state.fitkit")
        """
        self.runtime.require_compiled("save_checkpoint")
        fitting.save_checkpoint(self, path)

    def load_checkpoint(self, path: str) -> dict:
        """Restore a ``save_checkpoint`` file; the next ``fit`` continues from where it was
        saved (same data and batch size). Returns ``{"epoch", "step", "epochs"}``.

        >>> history = model.fit(x, y, epochs=2, verbose=0); model.save_checkpoint("run/state.fitkit")
        >>> model.load_checkpoint("run/state.fitkit"); model.fit(x, y, epochs=10)
        """
        self.runtime.require_compiled("load_checkpoint")
        return fitting.load_checkpoint(self, path)

    def summary(
        self,
        input_shape: Any = None,
        *,
        input_data: Any = None,
        print_fn: Callable[[str], Any] | None = print,
    ) -> Any:
        """Print layer (type), output shape and params; return them as a DataFrame.

        With no arguments it uses a built Keras model's inputs, or a batch fitkit has seen.

        >>> model.summary(input_shape=(32,))
        """
        import pandas as pd

        info = self.runtime.adapter.summary(input_shape, input_data)
        if input_shape is not None or input_data is not None:
            self.runtime.summary_inputs = (input_shape, input_data)  # export traces with them
        if print_fn is not None:
            print_fn(summary_table(info.rows, info.total, info.trainable, info.param_bytes))
        return pd.DataFrame(info.rows, columns=["layer", "output_shape", "params"])

    def export(self, path: Any, format: str = "onnx", **options: Any) -> str:
        """Write an inference artifact (torch: "torch", "onnx", "torchscript"; TensorFlow:
        "tf_saved_model", "litert", "onnx") and check it against ``predict``. Options:
        ``example=``, ``input_signature=``, ``verify``, ``atol``, ``rtol``; see docs/deploy.md.

        >>> path = model.export("model.onnx", format="onnx", example=x[:4])
        >>> fitkit.load_exported(path).predict(x[:2]).shape
        (2, 10)
        """
        from . import export

        return export.export(self, path, format, **options)

    def save(self, path: Any) -> str:
        """TensorFlow: a ``.keras`` archive that ``keras.models.load_model`` opens compiled,
        optimizer state included. torch refuses: use ``export`` or ``save_checkpoint``.

        >>> model.save("model.keras")
        """
        from . import export

        return export.save(self, path)

    def __repr__(self) -> str:
        return f"fitkit.Model({type(self.net).__name__}, backend={self.backend!r})"
