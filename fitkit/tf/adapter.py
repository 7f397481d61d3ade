"""The TensorFlow adapter: optimizer/loss/metric building, tf.function steps, logs, weights.

Owns everything TensorFlow-specific behind the Adapter protocol (fitkit/adapter.py). Data
sources live in data.py, metric formulas in metrics.py, losses in losses.py.
"""
from __future__ import annotations

import os
from typing import Any, Callable

import keras
import tensorflow as tf

from .. import specs, targets
from ..arrays import leaves, map_structure
from ..errors import BackendError, FitkitTypeError, FitkitValueError
from . import data, losses, metrics, optimizers, summary

if keras.backend.backend() != "tensorflow":
    raise BackendError(
        f"Keras is running on the {keras.backend.backend()!r} backend (KERAS_BACKEND); "
        f"fitkit's TensorFlow adapter needs KERAS_BACKEND=tensorflow (or unset)."
    )

def set_seed(seed: int) -> None:
    keras.utils.set_random_seed(seed)  # python, numpy, tf and Keras's own seed generator


def call_net(net: Any, x: Any, training: bool) -> Any:
    """Keras layers take ``training``; a bare tf.Module is just called."""
    if isinstance(net, keras.layers.Layer):
        return net(x, training=training)
    return net(x)


def _relaxed(value: Any) -> Any:
    """A TensorSpec with a free batch dimension, so a partial batch needs no new trace."""
    return tf.TensorSpec([None, *value.shape[1:]], value.dtype) if value.shape.rank else \
        tf.TensorSpec([], value.dtype)


class CompiledStep:
    """A step compiled twice: for one batch, and for a Chunk of batches (a graph loop).

    Each is traced on its first call with the batch dimension left free: one trace per fit.
    """

    def __init__(self, run: Callable, run_chunk: Callable) -> None:
        self.run, self.run_chunk = run, run_chunk
        self.one = self.many = None

    def __call__(self, item: Any) -> None:
        if isinstance(item, data.Chunk):
            if self.many is None:
                spec = tf.nest.map_structure(_relaxed, tuple(item))
                self.many = tf.function(self.run_chunk, input_signature=spec)
            self.many(*item)
        else:
            if self.one is None:
                spec = tf.nest.map_structure(_relaxed, item)
                self.one = tf.function(lambda batch: self.run(batch), input_signature=[spec])
            self.one(item)

    def tracing_count(self) -> int:
        return sum(f.experimental_get_tracing_count() for f in (self.one, self.many) if f)


class Adapter:
    """TensorFlow implementation of fitkit's Adapter protocol."""

    name = "tensorflow"

    def __init__(self, net: Any, *, device: Any = None) -> None:
        self.net = net
        self.device = device
        self.optimizer: Any = None
        self.loss_fn: Callable | None = None
        self.loss_spec: specs.LossSpec | None = None
        self.metrics: list[metrics.StateMetric] = []
        self._trackers: dict = {}
        self.example_inputs: Any = None  # a batch of inputs fitkit has seen (for summary)

    # ------------------------------------------------------------------ compile
    def compile(self, optimizer: Any, loss: Any, metric_specs: Any, lr: float | None,
                precision: str = "32") -> None:
        policy = getattr(getattr(self.net, "dtype_policy", None), "name", "float32")
        if precision == "bf16" and policy != "mixed_bfloat16":
            raise FitkitValueError(
                f"precision='bf16' needs a Keras network built under the 'mixed_bfloat16' "
                f"policy (this one is {policy!r}). Call "
                f"keras.mixed_precision.set_global_policy('mixed_bfloat16') before building it."
            )
        self.optimizer = optimizers.build_optimizer(optimizer, lr, self.net)
        self.loss_fn, self.loss_spec = losses.build_loss(loss)
        self.metrics = specs.build_metrics(metric_specs, metrics)
        self._trackers = {"train": metrics.LogTracker(), "test": metrics.LogTracker()}

    def get_learning_rate(self) -> float:
        # host sync: a variable read, once per epoch (for the lr column)
        return float(keras.ops.convert_to_numpy(self.optimizer.learning_rate))

    def set_learning_rate(self, value: float) -> None:
        self.optimizer.learning_rate = value

    # ------------------------------------------------------------------ data
    def array_source(self, x: Any, y: Any, *, batch_size: int, shuffle: bool):
        return data.TensorSource(x, y, batch_size=batch_size, shuffle=shuffle)

    def batch_source(self, source: Any, *, batch_size: int, shuffle: bool):
        return data.batch_source(source, batch_size=batch_size, shuffle=shuffle)

    def output_tail(self, x: Any) -> tuple:
        """Run the network once (inference) and return its output shape past the batch dim."""
        self.example_inputs = x
        y_pred = self.infer(x)
        return tuple(y_pred.shape[1:]) if isinstance(y_pred, tf.Tensor) else ()

    def label_range(self, labels: tf.Tensor) -> list:
        # host sync: once per check, before training
        return tf.stack([tf.reduce_min(labels), tf.reduce_max(labels)]).numpy().tolist()

    def build_states(self, mode: targets.TargetMode, width: int) -> None:
        """Metric variables and optimizer slots, created before anything is traced."""
        if isinstance(self.optimizer, keras.optimizers.Optimizer) and not self.optimizer.built:
            self.optimizer.build(self.net.trainable_variables)  # before tracing: one trace less
        for metric in self.metrics:
            metric.build(mode, width)

    # ------------------------------------------------------------------ steps
    def compute_loss(self, x: Any, y: Any, y_pred: Any) -> tf.Tensor:
        loss = self.loss_fn(y, y_pred)
        extra = getattr(self.net, "losses", None)
        return loss + tf.add_n(extra) if extra else loss  # regularisation, as Keras adds it

    def update_metrics(self, y: Any, y_pred: Any) -> None:
        for metric in self.metrics:
            metric.update(y, y_pred)

    def train_step(self, batch: tuple, compute_loss: Callable) -> dict:
        x, y = batch
        with tf.GradientTape() as tape:
            y_pred = call_net(self.net, x, training=True)
            loss = compute_loss(x, y, y_pred)
        variables = self.net.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        if self.metrics:
            self.update_metrics(y, y_pred)
        return {"loss": loss}

    def test_step(self, batch: tuple, compute_loss: Callable) -> dict:
        x, y = batch
        y_pred = call_net(self.net, x, training=False)
        loss = compute_loss(x, y, y_pred)
        if self.metrics:
            self.update_metrics(y, y_pred)
        return {"loss": loss}

    def predict_step(self, batch: tuple) -> Any:
        return call_net(self.net, batch[0], training=False)

    def make_function(self, step: Callable, mode: str) -> Callable:
        """Compile a step with tf.function; its logs accumulate in variables (no host sync).

        The returned callable takes a batch, or a ``data.Chunk`` of several batches that
        run in one call (a while loop inside the graph: Python is paid once per chunk).
        """
        if mode == "predict":
            return tf.function(step, reduce_retracing=True)
        tracker = self._trackers[mode]

        def run(batch: tuple) -> None:
            tracker.update(step(batch), data.rows(batch[0]))

        def run_chunk(x: Any, y: Any, batch_size: tf.Tensor) -> None:
            steps = (tf.shape(leaves(x)[0])[0] + batch_size - 1) // batch_size

            def body(i):
                cut = lambda t: t[i * batch_size:(i + 1) * batch_size]  # noqa: E731
                run((map_structure(cut, x), None if y is None else map_structure(cut, y)))
                return (i + 1,)
            tf.while_loop(lambda i: i < steps, body, (tf.constant(0),))

        return CompiledStep(run, run_chunk)

    def set_training(self, training: bool) -> None:
        """Keras layers get ``training=`` per call; nothing to switch here."""

    # ------------------------------------------------------------------ logs
    def reset_logs(self, mode: str) -> None:
        if mode in self._trackers:
            self._trackers[mode].reset()
        for metric in self.metrics:
            if metric.mode is not None:
                metric.reset()

    def read_logs(self, mode: str) -> dict[str, float]:
        values = dict(self._trackers[mode].results()) if mode in self._trackers else {}
        for metric in self.metrics:
            if metric.mode is not None:
                values[metric.name] = metric.result()
        if not values:
            return {}
        stacked = tf.stack([tf.reshape(tf.cast(v, tf.float64), []) for v in values.values()])
        return dict(zip(values, stacked.numpy().tolist()))  # host sync: one read for all logs

    def outputs_to_numpy(self, outputs: list) -> Any:
        first = outputs[0]
        if isinstance(first, dict):
            return {k: self.outputs_to_numpy([o[k] for o in outputs]) for k in first}
        if isinstance(first, (tuple, list)):
            return type(first)(self.outputs_to_numpy([o[i] for o in outputs])
                               for i in range(len(first)))
        merged = tf.concat(outputs, 0)
        if merged.dtype == tf.bfloat16:  # numpy has no bfloat16
            merged = tf.cast(merged, tf.float32)
        return merged.numpy()  # host sync: predictions leave the device

    # ------------------------------------------------------------------ weights, summary
    def _keras_net(self, what: str) -> None:
        if not isinstance(self.net, keras.Model):
            raise FitkitTypeError(f"{what} needs a keras.Model; this network is a "
                                  f"{type(self.net).__name__} (use tf.train.Checkpoint).")

    def save_weights(self, path: str) -> None:
        self._keras_net("save_weights")
        if not path.endswith(".weights.h5"):
            raise FitkitValueError(f"TensorFlow weights are saved as Keras '.weights.h5' files; "
                                   f"got {path!r}. Use a path ending in '.weights.h5'.")
        self.net.save_weights(path)

    def load_weights(self, path: str) -> None:
        self._keras_net("load_weights")
        if not os.path.isfile(path):
            raise FitkitValueError(f"No weights file at {path!r}; check the path "
                                   f"(save one with model.save_weights).")
        try:
            self.net.load_weights(path)
        except (ValueError, KeyError) as err:
            raise FitkitValueError(
                f"The weights in {path!r} come from another architecture and do not fit this "
                f"network: {err}"
            ) from err

    def summary(self, input_shape: Any, input_data: Any):
        return summary.summary_info(self, input_shape, input_data)

    def infer(self, x: Any) -> Any:
        """One forward pass in inference mode."""
        return call_net(self.net, x, training=False)
