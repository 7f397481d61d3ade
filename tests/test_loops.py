"""Function style (fitkit.torch.loops / fitkit.tf.loops): the tutorial's train_step, valid_step
and train_model on native networks give Model.fit's numbers, the tutorial's printout, floats
from lone steps, and read the device only at log points."""

from __future__ import annotations

import copy
import importlib
import re

import numpy as np
import pytest

import fitkit
from fitkit.errors import FitkitTypeError, FitkitValueError

N_TRAIN, N_VALID, BATCH = 100, 40, 16  # 100 rows: a last batch of 4, so weighting matters


def binary_data(n: int, seed: int):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 4)).astype("float32")
    y = (x @ np.array([1.0, -1.0, 0.5, 0.0]) > 0)[:, None].astype("float32")
    return x, y


def numpy_accuracy(y_true, y_pred) -> np.floating:
    """What sklearn's accuracy_score gives for these arrays: a numpy float."""
    return np.mean(y_true == (y_pred > 0.5))


class TorchSide:
    """The tutorial's torch function style: an nn.Module subclass carrying its training parts."""

    name = "torch"

    def __init__(self):
        import torch

        self.torch = torch
        self.loops = importlib.import_module("fitkit.torch.loops")

    def net(self):
        nn = self.torch.nn

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.hidden = nn.Linear(4, 8)
                self.out = nn.Linear(8, 1)

            def forward(self, x):
                return self.torch.sigmoid(self.out(self.torch.relu(self.hidden(x))))

        Net.torch = self.torch
        return Net()

    def clone(self, net):
        return copy.deepcopy(net)

    def equip(self, net, metric: str = "tensor", lr: float = 0.5):
        torch = self.torch
        net.optimizer = torch.optim.SGD(net.parameters(), lr=lr)
        net.loss_func = torch.nn.BCELoss()
        net.metric_func = {
            "tensor": lambda y_pred, y_true: ((y_pred > 0.5).float() == y_true).float().mean(),
            "numpy": lambda y_pred, y_true: numpy_accuracy(
                y_true.data.numpy(), y_pred.data.numpy()
            ),
        }[metric]
        net.metric_name = "accuracy"
        return net

    def loader(self, x, y):
        torch = self.torch
        dataset = torch.utils.data.TensorDataset(torch.as_tensor(x), torch.as_tensor(y))
        return torch.utils.data.DataLoader(dataset, batch_size=BATCH, shuffle=False)

    def fit_model(self, net):
        model = fitkit.Model(net)
        model.compile(self.torch.optim.SGD(net.parameters(), lr=0.5), "bce", metrics=["accuracy"])
        return model

    def weights(self, net):
        return [p.detach().cpu().numpy().copy() for p in net.parameters()]


class TFSide:
    """The same on TensorFlow: a Keras model carrying its parts, Keras's argument order."""

    name = "tensorflow"

    def __init__(self):
        import keras
        import tensorflow as tf

        self.keras, self.tf = keras, tf
        self.loops = importlib.import_module("fitkit.tf.loops")

    def net(self):
        keras = self.keras
        return keras.Sequential(
            [
                keras.Input((4,)),
                keras.layers.Dense(8, activation="relu"),
                keras.layers.Dense(1, activation="sigmoid"),
            ]
        )

    def clone(self, net):
        twin = self.net()
        twin.set_weights(net.get_weights())
        return twin

    def equip(self, net, metric: str = "tensor", lr: float = 0.5):
        keras = self.keras
        net.optimizer = keras.optimizers.SGD(learning_rate=lr)
        net.loss_func = keras.losses.BinaryCrossentropy()
        net.metric_func = {
            "tensor": keras.metrics.binary_accuracy,  # per-sample values: averaged
            "numpy": lambda y_true, y_pred: numpy_accuracy(y_true.numpy(), y_pred.numpy()),
            "object": keras.metrics.BinaryAccuracy(),
        }[metric]
        net.metric_name = "accuracy"
        return net

    def loader(self, x, y):
        return self.tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH)

    def fit_model(self, net):
        model = fitkit.Model(net)
        model.compile(
            self.keras.optimizers.SGD(learning_rate=0.5),
            self.keras.losses.BinaryCrossentropy(),
            metrics=["accuracy"],
        )
        return model

    def weights(self, net):
        return [np.array(v) for v in net.trainable_variables]


SIDES = {"torch": TorchSide, "tensorflow": TFSide}


@pytest.fixture
def side(kit):
    """``kit``'s backend (FITKIT_BACKEND set, seeded) as the function style uses it."""
    return SIDES[kit.name]()


def _train(side, metric="tensor", epochs=3, log_step_freq=None, net=None):
    x, y = binary_data(N_TRAIN, 0)
    xv, yv = binary_data(N_VALID, 1)
    net = side.equip(net if net is not None else side.net(), metric)
    df = side.loops.train_model(
        net, epochs, side.loader(x, y), side.loader(xv, yv), log_step_freq=log_step_freq
    )
    return net, df


def test_function_style_history_equals_fit(side):
    x, y = binary_data(N_TRAIN, 0)
    xv, yv = binary_data(N_VALID, 1)
    net = side.net()
    twin = side.clone(net)
    net, df = _train(side, net=net)
    history = side.fit_model(twin).fit(
        x, y, batch_size=BATCH, epochs=3, shuffle=False, validation_data=(xv, yv), verbose=0
    )
    columns = ["epoch", "loss", "accuracy", "val_loss", "val_accuracy"]
    assert list(df.columns) == columns
    np.testing.assert_allclose(
        df[columns].to_numpy(), history.df[columns].to_numpy(), rtol=1e-5, atol=1e-6
    )
    for a, b in zip(side.weights(net), side.weights(twin), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_epoch_values_are_exact_over_samples(side):
    """The last batch holds 4 rows of 100: a mean of batch means would weight it 16/100 * 7."""
    x, y = binary_data(N_TRAIN, 0)
    net = side.equip(side.net(), lr=0.0)  # nothing trains: the batches' values stay fixed
    df = side.loops.train_model(net, 1, side.loader(x, y), log_step_freq=None)
    rows = [(x[i : i + BATCH], y[i : i + BATCH]) for i in range(0, N_TRAIN, BATCH)]
    per_batch = [side.loops.valid_step(net, xb, yb) for xb, yb in rows]
    sizes = np.array([len(xb) for xb, _ in rows])
    exact = (np.array(per_batch) * sizes[:, None]).sum(0) / sizes.sum()
    np.testing.assert_allclose(df[["loss", "accuracy"]].to_numpy()[0], exact, rtol=1e-5)
    assert list(df.columns) == ["epoch", "loss", "accuracy"]  # no dl_valid: no val_ columns


@pytest.mark.parametrize("metric", ["tensor", "numpy"])
def test_lone_steps_return_python_floats(side, metric):
    x, y = binary_data(32, 0)
    net = side.equip(side.net(), metric)
    before = side.weights(net)
    val = side.loops.valid_step(net, x, y)
    assert all(type(v) is float for v in val)
    assert all(
        np.array_equal(a, b) for a, b in zip(before, side.weights(net), strict=True)
    )  # no update
    loss, accuracy = side.loops.train_step(net, x, y)
    assert type(loss) is float and type(accuracy) is float
    assert loss == pytest.approx(val[0], rel=1e-6) and accuracy == pytest.approx(val[1])
    assert not all(np.array_equal(a, b) for a, b in zip(before, side.weights(net), strict=True))


def test_a_metric_that_returns_numpy_floats_gives_the_same_history(side):
    """The tutorial's sklearn-style metric (``.numpy()`` then numpy): a host value per step.
    On TensorFlow it cannot be traced, so it runs eagerly on the step's predictions."""
    fitkit.set_seed(0)
    net = side.net()
    twin = side.clone(net)
    _, with_tensors = _train(side, "tensor", epochs=2, net=net)
    _, with_numpy = _train(side, "numpy", epochs=2, net=twin)
    np.testing.assert_allclose(with_numpy.to_numpy(), with_tensors.to_numpy(), rtol=1e-6)


def test_keras_metric_object_gives_batch_values(tf_kit):
    side = TFSide()
    net = side.net()
    twin = side.clone(net)
    _, with_function = _train(side, "tensor", epochs=2, net=net)
    _, with_object = _train(side, "object", epochs=2, net=twin)
    np.testing.assert_allclose(with_object.to_numpy(), with_function.to_numpy(), rtol=1e-6)


def test_tf_steps_are_traced_once_per_network(tf_kit):
    side = TFSide()
    net, _ = _train(side, epochs=3)
    functions = net._fitkit_loop_steps.functions  # full batches, then the last batch of 4
    assert functions["train"].experimental_get_tracing_count() <= 2
    assert functions["valid"].experimental_get_tracing_count() <= 2
    side.loops.train_step(net, *binary_data(16, 3))
    assert functions["train"].experimental_get_tracing_count() <= 2
    net.loss_func = side.keras.losses.BinaryCrossentropy()  # a new part: new steps
    side.loops.train_step(net, *binary_data(16, 3))
    assert net._fitkit_loop_steps.functions["train"] is not functions["train"]


_RULE = re.compile(r"^={80}\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$")
_STEP = re.compile(r"^\[step = \d+\] loss: \d\.\d{3}, accuracy: \d\.\d{3}$")
_EPOCH = re.compile(
    r"^EPOCH = \d+, loss = \d\.\d{3}, accuracy = \d\.\d{3}, "
    r"val_loss = \d\.\d{3}, val_accuracy = \d\.\d{3}$"
)


def _layout(side, capsys) -> list[str]:
    capsys.readouterr()
    _train(side, epochs=2, log_step_freq=3)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "Start Training..." and lines[-1] == "Finished Training..."
    assert sum(bool(_RULE.match(line)) for line in lines) == 3  # start, after each epoch
    assert [int(line[8 : line.index("]")]) for line in lines if _STEP.match(line)] == [3, 6] * 2
    assert [line.split(",")[0] for line in lines if _EPOCH.match(line)] == [
        "EPOCH = 1",
        "EPOCH = 2",
    ]
    return [re.sub(r"\d", "9", line) for line in lines]


def test_printed_layout_is_the_tutorials_and_the_same_on_both_backends(monkeypatch, capsys):
    shapes = {}
    for name, cls in SIDES.items():
        monkeypatch.setenv("FITKIT_BACKEND", name)
        fitkit.set_seed(0)
        shapes[name] = _layout(cls(), capsys)
    assert shapes["torch"] == shapes["tensorflow"]
    assert shapes["torch"][:3] == ["Start Training...", "", "=" * 80 + "9999-99-99 99:99:99"]


@pytest.mark.parametrize("log_step_freq", [None, 2])
def test_torch_loop_reads_the_device_only_at_log_points(
    torch_kit, torch_sync_counter, log_step_freq
):
    import torch

    side = TorchSide()
    x, y = binary_data(N_TRAIN, 0)
    batches = [
        (torch.as_tensor(x[i : i + BATCH]), torch.as_tensor(y[i : i + BATCH]))
        for i in range(0, N_TRAIN, BATCH)
    ]  # 7 steps; no loader machinery counted
    net = side.equip(side.net())
    calls = torch_sync_counter
    calls.clear()  # building the batches above read nothing, but start from zero
    epochs = 3
    side.loops.train_model(net, epochs, batches, batches[:3], log_step_freq=log_step_freq)
    step_logs = len(batches) // log_step_freq if log_step_freq else 0
    assert calls == ["tolist"] * (epochs * (step_logs + 2))  # step logs, train end, valid end


def test_torch_mode_is_restored_and_lone_steps_set_it(torch_kit):
    side = TorchSide()
    net = side.net().eval()
    _train(side, epochs=1, net=net)
    assert net.training is False
    side.loops.train_step(net, *binary_data(8, 0))
    assert net.training is True
    side.loops.valid_step(net, *binary_data(8, 0))
    assert net.training is False


def test_torch_loss_module_on_a_sequential_is_kept_out_of_its_layers(torch_kit):
    import torch

    net = torch.nn.Sequential(torch.nn.Linear(4, 1), torch.nn.Sigmoid())
    side = TorchSide()
    side.equip(net)  # torch registers the BCELoss as a third layer
    assert len(net) == 3
    with pytest.warns(UserWarning, match="plain attribute"):
        side.loops.train_step(net, *binary_data(8, 0))
    assert len(net) == 2 and isinstance(net.loss_func, torch.nn.BCELoss)
    assert net(torch.zeros(2, 4)).shape == (2, 1)


def test_plain_iterables_of_numpy_pairs_and_the_default_metric_name(side, capsys):
    x, y = binary_data(48, 0)
    batches = [(x[i : i + BATCH], y[i : i + BATCH]) for i in range(0, 48, BATCH)]
    net = side.equip(side.net())
    del net.metric_name
    df = side.loops.train_model(net, 2, batches, batches, log_step_freq=None)
    assert list(df.columns) == ["epoch", "loss", "metric", "val_loss", "val_metric"]
    assert df["epoch"].tolist() == [1, 2]


@pytest.mark.parametrize("attribute", ["optimizer", "loss_func", "metric_func"])
def test_a_missing_part_is_named_with_its_fix(side, attribute):
    net = side.equip(side.net())
    delattr(net, attribute)
    x, y = binary_data(8, 0)
    with pytest.raises(
        FitkitValueError,
        match=rf"model\.{attribute} is not set.*model\."
        rf"{attribute} = ",
    ):
        side.loops.train_step(net, x, y)
    with pytest.raises(FitkitValueError, match=rf"model\.{attribute}"):
        side.loops.train_model(net, 1, [(x, y)])


def test_wrong_types_and_arguments_are_fitkit_errors(side):
    x, y = binary_data(8, 0)
    net = side.equip(side.net())
    net.optimizer = "sgd"
    with pytest.raises(FitkitTypeError, match=r"model.optimizer must be"):
        side.loops.train_step(net, x, y)
    net = side.equip(side.net())
    del net.loss_func  # torch refuses to replace a registered module by a number
    net.loss_func = 3
    with pytest.raises(FitkitTypeError, match=r"model.loss_func must be callable"):
        side.loops.valid_step(net, x, y)
    net = side.equip(side.net())
    with pytest.raises(FitkitTypeError, match="takes the"):
        side.loops.train_step(object(), x, y)
    with pytest.raises(FitkitValueError, match="epochs"):
        side.loops.train_model(net, 0, [(x, y)])
    with pytest.raises(FitkitValueError, match="one-shot iterator"):
        side.loops.train_model(net, 2, ((x, y) for _ in range(2)))
    with pytest.raises(FitkitTypeError, match="dl_train must be an iterable"):
        side.loops.train_model(net, 1, 5)
    with pytest.raises(FitkitValueError, match=r"\(features, labels\) pairs"):
        side.loops.train_model(net, 1, [(x, y, y)])
    with pytest.raises(FitkitValueError, match="no batches"):
        side.loops.train_model(net, 1, [])
    net.metric_name = "loss"
    with pytest.raises(FitkitValueError, match="metric_name"):
        side.loops.train_model(net, 1, [(x, y)])
