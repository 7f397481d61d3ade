"""Keras's global dtype policies: a network built under mixed_float16 gets Keras's loss
scaling with no precision= asked, as Keras's compile gives it (fitkit/tf/controls.py)."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from conftest import make_regression  # noqa: E402

import fitkit  # noqa: E402


@pytest.fixture
def mixed_float16(tf_kit):
    keras.mixed_precision.set_global_policy("mixed_float16")
    yield
    keras.mixed_precision.set_global_policy("float32")


def _net():
    keras.utils.set_random_seed(1)
    return keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(1, dtype="float32"),
        ]
    )


def test_the_mixed_float16_policy_alone_trains_with_keras_loss_scaling(mixed_float16):
    x, y = make_regression(n=256)
    y = (y * 5).astype("float32")
    theirs, mine = _net(), _net()
    theirs.compile(keras.optimizers.Adam(1e-2), "mse")
    model = fitkit.Model(mine)
    model.compile(keras.optimizers.Adam(1e-2), "mse")  # no precision= given
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    expected = theirs.fit(x, y, batch_size=32, epochs=3, shuffle=False, verbose=0).history
    history = model.fit(x, y, batch_size=32, epochs=3, shuffle=False, verbose=0).history
    for a, b in zip(theirs.get_weights(), mine.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(history["loss"], expected["loss"], rtol=1e-6)
    assert float(model.optimizer.dynamic_scale) == float(theirs.optimizer.dynamic_scale)


def test_a_float32_network_gets_no_loss_scale(tf_kit):
    model = fitkit.Model(_net())
    model.compile("adam", "mse")
    assert not isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
