"""TensorFlow's part of the script style (fitkit/script.py): a batch's value made ready to
sum, sums kept on the device, and several device values read in one host sync.

Mirrored name for name by fitkit/torch/script.py; what the sums mean is fitkit/script.py's.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf


def batch_value(value: Any) -> Any:
    """A 0-d float64 tensor (a tensor of per-sample values averaged)."""
    value = tf.cast(value, tf.float64)
    return tf.reduce_mean(value) if value.shape.rank else value


def add(total: Any, value: Any, n: int) -> Any:
    """``total + value * n`` (a new tensor: TensorFlow's tensors are immutable)."""
    return value * n if total is None else total + value * n


def read(values: list[Any]) -> list[float]:
    """0-d tensors as floats, stacked and read in one host sync."""
    return [float(v) for v in tf.stack([tf.cast(v, tf.float64) for v in values]).numpy()]
