"""Portable names and metric objects: each means the same on torch and TensorFlow.

Optimizer names take the same first steps on both backends from the same weights, and
train a tiny model; fitkit.metrics objects build with their arguments and default names.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from conftest import make_regression
from test_metrics import CASES, evaluate, sigmoid

import fitkit
import fitkit.metrics as fm
from fitkit import specs
from fitkit.errors import FitkitTypeError, FitkitValueError

BACKENDS = ("torch", "tensorflow")


# ---------------------------------------------------------------- optimizers
def _torch_two_steps(name, kernel, bias, x, y):
    import torch

    from fitkit.torch.optimizers import build_optimizer

    net = torch.nn.Linear(*kernel.shape).double()
    with torch.no_grad():
        net.weight.copy_(torch.as_tensor(kernel.T))
        net.bias.copy_(torch.as_tensor(bias))
    opt = build_optimizer(name, None, net)
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    for _ in range(2):
        opt.zero_grad()
        ((net(xt) - yt) ** 2).mean().backward()
        opt.step()
    return [net.weight.detach().numpy().T, net.bias.detach().numpy()]


def _keras_two_steps(name, kernel, bias, x, y):
    import keras
    import tensorflow as tf

    from fitkit.tf.optimizers import build_optimizer

    net = keras.Sequential(
        [keras.Input((kernel.shape[0],)), keras.layers.Dense(kernel.shape[1], dtype="float64")]
    )
    net.layers[0].set_weights([kernel, bias])
    opt = build_optimizer(name, None, net)
    for _ in range(2):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean((net(tf.constant(x)) - tf.constant(y)) ** 2)
        variables = net.trainable_variables
        opt.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
    return [v.numpy() for v in net.trainable_variables]


@pytest.mark.parametrize("name", specs.OPTIMIZERS)
def test_optimizer_names_take_the_same_first_steps_on_both_backends(name):
    """Keras's defaults on both sides: the same two updates from the same weights (float64)."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((16, 3))
    y = rng.standard_normal((16, 2)) + np.array([2.0, -3.0])  # gradients of order 1
    kernel, bias = rng.standard_normal((3, 2)) * 0.5, rng.standard_normal(2) * 0.1
    ours = _torch_two_steps(name, kernel, bias, x, y)
    theirs = _keras_two_steps(name, kernel, bias, x, y)
    for got, want, start in zip(ours, theirs, (kernel, bias), strict=True):
        assert np.abs(want - start).min() > 1e-6  # every weight moved
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
        # the updates themselves agree (only where each adds epsilon differs: adam, rmsprop)
        np.testing.assert_allclose(got - start, want - start, rtol=1e-4, atol=1e-10)


@pytest.mark.parametrize("name", specs.OPTIMIZERS)
def test_every_optimizer_name_trains_a_tiny_model(kit, name):
    x, y = make_regression(n=64, d=3)
    model = fitkit.Model(kit.mlp(3, 1, hidden=8))
    model.compile(name, "mse")
    before = model.validate(x, y, batch_size=64)["loss"]
    model.fit(x, y, batch_size=16, epochs=2, verbose=0)
    after = model.validate(x, y, batch_size=64)["loss"]
    assert np.isfinite(after) and after < before


def test_unknown_optimizer_name_lists_the_valid_ones():
    with pytest.raises(FitkitValueError, match="adafactor"):
        specs.optimizer_name("lion")


# ---------------------------------------------------------------- metric names and objects
def test_fitkit_metrics_imports_no_framework():
    code = (
        "import sys, fitkit, fitkit.metrics; "
        "assert not {'torch', 'tensorflow', 'keras'} & set(sys.modules), 'framework imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_metric_objects_have_good_default_names_and_reprs():
    assert [
        m.name
        for m in (
            fm.Accuracy(),
            fm.Accuracy(threshold=0.3),
            fm.TopKAccuracy(k=3),
            fm.TopKAccuracy(),
            fm.Precision(),
            fm.Recall(),
            fm.F1Score(),
            fm.AUC(bins=200),
            fm.R2Score(),
            fm.R2Score(name="r2"),
        )
    ] == [
        "accuracy",
        "accuracy",
        "top_3_accuracy",
        "top_5_accuracy",
        "precision",
        "recall",
        "f1_score",
        "auc",
        "r2_score",
        "r2",
    ]
    assert repr(fm.TopKAccuracy(k=3)) == "TopKAccuracy(k=3, name='top_3_accuracy')"
    assert repr(fm.Precision(0.3, name="p30")) == "Precision(threshold=0.3, name='p30')"
    assert fm.TopKAccuracy(k=3) == fm.TopKAccuracy(k=3) != fm.TopKAccuracy(k=2)


@pytest.mark.parametrize(
    "make, error",
    [
        (lambda: fm.Accuracy(threshold=1.5), FitkitValueError),
        (lambda: fm.Precision(threshold=0), FitkitValueError),
        (lambda: fm.Recall(threshold="0.5"), FitkitTypeError),
        (lambda: fm.TopKAccuracy(k=0), FitkitValueError),
        (lambda: fm.TopKAccuracy(k=2.5), FitkitValueError),
        (lambda: fm.AUC(bins=1), FitkitValueError),
        (lambda: fm.F1Score(name=""), FitkitTypeError),
    ],
)
def test_metric_objects_refuse_bad_arguments(make, error):
    with pytest.raises(error):
        make()


@pytest.mark.parametrize("backend", BACKENDS)
def test_metric_objects_compute_with_their_arguments(backend, monkeypatch):
    z8, ys = CASES["sparse_logits"][0], CASES["sparse_logits"][1]
    top3 = np.argsort(-z8, axis=1)[:, :3]
    logs = evaluate(
        backend,
        monkeypatch,
        z8,
        ys,
        "cross_entropy",
        [fm.TopKAccuracy(k=3), fm.TopKAccuracy(k=1, name="top1"), "top_k_accuracy"],
    )
    assert logs["top_3_accuracy"] == pytest.approx(np.mean((top3 == ys[:, None]).any(1)))
    assert logs["top1"] == pytest.approx(np.mean(z8.argmax(1) == ys))
    assert logs["top_k_accuracy"] == pytest.approx(
        np.mean((np.argsort(-z8, axis=1)[:, :5] == ys[:, None]).any(1))
    )

    z, yb = CASES["binary_logits"][0], CASES["binary_logits"][1]
    pred, true = sigmoid(z) > 0.3, yb > 0.5  # a probability threshold, also for logits
    tp = np.sum(pred & true)
    expected = {
        "accuracy": np.mean(pred == true),
        "default_acc": np.mean((z > 0) == true),
        "precision": tp / pred.sum(),
        "recall": tp / true.sum(),
        "f1_score": 2 * tp / (pred.sum() + true.sum()),
    }
    logs = evaluate(
        backend,
        monkeypatch,
        z,
        yb,
        "bce_with_logits",
        [
            fm.Accuracy(threshold=0.3),
            fm.Accuracy(name="default_acc"),
            fm.Precision(0.3),
            fm.Recall(0.3),
            fm.F1Score(0.3),
            fm.AUC(bins=50),
        ],
    )
    for name, value in expected.items():
        assert logs[name] == pytest.approx(value, abs=1e-6), name
    assert expected["accuracy"] != pytest.approx(expected["default_acc"])  # threshold matters
    assert logs["auc"] == pytest.approx(CASES["binary_logits"][3]["auc"], abs=0.02)

    p = sigmoid(z).astype("float32")  # probabilities: the threshold is used as it is
    logs = evaluate(backend, monkeypatch, p, yb, "bce", [fm.Accuracy(0.3), fm.F1Score(0.3)])
    assert logs["accuracy"] == pytest.approx(expected["accuracy"], abs=1e-6)
    assert logs["f1_score"] == pytest.approx(expected["f1_score"], abs=1e-6)


def test_build_metrics_refuses_two_metrics_with_one_name():
    from fitkit.torch import metrics as module

    with pytest.raises(FitkitValueError, match="Two metrics are named 'accuracy'"):
        specs.build_metrics(["acc", fm.Accuracy(threshold=0.3)], module)
    built = specs.build_metrics(["accuracy", fm.Accuracy(0.3, name="acc_30")], module)
    assert [m.name for m in built] == ["accuracy", "acc_30"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_metrics_refuse_targets_of_the_other_label_form(backend, monkeypatch):
    z8, ys = CASES["sparse_logits"][0], CASES["sparse_logits"][1]
    with pytest.raises(FitkitValueError, match="one-hot rows"):
        evaluate(backend, monkeypatch, z8, ys, "cross_entropy", ["top_k_categorical_accuracy"])
    with pytest.raises(FitkitValueError, match="threshold"):
        evaluate(backend, monkeypatch, z8, ys, "cross_entropy", [fm.Precision(threshold=0.3)])


@pytest.mark.parametrize("backend", BACKENDS)
def test_new_string_names_and_aliases(backend, monkeypatch):
    p8, onehot = CASES["one_hot_probabilities"][0], CASES["one_hot_probabilities"][1]
    ys = onehot.argmax(1)
    logs = evaluate(
        backend,
        monkeypatch,
        p8,
        onehot,
        "categorical_crossentropy",
        ["top_k_categorical_accuracy", "top_k_accuracy", "f1"],
    )
    hit5 = np.mean((np.argsort(-p8, axis=1)[:, :5] == ys[:, None]).any(1))
    assert logs["top_k_categorical_accuracy"] == pytest.approx(hit5)
    assert logs["top_k_accuracy"] == pytest.approx(hit5)  # follows one-hot targets too
    assert "f1_score" in logs
    r, yr = CASES["regression"][0], CASES["regression"][1]
    logs = evaluate(backend, monkeypatch, r, yr, "mse", ["r2", "root_mean_squared_error"])
    assert set(logs) == {"loss", "r2_score", "rmse"}
