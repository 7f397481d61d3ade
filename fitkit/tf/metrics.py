"""TensorFlow metric states: accuracy and friends in tf.Variables, updated inside tf.function.

Owns the formulas; they mirror fitkit/torch/metrics.py line for line so a string metric
gives the same number on both backends. Choosing and naming metrics is the adapter's job.
"""
from __future__ import annotations

from typing import Any, Callable

import keras
import tensorflow as tf

from ..targets import TargetMode

AUC_BINS = 1000
f64 = tf.float64


def _state(shape=()) -> tf.Variable:
    with tf.init_scope():  # created eagerly, even when first reached while tracing
        return tf.Variable(tf.zeros(shape, f64), trainable=False)


class StateMetric:
    """A metric whose state lives in tf.Variables; ``result`` is a 0-d tensor (no sync)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.mode: TargetMode | None = None
        self.width = 1

    def build(self, mode: TargetMode, width: int) -> None:
        self.mode, self.width = mode, width
        self.variables = [_state(s) for s in self.state_shapes()]

    def state_shapes(self) -> list:
        return [(), ()]

    def reset(self) -> None:
        for v in self.variables:
            v.assign(tf.zeros_like(v))

    def update(self, y, y_pred) -> None: ...
    def result(self) -> tf.Tensor: ...


def _labels(y, y_pred, mode: TargetMode):
    """Predicted and true labels, flattened, for the accuracy family."""
    if mode.task == "binary":
        threshold = 0.0 if mode.from_logits else 0.5
        return tf.reshape(y_pred > threshold, [-1]), tf.reshape(tf.cast(y, f64) > 0.5, [-1])
    true = tf.argmax(y, -1) if mode.task == "categorical" else y
    return tf.reshape(tf.argmax(y_pred, -1), [-1]), tf.reshape(tf.cast(true, tf.int64), [-1])


def _probabilities(y, y_pred, mode: TargetMode, width: int):
    """Scores in [0, 1] and 0/1 targets, flattened (one-vs-rest for class outputs)."""
    if mode.task == "binary":
        scores = tf.sigmoid(y_pred) if mode.from_logits else y_pred
        return tf.reshape(scores, [-1]), tf.reshape(tf.cast(y, scores.dtype), [-1])
    scores = tf.nn.softmax(y_pred, -1) if mode.from_logits else y_pred
    target = y if mode.task == "categorical" else tf.one_hot(
        tf.reshape(tf.cast(y, tf.int64), [-1]), width)
    return tf.reshape(scores, [-1]), tf.reshape(tf.cast(target, scores.dtype), [-1])


def _count(t) -> tf.Tensor:
    return tf.cast(tf.size(t), f64)


class Accuracy(StateMetric):
    """Exact accuracy: correct predictions / samples over the epoch."""

    def __init__(self, name: str = "accuracy", task: str | None = None) -> None:
        super().__init__(name)
        self.task = task

    def build(self, mode: TargetMode, width: int) -> None:
        super().build(TargetMode(self.task or mode.task, mode.from_logits), width)

    def update(self, y, y_pred) -> None:
        pred, true = _labels(y, y_pred, self.mode)
        self.variables[0].assign_add(tf.reduce_sum(tf.cast(tf.equal(pred, true), f64)))
        self.variables[1].assign_add(_count(true))

    def result(self):
        return self.variables[0] / tf.maximum(self.variables[1], 1.0)


class TopKAccuracy(Accuracy):
    def __init__(self, name: str = "top_k_accuracy", k: int = 5) -> None:
        super().__init__(name, task="sparse")
        self.k = k

    def update(self, y, y_pred) -> None:
        true = tf.argmax(y, -1) if self.mode.task == "categorical" else y
        true = tf.reshape(tf.cast(true, tf.int32), [-1, 1])
        scores = tf.reshape(y_pred, [tf.shape(true)[0], -1])
        top = tf.math.top_k(scores, k=min(self.k, self.width)).indices
        hit = tf.reduce_any(tf.equal(top, true), axis=-1)
        self.variables[0].assign_add(tf.reduce_sum(tf.cast(hit, f64)))
        self.variables[1].assign_add(_count(hit))


class ErrorMean(StateMetric):
    """mae / mse / rmse over every predicted value of the epoch."""

    def __init__(self, name: str, kind: str) -> None:
        super().__init__(name)
        self.kind = kind

    def update(self, y, y_pred) -> None:
        diff = y_pred - tf.cast(tf.reshape(y, tf.shape(y_pred)), y_pred.dtype)
        err = tf.abs(diff) if self.kind == "mae" else diff * diff
        self.variables[0].assign_add(tf.reduce_sum(tf.cast(err, f64)))
        self.variables[1].assign_add(_count(diff))

    def result(self):
        mean = self.variables[0] / tf.maximum(self.variables[1], 1.0)
        return tf.sqrt(mean) if self.kind == "rmse" else mean


class AUC(StateMetric):
    """ROC AUC from score histograms (1000 bins, ties in a bin count half)."""

    def state_shapes(self) -> list:
        return [(AUC_BINS,), (AUC_BINS,)]

    def update(self, y, y_pred) -> None:
        scores, target = _probabilities(y, y_pred, self.mode, self.width)
        bins = tf.clip_by_value(tf.cast(tf.cast(scores, f64) * AUC_BINS, tf.int64),
                                0, AUC_BINS - 1)
        target = tf.cast(target, f64)
        self.variables[0].assign_add(tf.math.unsorted_segment_sum(target, bins, AUC_BINS))
        self.variables[1].assign_add(tf.math.unsorted_segment_sum(1.0 - target, bins, AUC_BINS))

    def result(self):
        pos, neg = self.variables
        above = tf.cumsum(pos, reverse=True) - pos  # positives in higher bins
        pairs = tf.reduce_sum(neg * (above + 0.5 * pos))
        return pairs / tf.maximum(tf.reduce_sum(pos) * tf.reduce_sum(neg), 1.0)


class PrecisionRecall(StateMetric):
    """Binary precision / recall, or their macro average over classes for class outputs."""

    def __init__(self, name: str, kind: str) -> None:
        super().__init__(name)
        self.kind = kind

    def state_shapes(self) -> list:
        shape = () if self.mode.task == "binary" else (self.width,)
        return [shape, shape, shape]

    def update(self, y, y_pred) -> None:
        pred, true = _labels(y, y_pred, self.mode)
        if self.mode.task != "binary":
            pred = tf.cast(tf.one_hot(pred, self.width), tf.bool)
            true = tf.cast(tf.one_hot(true, self.width), tf.bool)
        count = lambda t: tf.reduce_sum(tf.cast(t, f64), axis=0)  # noqa: E731
        self.variables[0].assign_add(count(pred & true))
        self.variables[1].assign_add(count(pred & ~true))
        self.variables[2].assign_add(count(~pred & true))

    def result(self):
        tp, fp, fn = self.variables
        denom = tp + (fp if self.kind == "precision" else fn)
        ratio = tp / tf.maximum(denom, 1.0)
        if ratio.shape.rank == 0:
            return ratio
        seen = tf.cast(denom > 0, f64)  # macro average over the classes that occurred
        return tf.reduce_sum(ratio * seen) / tf.maximum(tf.reduce_sum(seen), 1.0)


class BatchMean(StateMetric):
    """A user callable ``fn(y, y_pred) -> scalar`` (Keras order), averaged over samples."""

    def __init__(self, name: str, fn: Callable) -> None:
        super().__init__(name)
        self.fn = fn

    def update(self, y, y_pred) -> None:
        n = tf.cast(tf.shape(y_pred)[0], f64)
        self.variables[0].assign_add(tf.cast(tf.reduce_mean(self.fn(y, y_pred)), f64) * n)
        self.variables[1].assign_add(n)

    def result(self):
        return self.variables[0] / tf.maximum(self.variables[1], 1.0)


class NativeMetric(StateMetric):
    """A keras.metrics.Metric, used as it is."""

    def __init__(self, metric: Any) -> None:
        super().__init__(metric.name)
        self.metric = metric

    def build(self, mode: TargetMode, width: int) -> None:
        self.mode, self.width = mode, width

    def reset(self) -> None:
        self.metric.reset_state()

    def update(self, y, y_pred) -> None:
        self.metric.update_state(y, y_pred)

    def result(self):
        return tf.cast(self.metric.result(), f64)


def is_native(obj: Any) -> bool:
    return isinstance(obj, keras.metrics.Metric)


NATIVE_HINT = "a keras.metrics.Metric, or a dict {name: fn(y, y_pred)}"


class LogTracker:
    """Sample-weighted sums of the values a step returns, in variables updated in-graph.

    The default step's "loss" exists before the first trace: a variable created while
    tracing makes tf.function trace the step a second time. Only keys a step returned
    are reported.
    """

    def __init__(self, expected: tuple[str, ...] = ("loss",)) -> None:
        self.sums: dict[str, tf.Variable] = {key: _state() for key in expected}
        self.returned: set[str] = set()
        self.count = _state()

    def reset(self) -> None:
        for v in (self.count, *self.sums.values()):
            v.assign(tf.zeros_like(v))

    def update(self, logs: dict, n: tf.Tensor) -> None:
        for key, value in logs.items():
            if key not in self.sums:
                self.sums[key] = _state()
            self.returned.add(key)
            self.sums[key].assign_add(tf.cast(tf.reduce_mean(value), f64) * n)
        self.count.assign_add(n)

    def results(self) -> dict[str, tf.Tensor]:
        return {k: v / tf.maximum(self.count, 1.0) for k, v in self.sums.items()
                if k in self.returned}
