"""TensorFlow device helpers: which devices exist, memory growth, logical devices.

Owns tf.config calls only; the public functions are in fitkit/devices.py. Memory growth
and logical devices must be set before TensorFlow first uses a device.
"""
from __future__ import annotations

import tensorflow as tf

from ..errors import FitkitError


def list_devices() -> list[dict]:
    return [{"name": d.name, "type": d.device_type} for d in tf.config.list_logical_devices()]


def memory_growth(enabled: bool = True) -> bool:
    gpus = tf.config.list_physical_devices("GPU")
    try:
        for gpu in gpus:
            tf.config.experimental.set_memory_growth(gpu, enabled)
    except RuntimeError as err:
        raise FitkitError(f"memory_growth must be set before TensorFlow uses the GPU "
                          f"(call it first in your script): {err}") from err
    return bool(gpus)


def virtual_devices(count: int, memory_limit: int | None = None) -> list[str]:
    """Split the first GPU (memory_limit MiB each), or the CPU when there is none."""
    gpus = tf.config.list_physical_devices("GPU")
    device = gpus[0] if gpus else tf.config.list_physical_devices("CPU")[0]
    config = tf.config.LogicalDeviceConfiguration(memory_limit=memory_limit if gpus else None)
    try:
        tf.config.set_logical_device_configuration(device, [config] * count)
    except RuntimeError as err:
        raise FitkitError(f"virtual_devices must be called before TensorFlow uses a device "
                          f"(call it first in your script): {err}") from err
    return [d.name for d in tf.config.list_logical_devices("GPU" if gpus else "CPU")]
