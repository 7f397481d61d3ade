"""The facade on both backends: fit / validate / predict, history, display, batch style."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import make_regression

import fitkit


def test_fit_reduces_loss_and_returns_history(kit, regression):
    x, y = regression
    model = fitkit.Model(kit.mlp(4, 1))
    model.compile("adam", "mse", metrics=["mae"], lr=1e-2)
    history = model.fit(x, y, batch_size=32, epochs=4, validation_split=0.25, verbose=0)
    assert history is model.history
    assert list(history.df.columns) == [
        "epoch",
        "loss",
        "mae",
        "val_loss",
        "val_mae",
        "learning_rate",
    ]
    assert history.df["epoch"].tolist() == [1, 2, 3, 4]
    assert history.history["loss"][-1] < 0.5 * history.history["loss"][0]
    assert history.history["learning_rate"] == pytest.approx([1e-2] * 4)


def test_classifier_learns_with_accuracy(kit, classes):
    x, y = classes
    model = fitkit.Model(kit.mlp(4, 3, hidden=32))
    model.compile("adam", "cross_entropy", metrics=["accuracy"], lr=1e-2)
    model.fit(x, y, batch_size=32, epochs=15, verbose=0)
    assert model.validate(x, y)["accuracy"] > 0.85


def test_validate_is_exact_over_samples_with_partial_batch(kit, regression):
    x, y = regression
    model = fitkit.Model(kit.mlp(4, 1))
    model.compile("sgd", "mse", metrics=["mae", "rmse"])
    logs = model.validate(x[:100], y[:100], batch_size=7)  # 14 full batches + one of 2
    pred = model.predict(x[:100], batch_size=13)
    err = pred - y[:100]
    assert logs["loss"] == pytest.approx(float(np.mean(err**2)), rel=1e-5)
    assert logs["mae"] == pytest.approx(float(np.mean(np.abs(err))), rel=1e-5)
    assert logs["rmse"] == pytest.approx(float(np.sqrt(np.mean(err**2))), rel=1e-5)
    assert model.evaluate(x[:100], y[:100], batch_size=7) == pytest.approx(logs)


def test_predict_returns_numpy_in_inference_mode(kit, regression):
    x, _ = regression
    model = fitkit.Model(kit.mlp(4, 2))
    out = model.predict(x, batch_size=50)
    assert isinstance(out, np.ndarray) and out.shape == (256, 2)
    np.testing.assert_allclose(out[:10], model.predict_on_batch(x[:10]), rtol=1e-5, atol=1e-6)


def _weights_after_one_epoch(kit, make_input, x, y, batch_size=16):
    fitkit.set_seed(3)
    net = kit.mlp(4, 1)
    model = fitkit.Model(net)
    model.compile(kit.native_optimizer(net, lr=0.05), "mse")
    data_x, data_y = make_input(x, y, batch_size)
    # a loader, tf.data or generator batches itself: batch_size is refused with it (Keras's rule)
    own = data_y is None and not fitkit.sources.map_style_dataset(data_x)
    model.fit(
        data_x,
        data_y,
        batch_size=None if own else batch_size,
        epochs=1,
        shuffle=False,
        verbose=0,
        steps_per_epoch=None,
    )
    return kit.weights(net)


def _batches(x, y, bs):
    return [(x[i : i + bs], y[i : i + bs]) for i in range(0, len(x), bs)]


def _torch_dataset(x, y, bs):
    import torch

    return torch.utils.data.TensorDataset(torch.as_tensor(x), torch.as_tensor(y)), None


def _torch_loader(x, y, bs):
    import torch

    ds = torch.utils.data.TensorDataset(torch.as_tensor(x), torch.as_tensor(y))
    return torch.utils.data.DataLoader(ds, batch_size=bs, shuffle=False), None


def _tf_dataset(x, y, bs):
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices((x, y)).batch(bs), None


INPUT_KINDS = {
    "pandas": lambda x, y, bs: (
        pd.DataFrame(x, columns=list("abcd")),
        pd.Series(y[:, 0]).to_frame(),
    ),
    "list_of_batches": lambda x, y, bs: (_batches(x, y, bs), None),
    "generator": lambda x, y, bs: ((b for b in _batches(x, y, bs)), None),
    "torch_tensors": lambda x, y, bs: (
        __import__("torch").as_tensor(x),
        __import__("torch").as_tensor(y),
    ),
    "tf_tensors": lambda x, y, bs: (
        __import__("tensorflow").constant(x),
        __import__("tensorflow").constant(y),
    ),
    "torch_dataset": _torch_dataset,
    "torch_dataloader": _torch_loader,
    "tf_data": _tf_dataset,
}


@pytest.mark.parametrize("kind", sorted(INPUT_KINDS))
def test_every_input_kind_trains_like_numpy(kit, kind):
    x, y = make_regression(n=80)
    expected = _weights_after_one_epoch(kit, lambda a, b, bs: (a, b), x, y)
    got = _weights_after_one_epoch(kit, INPUT_KINDS[kind], x, y)
    for a, b in zip(expected, got, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_generator_with_steps_per_epoch_continues_across_epochs(kit):
    x, y = make_regression(n=64)
    model = fitkit.Model(kit.mlp(4, 1))
    model.compile("sgd", "mse")
    gen = (b for _ in range(3) for b in _batches(x, y, 16))  # 12 batches in all
    history = model.fit(gen, epochs=3, steps_per_epoch=4, verbose=0)
    assert len(history) == 3
    assert next(gen, None) is None


def test_dict_inputs_train_a_two_input_network(kit):
    rng = np.random.default_rng(0)
    a, b = (
        rng.standard_normal((128, 3)).astype("float32"),
        rng.standard_normal((128, 2)).astype("float32"),
    )
    y = (a.sum(1, keepdims=True) - b.sum(1, keepdims=True)).astype("float32")
    model = fitkit.Model(kit.two_input_net(3, 2))
    model.compile("adam", "mse", lr=1e-2)
    history = model.fit(
        {"a": a, "b": b},
        y,
        epochs=8,
        batch_size=16,
        verbose=0,
        validation_data=({"a": a, "b": b}, y),
    )
    assert history.history["val_loss"][-1] < history.history["val_loss"][0]
    assert model.predict({"a": a, "b": b}).shape == (128, 1)
    info = model.summary(input_shape={"a": (3,), "b": (2,)}, print_fn=None)
    assert info["params"].sum() == (3 * 8 + 8) + (2 * 8 + 8) + (16 + 1)


def test_summary_prints_one_format_and_returns_frame(kit, capsys):
    model = fitkit.Model(kit.mlp(4, 1))
    frame = model.summary(input_shape=(4,))
    out = capsys.readouterr().out
    assert "Layer (type)" in out and "Output Shape" in out and "Param #" in out
    assert "Total params: 97" in out and "Trainable params: 97" in out
    assert "Non-trainable params: 0" in out and "Params size (MB)" in out
    assert list(frame.columns) == ["layer", "output_shape", "params"]
    assert frame["params"].tolist() == [80, 0, 17] if kit.name == "torch" else [80, 17]
    assert frame["output_shape"].iloc[-1] == "[-1, 1]"


def test_batch_style_methods(kit, classes):
    x, y = classes
    model = fitkit.Model(kit.mlp(4, 3))
    model.compile("adam", "cross_entropy", metrics=["accuracy"], lr=1e-2)
    first = model.train_on_batch(x[:64], y[:64], return_dict=True)
    assert set(first) == {"loss", "accuracy"}
    for _ in range(30):
        last = model.train_on_batch(x[:64], y[:64], return_dict=True)
    assert last["loss"] < first["loss"]
    single = model.test_on_batch(x[:64], y[:64], return_dict=True)
    assert single == pytest.approx(model.validate(x[:64], y[:64], batch_size=64))
    model.test_on_batch(x[:32], y[:32])
    running = model.test_on_batch(x[32:64], y[32:64], reset_metrics=False, return_dict=True)
    assert running["loss"] == pytest.approx(single["loss"], rel=1e-5)
    assert model.predict_on_batch(x[:5]).shape == (5, 3)


def test_learning_rate_gets_and_sets(kit, regression):
    model = fitkit.Model(kit.mlp(4, 1))
    model.compile("sgd", "mse", lr=0.1)
    assert model.learning_rate == pytest.approx(0.1)
    model.learning_rate = 0.02
    assert model.learning_rate == pytest.approx(0.02)
    history = model.fit(*regression, epochs=1, verbose=0)
    assert history.history["learning_rate"] == pytest.approx([0.02])


def test_save_and_load_weights_round_trip(kit, regression, tmp_path):
    x, _ = regression
    model = fitkit.Model(kit.mlp(4, 1))
    model.compile("adam", "mse")
    path = kit.weights_path(tmp_path)
    model.save_weights(path)
    before = model.predict(x)
    other = fitkit.Model(kit.mlp(4, 1))
    other.load_weights(path)
    np.testing.assert_allclose(other.predict(x), before, rtol=1e-6)


def test_torch_weights_also_save_as_safetensors(torch_kit, regression, tmp_path):
    model = fitkit.Model(torch_kit.mlp(4, 1))
    path = str(tmp_path / "w.safetensors")
    model.save_weights(path)
    other = fitkit.Model(torch_kit.mlp(4, 1))
    other.load_weights(path)
    np.testing.assert_allclose(other.predict(regression[0]), model.predict(regression[0]))


@pytest.mark.parametrize("verbose", [0, 1, 2])
def test_verbosity_levels(kit, regression, capsys, verbose):
    model = fitkit.Model(kit.mlp(4, 1))
    model.compile("adam", "mse", metrics=["mae"])
    model.fit(*regression, epochs=2, verbose=verbose, validation_split=0.25)
    out = capsys.readouterr().out
    if verbose == 0:
        assert out == ""
    elif verbose == 1:
        assert out.count("| epoch |") == 2 and "val_mae" in out and "=" * 60 in out
    else:
        lines = [ln for ln in out.splitlines() if ln.startswith("Epoch ")]
        assert len(lines) == 2 and lines[1].startswith("Epoch 2/2") and "val_loss:" in lines[1]


def test_log_step_freq_prints_step_logs(kit, regression, capsys):
    model = fitkit.Model(kit.mlp(4, 1))
    model.compile("adam", "mse")
    model.fit(*regression, batch_size=32, epochs=1, verbose=2, log_step_freq=3)
    out = capsys.readouterr().out
    assert "[epoch = 1, step = 3] loss:" in out and "[epoch = 1, step = 6] loss:" in out
    assert "step = 9]" not in out


def test_history_plot_draws_train_and_validation_curves(kit, regression):
    import matplotlib

    matplotlib.use("Agg")
    model = fitkit.Model(kit.mlp(4, 1))
    model.compile("adam", "mse", metrics=["mae"])
    history = model.fit(*regression, epochs=3, validation_split=0.25, verbose=0)
    fig = history.plot()
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["loss", "mae"]
    labels = [line.get_label() for line in fig.axes[0].lines]
    assert labels == ["loss", "val_loss"] and len(fig.axes[0].lines[0].get_xdata()) == 3


def test_predict_step_override_shapes_predictions(kit, classes):
    x, _ = classes

    class Probabilities(fitkit.Model):
        def predict_step(self, batch):
            logits = super().predict_step(batch)
            if self.backend == "torch":
                return logits.softmax(-1)
            import tensorflow as tf

            return tf.nn.softmax(logits)

    probs = Probabilities(kit.mlp(4, 3)).predict(x, batch_size=64)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)


def test_bf16_precision_trains_with_autocast(torch_kit, regression):
    import torch

    seen = []

    class Spy(fitkit.Model):
        def compute_loss(self, x, y, y_pred):
            seen.append(y_pred.dtype)
            return super().compute_loss(x, y, y_pred.float())

    model = Spy(torch_kit.mlp(4, 1))
    model.compile("adam", "mse", lr=1e-2, precision="bf16")
    history = model.fit(*regression, epochs=3, verbose=0)
    assert seen[-1] == torch.bfloat16
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert model.predict(regression[0][:4]).dtype == np.float32


def test_bf16_on_keras_needs_the_mixed_policy(tf_kit):
    model = fitkit.Model(tf_kit.mlp(4, 1))
    with pytest.raises(fitkit.FitkitValueError, match="mixed_bfloat16"):
        model.compile("adam", "mse", precision="bf16")
    with pytest.raises(fitkit.FitkitValueError, match="precision"):
        model.compile("adam", "mse", precision="fp8")


def test_cli_info_names_backend_and_devices(capsys, monkeypatch):
    from fitkit import cli

    monkeypatch.setenv("FITKIT_BACKEND", "torch")
    cli.main(["info"])
    out = capsys.readouterr().out
    assert "backend: torch" in out and "device: cpu (CPU)" in out and "torch" in out
