"""The TensorFlow adapter: optimizer/loss/metric building, tf.function steps, logs, weights.

Owns everything TensorFlow-specific behind the Adapter protocol (fitkit/adapter.py). Data
sources live in data.py, tracing and graph loops in functions.py, metric formulas in
metrics.py, losses in losses.py, what a strategy changes (Replicas) in distribute.py.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import keras
import tensorflow as tf

from .. import specs, targets
from ..adapter import BatchSource, SummaryInfo
from ..controls import TrainingControls
from ..errors import BackendError
from ..history import LR_KEY
from ..optimizer_sets import OptimizerSet, scheduler_set
from ..outputs import CompiledOutputs, call_loss, shared_loss
from ..sources import unpack
from . import controls as step_controls
from . import (
    data,
    devices,
    distribute,
    losses,
    metrics,
    optimizers,
    readout,
    schedules,
    state,
    summary,
    weights,
)
from .functions import (
    CompiledStep,
    DistributedStep,
    chunk_loop,
    iterator_loop,
    jit_step,
    kind_of,
    needs_autograph,
    own_stats,
    predict_chunk,
)

if keras.backend.backend() != "tensorflow":
    raise BackendError(
        f"Keras is running on the {keras.backend.backend()!r} backend (KERAS_BACKEND); "
        f"fitkit's TensorFlow adapter needs KERAS_BACKEND=tensorflow (or unset)."
    )


def set_seed(seed: int) -> None:
    keras.utils.set_random_seed(seed)  # python, numpy, tf and Keras's own seed generator
    data.reset_shuffle_generator()  # the epochs' shuffles start again from this seed


def call_net(net: Any, x: Any, training: bool) -> Any:
    """Keras layers take ``training``; a bare tf.Module is just called."""
    if isinstance(net, keras.layers.Layer):
        return net(x, training=training)
    return net(x)


class Adapter:
    """TensorFlow implementation of fitkit's Adapter protocol."""

    name = "tensorflow"

    def __new__(cls, net: Any, **kwargs: Any) -> Adapter:
        from . import keras_steps  # a keras.Model's own steps run there (a subclass)

        own = cls is Adapter and keras_steps.own_steps(net)
        return super().__new__(keras_steps.OwnStepsAdapter if own else cls)

    def __init__(self, net: Any, *, device: Any = None) -> None:
        self.net = net
        self.device = devices.resolve_device(device)  # only where Keras places it anyway
        self.optimizer: Any = None
        self.optimizers: list = []  # every optimizer: [optimizer], or configure_optimizers' several
        self.loss_fn: Any = None  # compile's loss, as given
        self.outputs: CompiledOutputs | None = None
        self.run_eagerly = False
        self.controls = TrainingControls()
        self._update: step_controls.Update | None = None  # None: the plain default step
        self.scheduler: Any = schedules.Scheduler()  # compile's lr_schedule (a no-op)
        self._trackers: dict = {}
        self._log_fns: dict = {}  # compiled reads and resets of the logs, by what they cover
        self.example_inputs: Any = None  # a batch of inputs fitkit has seen (for summary)
        self.replicas: distribute.Replicas | None = None  # compiled under a strategy
        self.training_call = False  # self(x) in a shared step: True while tracing training
        self._scope: Callable = contextlib.nullcontext  # that strategy's scope

    # ------------------------------------------------------------------ compile
    def compile(
        self,
        optimizer: Any,
        loss: Any,
        metric_specs: Any,
        lr: float | None,
        precision: str = "32",
        *,
        loss_weights: Any = None,
        output: Any = None,
        run_eagerly: bool = False,
        controls: Any = None,
    ) -> None:
        self.controls = controls = controls or TrainingControls(precision=precision)
        step_controls.check_precision(self.net, precision)
        self.replicas = distribute.for_compile(self.net, controls)  # decided once, here
        self._scope = self.replicas.scope if self.replicas else contextlib.nullcontext
        self.run_eagerly = run_eagerly
        with self._scope():  # the optimizer, trackers and states belong to the strategy
            self._build(optimizer, loss, metric_specs, lr, loss_weights, output, controls)

    def _build(
        self,
        optimizer: Any,
        loss: Any,
        metric_specs: Any,
        lr: float | None,
        loss_weights: Any,
        output: Any,
        controls: TrainingControls,
    ) -> None:
        precision = controls.precision
        several = isinstance(optimizer, OptimizerSet)  # a GAN's, from configure_optimizers
        self.optimizers = (
            optimizers.build_several(optimizer, self.replicas)
            if several
            else [
                step_controls.wrap_optimizer(
                    optimizers.build_optimizer(optimizer, lr, self.net), precision, self.net
                )
            ]
        )
        self.optimizer = self.optimizers[0]
        if self.replicas is not None:
            self.replicas.check_optimizer(self.optimizer)
        self._update = (
            step_controls.Update(self, controls)
            if step_controls.needs_update(controls, self.optimizer)
            else None
        )
        self.loss_fn = loss
        names = list(getattr(self.net, "output_names", None) or [])
        self.outputs = CompiledOutputs(
            loss,
            loss_weights,
            metric_specs,
            output,
            build_loss=self._build_loss,
            build_metrics=lambda specs_: specs.build_metrics(specs_, metrics),
            is_tensor=tf.is_tensor,
            default_names=lambda n: (
                names if len(names) == n else [f"output_{i + 1}" for i in range(n)]
            ),
        )
        self._trackers = {"train": metrics.LogTracker(), "test": metrics.LogTracker()}
        self._log_fns = {}
        self.build_scheduler(
            controls.lr_schedule, controls.lr_schedule_every, controls.lr_schedule_monitor
        )
        if several:  # each optimizer's own scheduler
            self.scheduler = scheduler_set(optimizer, self.optimizers, schedules.build_scheduler)

    def _build_loss(self, loss: Any) -> tuple:
        fn, spec = losses.build_loss(loss)
        if self.replicas is not None and isinstance(loss, (str, keras.losses.Loss)):
            fn = distribute.unscaled(fn)  # Keras divides its losses by the replicas
        return fn, spec

    def build_scheduler(self, spec: Any, every: str, monitor: str) -> None:
        """compile's lr_schedule (a do-nothing one when None: a recompile also drops an
        earlier schedule from the optimizer)."""
        self.scheduler = schedules.build_scheduler(
            spec, self.optimizer, every=every, monitor=monitor
        )

    def finish_epoch(self) -> None:
        """Apply a pending partial window of gradient accumulation (the fit loop calls it
        at each epoch end, before validation): one compiled call, no host read."""
        if self._update is not None:
            self._update.finish()

    @property
    def accumulation(self) -> step_controls.Update | None:
        """The pending accumulation window, for checkpoints; or None."""
        return self._update if self._update is not None and self._update.stateful else None

    def get_state(self) -> tuple[dict, dict]:
        """(numpy arrays, JSON meta) of weights, optimizer, running logs and RNGs; under a
        strategy the replicas' sums (metric states) and the mirrored values."""
        with self._scope():
            return state.get_state(self)

    def set_state(self, arrays: dict, meta: dict) -> None:
        """Restore what ``get_state`` returned (all shapes checked before any change)."""
        with self._scope():
            state.set_state(self, arrays, meta)

    def check_state(self, arrays: dict, meta: dict) -> None:
        """Refuse a state ``set_state`` would not restore exactly (builds optimizer slots)."""
        with self._scope():
            state.check_state(self, arrays, meta)

    @property
    def metrics(self) -> list:
        return self.outputs.metrics if self.outputs is not None else []

    def autocast(self) -> Any:
        """Keras applies the dtype policy inside its layers: nothing to enter here."""
        return contextlib.nullcontext()

    def get_learning_rate(self) -> float:
        return optimizers.rate(self.optimizer)

    def set_learning_rate(self, value: float) -> None:
        self.optimizer.learning_rate = value

    def learning_rates(self) -> dict[str, float]:
        """The history's learning-rate column (a Keras optimizer has one rate; several
        optimizers one column each)."""
        if len(self.optimizers) > 1:
            return optimizers.several_rates(self.optimizers)
        return {LR_KEY: self.get_learning_rate()}

    # ------------------------------------------------------------------ data
    def array_source(
        self,
        x: Any,
        y: Any,
        *,
        batch_size: int,
        shuffle: bool,
        sample_weight: Any = None,
        class_weight: dict | None = None,
    ) -> data.TensorSource | distribute.Source:
        source = data.TensorSource(
            x, y, batch_size=batch_size, shuffle=shuffle, sample_weight=sample_weight
        )
        if class_weight:
            weights = data.class_weight_fn(class_weight)(source.targets())
            source.w = weights if source.w is None else source.w * weights
        return source if self.replicas is None else self.replicas.source(source)

    def batch_source(
        self, source: Any, *, batch_size: int, shuffle: bool, class_weight: dict | None = None
    ) -> BatchSource:
        weigh = data.class_weight_fn(class_weight) if class_weight else None
        source = data.batch_source(source, batch_size=batch_size, shuffle=shuffle, weigh=weigh)
        return source if self.replicas is None else self.replicas.source(source)

    def integers_to_float(self, x: Any) -> Any:
        return data.integers_to_float(x)

    def is_tensor(self, value: Any) -> bool:
        return tf.is_tensor(value)

    def label_range(self, labels: tf.Tensor) -> list:
        return readout.label_range(labels)

    def first_nonfinite(self, tensor: tf.Tensor) -> tuple[int, float] | None:
        return readout.first_nonfinite(tensor)

    def value_range(self, value: tf.Tensor) -> list:
        return readout.value_range(value)

    def probability_stats(self, value: tf.Tensor) -> list:
        return readout.probability_stats(value)

    def build_metric_states(self, head: Any, mode: targets.TargetMode, width: int) -> None:
        """Metric variables and optimizer slots, created before anything is traced."""
        with self._scope():
            if (
                isinstance(self.optimizer, keras.optimizers.Optimizer)
                and not self.optimizer.built
                and len(self.optimizers) == 1
            ):
                self.optimizer.build(self.net.trainable_variables)  # before tracing
            if self._update is not None:  # accumulators, before tracing too
                self._update.build(self.net.trainable_variables)
            for metric in head.metrics:
                metric.build(mode, width)
            if self.replicas is not None:  # the logs' sums too: none made in a replica
                for tracker in self._trackers.values():
                    tracker.expect(self._compiled.log_names()[: -len(self.metrics) or None])
        head.built = True

    # ------------------------------------------------------------------ steps
    @property
    def _compiled(self) -> CompiledOutputs:
        """The compiled outputs (every step comes after compile)."""
        if self.outputs is None:
            raise RuntimeError("the model is used before compile()")
        return self.outputs

    def compute_loss(self, x: Any, y: Any, y_pred: Any, sample_weight: Any = None) -> Any:
        loss = self._compiled.loss(y, y_pred, sample_weight)
        extra = getattr(self.net, "losses", None)
        return loss + tf.add_n(extra) if extra else loss  # regularisation, as Keras adds it

    def update_metrics(self, y: Any, y_pred: Any, sample_weight: Any = None) -> None:
        self._compiled.update_metrics(
            y, y_pred, sample_weight, self.update_head, self.build_metric_states
        )

    def update_head(self, head: Any, y: Any, y_pred: Any, sample_weight: Any) -> None:
        """Update one output's metric states (Keras's argument order); bf16 / fp16
        predictions (a mixed policy's) are read in float32, as Keras's own metrics do."""
        if getattr(y_pred, "dtype", None) in (tf.float16, tf.bfloat16):
            y_pred = tf.cast(y_pred, tf.float32)

        def update() -> None:  # weights reach weighted_metrics only, as in Keras
            for metric in head.metrics:
                metric.update(y, y_pred, sample_weight if metric.weighted else None)

        if self.replicas is not None and self.replicas.outside():  # a check, on each replica
            self.replicas.run(update)
            return
        update()

    def train_step(self, batch: tuple, compute_loss: Callable) -> dict:
        x, y, w = unpack(batch)
        with tf.GradientTape() as tape:
            y_pred = call_net(self.net, x, training=True)
            loss = call_loss(compute_loss, x, y, y_pred, w)
        logs = {"loss": loss, **self._compiled.take_parts()}  # before any replica switch
        self._apply(tape, loss, data.rows(x))
        if self.metrics:
            self.update_metrics(y, y_pred, w)
        return logs

    def shared_train_step(self, batch: tuple, shared_step: Callable) -> dict:
        """A class style's one step for both modes: its "loss" drives the update."""
        with tf.GradientTape() as tape:
            self.training_call = True  # read while tracing: self(x) runs in training mode
            try:
                logs = dict(shared_step(batch))
            finally:
                self.training_call = False
        self._apply(tape, shared_loss(logs), data.rows(unpack(batch)[0]))
        return logs

    def _apply(self, tape: tf.GradientTape, loss: tf.Tensor, rows: tf.Tensor) -> None:
        """The update from ``tape``: apply_gradients by default (under a strategy, scaled to
        this replica's part of the batch), else accumulation, clipping, fp16 loss scaling."""
        variables = self.net.trainable_variables
        if self._update is not None:  # controls.py
            self._update.step(tape, loss, variables, rows)
            return
        share = None if self.replicas is None else self.replicas.share(rows, loss.dtype)
        grads = tape.gradient(loss, variables, output_gradients=share)
        self.optimizer.apply_gradients(zip(grads, variables, strict=True))

    def shared_test_step(self, batch: tuple, shared_step: Callable) -> dict:
        return dict(shared_step(batch))

    def call(self, x: Any) -> Any:
        """The network in the current step's mode (``self(x)`` in a class-style step)."""
        return call_net(self.net, x, training=self.training_call)

    def test_step(self, batch: tuple, compute_loss: Callable) -> dict:
        x, y, w = unpack(batch)
        y_pred = call_net(self.net, x, training=False)
        loss = call_loss(compute_loss, x, y, y_pred, w)
        logs = {"loss": loss, **self._compiled.take_parts()}
        if self.metrics:
            self.update_metrics(y, y_pred, w)
        return logs

    def predict_step(self, batch: tuple) -> Any:
        return call_net(self.net, batch[0], training=False)

    def make_function(self, step: Callable, mode: str) -> Callable:
        """Compile a step with tf.function; its logs accumulate in variables (no host sync).

        The returned callable takes a batch, or a ``data.Chunk`` of several batches that
        run in one call (a while loop inside the graph: Python is paid once per chunk).
        jit_compile: each step is XLA-compiled, the loop around it is not (as Keras does);
        run_eagerly wins over it. Under a strategy: a DistributedStep (each step on every
        replica, over a distributed iterator).
        """
        jit = self.controls.jit_compile and not self.run_eagerly
        autograph = needs_autograph(step)
        how = {"eager": self.run_eagerly, "autograph": autograph}
        if mode == "predict" and self.replicas is not None:
            return DistributedStep(
                self.replicas, step, predicts=True, eager=self.run_eagerly, autograph=autograph
            )
        if mode == "predict":
            step = jit_step(step, autograph) if jit else step
            return CompiledStep(step, predict_chunk(step), None, predicts=True, **how)
        tracker, outputs = self._trackers[mode], self._compiled

        def run(batch: tuple) -> None:
            logs = step(batch)
            if outputs.parts:  # each output's loss, from compute_loss in this step
                logs = {**logs, **outputs.take_parts()}
            tracker.update(logs, data.rows(batch[0]))

        if self.replicas is not None:
            after = (
                self._update.after_step
                if mode == "train" and self._update is not None and self._update.stateful
                else None
            )
            return DistributedStep(
                self.replicas, run, after=after, eager=self.run_eagerly, autograph=autograph
            )
        run = jit_step(run, autograph) if jit else run
        return CompiledStep(run, chunk_loop(run), iterator_loop(run), **how)

    def run_batch(self, function: Any, batch: Any, mode: str, reset: bool) -> dict:
        """A batch-style call: reset (optionally), one step and the logs' read, in one
        compiled call once the step has been traced (three calls cost more than Keras's)."""
        if self.replicas is not None:  # the batch is distributed on each call
            if reset:
                self.reset_logs(mode)
            function(batch)
            return self.read_logs(mode)  # host sync: the caller asked for values
        names, read, reset_logs = self._log_functions(mode)
        key = ("batch", mode, reset, kind_of(batch), tuple(names))
        merged = self._log_fns.get(key)
        if merged is None and (function.eager or not self._trackers[mode].returned):
            # not traced yet: the names of the step's logs are known after its first run
            if reset:
                reset_logs()
            function(batch)
            return self.read_logs(mode)  # host sync: the caller asked for values
        if merged is None:

            def merged_call(batch: Any) -> tf.Tensor:
                if reset:
                    reset_logs.python_function()
                function.run(batch)
                return read.python_function()

            merged = self._log_fns[key] = function.compile(own_stats(merged_call))
        return dict(zip(names, merged(batch).numpy().tolist(), strict=True))  # host sync: asked for

    def runs_own_step(self, mode: str) -> bool:  # see keras_steps.OwnStepsAdapter
        return False

    def set_training(self, training: bool | None) -> None:
        """Keras layers get ``training=`` per call; nothing to switch here."""

    def training_mode(self) -> None:
        """Keras has no persistent mode (``training=`` is per call): None."""

    # ------------------------------------------------------------------ logs
    def reset_logs(self, mode: str) -> None:
        with self._scope():
            self._log_functions(mode)[2]()

    def read_logs(self, mode: str, weights: bool = False) -> dict[str, float]:
        """The logs as floats (``weights``: WEIGHTS_FINITE too); under a strategy, sums over
        every replica (a collective on every worker: each process reads at the same points)."""
        names, read, _ = self._log_functions(mode, weights)
        if not names:
            return {}
        with self._scope():
            values = read()
        return dict(
            zip(names, values.numpy().tolist(), strict=True)
        )  # host sync: one read for all logs

    def _log_functions(self, mode: str, weights: bool = False) -> tuple:
        """(names, read, reset) for the current logs of ``mode``, each one compiled call:
        eager ops, one per variable, would cost more than a step on the batch-style path."""
        tracker = self._trackers.get(mode)
        metrics = [m for m in self.metrics if m.mode is not None]
        names, read, reset = readout.log_functions(tracker, metrics, self.net, weights)
        key = (mode, tuple(names), len(tracker.sums) if tracker else 0, tuple(map(id, metrics)))
        if key not in self._log_fns:
            self._log_fns[key] = (
                names,
                tf.function(own_stats(read), autograph=False),  # fitkit's code: graph ops
                tf.function(own_stats(reset), autograph=False),
            )
        return self._log_fns[key]

    def outputs_to_numpy(self, outputs: list) -> Any:
        return readout.outputs_to_numpy(outputs)

    # ------------------------------------------------------------------ weights, summary
    def save_weights(self, path: str) -> None:
        weights.save_weights(self.net, path)

    def load_weights(self, path: str, strict: bool = True) -> dict:
        return weights.load_weights(self.net, path, strict=strict)

    def summary(self, input_shape: Any, input_data: Any) -> SummaryInfo:
        return summary.summary_info(self, input_shape, input_data)

    def infer(self, x: Any) -> Any:
        """One forward pass in inference mode (under a strategy, in its scope: a network
        built here gets mirrored variables)."""
        with self._scope():
            return call_net(self.net, x, training=False)
