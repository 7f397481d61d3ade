"""The TensorFlow errors fitkit tells apart by their text (no type exists), provoked for real
so that a TensorFlow that rewords one fails here. The taken-port one is provoked in
tests/test_launch_faults.py (it needs a worker process of its own)."""

from __future__ import annotations

import pytest
import tensorflow as tf

from fitkit.tf import devices


def test_a_device_setting_after_initialisation_is_recognised():
    tf.constant(1.0) + 1.0  # TF initialises its devices (if nothing did before)
    cpu = tf.config.list_physical_devices("CPU")[0]
    with pytest.raises(RuntimeError) as info:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 3
        )
    assert devices._after_initialisation(info.value), info.value
    assert not devices._after_initialisation(RuntimeError("some other refusal"))
