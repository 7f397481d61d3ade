"""Training controls in a TensorFlow step: gradient accumulation (variables, and a tf.cond
inside the compiled step), clipping, fp16 loss scaling (Keras's LossScaleOptimizer) and the
precision checks. The checks of the arguments are fitkit/controls.py's, XLA is
functions.py's, the schedules fitkit/tf/schedules.py's, checkpoint files fitkit/tf/state.py's.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from ..controls import TrainingControls
from ..errors import FitkitValueError
from .metrics import synced
from .state import to_array  # reads with no collective under a strategy

_POLICIES = {"bf16": "mixed_bfloat16", "fp16": "mixed_float16"}


def check_precision(net: Any, precision: str) -> None:
    """bf16 / fp16 need a Keras network built under the matching mixed policy."""
    policy = getattr(getattr(net, "dtype_policy", None), "name", "float32")
    wanted = _POLICIES.get(precision)
    if wanted is not None and policy != wanted:
        raise FitkitValueError(
            f"precision={precision!r} needs a Keras network built under the {wanted!r} "
            f"policy (this one is {policy!r}). Call "
            f"keras.mixed_precision.set_global_policy({wanted!r}) before building it."
        )


def wrap_optimizer(optimizer: Any, precision: str, net: Any = None) -> Any:
    """fp16, or a network built under the mixed_float16 policy (as Keras's compile does,
    with no precision= asked): the optimizer inside a LossScaleOptimizer (dynamic loss
    scale), once."""
    policy = getattr(getattr(net, "dtype_policy", None), "name", None)
    if (precision != "fp16" and policy != "mixed_float16") or isinstance(
        optimizer, keras.optimizers.LossScaleOptimizer
    ):
        return optimizer
    return keras.optimizers.LossScaleOptimizer(optimizer)


def needs_update(controls: TrainingControls, optimizer: Any) -> bool:
    """True when a step needs more than apply_gradients of its gradients (the default)."""
    return controls.clips or controls.gradient_accumulation_steps > 1 or _loss_scaled(optimizer)


def _loss_scaled(optimizer: Any) -> bool:
    """fp16, or a LossScaleOptimizer the user passed: it unscales, so the step must scale."""
    return isinstance(optimizer, keras.optimizers.LossScaleOptimizer)


def _dense(g: Any) -> Any:
    return None if g is None else tf.convert_to_tensor(g)


class Update:
    """What follows a train step's loss: gradients, accumulation, scaling, clipping, apply.

    Gradient accumulation gives exactly the update of one N-times larger batch: losses are
    means over a batch's rows, so each batch's gradient is weighted by its rows into a sum
    (one variable per trainable variable, made before tracing) and the window's sum is
    divided by its rows before clipping. A tf.cond in the compiled step applies a full
    window; ``finish`` (a small tf.function) applies a last partial one. Clipping follows
    Keras (tf.clip_by_norm per gradient, tf.clip_by_global_norm, then tf.clip_by_value),
    applied here rather than by optimizer attributes so that it sees the accumulated
    gradient. A Keras optimizer the user built with its own clipnorm / clipvalue still clips
    inside its apply, after ours. fp16: the loss is scaled by the LossScaleOptimizer's
    dynamic scale (through the tape's output gradient; the logged loss is unscaled);
    clipping sees unscaled gradients and non-finite ones still make it skip the update.

    Under a strategy (``adapter.replicas``) each replica keeps its own sums; a full window
    is applied from cross-replica context (``after_step``: MirroredStrategy refuses
    apply_gradients inside a tf.cond in a replica), each replica's sum divided by the rows
    of the whole window on every replica; clipping sees the sum over replicas.
    """

    def __init__(self, adapter: Any, controls: TrainingControls) -> None:
        self.adapter = adapter  # its optimizer and network are read when tracing
        self.steps = controls.gradient_accumulation_steps
        self.clipnorm, self.clipvalue = controls.clipnorm, controls.clipvalue
        self.global_clipnorm = controls.global_clipnorm
        self.clips = controls.clips
        self.scaled = _loss_scaled(adapter.optimizer)
        self.replicas = adapter.replicas  # a strategy's, or None
        self.sums: list | None = None  # accumulated gradients, once built
        self.count: Any = None  # batches in the pending window
        self.rows: Any = None  # their rows
        self.none: list[bool] | None = None  # gradients that are None (static, from a trace)
        self._finish: Any = None

    @property
    def stateful(self) -> bool:
        """True when a checkpoint must save this (a pending window)."""
        return self.steps > 1

    @property
    def _built_sums(self) -> list:
        """The accumulators (``build`` comes before any step or restore that uses them)."""
        if self.sums is None:
            raise RuntimeError("gradient accumulators used before Update.build()")
        return self.sums

    def build(self, variables: list) -> None:
        """The accumulators, before anything is traced (a variable made while tracing costs
        a second trace)."""
        if self.steps == 1 or self.sums is not None:
            return
        with tf.init_scope():
            self.sums = [
                tf.Variable(
                    tf.zeros(v.shape, v.dtype), trainable=False, name="gradient_sum", **synced()
                )
                for v in variables
            ]
            self.count = tf.Variable(
                0, dtype=tf.int64, trainable=False, name="window_steps", **synced("first")
            )
            self.rows = tf.Variable(
                0.0, dtype=tf.float64, trainable=False, name="window_rows", **synced()
            )

    def step(
        self, tape: tf.GradientTape, loss: tf.Tensor, variables: list, rows: tf.Tensor
    ) -> None:
        optimizer = self.adapter.optimizer
        scale = None
        if self.replicas is not None and self.steps == 1:  # this replica's share of the batch
            scale = self.replicas.share(rows, loss.dtype) * tf.ones_like(loss)
        if self.scaled:
            if not optimizer.built:
                optimizer.build(variables)
            dynamic = tf.ones_like(loss) * tf.cast(optimizer.dynamic_scale, loss.dtype)
            scale = dynamic if scale is None else scale * dynamic
        grads = tape.gradient(loss, variables, output_gradients=scale)
        if self.steps == 1:
            self.apply(grads, variables)
            return
        self.build(variables)
        self.none = [g is None for g in grads]
        for total, g in zip(self._built_sums, grads, strict=True):
            if g is not None:
                total.assign_add(_dense(g) * tf.cast(rows, total.dtype))
        self.count.assign_add(1)
        self.rows.assign_add(tf.cast(rows, tf.float64))
        if self.replicas is None:  # under a strategy: after_step, outside the replicas
            tf.cond(self.count >= self.steps, lambda: self._apply_window(variables), lambda: None)

    def after_step(self) -> None:
        """Under a strategy, in cross-replica context after each step: a full window's
        update, run on every replica."""
        variables = self.adapter.net.trainable_variables
        tf.cond(
            self.count >= self.steps,
            lambda: self.replicas.native.run(lambda: self._apply_window(variables)),
            lambda: None,
        )

    def _apply_window(self, variables: list) -> None:
        none = self.none or [False] * len(self._built_sums)
        rows = self.rows.read_value()
        if self.replicas is not None:  # the window's rows on every replica
            rows = self.replicas.all_reduce([rows])[0]
        grads = [
            None if skip else total / tf.cast(rows, total.dtype)
            for total, skip in zip(self._built_sums, none, strict=True)
        ]
        self.apply(grads, variables)
        for total in self._built_sums:
            total.assign(tf.zeros_like(total))
        self.count.assign(0)
        self.rows.assign(0.0)

    def finish(self) -> None:
        """Apply a pending (partial) window: one compiled call, no host read."""
        if self.sums is None:
            return
        if self._finish is None:
            variables = self.adapter.net.trainable_variables

            def finish_window() -> None:
                apply = lambda: self._apply_window(variables)  # noqa: E731
                if self.replicas is not None:
                    apply = lambda: self.replicas.native.run(  # noqa: E731
                        lambda: self._apply_window(variables)
                    )
                tf.cond(self.count > 0, apply, lambda: None)

            self._finish = (
                finish_window
                if self.adapter.run_eagerly
                else tf.function(finish_window, autograph=False)
            )
        if self.replicas is None:
            self._finish()
            return
        with self.replicas.scope():
            self._finish()

    def apply(self, grads: list, variables: list) -> None:
        optimizer = self.adapter.optimizer
        if self.clips and self.replicas is not None:  # clip the sum over replicas, then
            # give each replica 1/n of it (the optimizer sums the replicas' gradients)
            n = self.replicas.count
            grads = [
                None if g is None else g / n
                for g in self.clip(self.replicas.all_reduce([_dense(g) for g in grads]))
            ]
            optimizer.apply_gradients(zip(grads, variables, strict=True))
            return
        if self.clips and self.scaled:  # clip unscaled gradients; the optimizer unscales
            scale = optimizer.dynamic_scale
            finite = optimizer.check_finite(grads)
            grads = [_dense(g) for g in grads]
            clipped = self.clip([None if g is None else g / tf.cast(scale, g.dtype) for g in grads])
            grads = [
                None
                if g is None
                # non-finite: kept, so the update is skipped
                else tf.where(finite, _dense(c) * tf.cast(scale, g.dtype), g)
                for g, c in zip(grads, clipped, strict=True)
            ]
        elif self.clips:
            grads = self.clip(grads)
        optimizer.apply_gradients(zip(grads, variables, strict=True))

    def clip(self, grads: list) -> list:
        if self.clipnorm is not None:
            grads = [None if g is None else tf.clip_by_norm(g, self.clipnorm) for g in grads]
        if self.global_clipnorm is not None:
            grads, _ = tf.clip_by_global_norm(grads, self.global_clipnorm)
        if self.clipvalue is not None:
            grads = [
                None if g is None else tf.clip_by_value(g, -self.clipvalue, self.clipvalue)
                for g in grads
            ]
        return list(grads)

    # ------------------------------------------------------------------ checkpoints
    def state(self) -> dict[str, np.ndarray]:
        """The pending window (counters and gradient sums), as numpy."""
        if self.sums is None:
            return {}
        out = {"count": to_array(self.count), "rows": to_array(self.rows)}  # host sync: save
        out.update({f"sum/{i}": to_array(total) for i, total in enumerate(self.sums)})
        return out

    def load(self, saved: dict) -> None:
        if not saved:
            return
        self.build(self.adapter.net.trainable_variables)
        self.count.assign(saved["count"])
        self.rows.assign(saved["rows"])
        for i, total in enumerate(self._built_sums):
            total.assign(saved[f"sum/{i}"])
