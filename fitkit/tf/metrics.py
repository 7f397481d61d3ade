"""TensorFlow metric states: accuracy and friends in tf.Variables, updated inside tf.function.

Owns the formulas; they mirror fitkit/torch/metrics.py line for line so a string metric
gives the same number on both backends. Choosing and naming metrics is the adapter's job.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import tensorflow as tf

from .. import specs
from ..specs import AUC_BINS
from ..targets import TargetMode

_F64 = tf.float64


def synced(aggregation: str = "sum") -> dict:
    """tf.Variable arguments for a state under a tf.distribute strategy: each replica keeps
    its own copy, and a read outside the replicas gives their sum ("sum", as Keras's metrics)
    or the first one's ("first", for values every replica holds alike). Nothing outside one."""
    if not tf.distribute.has_strategy():
        return {}
    return {
        "synchronization": tf.VariableSynchronization.ON_READ,
        "aggregation": tf.VariableAggregation.SUM
        if aggregation == "sum"
        else tf.VariableAggregation.ONLY_FIRST_REPLICA,
    }


def _state(shape: tuple[int, ...] = (), aggregation: str = "sum") -> tf.Variable:
    with tf.init_scope():  # created eagerly, even when first reached while tracing
        return tf.Variable(tf.zeros(shape, _F64), trainable=False, **synced(aggregation))


class StateMetric:
    """A metric whose state lives in tf.Variables; ``result`` is a 0-d tensor (no sync).

    ``update`` takes an optional ``sample_weight`` of shape (N,), spread over each sample's
    values; counts are float64 variables either way.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.mode: TargetMode | None = None
        self.width = 1

    def build(self, mode: TargetMode, width: int) -> None:
        self.mode, self.width = mode, width
        self.distributed = tf.distribute.has_strategy()  # built under a strategy
        self.variables = [
            _state(s, a) for s, a in zip(self.state_shapes(), self.aggregations(), strict=True)
        ]

    def aggregations(self) -> list[str]:
        """How each state adds up over replicas (under a strategy): a sum by default."""
        return ["sum"] * len(self.state_shapes())

    def state_shapes(self) -> list[tuple[int, ...]]:
        return [(), ()]

    def reset(self) -> None:
        for v in self.variables:
            v.assign(tf.zeros(v.shape, v.dtype))  # no read (a collective under a strategy)

    @property
    def built_mode(self) -> TargetMode:
        """The target mode ``build`` set (every update comes after it)."""
        if self.mode is None:
            raise RuntimeError(f"metric {self.name!r} was used before build()")
        return self.mode

    def update(self, y: Any, y_pred: Any, sample_weight: Any = None) -> None:
        raise NotImplementedError

    def result(self) -> tf.Tensor:
        raise NotImplementedError


def _spread(sample_weight: Any, n: Any) -> tf.Tensor:
    """float64 weights of ``n`` flattened values: each sample's weight over its own values."""
    w = tf.reshape(tf.cast(sample_weight, _F64), [-1])
    return tf.reshape(tf.broadcast_to(w[:, None], [tf.size(w), n // tf.size(w)]), [-1])


def _ratio(total: Any, count: Any) -> tf.Tensor:
    """total / count, 0 where count is 0 (Keras's divide_no_nan)."""
    return tf.math.divide_no_nan(total, count)


def _labels(y: Any, y_pred: Any, mode: TargetMode, cut: float) -> tuple[tf.Tensor, tf.Tensor]:
    """Predicted and true labels, flattened, for the accuracy family."""
    if mode.task == "binary":
        return tf.reshape(y_pred > cut, [-1]), tf.reshape(tf.cast(y, _F64) > 0.5, [-1])
    true = tf.argmax(y, -1) if mode.task == "categorical" else y
    return tf.reshape(tf.argmax(y_pred, -1), [-1]), tf.reshape(tf.cast(true, tf.int64), [-1])


def _probabilities(
    y: Any, y_pred: Any, mode: TargetMode, width: int
) -> tuple[tf.Tensor, tf.Tensor]:
    """Scores in [0, 1] and 0/1 targets, flattened (one-vs-rest for class outputs)."""
    if mode.task == "binary":
        scores = tf.sigmoid(y_pred) if mode.from_logits else y_pred
        return tf.reshape(scores, [-1]), tf.reshape(tf.cast(y, scores.dtype), [-1])
    scores = tf.nn.softmax(y_pred, -1) if mode.from_logits else y_pred
    target = (
        y
        if mode.task == "categorical"
        else tf.one_hot(tf.reshape(tf.cast(y, tf.int64), [-1]), width)
    )
    return tf.reshape(scores, [-1]), tf.reshape(tf.cast(target, scores.dtype), [-1])


def _count(t: Any) -> tf.Tensor:
    return tf.cast(tf.size(t), _F64)


class Accuracy(StateMetric):
    """Exact accuracy: correct predictions / samples (or weights) over the epoch."""

    def __init__(
        self, name: str = "accuracy", task: str | None = None, threshold: float | None = None
    ) -> None:
        super().__init__(name)
        self.task, self.threshold = task, threshold

    def build(self, mode: TargetMode, width: int) -> None:
        task = specs.metric_task(self.name, self.own_task(mode.task), mode.task, self.threshold)
        self.cut = specs.binary_threshold(mode.from_logits, self.threshold)
        super().build(TargetMode(task, mode.from_logits), width)

    def own_task(self, target_task: str) -> str | None:
        return self.task

    def update(self, y: Any, y_pred: Any, sample_weight: Any = None) -> None:
        pred, true = _labels(y, y_pred, self.built_mode, self.cut)
        self.add(tf.equal(pred, true), sample_weight)

    def add(self, hit: tf.Tensor, sample_weight: Any) -> None:
        hit = tf.cast(hit, _F64)
        if sample_weight is None:
            self.variables[0].assign_add(tf.reduce_sum(hit))
            self.variables[1].assign_add(_count(hit))
        else:
            w = _spread(sample_weight, tf.size(hit))
            self.variables[0].assign_add(tf.reduce_sum(w * hit))
            self.variables[1].assign_add(tf.reduce_sum(w))

    def result(self) -> tf.Tensor:
        return _ratio(self.variables[0], self.variables[1])


class TopKAccuracy(Accuracy):
    """A sample is right when its label is among the ``k`` highest scores."""

    def __init__(self, name: str = "top_k_accuracy", k: int = 5, task: str | None = None) -> None:
        super().__init__(name, task=task)
        self.k = k

    def own_task(self, target_task: str) -> str:
        return self.task or ("categorical" if target_task == "categorical" else "sparse")

    def update(self, y: Any, y_pred: Any, sample_weight: Any = None) -> None:
        true = tf.argmax(y, -1) if self.built_mode.task == "categorical" else y
        true = tf.reshape(tf.cast(true, tf.int32), [-1, 1])
        scores = tf.reshape(y_pred, [tf.shape(true)[0], -1])
        top = tf.math.top_k(scores, k=min(self.k, self.width)).indices
        self.add(tf.reduce_any(tf.equal(top, true), axis=-1), sample_weight)


class ErrorMean(StateMetric):
    """mae / mse / rmse over every predicted value of the epoch (weighted per sample)."""

    def __init__(self, name: str, kind: str) -> None:
        super().__init__(name)
        self.kind = kind

    def update(self, y: Any, y_pred: Any, sample_weight: Any = None) -> None:
        diff = y_pred - tf.cast(tf.reshape(y, tf.shape(y_pred)), y_pred.dtype)
        err = tf.cast(tf.abs(diff) if self.kind == "mae" else diff * diff, _F64)
        if sample_weight is None:
            self.variables[0].assign_add(tf.reduce_sum(err))
            self.variables[1].assign_add(_count(diff))
        else:
            w = _spread(sample_weight, tf.size(err))
            self.variables[0].assign_add(tf.reduce_sum(w * tf.reshape(err, [-1])))
            self.variables[1].assign_add(tf.reduce_sum(w))

    def result(self) -> tf.Tensor:
        mean = _ratio(self.variables[0], self.variables[1])
        return tf.sqrt(mean) if self.kind == "rmse" else mean


class AUC(StateMetric):
    """ROC AUC from (weighted) score histograms (``bins`` bins, ties in a bin count half)."""

    def __init__(self, name: str = "auc", bins: int = AUC_BINS) -> None:
        super().__init__(name)
        self.bins = bins

    def state_shapes(self) -> list[tuple[int, ...]]:
        return [(self.bins,), (self.bins,)]

    def update(self, y: Any, y_pred: Any, sample_weight: Any = None) -> None:
        scores, target = _probabilities(y, y_pred, self.built_mode, self.width)
        bins = tf.clip_by_value(
            tf.cast(tf.cast(scores, _F64) * self.bins, tf.int64), 0, self.bins - 1
        )
        target = tf.cast(target, _F64)
        negative = 1.0 - target
        if sample_weight is not None:
            w = _spread(sample_weight, tf.size(target))
            target, negative = target * w, negative * w
        self.variables[0].assign_add(tf.math.unsorted_segment_sum(target, bins, self.bins))
        self.variables[1].assign_add(tf.math.unsorted_segment_sum(negative, bins, self.bins))

    def result(self) -> tf.Tensor:
        pos, neg = self.variables
        above = tf.cumsum(pos, reverse=True) - pos  # positives in higher bins
        pairs = tf.reduce_sum(neg * (above + 0.5 * pos))
        return _ratio(pairs, tf.reduce_sum(pos) * tf.reduce_sum(neg))


class PrecisionRecall(StateMetric):
    """Binary precision / recall / F1, or their macro average over classes for class outputs."""

    def __init__(self, name: str, kind: str, threshold: float | None = None) -> None:
        super().__init__(name)
        self.kind, self.threshold = kind, threshold

    def build(self, mode: TargetMode, width: int) -> None:
        specs.metric_task(self.name, None, mode.task, self.threshold)
        self.cut = specs.binary_threshold(mode.from_logits, self.threshold)
        super().build(mode, width)

    def state_shapes(self) -> list[tuple[int, ...]]:
        shape = () if self.built_mode.task == "binary" else (self.width,)
        return [shape, shape, shape]

    def update(self, y: Any, y_pred: Any, sample_weight: Any = None) -> None:
        pred, true = _labels(y, y_pred, self.built_mode, self.cut)
        if self.built_mode.task != "binary":
            pred = tf.cast(tf.one_hot(pred, self.width), tf.bool)
            true = tf.cast(tf.one_hot(true, self.width), tf.bool)
        count = lambda t: tf.reduce_sum(tf.cast(t, _F64), axis=0)  # noqa: E731
        if sample_weight is not None:
            w = _spread(sample_weight, tf.shape(true)[0])
            w = w if true.shape.rank == 1 else w[:, None]
            count = lambda t: tf.reduce_sum(tf.cast(t, _F64) * w, axis=0)  # noqa: E731
        self.variables[0].assign_add(count(pred & true))
        self.variables[1].assign_add(count(pred & ~true))
        self.variables[2].assign_add(count(~pred & true))

    def result(self) -> tf.Tensor:
        tp, fp, fn = self.variables
        if self.kind == "f1":
            hits, denom = 2.0 * tp, 2.0 * tp + fp + fn
        else:
            hits, denom = tp, tp + (fp if self.kind == "precision" else fn)
        ratio = _ratio(hits, denom)
        if ratio.shape.rank == 0:
            return ratio
        seen = tf.cast(denom > 0, _F64)  # macro average over the classes that occurred
        return tf.reduce_sum(ratio * seen) / tf.maximum(tf.reduce_sum(seen), 1.0)


class R2Score(StateMetric):
    """Coefficient of determination over the epoch, averaged over output columns (Keras's
    "uniform_average"). Sums of y and y^2 are taken about the epoch's first target row: exact
    for a constant column, and no cancellation for targets with a large mean.
    """

    def state_shapes(self) -> list[tuple[int, ...]]:
        return [(), (3, self.width), (self.width,)]  # count, sums, shift

    def aggregations(self) -> list[str]:
        return ["sum", "sum", "first"]  # every replica sums about the same shift

    def update(self, y: Any, y_pred: Any, sample_weight: Any = None) -> None:
        count, sums, shift = self.variables
        pred = tf.reshape(tf.cast(y_pred, _F64), [-1, self.width])
        true = tf.reshape(tf.cast(y, _F64), tf.shape(pred))
        first = tf.concat([true[:1], shift[None]], 0)[0]  # the first row (the shift if empty)
        empty = count == 0
        if self.distributed and not tf.distribute.in_cross_replica_context():
            # the global batch's first row (replica 0's), once no replica has summed yet
            context = tf.distribute.get_replica_context()
            empty = context.all_reduce("sum", count) == 0
            own = tf.cast(context.replica_id_in_sync_group == 0, _F64)
            first = context.all_reduce("sum", first * own)
        shift.assign(tf.where(empty, first, shift))  # nothing summed yet: set the shift
        centred = true - shift
        terms = tf.stack([centred, centred * centred, (true - pred) ** 2])
        if sample_weight is None:
            sums.assign_add(tf.reduce_sum(terms, 1))
            count.assign_add(tf.cast(tf.shape(true)[0], _F64))
        else:
            w = tf.reshape(_spread(sample_weight, tf.shape(true)[0]), [1, -1, 1])
            sums.assign_add(tf.reduce_sum(w * terms, 1))
            count.assign_add(tf.reduce_sum(w))

    def result(self) -> tf.Tensor:
        count, sums, _ = self.variables
        total, squares, residual = tf.unstack(sums)
        spread = squares - total * _ratio(total, count)
        safe = tf.where(spread > 0, spread, 1.0)
        score = tf.where(spread > 0, 1.0 - residual / safe, tf.cast(residual == 0, _F64))
        return tf.where(count != 0, tf.reduce_mean(score), 0.0)


class BatchMean(StateMetric):
    """A user callable ``fn(y, y_pred) -> scalar`` (Keras order), averaged over samples."""

    def __init__(self, name: str, fn: Callable) -> None:
        super().__init__(name)
        self.fn = fn

    def update(self, y: Any, y_pred: Any, sample_weight: Any = None) -> None:
        n = tf.cast(tf.shape(y_pred)[0], _F64)
        if sample_weight is not None:  # the batch value counts for the batch's total weight
            n = tf.reduce_sum(tf.cast(sample_weight, _F64))
        value = tf.cast(tf.reduce_mean(self.fn(y, y_pred)), _F64)
        self.variables[0].assign_add(tf.math.multiply_no_nan(value, n))  # 0 for an empty batch
        self.variables[1].assign_add(n)

    def result(self) -> tf.Tensor:
        return _ratio(self.variables[0], self.variables[1])


class NativeMetric(StateMetric):
    """A keras.metrics.Metric, used as it is."""

    def __init__(self, metric: Any) -> None:
        super().__init__(metric.name)
        self.metric = metric

    def build(self, mode: TargetMode, width: int) -> None:
        self.mode, self.width = mode, width

    def reset(self) -> None:
        self.metric.reset_state()

    def update(self, y: Any, y_pred: Any, sample_weight: Any = None) -> None:
        self.metric.update_state(y, y_pred, sample_weight=sample_weight)

    def result(self) -> tf.Tensor:
        return tf.cast(self.metric.result(), _F64)


def from_keras(identifier: Any) -> Any:
    """A Keras metric identifier as Keras itself builds it."""
    return keras.metrics.get(identifier.as_keras())


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
        # under a strategy a replica's batch may be empty (mean NaN): it must add 0
        self.distributed = tf.distribute.has_strategy()

    def expect(self, keys: list[str]) -> None:
        """Sums for these keys now (under a strategy no variable is made in a replica)."""
        for key in keys:
            if key not in self.sums:
                self.sums[key] = _state()

    def reset(self) -> None:
        for v in (self.count, *self.sums.values()):
            v.assign(tf.zeros(v.shape, v.dtype))  # no read (a collective under a strategy)

    def update(self, logs: dict, n: tf.Tensor) -> None:
        for key, value in logs.items():
            if key not in self.sums:
                self.sums[key] = _state()
            self.returned.add(key)
            mean = tf.cast(tf.reduce_mean(value), _F64)
            self.sums[key].assign_add(
                tf.math.multiply_no_nan(mean, n) if self.distributed else mean * n
            )
        self.count.assign_add(n)

    def results(self) -> dict[str, tf.Tensor]:
        return {
            k: v / tf.maximum(self.count, 1.0) for k, v in self.sums.items() if k in self.returned
        }
