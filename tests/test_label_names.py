"""Dict batches that carry their targets under label keys (Hugging Face's ``labels``,
``fitkit.Model(label_names=...)``), on both backends: in-memory dicts, lists of dict batches
and tf.data pipelines of dicts are split alike, and train as (x, y) does."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_regression

import fitkit


def _data():
    x, y = make_regression(64, 6)
    return {"a": x[:, :4], "b": x[:, 4:]}, y


def _fit(kit, data, label_names=None, **kwargs):
    fitkit.set_seed(0)
    net = kit.two_input_net(4, 2)
    model = fitkit.Model(net, **({} if label_names is None else {"label_names": label_names}))
    model.compile("sgd", "mse", metrics=["mae"])
    history = model.fit(data, epochs=2, verbose=0, **kwargs)
    return history.history, kit.weights(net), model


def test_a_labels_key_is_the_target_as_y_is(kit):
    x, y = _data()
    expected, weights, _ = _fit(kit, x, y=y, batch_size=16, shuffle=False)
    got, got_weights, model = _fit(kit, {**x, "labels": y}, batch_size=16, shuffle=False)
    assert got == expected
    for a, b in zip(weights, got_weights, strict=True):
        np.testing.assert_array_equal(a, b)
    split, _, _ = _fit(kit, x, y=y, batch_size=16, validation_split=0.25)
    assert _fit(kit, {**x, "labels": y}, batch_size=16, validation_split=0.25)[0] == split
    batches = [
        {"a": x["a"][i : i + 16], "b": x["b"][i : i + 16], "target": y[i : i + 16]}
        for i in range(0, 64, 16)
    ]
    got, got_weights, model = _fit(kit, batches, label_names=["target"])
    assert got == expected
    for a, b in zip(weights, got_weights, strict=True):
        np.testing.assert_array_equal(a, b)
    assert model.predict(batches).shape == (64, 1)
    assert model.validate(batches)["loss"] == pytest.approx(model.validate(x, y)["loss"], rel=1e-6)


def test_tf_data_pipelines_of_dicts_split_in_the_graph(tf_kit):
    tf = tf_kit.tf
    x, y = _data()
    expected, weights, _ = _fit(tf_kit, x, y=y, batch_size=16, shuffle=False)
    dataset = tf.data.Dataset.from_tensor_slices({**x, "labels": y}).batch(16)
    got, got_weights, _ = _fit(tf_kit, dataset)
    for key in expected:
        assert got[key] == pytest.approx(expected[key], rel=1e-6)
    for a, b in zip(weights, got_weights, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)
