"""Metric weighting as Keras has it: ``metrics`` ignore sample and class weights,
``weighted_metrics`` apply them (a weighted twin of a plain metric logs as weighted_<name>)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_classes

import fitkit


def _data():
    x, y = make_classes(n=96, d=4)
    w = np.linspace(0.1, 3.0, len(y)).astype("float32")
    return x, y, w


def test_metrics_ignore_weights_and_weighted_metrics_apply_them(kit):
    x, y, w = _data()
    model = fitkit.Model(kit.mlp(4, 3))
    model.compile("sgd", "cross_entropy", metrics=["accuracy"], weighted_metrics=["accuracy"])
    logs = model.validate(x, y, sample_weight=w)
    right = (model.predict(x).argmax(-1) == y).astype("float64")
    assert logs["accuracy"] == pytest.approx(right.mean())
    assert logs["weighted_accuracy"] == pytest.approx((right * w).sum() / w.sum(), rel=1e-6)
    assert model.metrics_names == ["loss", "accuracy", "weighted_accuracy"]


def test_class_weights_reach_weighted_metrics_only(kit):
    x, y, _ = _data()
    table = {0: 0.2, 1: 1.0, 2: 4.0}
    model = fitkit.Model(kit.mlp(4, 3))
    model.compile(
        "sgd",
        "cross_entropy",
        metrics=["accuracy"],
        weighted_metrics={"wacc": "accuracy"},
        lr=1e-12,
    )  # the weights stay put
    right = (model.predict(x).argmax(-1) == y).astype("float64")
    w = np.array([table[c] for c in y])
    history = model.fit(x, y, batch_size=96, epochs=1, verbose=0, class_weight=table).history
    assert history["accuracy"][0] == pytest.approx(right.mean())
    assert history["wacc"][0] == pytest.approx((right * w).sum() / w.sum(), rel=1e-6)


def test_class_weighted_accuracy_equals_kerass(tf_kit):
    import keras

    x, y, _ = _data()
    table = {0: 0.2, 1: 1.0, 2: 4.0}
    theirs, ours = tf_kit.mlp(4, 3), tf_kit.mlp(4, 3)
    ours.set_weights(theirs.get_weights())
    theirs.compile(
        keras.optimizers.SGD(0.1),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        weighted_metrics=["accuracy"],
    )
    expected = theirs.fit(
        x, y, batch_size=32, epochs=3, shuffle=False, verbose=0, class_weight=table
    ).history
    model = fitkit.Model(ours)
    model.compile(
        "sgd", "cross_entropy", metrics=["accuracy"], weighted_metrics=["accuracy"], lr=0.1
    )
    history = model.fit(
        x, y, batch_size=32, epochs=3, shuffle=False, verbose=0, class_weight=table
    ).history
    for key in ("loss", "accuracy", "weighted_accuracy"):
        np.testing.assert_allclose(history[key], expected[key], rtol=1e-5, err_msg=key)


def test_per_output_weighted_metrics_merge_with_metrics(kit):
    model = fitkit.Model(kit.mlp(4, 3))
    with pytest.raises(fitkit.FitkitValueError, match="same structure"):
        model.compile(
            "sgd", "cross_entropy", metrics=["accuracy"], weighted_metrics={"out": ["accuracy"]}
        )
