"""TensorFlow values read back on the host: the first-batch checks' statistics, the logs'
read and reset functions, and predictions as numpy; twin: fitkit/torch/readout.py.

Owns how each read is made in one host sync; when to read (log points, checks) is the
facade's, and which logs exist is the adapter's (its trackers and metrics).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tensorflow as tf

from .. import arrays
from ..adapter import WEIGHTS_FINITE
from . import finite
from .functions import graph_label_stats


def label_range(labels: tf.Tensor) -> list:
    """(min, max, a non-whole label or NaN) of the labels: one host read."""
    if labels.shape.num_elements() <= 1 << 16:  # a batch: numpy beats a graph call
        return arrays.label_stats(labels.numpy())  # host sync: once per check
    return graph_label_stats(labels).numpy().tolist()  # host sync: once per check


def first_nonfinite(tensor: tf.Tensor) -> tuple[int, float] | None:
    """(row, value) of the first NaN / inf in a float tensor, or None: one host read."""
    if not tensor.dtype.is_floating or not tensor.shape.num_elements():
        return None
    finite_values = tf.reshape(tf.math.is_finite(tensor), [tf.shape(tensor)[0], -1])
    bad_rows = tf.logical_not(tf.reduce_all(finite_values, 1))
    if not bool(tf.reduce_any(bad_rows)):  # host sync: once per in-memory tensor
        return None
    row = int(tf.argmax(tf.cast(bad_rows, tf.int32)))
    values = tf.reshape(tensor[row], [-1])
    return row, float(tf.boolean_mask(values, tf.logical_not(finite_values[row]))[0])


def value_range(value: tf.Tensor) -> list:
    value = tf.cast(value, tf.float32)  # host sync: a check, once
    return tf.stack([tf.reduce_min(value), tf.reduce_max(value)]).numpy().tolist()


def probability_stats(value: tf.Tensor) -> list:
    value = tf.cast(value, tf.float32)
    sums = tf.reduce_sum(value, -1)
    stats = [tf.reduce_min(value), tf.reduce_max(value), tf.reduce_min(sums), tf.reduce_max(sums)]
    return tf.stack(stats).numpy().tolist()  # host sync: a check, once


def log_functions(
    tracker: Any, metrics: list, net: Any, weights: bool
) -> tuple[list[str], Callable[[], tf.Tensor], Callable[[], None]]:
    """(names, read, reset) of the current logs: ``read`` stacks every value as float64 (for
    one host read), ``reset`` zeroes them. Plain functions: the adapter compiles and keeps
    them (eager ops, one per variable, would cost more than a step on the batch-style path)."""
    names = (
        ([k for k in tracker.sums if k in tracker.returned] if tracker else [])
        + [m.name for m in metrics]
        + [WEIGHTS_FINITE] * weights
    )

    def read() -> tf.Tensor:
        values = list(tracker.results().values()) if tracker else []
        values += [m.result() for m in metrics] + [finite.flag(net)] * weights
        return tf.stack([tf.reshape(tf.cast(v, tf.float64), []) for v in values])

    def reset() -> None:
        for part in ([tracker] if tracker else []) + metrics:
            part.reset()

    return names, read, reset


def outputs_to_numpy(outputs: list) -> Any:
    """Per-batch predictions as one numpy array (or a dict / tuple of them)."""
    first = outputs[0]
    if isinstance(first, dict):
        return {k: outputs_to_numpy([o[k] for o in outputs]) for k in first}
    if isinstance(first, (tuple, list)):
        return type(first)(outputs_to_numpy([o[i] for o in outputs]) for i in range(len(first)))
    merged = tf.concat(outputs, 0)
    if merged.dtype == tf.bfloat16:  # numpy has no bfloat16
        merged = tf.cast(merged, tf.float32)
    return merged.numpy()  # host sync: predictions leave the device
