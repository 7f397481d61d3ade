"""Metrics under mixed precision: the bf16 predictions are read in float32, so a metric
equals a float32 computation by hand over the same predictions (it once added up in bf16)."""

from __future__ import annotations

import numpy as np
import pytest

import fitkit


def bf16_model(kit):
    """A small regression MLP compiled with precision="bf16" (TF: built under Keras's
    mixed_bfloat16 policy, the global policy put back after)."""
    if kit.name == "torch":
        net = kit.mlp(4, 1)
    else:
        import keras

        keras.mixed_precision.set_global_policy("mixed_bfloat16")
        try:
            net = kit.mlp(4, 1)
        finally:
            keras.mixed_precision.set_global_policy("float32")
    model = fitkit.Model(net)
    model.compile(
        "sgd",
        "mse",
        precision="bf16",
        metrics={"mae": "mae", "mse": "mse", "max_gap": max_gap(kit)},
    )
    return model


def max_gap(kit):
    """A user metric (each backend's argument order): the batch's largest absolute error."""
    if kit.name == "torch":
        return lambda y_pred, y: (y_pred - y).abs().max()
    import tensorflow as tf

    return lambda y, y_pred: tf.reduce_max(tf.abs(y_pred - y))


def test_a_bf16_runs_metrics_equal_a_float32_computation_over_its_predictions(kit):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 4)).astype("float32")
    y = rng.standard_normal((300, 1)).astype("float32")
    model = bf16_model(kit)
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    logs = model.validate(x, y, batch_size=32)
    pred = model.predict(x, batch_size=32)
    assert pred.dtype == np.float32
    assert len(np.unique(pred)) < len(pred)  # bf16 values: few distinct ones, so half-precision
    err = pred - y  # sums would be visibly off (0.8685 vs 0.8683)
    assert logs["mae"] == pytest.approx(float(np.abs(err).mean(dtype=np.float32)), rel=1e-6)
    assert logs["mse"] == pytest.approx(float((err * err).mean(dtype=np.float32)), rel=1e-6)
    per_batch = [np.abs(err[i : i + 32]).max() for i in range(0, 300, 32)]
    rows = [min(32, 300 - i) for i in range(0, 300, 32)]
    assert logs["max_gap"] == pytest.approx(float(np.average(per_batch, weights=rows)), rel=1e-6)
