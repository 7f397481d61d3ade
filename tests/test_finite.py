"""A NaN that reaches the weights stops training even where the loss stays finite, at the
log point that shows it, with no per-step read; a non-finite validation loss beside a finite
training loss warns about the validation data (fitkit/finite.py)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from conftest import make_classes, make_regression

import fitkit
from fitkit.adapter import WEIGHTS_FINITE


def nan_to_zero_net(kit):
    """Linear -> (h if h > 0 else 0) -> Linear: the activation maps NaN to 0, so a NaN input
    leaves every output and loss finite while its gradient turns the first weights NaN."""
    if kit.name == "torch":
        torch = kit.torch

        class ZeroNaN(torch.nn.Module):
            def forward(self, h):
                return torch.where(h > 0, h, torch.zeros_like(h))

        return torch.nn.Sequential(torch.nn.Linear(4, 8), ZeroNaN(), torch.nn.Linear(8, 1))
    keras, tf = kit.keras, kit.tf

    class ZeroNaN(keras.layers.Layer):
        def call(self, h):
            return tf.where(h > 0, h, tf.zeros_like(h))

    return keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(8), ZeroNaN(), keras.layers.Dense(1)]
    )


def _stream_with_a_nan(n_batches=8, bad_batch=2):
    x, y = make_regression(n=16 * n_batches)
    x[16 * bad_batch + 3, 1] = np.nan  # one value of one streamed batch (not checked ahead)
    return [(x[i : i + 16], y[i : i + 16]) for i in range(0, len(x), 16)]


def _model(kit):
    fitkit.set_seed(0)
    model = fitkit.Model(nan_to_zero_net(kit))
    model.compile("sgd", "mse")
    return model


def test_the_nan_leaves_the_loss_finite_and_the_weights_nan(kit):
    """What the guard is for: the loss alone would never show it."""
    model = _model(kit)
    history = model.fit(_stream_with_a_nan(), epochs=2, verbose=0, terminate_on_nan=False)
    assert len(history) == 2 and np.isfinite(history.history["loss"]).all()
    assert np.isnan(model.get_weights()[0]).any()


@pytest.mark.parametrize("log_step_freq, step", [(2, 4), (None, 8)])
def test_nan_weights_stop_training_at_the_log_point_naming_epoch_and_step(kit, log_step_freq, step):
    """The NaN comes at step 3: the first log point after it (step 4, or the epoch end at
    step 8) stops training, naming the weights, the epoch and the step."""
    model = _model(kit)
    with pytest.warns(
        UserWarning,
        match=rf"fit stopped: the weights became non-finite "
        rf"\(NaN/inf\) while the loss stayed finite .* at "
        rf"epoch 1, step {step}\..*check the data",
    ):
        history = model.fit(_stream_with_a_nan(), epochs=3, verbose=0, log_step_freq=log_step_freq)
    assert len(history) == 1 and model.stop_training
    assert history.stop_reason.startswith("the weights became non-finite")
    assert np.isfinite(history.history["loss"]).all()


def test_the_weights_flag_comes_with_the_logs_read_at_log_points_only(kit, monkeypatch):
    """No read per step: the flag is asked for at each log point, with the logs (the torch
    adapter's own test counts every host read of a fit)."""
    model = _model(kit)
    x, y = make_regression(n=128)
    asked = []
    read = model.runtime.adapter.read_logs

    def counting(mode, weights=False):
        asked.append((mode, weights))
        logs = read(mode, weights)
        assert (WEIGHTS_FINITE in logs) == weights and logs.get(WEIGHTS_FINITE, 1.0) == 1.0
        return logs

    monkeypatch.setattr(model.runtime.adapter, "read_logs", counting)
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, log_step_freq=4)
    assert asked.count(("train", True)) == 2 * (2 + 1)  # steps 4 and 8, and the epoch end
    assert ("train", False) not in asked


def test_a_finite_run_is_not_stopped(kit):
    x, y = make_regression(n=64)
    history = _model(kit).fit(x, y, batch_size=16, epochs=2, verbose=0, log_step_freq=1)
    assert len(history) == 2 and history.stop_reason is None


def test_an_inf_in_the_validation_data_alone_warns_naming_the_validation_data(kit):
    x, y = make_classes(n=96, d=4)
    xv, yv = x[:32].copy(), y[:32]
    xv[5, 0] = np.inf
    val = [(xv[i : i + 8], yv[i : i + 8]) for i in range(0, 32, 8)]  # batches: not checked
    fitkit.set_seed(0)
    model = fitkit.Model(kit.mlp(4, 3))
    model.compile("adam", "cross_entropy", metrics=["accuracy"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = model.fit(x, y, batch_size=16, epochs=2, verbose=0, validation_data=val)
    told = [str(w.message) for w in caught if "validation data" in str(w.message)]
    assert len(told) == 1, told  # once a fit
    assert "val_loss" in told[0] and "after epoch 1" in told[0] and "NaN or inf" in told[0]
    assert len(history) == 2  # training itself is sound and goes on
    assert not np.isfinite(history.history["val_loss"]).any()
    assert np.isfinite(history.history["val_accuracy"]).all()
