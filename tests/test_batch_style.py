"""The tutorial's train_on_batch style, on both backends: reset_metrics, train_on_batch,
test_on_batch(reset_metrics=False), lowering the learning rate mid-training."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_classes

import fitkit


def test_the_tutorials_train_on_batch_loop_runs_and_reports_exact_running_logs(kit):
    x, y = make_classes(n=192, d=4)
    model = fitkit.Model(kit.mlp(4, 3))
    model.compile("adam", "cross_entropy", metrics=["accuracy"], lr=0.01)
    for epoch in range(1, 4):
        model.reset_metrics()
        if epoch == 3:  # the tutorial halves the rate late in training
            model.learning_rate = model.learning_rate / 2.0
        for start in range(0, 128, 32):
            train_result = model.train_on_batch(
                x[start : start + 32], y[start : start + 32], return_dict=True
            )
        for start in range(128, 192, 32):
            valid_result = model.test_on_batch(
                x[start : start + 32], y[start : start + 32], reset_metrics=False, return_dict=True
            )
    assert model.learning_rate == pytest.approx(0.005)
    assert list(train_result) == model.metrics_names == ["loss", "accuracy"]
    assert list(valid_result) == model.metrics_names
    # the running test logs cover both test batches: exact over their 64 samples
    model.reset_metrics()
    whole = model.validate(x[128:], y[128:], batch_size=64)
    assert valid_result["accuracy"] == pytest.approx(whole["accuracy"])
    assert valid_result["loss"] == pytest.approx(whole["loss"], rel=1e-5)


def test_tf2_optimizer_lr_code_gets_a_pointer_to_learning_rate(tf_kit):
    model = fitkit.Model(tf_kit.mlp(4, 1))
    model.compile("adam", "mse", lr=0.01)
    with pytest.raises(fitkit.errors.FitkitAttributeError, match=r"model.learning_rate"):
        model.optimizer.lr.assign(0.005)  # TF 2 tutorials' line: Keras 3 removed `lr`
    with pytest.raises(AttributeError, match=r"model.learning_rate"):
        model.optimizer.lr = 0.005  # used to set a plain attribute that changed nothing
    assert not hasattr(model.optimizer, "lr")
    model.learning_rate = 0.005
    assert float(np.asarray(model.optimizer.learning_rate)) == pytest.approx(0.005)
    import keras

    assert isinstance(model.optimizer, keras.optimizers.Adam)


def test_on_batch_calls_return_what_keras_returns(kit):
    x, y = make_classes(n=64, d=4)
    model = fitkit.Model(kit.mlp(4, 3))
    model.compile("sgd", "cross_entropy", metrics=["accuracy"], lr=0.01)
    listed = model.test_on_batch(x[:32], y[:32])
    logs = model.test_on_batch(x[:32], y[:32], return_dict=True)
    assert isinstance(listed, list) and len(listed) == 2
    # the tutorial's line: a dict in metrics_names order, the same values as return_dict
    assert dict(zip(model.metrics_names, listed, strict=True)) == pytest.approx(logs)
    trained = model.train_on_batch(x[32:], y[32:])
    assert isinstance(trained, list) and trained[0] == pytest.approx(
        model.test_on_batch(x[32:], y[32:], return_dict=True)["loss"], rel=0.2
    )
    bare = fitkit.Model(kit.mlp(4, 3))
    bare.compile("sgd", "cross_entropy", lr=0.01)
    loss = bare.train_on_batch(x, y)  # no metrics: the loss alone, a number
    assert isinstance(loss, float) and np.isfinite(loss)


def test_on_batch_structure_equals_keras_on_the_same_model(tf_kit):
    import keras

    x, y = make_classes(n=32, d=4)
    net = tf_kit.mlp(4, 3)
    net.compile(
        keras.optimizers.SGD(0.01),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    theirs = net.test_on_batch(x, y)
    model = fitkit.Model(net)
    model.compile("sgd", "cross_entropy", metrics=["accuracy"], lr=0.01)
    ours = model.test_on_batch(x, y)
    assert type(ours) is type(theirs) and len(ours) == len(theirs)
    assert ours == pytest.approx([float(v) for v in theirs], rel=1e-5)
