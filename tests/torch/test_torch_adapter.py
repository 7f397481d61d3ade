"""Torch adapter: parity with a hand-written loop, no per-step host sync, devices, loaders."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_classes, make_regression

import fitkit


def _hand_written(net, optimizer, loss_fn, x, y, batch_size, epochs):
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(epochs):
        for start in range(0, len(xt), batch_size):
            xb, yb = xt[start : start + batch_size], yt[start : start + batch_size]
            optimizer.zero_grad()
            loss = loss_fn(net(xb), yb)
            loss.backward()
            optimizer.step()


def _twin_nets(kit, n_in, n_out):
    fitkit.set_seed(1)
    a = kit.mlp(n_in, n_out)
    b = kit.mlp(n_in, n_out)
    b.load_state_dict(a.state_dict())
    return a, b


@pytest.mark.parametrize("task", ["regression", "classes"])
def test_fit_matches_hand_written_loop(torch_kit, task):
    if task == "regression":
        x, y = make_regression(n=200)
        n_out, loss, native_loss = 1, "mse", torch.nn.MSELoss()
    else:
        x, y = make_classes(n=200)
        n_out, loss, native_loss = 3, "cross_entropy", torch.nn.CrossEntropyLoss()
    ours, theirs = _twin_nets(torch_kit, 4, n_out)
    model = fitkit.Model(ours, device="cpu")  # the hand-written loop runs on the CPU
    model.compile(
        torch.optim.Adam(ours.parameters(), lr=1e-2),
        loss,
        metrics=["mae"] if task == "regression" else ["accuracy"],
    )
    model.fit(x, y, batch_size=32, epochs=3, shuffle=False, verbose=0)
    _hand_written(theirs, torch.optim.Adam(theirs.parameters(), lr=1e-2), native_loss, x, y, 32, 3)
    for p, q in zip(ours.parameters(), theirs.parameters(), strict=True):
        np.testing.assert_allclose(p.detach().numpy(), q.detach().numpy(), atol=1e-6, rtol=0)


def test_string_adam_is_keras_default_with_fused_kernel(torch_kit):
    model = fitkit.Model(torch_kit.mlp(4, 1))
    model.compile("adam", "mse")
    opt = model.optimizer
    assert isinstance(opt, torch.optim.Adam)
    assert opt.defaults["fused"] is True and opt.defaults["eps"] == 1e-7
    assert opt.defaults["lr"] == 1e-3


@pytest.mark.parametrize("log_step_freq", [None, 4])
def test_fit_reads_device_values_only_at_log_points(torch_kit, torch_sync_counter, log_step_freq):
    sync_counter = torch_sync_counter
    x, y = make_classes(n=512)
    model = fitkit.Model(torch_kit.mlp(4, 3))
    model.compile("adam", "cross_entropy", metrics=["accuracy", "auc", "precision"])
    model.fit(x[:64], y[:64], verbose=0, epochs=1)  # warm-up outside the count
    sync_counter.clear()
    epochs, steps = 3, 16
    model.fit(x, y, batch_size=32, epochs=epochs, verbose=2, log_step_freq=log_step_freq)
    log_points = epochs * (1 + (steps // log_step_freq if log_step_freq else 0))
    # label range of the whole y, once before training; the first batch's predictions, once
    # (a logits loss: do they look like softmax probabilities?)
    prepare_checks = 2
    assert len(sync_counter) <= log_points + prepare_checks, sync_counter


def test_fit_keeps_data_on_the_model_device(torch_kit):
    model = fitkit.Model(torch_kit.mlp(4, 1), device="cpu")
    source = model.runtime.adapter.array_source(*make_regression(n=10), batch_size=4, shuffle=True)
    xb, _yb = next(iter(source))
    assert xb.device.type == "cpu" and xb.dtype == torch.float32 and xb.shape == (4, 4)
    assert source.steps == 3


def test_unshuffled_batches_are_views_of_one_contiguous_tensor(torch_kit):
    model = fitkit.Model(torch_kit.mlp(4, 1))
    source = model.runtime.adapter.array_source(*make_regression(n=10), batch_size=4, shuffle=False)
    first, _ = next(iter(source))
    assert first.data_ptr() == source.x.data_ptr()


@pytest.mark.skipif(torch.cuda.is_available(), reason="the answers of a machine without a GPU")
def test_devices_helpers_on_cpu_machine(monkeypatch):
    monkeypatch.setenv("FITKIT_BACKEND", "torch")
    names = [d["name"] for d in fitkit.devices.list_devices()]
    assert names[0] == "cpu"
    assert fitkit.devices.memory_growth(True) == torch.cuda.is_available()
    with pytest.raises(fitkit.FitkitValueError, match="torchrun"):
        fitkit.devices.virtual_devices(2)


def test_data_too_large_for_the_device_is_copied_per_batch(torch_kit, monkeypatch):
    from fitkit.torch import data

    x, y = make_regression(n=100)
    weights = []
    for fits in (True, False):
        monkeypatch.setattr(data, "fits_on_device", lambda nbytes, device, fits=fits: fits)
        fitkit.set_seed(2)
        net = torch_kit.mlp(4, 1)
        model = fitkit.Model(net)
        model.compile("sgd", "mse")
        source = model.runtime.adapter.array_source(x, y, batch_size=16, shuffle=False)
        assert source.resident is fits
        model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
        weights.append(torch_kit.weights(net))
    for a, b in zip(*weights, strict=True):
        np.testing.assert_array_equal(a, b)
