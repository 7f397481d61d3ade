"""Sample and class weights on both backends: Keras's reduction, parity between backends."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_classes, make_regression

import fitkit


def _weights(n, seed=0):
    return np.random.default_rng(seed).uniform(0.2, 3.0, n).astype("float32")


def test_weighted_loss_is_keras_sum_over_batch_size(kit):
    x, y = make_regression(n=100)
    w = _weights(100)
    model = fitkit.Model(kit.mlp(4, 1))
    model.compile("sgd", "mse", weighted_metrics=["mae"])
    logs = model.validate(x, y, sample_weight=w, batch_size=100)
    err = (model.predict(x) - y)[:, 0]
    assert logs["loss"] == pytest.approx(float((w * err**2).sum() / 100), rel=1e-5)
    assert logs["mae"] == pytest.approx(float((w * np.abs(err)).sum() / w.sum()), rel=1e-5)
    plain = model.validate(x, y, batch_size=100)
    assert plain["loss"] == pytest.approx(float((err**2).mean()), rel=1e-5)


def test_weighted_accuracy_is_exact_over_the_epoch(kit):
    x, labels = make_classes(n=90, classes=3)
    w = _weights(90, seed=1)
    model = fitkit.Model(kit.mlp(4, 3))
    model.compile("sgd", "cross_entropy", weighted_metrics=["accuracy"])
    logs = model.validate(x, labels, sample_weight=w, batch_size=16)  # a partial last batch
    hit = model.predict(x).argmax(1) == labels
    assert logs["accuracy"] == pytest.approx(float((w * hit).sum() / w.sum()), rel=1e-6)


def test_class_weight_equals_the_sample_weights_built_from_it(kit):
    x, labels = make_classes(n=120, classes=3)
    table = {0: 1.0, 1: 4.0, 2: 0.5}
    runs = []
    for kwargs in (
        {"class_weight": table},
        {"sample_weight": np.array([table[c] for c in labels], "float32")},
    ):
        fitkit.set_seed(5)
        net = kit.mlp(4, 3)
        model = fitkit.Model(net)
        model.compile(kit.native_optimizer(net, lr=0.1), "cross_entropy", metrics=["accuracy"])
        history = model.fit(x, labels, batch_size=32, epochs=2, shuffle=False, verbose=0, **kwargs)
        runs.append((history.history["loss"], kit.weights(net)))
    np.testing.assert_allclose(runs[0][0], runs[1][0], rtol=1e-6)
    for a, b in zip(runs[0][1], runs[1][1], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_weighted_validation_data_and_weighted_batches_from_an_iterable(kit):
    x, y = make_regression(n=64)
    w = _weights(64)
    model = fitkit.Model(kit.mlp(4, 1))
    model.compile("sgd", "mse")
    expected = model.validate(x, y, sample_weight=w, batch_size=16)
    batches = [(x[i : i + 16], y[i : i + 16], w[i : i + 16]) for i in range(0, 64, 16)]
    assert model.validate(batches) == pytest.approx(expected, rel=1e-6)
    history = model.fit(x, y, epochs=1, verbose=0, validation_data=(x, y, w), batch_size=16)
    after = model.validate(x, y, sample_weight=w, batch_size=16)
    assert history.history["val_loss"][0] == pytest.approx(after["loss"], rel=1e-6)
    listed = model.fit(x, y, epochs=1, verbose=0, validation_data=[x, y], batch_size=16)
    assert listed.history["val_loss"][0] == pytest.approx(model.validate(x, y)["loss"], rel=1e-6)


def test_train_on_batch_takes_sample_weight(kit):
    x, y = make_regression(n=32)
    w = _weights(32)
    model = fitkit.Model(kit.mlp(4, 1))
    model.compile("sgd", "mse")
    logs = model.test_on_batch(x, y, sample_weight=w, return_dict=True)
    err = (model.predict(x) - y)[:, 0]
    assert logs["loss"] == pytest.approx(float((w * err**2).sum() / 32), rel=1e-5)
    before = model.train_on_batch(x, y, sample_weight=w, return_dict=True)["loss"]
    assert before == pytest.approx(logs["loss"], rel=1e-5)


def test_bad_weights_are_refused_before_training(kit):
    x, y = make_regression(n=32)
    net = kit.mlp(4, 1)
    model = fitkit.Model(net)
    model.compile("sgd", "mse")
    before = kit.weights(net)
    bad = _weights(32)
    bad[7] = np.nan
    with pytest.raises(fitkit.FitkitValueError, match=r"sample_weight.*row 7"):
        model.fit(x, y, sample_weight=bad, verbose=0)
    with pytest.raises(fitkit.FitkitValueError, match=r"sample_weight.*\(32,\)"):
        model.fit(x, y, sample_weight=_weights(31), verbose=0)
    with pytest.raises(fitkit.FitkitTypeError, match="class_weight"):
        model.fit(x, y, class_weight=[1.0, 2.0], verbose=0)
    with pytest.raises(fitkit.FitkitValueError, match=r"validation_data.*sample_weight"):
        model.fit(x, y, validation_data=(x, y, _weights(5)), verbose=0)
    after = kit.weights(net)
    for a, b in zip(before, after, strict=True):
        np.testing.assert_array_equal(a, b)


def test_torch_and_tensorflow_agree_on_weighted_multi_output_training(monkeypatch):
    """Same initial weights, same weights per sample: the same losses on both backends."""
    import keras
    import torch

    x, labels = make_classes(n=96, classes=3)
    value = (x.sum(1, keepdims=True) * 0.3).astype("float32")
    w = _weights(96)
    fitkit.set_seed(0)
    inp = keras.Input((4,))
    h = keras.layers.Dense(8, activation="relu", name="body")(inp)
    knet = keras.Model(
        inp,
        {"cls": keras.layers.Dense(3, name="cls")(h), "reg": keras.layers.Dense(1, name="reg")(h)},
    )

    class TorchTwin(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body, self.cls, self.reg = (
                torch.nn.Linear(4, 8),
                torch.nn.Linear(8, 3),
                torch.nn.Linear(8, 1),
            )

        def forward(self, x):
            h = torch.relu(self.body(x))
            return {"cls": self.cls(h), "reg": self.reg(h)}

    tnet = TorchTwin()
    with torch.no_grad():
        for name in ("body", "cls", "reg"):
            kernel, bias = knet.get_layer(name).get_weights()
            getattr(tnet, name).weight.copy_(torch.as_tensor(kernel.T))
            getattr(tnet, name).bias.copy_(torch.as_tensor(bias))
    results = []
    for backend, net, opt in (
        ("torch", tnet, torch.optim.SGD(tnet.parameters(), lr=0.1)),
        ("tensorflow", knet, keras.optimizers.SGD(0.1)),
    ):
        monkeypatch.setenv("FITKIT_BACKEND", backend)
        model = fitkit.Model(net)
        model.compile(
            opt,
            {"cls": "cross_entropy", "reg": "mse"},
            loss_weights={"cls": 1.0, "reg": 0.5},
            metrics={"cls": ["accuracy"], "reg": ["mae"]},
        )
        history = model.fit(
            x,
            {"cls": labels, "reg": value},
            sample_weight=w,
            batch_size=32,
            epochs=2,
            shuffle=False,
            verbose=0,
            validation_data=(x, {"cls": labels, "reg": value}, w),
        )
        results.append(history.df.drop(columns=["epoch"]).to_numpy())
    np.testing.assert_allclose(results[0], results[1], rtol=2e-5, atol=1e-6)
