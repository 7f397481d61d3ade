"""Network outputs on both backends: 1-D outputs, tuple / dict outputs, multi-output compile."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_classes, make_regression

import fitkit


def _two_head_net(kit, names=("cls", "reg"), as_dict=True):
    """A shared body with a 3-class head and a 1-value head, returned as a dict or tuple."""
    if kit.name == "torch":
        nn, torch = kit.torch.nn, kit.torch

        class TwoHeads(nn.Module):
            def __init__(self):
                super().__init__()
                self.body = nn.Linear(4, 16)
                self.cls, self.reg = nn.Linear(16, 3), nn.Linear(16, 1)

            def forward(self, x):
                h = torch.relu(self.body(x))
                outs = (self.cls(h), self.reg(h))
                return dict(zip(names, outs, strict=True)) if as_dict else outs

        return TwoHeads()
    keras = kit.keras
    inp = keras.Input((4,))
    h = keras.layers.Dense(16, activation="relu")(inp)
    outs = [keras.layers.Dense(3, name=names[0])(h), keras.layers.Dense(1, name=names[1])(h)]
    return keras.Model(inp, dict(zip(names, outs, strict=True)) if as_dict else outs)


def _two_targets():
    x, labels = make_classes(n=192, classes=3)
    value = (x.sum(1, keepdims=True) * 0.3).astype("float32")
    return x, labels, value


def test_dict_outputs_train_with_losses_weights_and_metrics_by_name(kit):
    x, labels, value = _two_targets()
    model = fitkit.Model(_two_head_net(kit))
    model.compile(
        "adam",
        loss={"cls": "cross_entropy", "reg": "mse"},
        loss_weights={"cls": 1.0, "reg": 0.5},
        metrics={"cls": ["accuracy"], "reg": ["mae"]},
        lr=1e-2,
    )
    history = model.fit(
        x, {"cls": labels, "reg": value}, epochs=6, batch_size=32, validation_split=0.25, verbose=0
    )
    assert list(history.df.columns) == [
        "epoch",
        "loss",
        "cls_loss",
        "reg_loss",
        "cls_accuracy",
        "reg_mae",
        "val_loss",
        "val_cls_loss",
        "val_reg_loss",
        "val_cls_accuracy",
        "val_reg_mae",
        "learning_rate",
    ]
    assert model.metrics_names == ["loss", "cls_loss", "reg_loss", "cls_accuracy", "reg_mae"]
    logs = model.validate(x, {"cls": labels, "reg": value})
    assert logs["loss"] == pytest.approx(logs["cls_loss"] + 0.5 * logs["reg_loss"], rel=1e-5)
    assert history.history["cls_loss"][-1] < history.history["cls_loss"][0]
    out = model.predict(x[:5])
    assert set(out) == {"cls", "reg"} and out["cls"].shape == (5, 3) and out["reg"].shape == (5, 1)
    err = out["reg"] - value[:5]
    assert model.validate(x[:5], {"cls": labels[:5], "reg": value[:5]}, batch_size=5)[
        "reg_mae"
    ] == pytest.approx(float(np.abs(err).mean()), rel=1e-5)


def test_tuple_outputs_take_lists_by_position(kit):
    x, labels, value = _two_targets()
    model = fitkit.Model(_two_head_net(kit, names=("out_a", "out_b"), as_dict=False))
    model.compile(
        "adam",
        loss=["cross_entropy", "mse"],
        loss_weights=[2.0, 1.0],
        metrics=[["accuracy"], ["mae"]],
        lr=1e-2,
    )
    model.fit(x, (labels, value), epochs=2, verbose=0)
    logs = model.validate(x, [labels, value])
    names = model.metrics_names
    first, second = names[1][: -len("_loss")], names[2][: -len("_loss")]
    assert names == [
        "loss",
        f"{first}_loss",
        f"{second}_loss",
        f"{first}_accuracy",
        f"{second}_mae",
    ]
    if kit.name == "torch":
        assert (first, second) == ("output_1", "output_2")
    else:  # a Keras functional model names its outputs by layer, as Keras's fit does
        assert (first, second) == ("out_a", "out_b")
    assert logs["loss"] == pytest.approx(
        2 * logs[f"{first}_loss"] + logs[f"{second}_loss"], rel=1e-5
    )


def test_one_loss_for_several_outputs_applies_to_each(kit):
    x, labels, value = _two_targets()
    model = fitkit.Model(_two_head_net(kit))
    model.compile("sgd", loss="mse")
    onehot = np.eye(3, dtype="float32")[labels]
    logs = model.validate(x, {"cls": onehot, "reg": value})
    out = model.predict(x)
    assert logs["cls_loss"] == pytest.approx(float(((out["cls"] - onehot) ** 2).mean()), rel=1e-5)
    assert logs["loss"] == pytest.approx(logs["cls_loss"] + logs["reg_loss"], rel=1e-5)


def test_several_outputs_need_structured_targets(kit):
    x, labels, _ = _two_targets()
    model = fitkit.Model(_two_head_net(kit))
    model.compile("sgd", loss={"cls": "cross_entropy", "reg": "mse"})
    with pytest.raises(fitkit.FitkitValueError, match="dict by output name"):
        model.fit(x, labels, verbose=0)
    with pytest.raises(fitkit.FitkitValueError, match="no target for output 'reg'"):
        model.fit(x, {"cls": labels}, verbose=0)


def test_loss_names_an_output_the_network_lacks(kit):
    x, labels, value = _two_targets()
    model = fitkit.Model(_two_head_net(kit))
    model.compile("sgd", loss={"cls": "cross_entropy", "score": "mse"})
    with pytest.raises(fitkit.FitkitValueError, match=r"\['score'\].*\['cls', 'reg'\]"):
        model.fit(x, {"cls": labels, "reg": value}, verbose=0)
    model.compile("sgd", loss=["cross_entropy"] * 3)
    with pytest.raises(fitkit.FitkitValueError, match=r"3 entries.*2 outputs"):
        model.fit(x, {"cls": labels, "reg": value}, verbose=0)


def test_output_names_the_one_output_to_train(kit):
    x, labels, _ = _two_targets()
    model = fitkit.Model(_two_head_net(kit))
    model.compile("adam", "cross_entropy", metrics=["accuracy"], output="cls", lr=1e-2)
    history = model.fit(x, labels, epochs=8, verbose=0)
    assert list(history.history) == ["loss", "accuracy", "learning_rate"]
    assert model.validate(x, labels)["accuracy"] > 0.7
    model.compile("adam", "cross_entropy", output="logits")
    with pytest.raises(fitkit.FitkitValueError, match=r"no 'logits'.*cls"):
        model.fit(x, labels, verbose=0)


def test_huggingface_style_single_key_dict_output(kit):
    x, labels = make_classes(n=160, classes=3)
    if kit.name == "torch":
        nn = kit.torch.nn

        class Classifier(nn.Module):
            def __init__(self):
                super().__init__()
                self.head = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))

            def forward(self, x):
                return {"logits": self.head(x)}

        net = Classifier()
    else:
        keras = kit.keras
        inp = keras.Input((4,))
        out = keras.layers.Dense(3)(keras.layers.Dense(16, activation="relu")(inp))
        net = keras.Model(inp, {"logits": out})
    model = fitkit.Model(net)
    model.compile("adam", "cross_entropy", metrics=["accuracy"], lr=1e-2)
    history = model.fit(x, labels, epochs=10, verbose=0)
    assert list(history.history) == ["loss", "accuracy", "learning_rate"]
    assert history.history["accuracy"][-1] > 0.7
    assert model.predict(x[:3])["logits"].shape == (3, 3)


def test_one_dimensional_output_is_one_output_with_checked_targets(kit):
    x, y = make_regression(n=128)
    if kit.name == "torch":
        nn = kit.torch.nn

        class Flat(nn.Module):
            def __init__(self):
                super().__init__()
                self.lin = nn.Linear(4, 1)

            def forward(self, x):
                return self.lin(x).squeeze(-1)  # (N,)

        net = Flat()
    else:
        keras = kit.keras
        inp = keras.Input((4,))
        net = keras.Model(inp, keras.layers.Reshape(())(keras.layers.Dense(1)(inp)))
    model = fitkit.Model(net)
    model.compile("sgd", "mse", metrics=["mae"])
    logs = model.validate(x, y)  # (N, 1) targets for an (N,) output: aligned, not broadcast
    pred = model.predict(x)
    assert pred.shape == (128,)
    assert logs["loss"] == pytest.approx(float(((pred - y[:, 0]) ** 2).mean()), rel=1e-5)
    assert logs["mae"] == pytest.approx(float(np.abs(pred - y[:, 0]).mean()), rel=1e-5)


@pytest.mark.parametrize("loss", ["mse", "bce"])
def test_portable_losses_align_column_and_flat_targets(kit, loss):
    x, y = make_regression(n=96)
    target = (y > 0).astype("float32") if loss == "bce" else y
    model = fitkit.Model(kit.mlp(4, 1, out_activation="sigmoid" if loss == "bce" else None))
    model.compile("sgd", loss)
    column = model.validate(x, target)
    flat = model.validate(x, target[:, 0])
    assert flat["loss"] == pytest.approx(column["loss"], rel=1e-6)
    pred = model.predict(x)
    if loss == "mse":
        assert column["loss"] == pytest.approx(float(((pred - target) ** 2).mean()), rel=1e-5)


def test_sparse_labels_as_a_column_equal_flat_labels(kit):
    x, labels = make_classes(n=96, classes=3)
    model = fitkit.Model(kit.mlp(4, 3))
    model.compile("sgd", "cross_entropy", metrics=["accuracy"])
    assert model.validate(x, labels[:, None]) == pytest.approx(model.validate(x, labels))


def test_metrics_in_a_custom_step_on_a_multi_output_net(kit):
    x, labels, value = _two_targets()

    class Custom(fitkit.Model):
        def test_step(self, batch):
            x, y, _ = self.unpack_batch(batch)
            y_pred = self.net(x) if self.backend == "torch" else self.net(x, training=False)
            loss = self.compute_loss(x, y, y_pred)
            self.update_metrics(y, y_pred)
            return {"loss": loss}

    model = Custom(_two_head_net(kit))
    model.compile("sgd", {"cls": "cross_entropy", "reg": "mse"}, metrics={"reg": ["mae"]})
    logs = model.validate(x, {"cls": labels, "reg": value})
    assert set(logs) == {"loss", "cls_loss", "reg_loss", "reg_mae"}
    out = model.predict(x)
    assert logs["reg_mae"] == pytest.approx(float(np.abs(out["reg"] - value).mean()), rel=1e-5)


def test_a_one_output_network_takes_metrics_named_by_a_dict(kit):
    """{name: metric} (torchkeras's metrics_dict habit) names each metric by its key; lists
    of metrics under a key are per-output, which a one-output network does not have."""
    x, y = make_classes(n=96, d=4, classes=3)
    model = fitkit.Model(kit.mlp(4, 3))
    model.compile("sgd", "cross_entropy", metrics=["accuracy"])
    expected = model.validate(x, y)["accuracy"]
    model.compile(
        "sgd",
        "cross_entropy",
        metrics={
            "acc": fitkit.metrics.Accuracy(),
            "top2": fitkit.metrics.TopKAccuracy(k=2),
            "by_name": "accuracy",
        },
    )
    logs = model.validate(x, y)
    assert list(logs) == ["loss", "acc", "top2", "by_name"]
    assert logs["acc"] == logs["by_name"] == pytest.approx(expected)
    assert expected <= logs["top2"] <= 1.0
    model.compile("sgd", "cross_entropy", metrics={"head": ["accuracy"]})
    with pytest.raises(
        fitkit.FitkitValueError,
        match=r"dict by output name \['head'\].*"
        r"\{name: metric\}",
    ):
        model.validate(x, y)
