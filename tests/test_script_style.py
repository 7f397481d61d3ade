"""Script style (fitkit.script): a plain hand-written loop with exact epoch means, the tutorial's
printout and a History gives Model.fit's numbers on both backends; the pieces on their own."""

from __future__ import annotations

import re

import numpy as np
import pytest

import fitkit
from fitkit.display import dated_rule, epoch_line, step_line
from fitkit.errors import FitkitTypeError, FitkitValueError
from fitkit.script import EpochLogs, Mean, as_floats, print_epoch, print_rule, print_step

BATCH, EPOCHS = 16, 3


def binary_data(n: int, seed: int):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 4)).astype("float32")
    y = (x @ np.array([1.0, -1.0, 0.5, 0.0]) > 0)[:, None].astype("float32")
    return x, y


def torch_script_loop(net, train, valid) -> fitkit.History:
    """The tutorial's script style on torch, written with fitkit.script's pieces."""
    import torch

    optimizer = torch.optim.SGD(net.parameters(), lr=0.5)
    loss_func = torch.nn.BCELoss()
    loaders = [
        torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(*map(torch.as_tensor, data)), batch_size=BATCH
        )
        for data in (train, valid)
    ]
    train_logs, valid_logs = EpochLogs(), EpochLogs(prefix="val_")
    history = fitkit.History()
    print_rule()
    for epoch in range(EPOCHS):
        net.train()
        train_logs.reset()
        for step, (features, labels) in enumerate(loaders[0], 1):
            optimizer.zero_grad()
            predictions = net(features)
            loss = loss_func(predictions, labels)
            loss.backward()
            optimizer.step()
            accuracy = ((predictions > 0.5).float() == labels).float().mean()
            train_logs.update(len(labels), loss=loss, accuracy=accuracy)
            if step % 3 == 0:
                print_step(step, train_logs.result())
        net.eval()
        valid_logs.reset()
        with torch.no_grad():
            for features, labels in loaders[1]:
                predictions = net(features)
                valid_logs.update(
                    len(labels),
                    loss=loss_func(predictions, labels),
                    accuracy=((predictions > 0.5).float() == labels).float().mean(),
                )
        logs = {**train_logs.result(), **valid_logs.result()}
        print_epoch(epoch, logs)
        print_rule()
        history.append(epoch, logs)
    return history


def tf_script_loop(net, train, valid) -> fitkit.History:
    """The same on TensorFlow: a tf.function step, values summed on the device."""
    import keras
    import tensorflow as tf

    optimizer = keras.optimizers.SGD(learning_rate=0.5)
    loss_func = keras.losses.BinaryCrossentropy()
    datasets = [tf.data.Dataset.from_tensor_slices(data).batch(BATCH) for data in (train, valid)]

    @tf.function
    def train_step(features, labels):
        with tf.GradientTape() as tape:
            predictions = net(features, training=True)
            loss = loss_func(labels, predictions)
        gradients = tape.gradient(loss, net.trainable_variables)
        optimizer.apply_gradients(zip(gradients, net.trainable_variables, strict=True))
        return loss, keras.metrics.binary_accuracy(labels, predictions)

    @tf.function
    def valid_step(features, labels):
        predictions = net(features, training=False)
        return loss_func(labels, predictions), keras.metrics.binary_accuracy(labels, predictions)

    train_logs, valid_logs = EpochLogs(), EpochLogs(prefix="val_")
    history = fitkit.History()
    print_rule()
    for epoch in range(EPOCHS):
        train_logs.reset()
        for step, (features, labels) in enumerate(datasets[0], 1):
            loss, accuracy = train_step(features, labels)
            train_logs.update(len(labels), loss=loss, accuracy=accuracy)  # accuracy per sample
            if step % 3 == 0:
                print_step(step, train_logs.result())
        valid_logs.reset()
        for features, labels in datasets[1]:
            loss, accuracy = valid_step(features, labels)
            valid_logs.update(len(labels), loss=loss, accuracy=accuracy)
        logs = {**train_logs.result(), **valid_logs.result()}
        print_epoch(epoch, logs)
        print_rule()
        history.append(epoch, logs)
    return history


def _twin_nets(kit):
    net = kit.mlp(4, 1, hidden=8, out_activation="sigmoid")
    if kit.name == "torch":
        import copy

        return net, copy.deepcopy(net)
    twin = kit.mlp(4, 1, hidden=8, out_activation="sigmoid")
    twin.set_weights(net.get_weights())
    return net, twin


def test_a_script_loop_gives_fits_epoch_numbers(kit, capsys):
    train, valid = binary_data(100, 0), binary_data(40, 1)  # a last batch of 4 rows
    net, twin = _twin_nets(kit)
    loop = torch_script_loop if kit.name == "torch" else tf_script_loop
    history = loop(net, train, valid)
    model = fitkit.Model(twin)
    if kit.name == "torch":
        import torch

        model.compile(torch.optim.SGD(twin.parameters(), lr=0.5), "bce", metrics=["accuracy"])
    else:
        import keras

        model.compile(keras.optimizers.SGD(learning_rate=0.5), "bce", metrics=["accuracy"])
    reference = model.fit(
        *train, batch_size=BATCH, epochs=EPOCHS, shuffle=False, validation_data=valid, verbose=0
    )
    columns = ["epoch", "loss", "accuracy", "val_loss", "val_accuracy"]
    assert list(history.df.columns) == columns
    np.testing.assert_allclose(
        history.df.to_numpy(), reference.df[columns].to_numpy(), rtol=1e-5, atol=1e-6
    )
    lines = capsys.readouterr().out.splitlines()
    assert sum(line.startswith("EPOCH = ") for line in lines) == EPOCHS
    assert sum(line.startswith("[step = 6] loss: ") for line in lines) == EPOCHS


def test_mean_is_exact_over_samples_with_floats_and_numpy():
    mean = Mean()
    assert np.isnan(mean.result())
    mean.update(1.0, 3)
    mean.update(np.float32(4.0), 1)
    mean.update(np.array([2.0, 6.0]), 2)  # per-sample values: their mean, 4.0
    assert mean.result() == pytest.approx((3 * 1.0 + 4.0 + 2 * 4.0) / 6)
    assert mean.count == 6
    mean.reset()
    assert mean.count == 0 and np.isnan(mean.result())


def test_mean_keeps_device_values_on_the_device(kit):
    mean = Mean()
    mean.update(kit.tensor(np.float32(2.0)), 4)
    mean.update(kit.tensor(np.array([1.0, 3.0], "float32")), 2)  # averaged: 2.0
    mean.update(0.5, 2)
    device_sum, host_sum, count = mean.parts()
    assert type(device_sum).__module__.split(".")[0] == kit.name and host_sum == 1.0
    assert count == 8
    assert mean.result() == pytest.approx((4 * 2.0 + 2 * 2.0 + 2 * 0.5) / 8)
    assert as_floats(kit.tensor(np.float32(1.5)), 2, np.float64(0.25)) == [1.5, 2.0, 0.25]


def test_epoch_logs_read_the_device_once(torch_kit, monkeypatch):
    import torch

    logs = EpochLogs(prefix="val_")
    for n in (16, 4):
        logs.update(
            n,
            loss=torch.tensor(0.5, requires_grad=True) * 2,
            accuracy=torch.tensor([1.0, 0.0]),
            count=torch.tensor(3),
            lr=0.1,
        )
    calls = []
    original = torch.Tensor.tolist
    monkeypatch.setattr(
        torch.Tensor, "tolist", lambda self: calls.append("tolist") or original(self)
    )
    assert logs.result() == pytest.approx(
        {"val_loss": 1.0, "val_accuracy": 0.5, "val_count": 3.0, "val_lr": 0.1}
    )
    assert calls == ["tolist"]


def test_bad_values_are_fitkit_errors():
    with pytest.raises(FitkitValueError, match="number of samples"):
        Mean().update(1.0, -1)
    with pytest.raises(FitkitValueError, match="number of samples"):
        Mean().update(1.0, 2.5)
    with pytest.raises(FitkitTypeError, match="number or a torch / TensorFlow tensor"):
        Mean().update("0.5", 1)


def test_the_tutorials_lines():
    logs = {"loss": 0.51349, "accuracy": 0.7642, "val_loss": 0.00012, "val_accuracy": 1.0}
    assert (
        step_line(100, {"loss": 0.51349, "accuracy": 0.7642})
        == "[step = 100] loss: 0.513, accuracy: 0.764"
    )
    assert (
        epoch_line(0, logs)
        == "EPOCH = 1, loss = 0.513, accuracy = 0.764, val_loss = 0.00012, val_accuracy = 1.000"
    )
    assert re.fullmatch(r"={80}\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", dated_rule())


def test_print_helpers(capsys):
    print_rule()
    print_step(2, {"loss": 1.0})
    print_epoch(1, {"loss": 1.0})
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "" and re.fullmatch(r"={80}[-\d: ]{19}", lines[1])
    assert lines[2:] == ["[step = 2] loss: 1.000", "", "EPOCH = 2, loss = 1.000"]
