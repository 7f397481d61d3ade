"""The facade: fitkit.Model. Owns argument checks, the epoch loop, callbacks, history, display.

Knows nothing of torch or tensorflow: every backend difference is an Adapter method
(see adapter.py). Device values are read only through ``Adapter.read_logs`` at log points.
"""
from __future__ import annotations

import math
import time
import warnings
from typing import Any, Callable, Iterable, Mapping, Sequence

from . import arrays, targets
from .backend import adapter_module, backend_for
from .callbacks import Callback, CallbackList
from .display import EpochDisplay, summary_table
from .errors import FitkitValueError, NotCompiledError
from .history import History
from .steps import StepLoop

AUTO_STEPS_PER_EXECUTION = 32  # steps per compiled call when nothing needs each step


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
        self._output_tail: tuple | None = None  # output shape past the batch dim; () if several
        self._states_built = False
        self._functions: dict[str, Callable] = {}
        self.stop_training = False
        self.history: History | None = None

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
        return self._adapter.loss_fn

    @property
    def learning_rate(self) -> float:
        self._require_compiled("learning_rate")
        return self._adapter.get_learning_rate()

    @learning_rate.setter
    def learning_rate(self, value: float) -> None:
        self._require_compiled("learning_rate")
        self._adapter.set_learning_rate(float(value))

    # ------------------------------------------------------------------ compile
    def compile(self, optimizer: Any = "adam", loss: Any = None,
                metrics: Sequence[Any] | Mapping[str, Callable] | None = None, *,
                lr: float | None = None, steps_per_execution: int | str = "auto",
                precision: str = "32") -> "Model":
        """Choose optimizer, loss and metrics; strings mean the same on both backends.

        ``steps_per_execution``: steps a graph backend (TensorFlow) runs per compiled call on
        in-memory data; batch hooks then see every N-th step. "auto" picks 32, or 1 when a
        callback has batch hooks. Eager torch runs one step per call either way.
        ``precision``: "32", or "bf16" for bfloat16 mixed precision (torch: autocast around
        the forward pass and loss; Keras: build the network under the "mixed_bfloat16" policy).

        >>> model.compile("adam", "cross_entropy", metrics=["accuracy"], lr=1e-3)
        """
        if steps_per_execution != "auto" and (not isinstance(steps_per_execution, int)
                                              or steps_per_execution < 1):
            raise FitkitValueError(f"steps_per_execution must be 'auto' or a whole number >= 1; "
                                   f"got {steps_per_execution!r}.")
        if loss is None:
            raise FitkitValueError("compile needs a loss, e.g. loss='mse' or loss='cross_entropy'.")
        if lr is not None and not (isinstance(lr, (int, float)) and lr > 0):
            raise FitkitValueError(f"lr must be a positive number; got {lr!r}.")
        if isinstance(metrics, str):
            metrics = [metrics]
        if precision not in ("32", "bf16"):
            raise FitkitValueError(f"precision must be '32' or 'bf16'; got {precision!r}.")
        self._adapter.compile(optimizer, loss, metrics or [], lr, precision)
        self._steps_per_execution = steps_per_execution
        self._states_built = False
        self._functions.clear()
        self._compiled = True
        return self

    # ------------------------------------------------------------------ class style
    def train_step(self, batch: tuple) -> dict:
        """One optimisation step on ``batch = (x, y)``; returns a dict of device values."""
        return self._adapter.train_step(batch, self.compute_loss)

    def test_step(self, batch: tuple) -> dict:
        """One evaluation step; updates the metrics; returns a dict of device values."""
        return self._adapter.test_step(batch, self.compute_loss)

    def predict_step(self, batch: tuple) -> Any:
        """The network's outputs for ``batch = (x, None)``."""
        return self._adapter.predict_step(batch)

    def compute_loss(self, x: Any, y: Any, y_pred: Any) -> Any:
        """The compiled loss (plus the network's regularisation losses, on TensorFlow)."""
        return self._adapter.compute_loss(x, y, y_pred)

    def update_metrics(self, y: Any, y_pred: Any) -> None:
        """Accumulate the compiled metrics on the device (for custom train/test steps)."""
        self._adapter.update_metrics(y, y_pred)

    # ------------------------------------------------------------------ fit
    def fit(self, x: Any = None, y: Any = None, *, batch_size: int = 32, epochs: int = 1,
            verbose: int = 1, callbacks: Iterable[Callback] | None = None,
            validation_split: float = 0.0, validation_data: Any = None, shuffle: bool = True,
            initial_epoch: int = 0, steps_per_epoch: int | None = None,
            log_step_freq: int | None = None) -> History:
        """Train for ``epochs``; returns a History (also kept as ``model.history``).

        >>> model.fit(x, y, batch_size=64, epochs=10, validation_data=(xv, yv))
        """
        self._require_compiled("fit")
        arrays.check_fit_args(epochs=epochs, batch_size=batch_size,
                              validation_split=validation_split, initial_epoch=initial_epoch,
                              steps_per_epoch=steps_per_epoch, log_step_freq=log_step_freq,
                              verbose=verbose)
        train, val = self._fit_sources(x, y, batch_size, shuffle, validation_split,
                                       validation_data)
        self._check_before_training(train, val, epochs - initial_epoch, steps_per_epoch)
        steps = steps_per_epoch or train.steps
        cbs = CallbackList(callbacks, self, {"epochs": epochs, "steps": steps,
                                             "verbose": verbose, "batch_size": batch_size})
        display = EpochDisplay(verbose, epochs)
        epoch_args = {"train": train, "val": val, "cbs": cbs, "display": display,
                      "limit": steps_per_epoch, "log_every": log_step_freq}
        self.history, self.stop_training, logs = History(), False, {}
        cbs.on_train_begin(None)
        try:
            for epoch in range(initial_epoch, epochs):
                logs = self._fit_epoch(epoch, **epoch_args)
                self.history.append(epoch, logs)
                cbs.on_epoch_end(epoch, logs)
                if self.stop_training:
                    break
        finally:
            display.close()
        cbs.on_train_end(logs)
        return self.history

    def _check_before_training(self, train, val, epochs: int, steps_per_epoch: int | None):
        if steps_per_epoch is None and train.one_shot and epochs > 1:
            raise FitkitValueError(
                "x is a one-shot iterator (a generator), which cannot restart for a second "
                "epoch. Pass steps_per_epoch=N, or a re-iterable (a list, a Dataset/DataLoader, "
                "a tf.data.Dataset)."
            )
        self._check_batch(train.peek(), train, with_loss=True)
        if val is not None:
            self._check_batch(val.peek(), val, with_loss=True)

    def _fit_epoch(self, epoch: int, *, train, val, cbs: CallbackList, display: EpochDisplay,
                   limit: int | None, log_every: int | None) -> dict[str, float]:
        """One epoch: train steps, epoch logs, validation, display; returns the logs."""
        start = time.perf_counter()
        cbs.on_epoch_begin(epoch, None)
        self._adapter.set_training(True)
        self._adapter.reset_logs("train")
        display.begin_epoch(epoch, limit or train.steps)
        train_fn = self._function("train")
        loop = StepLoop(train.batches(self._group(cbs, "train", log_every), limit),
                        kind="train", callbacks=cbs, display=display, log_every=log_every,
                        read_logs=lambda: self._adapter.read_logs("train"))
        for item in loop:
            train_fn(item)
        logs = self._adapter.read_logs("train")  # host sync: epoch end
        if val is not None:
            logs.update({f"val_{k}": v for k, v in self._evaluate(val, cbs).items()})
        logs["lr"] = self._adapter.get_learning_rate()
        display.end_epoch(epoch, logs, time.perf_counter() - start)
        if limit and loop.steps_done < limit:
            warnings.warn(f"The training data ran out after {loop.steps_done} of "
                          f"steps_per_epoch={limit} steps; training stops. Provide at least "
                          f"steps_per_epoch * epochs batches.")
            self.stop_training = True
        return logs

    def _fit_sources(self, x, y, batch_size, shuffle, validation_split, validation_data):
        val = None
        if validation_split:
            if validation_data is not None:
                raise FitkitValueError("Pass validation_split or validation_data, not both.")
            if not arrays.is_structure_of_arrays(x):
                raise FitkitValueError(
                    "validation_split works only with in-memory arrays or tensors; x is "
                    f"a {type(x).__name__}. Pass validation_data=<a dataset or loader> instead."
                )
            x, y, n = arrays.prepare_xy(x, y, need_y=True)
            n_train = int(n * (1.0 - validation_split))
            if n_train == 0 or n_train == n:
                raise FitkitValueError(
                    f"validation_split={validation_split} of {n} samples leaves "
                    f"{n_train} for training and {n - n_train} for validation; both need one."
                )
            (x, xv), (y, yv) = arrays.split_tail(x, n_train), arrays.split_tail(y, n_train)
            val = self._source(xv, yv, batch_size, shuffle=False, role="test")
        elif validation_data is not None:
            if isinstance(validation_data, tuple) and len(validation_data) == 3:
                raise FitkitValueError("validation_data takes (x_val, y_val); sample weights "
                                       "are not supported yet.")
            if isinstance(validation_data, tuple) and len(validation_data) == 2 and \
                    arrays.is_structure_of_arrays(validation_data[0]):
                val = self._source(validation_data[0], validation_data[1], batch_size,
                                   shuffle=False, role="test")
            else:
                val = self._source(validation_data, None, batch_size, shuffle=False, role="test")
        return self._source(x, y, batch_size, shuffle=shuffle, role="train"), val

    def _source(self, x: Any, y: Any, batch_size: int, *, shuffle: bool, role: str):
        if not isinstance(batch_size, int) or batch_size < 1:
            raise FitkitValueError(f"batch_size must be a whole number >= 1; got {batch_size!r}.")
        # A list of numbers is one array; a list of (x, y) pairs is an iterable of batches.
        plain_list = isinstance(x, list) and bool(x) and not isinstance(x[0], (tuple, list))
        if arrays.is_structure_of_arrays(x) or plain_list:
            x, y, _ = arrays.prepare_xy(x, y, need_y=role != "predict")
            return self._adapter.array_source(x, y, batch_size=batch_size, shuffle=shuffle)
        if x is None:
            raise FitkitValueError("x is None: pass inputs (arrays, tensors, a dataset, a loader…).")
        if y is not None:
            raise FitkitValueError(
                f"y must be None when x is a {type(x).__name__} that yields (x, y) batches; "
                f"the targets come from the batches."
            )
        return self._adapter.batch_source(x, batch_size=batch_size, shuffle=shuffle)

    def _group(self, cbs: CallbackList, kind: str, log_every: int | None) -> int:
        """Steps per compiled call: the user's number, or 'auto' (all, unless hooks need each)."""
        if self._steps_per_execution != "auto":
            return self._steps_per_execution
        if cbs.wants(f"on_{kind}_batch_begin") or cbs.wants(f"on_{kind}_batch_end"):
            return 1
        return math.gcd(AUTO_STEPS_PER_EXECUTION, log_every) if log_every else \
            AUTO_STEPS_PER_EXECUTION

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
    def _evaluate(self, source, cbs: CallbackList) -> dict[str, float]:
        self._adapter.set_training(False)
        self._adapter.reset_logs("test")
        test_fn = self._function("test")
        cbs.on_test_begin(None)
        for item in StepLoop(source.batches(self._group(cbs, "test", None)), kind="test",
                             callbacks=cbs, read_logs=lambda: self._adapter.read_logs("test")):
            test_fn(item)
        logs = self._adapter.read_logs("test")  # host sync: end of evaluation
        cbs.on_test_end(logs)
        return logs

    def validate(self, x: Any = None, y: Any = None, *, batch_size: int = 32,
                 callbacks: Iterable[Callback] | None = None) -> dict[str, float]:
        """Loss and metrics over ``(x, y)``, exact over samples. ``evaluate`` is the same.

        >>> model.validate(x_val, y_val)
        {'loss': 0.31, 'accuracy': 0.9}
        """
        self._require_compiled("validate")
        source = self._source(x, y, batch_size, shuffle=False, role="test")
        self._check_batch(source.peek(), source, with_loss=True)
        return self._evaluate(source, CallbackList(callbacks, self, {}))

    evaluate = validate

    def predict(self, x: Any, *, batch_size: int = 32,
                callbacks: Iterable[Callback] | None = None) -> Any:
        """Outputs for ``x`` as numpy (a tuple / dict of arrays for multi-output networks).

        >>> probs = model.predict(x_test, batch_size=256)
        """
        source = self._source(x, None, batch_size, shuffle=False, role="predict")
        self._check_batch(source.peek(), source, with_loss=False)
        self._adapter.set_training(False)
        cbs = CallbackList(callbacks, self, {})
        predict_fn = self._function("predict")
        cbs.on_predict_begin(None)
        outputs = [predict_fn(batch) for batch in StepLoop(
            source.batches(), kind="predict", callbacks=cbs, read_logs=dict)]
        cbs.on_predict_end(None)
        return self._adapter.outputs_to_numpy(outputs)  # host sync: one copy at the end

    # ------------------------------------------------------------------ batch style
    def _one_batch(self, x: Any, y: Any, role: str):
        source = self._source(x, y, arrays.num_rows(x, "x") if arrays.is_structure_of_arrays(x)
                              else 1, shuffle=False, role=role)
        batch = source.peek()
        # The first call checks against a forward pass; later ones reuse the output shape.
        self._check_batch(batch, source, with_loss=role != "predict",
                          run_network=self._output_tail is None)
        return batch

    def _check_batch(self, batch: tuple, source, *, with_loss: bool,
                     run_network: bool = True) -> None:
        """Check a batch against the network and the loss before any step; build states.

        The forward pass (inference mode) catches inputs the network cannot take; the
        targets are checked against the loss (shapes, label range over all in-memory labels).
        """
        x, y = batch
        if with_loss and y is None:
            raise FitkitValueError("The data yields inputs only; training and evaluation need "
                                   "(x, y) batches (or pass y=... with array inputs).")
        if run_network or self._output_tail is None:
            try:
                self._output_tail = self._adapter.output_tail(x)
            except Exception as err:
                shapes = ", ".join(str(tuple(leaf.shape)) for leaf in arrays.leaves(x))
                raise FitkitValueError(
                    f"The network failed on a batch of inputs with shape {shapes}: {err}. Check "
                    f"that the input width matches the network's first layer (and, for several "
                    f"inputs, that x is a tuple or dict in the order the network takes them)."
                ) from err
        if not with_loss:
            return
        if self._output_tail == ():
            if self._adapter.metrics:
                raise FitkitValueError("Compiled metrics need a network with one output; "
                                       "update them yourself in a custom test_step.")
            return
        pred_shape = (y.shape[0], *self._output_tail)
        labels = source.targets()
        if labels is None:  # not all in memory: check this batch's labels
            labels = y
        mode = targets.check_targets(self._adapter.loss_spec, pred_shape, tuple(y.shape),
                                   lambda: self._adapter.label_range(labels))
        if not self._states_built:
            self._adapter.build_states(mode, pred_shape[-1] if len(pred_shape) > 1 else 1)
            self._states_built = True

    def train_on_batch(self, x: Any, y: Any, *, reset_metrics: bool = True) -> dict[str, float]:
        """One step on one batch; returns that batch's logs (running ones if not reset)."""
        return self._on_batch("train", x, y, reset_metrics)

    def test_on_batch(self, x: Any, y: Any, *, reset_metrics: bool = True) -> dict[str, float]:
        """Evaluate one batch; returns its logs (running ones if ``reset_metrics=False``)."""
        return self._on_batch("test", x, y, reset_metrics)

    def _on_batch(self, mode: str, x: Any, y: Any, reset_metrics: bool) -> dict[str, float]:
        self._require_compiled(f"{mode}_on_batch")
        batch = self._one_batch(x, y, mode)
        if reset_metrics:
            self._adapter.reset_logs(mode)
        self._adapter.set_training(mode == "train")
        self._function(mode)(batch)
        return self._adapter.read_logs(mode)  # host sync: the caller asked for values

    def predict_on_batch(self, x: Any) -> Any:
        """Outputs for one batch, as numpy."""
        batch = self._one_batch(x, None, "predict")
        self._adapter.set_training(False)
        return self._adapter.outputs_to_numpy([self._function("predict")(batch)])

    def reset_metrics(self) -> None:
        """Zero the running loss and metric states (train and test)."""
        self._adapter.reset_logs("train")
        self._adapter.reset_logs("test")

    # ------------------------------------------------------------------ weights, summary
    def save_weights(self, path: str) -> None:
        """Save the network's weights (torch: .safetensors or .pt; TensorFlow: .weights.h5)."""
        self._adapter.save_weights(str(path))

    def load_weights(self, path: str) -> None:
        """Load weights saved by ``save_weights`` from a network of the same architecture."""
        self._adapter.load_weights(str(path))

    def summary(self, input_shape: Any = None, *, input_data: Any = None,
                print_fn: Callable[[str], Any] | None = print):
        """Print layer (type), output shape and params; return them as a DataFrame.

        >>> model.summary(input_shape=(32,))
        """
        import pandas as pd

        info = self._adapter.summary(input_shape, input_data)
        if print_fn is not None:
            print_fn(summary_table(info.rows, info.total, info.trainable, info.param_bytes))
        return pd.DataFrame(info.rows, columns=["layer", "output_shape", "params"])

    def __repr__(self) -> str:
        return f"fitkit.Model({type(self.net).__name__}, backend={self.backend!r})"
