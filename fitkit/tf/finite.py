"""Whether a Keras network's weights are all finite, as one device-side flag (no read here).

Owns that flag; the adapter's compiled read of the logs reads it with them, in the same
transfer, at log points only (fitkit/finite.py's guard asks for it). The torch twin is
fitkit/torch/finite.py.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf


def flag(net: Any) -> tf.Tensor:
    """A scalar bool: every floating variable of ``net`` (trainable or not) is finite."""
    flags = [
        tf.reduce_all(tf.math.is_finite(v))
        for v in net.variables
        if tf.as_dtype(v.dtype).is_floating
    ]  # a Keras variable's dtype is a name
    return tf.reduce_all(tf.stack(flags)) if flags else tf.constant(True)
