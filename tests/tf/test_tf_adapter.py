"""TensorFlow adapter: parity with Keras's own fit, steps compiled once, logical devices."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from conftest import make_classes, make_regression

import fitkit


def _twin_nets(kit, n_in, n_out):
    fitkit.set_seed(1)
    a = kit.mlp(n_in, n_out)
    b = kit.mlp(n_in, n_out)
    b.set_weights(a.get_weights())
    return a, b


@pytest.mark.parametrize("task", ["regression", "classes"])
def test_fit_matches_keras_fit(tf_kit, task):
    if task == "regression":
        x, y = make_regression(n=200)
        n_out, loss, native = 1, "mse", keras.losses.MeanSquaredError()
    else:
        x, y = make_classes(n=200)
        n_out, loss = 3, "cross_entropy"
        native = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    ours, theirs = _twin_nets(tf_kit, 4, n_out)
    model = fitkit.Model(ours)
    model.compile(keras.optimizers.Adam(1e-2), loss)
    history = model.fit(x, y, batch_size=32, epochs=3, shuffle=False, verbose=0)
    theirs.compile(optimizer=keras.optimizers.Adam(1e-2), loss=native)
    keras_history = theirs.fit(x, y, batch_size=32, epochs=3, shuffle=False, verbose=0)
    for p, q in zip(ours.get_weights(), theirs.get_weights(), strict=True):
        np.testing.assert_allclose(p, q, atol=1e-5, rtol=0)
    np.testing.assert_allclose(history.history["loss"], keras_history.history["loss"], rtol=1e-5)


def test_train_step_is_compiled_once_not_per_step(tf_kit):
    x, y = make_regression(n=200)  # 6 full batches of 32 and one of 8
    model = fitkit.Model(tf_kit.mlp(4, 1))
    model.compile("adam", "mse", metrics=["mae"])
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    traced = model.runtime.functions["train"].tracing_count()
    assert traced <= 3  # full batch (twice: variables are created), partial batch once
    model.fit(x, y, batch_size=32, epochs=3, verbose=0)
    assert model.runtime.functions["train"].tracing_count() == traced


def test_keras_native_metric_objects(tf_kit):
    x, y = make_classes(n=200)
    model = fitkit.Model(tf_kit.mlp(4, 3))
    model.compile(
        "adam",
        "cross_entropy",
        metrics=["accuracy", keras.metrics.SparseCategoricalAccuracy(name="keras_acc")],
    )
    logs = model.validate(x, y)
    assert logs["keras_acc"] == pytest.approx(logs["accuracy"])


def test_save_weights_requires_keras_suffix(tf_kit, tmp_path):
    model = fitkit.Model(tf_kit.mlp(4, 1))
    with pytest.raises(fitkit.FitkitValueError, match=r"\.weights\.h5"):
        model.save_weights(str(tmp_path / "w.h5"))


def test_devices_list_the_cpu(monkeypatch):
    monkeypatch.setenv("FITKIT_BACKEND", "tensorflow")
    assert any(d["type"] == "CPU" for d in fitkit.devices.list_devices())
    assert fitkit.devices.memory_growth(True) is False  # no GPU on this machine


def test_grouped_steps_train_exactly_like_single_steps(tf_kit):
    x, y = make_classes(n=300)
    weights = []
    for group in (1, 4, "auto"):
        fitkit.set_seed(5)
        net = tf_kit.mlp(4, 3)
        model = fitkit.Model(net)
        model.compile("adam", "cross_entropy", metrics=["accuracy"], steps_per_execution=group)
        history = model.fit(
            x, y, batch_size=16, epochs=2, shuffle=False, verbose=0, validation_split=0.2
        )
        weights.append((net.get_weights(), history.history))
    for other_weights, other_history in weights[1:]:
        for p, q in zip(weights[0][0], other_weights, strict=True):
            np.testing.assert_allclose(p, q, rtol=1e-6, atol=1e-7)
        for key, values in weights[0][1].items():
            assert other_history[key] == pytest.approx(values, rel=1e-6), key


def test_batch_hooks_force_one_step_per_call_under_auto(tf_kit):
    seen = []

    class Steps(fitkit.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append(batch)

    x, y = make_regression(n=96)
    model = fitkit.Model(tf_kit.mlp(4, 1))
    model.compile("sgd", "mse")
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[Steps()])
    assert seen == list(range(6))
    model.compile("sgd", "mse", steps_per_execution=3)  # explicit: hooks see chunk ends
    seen.clear()
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[Steps()])
    assert seen == [2, 5]


def test_steps_per_execution_must_be_positive(tf_kit):
    model = fitkit.Model(tf_kit.mlp(4, 1))
    with pytest.raises(fitkit.FitkitValueError, match="steps_per_execution"):
        model.compile("sgd", "mse", steps_per_execution=0)


def test_bf16_keras_network_trains_under_mixed_policy(tf_kit):
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        net = tf_kit.mlp(4, 1)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    x, y = make_regression(n=128)
    model = fitkit.Model(net)
    model.compile("adam", "mse", lr=1e-2, precision="bf16")
    history = model.fit(x, y, epochs=4, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert model.predict(x[:4]).dtype == np.float32


def test_plain_tf_module_and_keras_layer_train(tf_kit):
    import tensorflow as tf

    class Linear(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(tf.zeros((4, 1)))
            self.b = tf.Variable(tf.zeros((1,)))

        def __call__(self, x):
            return x @ self.w + self.b

    x, y = make_regression(n=128)
    for net in (Linear(), keras.layers.Dense(1)):
        model = fitkit.Model(net)
        assert model.backend == "tensorflow"
        model.compile("sgd", "mse", lr=0.1)
        history = model.fit(x, y, epochs=5, verbose=0)
        assert history.history["loss"][-1] < 0.1 * history.history["loss"][0]
