"""Callbacks: Keras hook names and order, stop_training, batch hooks with lazily read logs."""

from __future__ import annotations

import pytest

import fitkit
from fitkit.callbacks import Callback, CallbackList


class Recorder(Callback):
    def __init__(self):
        super().__init__()
        self.calls = []

    def on_train_begin(self, logs=None):
        self.calls.append("train_begin")

    def on_train_end(self, logs=None):
        self.calls.append("train_end")

    def on_epoch_begin(self, epoch, logs=None):
        self.calls.append(f"epoch_begin {epoch}")

    def on_epoch_end(self, epoch, logs=None):
        self.calls.append(f"epoch_end {epoch}")

    def on_test_begin(self, logs=None):
        self.calls.append("test_begin")

    def on_test_end(self, logs=None):
        self.calls.append("test_end")


def test_hooks_run_in_keras_order(kit, regression):
    model = fitkit.Model(kit.mlp(4, 1))
    model.compile("sgd", "mse")
    rec = Recorder()
    model.fit(*regression, epochs=2, validation_split=0.25, callbacks=[rec], verbose=0)
    assert rec.calls == [
        "train_begin",
        "epoch_begin 0",
        "test_begin",
        "test_end",
        "epoch_end 0",
        "epoch_begin 1",
        "test_begin",
        "test_end",
        "epoch_end 1",
        "train_end",
    ]
    assert rec.model is model and rec.params["epochs"] == 2


def test_stop_training_ends_fit_after_the_epoch(kit, regression):
    class StopAtOne(Callback):
        def on_epoch_end(self, epoch, logs=None):
            assert "loss" in logs and "val_loss" in logs
            self.model.stop_training = True

    model = fitkit.Model(kit.mlp(4, 1))
    model.compile("sgd", "mse")
    history = model.fit(
        *regression, epochs=5, validation_split=0.25, callbacks=[StopAtOne()], verbose=0
    )
    assert len(history) == 1


def test_batch_hooks_see_running_logs(kit, regression):
    class Batches(Callback):
        def __init__(self):
            super().__init__()
            self.seen = []

        def on_train_batch_end(self, batch, logs=None):
            self.seen.append((batch, logs["loss"]))

    model = fitkit.Model(kit.mlp(4, 1))
    model.compile("sgd", "mse")
    cb = Batches()
    history = model.fit(*regression, batch_size=64, epochs=1, callbacks=[cb], verbose=0)
    assert [b for b, _ in cb.seen] == [0, 1, 2, 3]
    assert cb.seen[-1][1] == pytest.approx(history.history["loss"][0])


def test_batch_hooks_are_skipped_when_nobody_overrides_them():
    hooks = CallbackList([Recorder()], model=None, params={})
    assert not any(hooks.wants(h) for h in hooks.batch_hooks)


class _MeanSquared:
    """Backend-native custom steps for the class style, one per backend."""

    @staticmethod
    def torch_model():
        import torch

        class Custom(fitkit.Model):
            def train_step(self, batch):
                x, y = batch
                pred = self.net(x)
                loss = torch.mean((pred - y) ** 2)
                self.optimizer.zero_grad()
                loss.backward()
                self.optimizer.step()
                self.update_metrics(y, pred.detach())
                return {"loss": loss, "double_loss": 2 * loss}

        return Custom

    @staticmethod
    def tensorflow_model():
        import tensorflow as tf

        class Custom(fitkit.Model):
            def train_step(self, batch):
                x, y = batch
                with tf.GradientTape() as tape:
                    pred = self.net(x, training=True)
                    loss = tf.reduce_mean(tf.square(pred - y))
                variables = self.net.trainable_variables
                self.optimizer.apply_gradients(
                    zip(tape.gradient(loss, variables), variables, strict=True)
                )
                self.update_metrics(y, pred)
                return {"loss": loss, "double_loss": 2 * loss}

        return Custom


def test_class_style_train_step_override(kit, regression):
    Custom = getattr(_MeanSquared, f"{kit.name}_model")()
    model = Custom(kit.mlp(4, 1))
    model.compile("adam", "mse", metrics=["mae"], lr=1e-2)
    history = model.fit(*regression, epochs=3, validation_split=0.25, verbose=0)
    h = history.history
    assert h["double_loss"] == pytest.approx([2 * v for v in h["loss"]], rel=1e-5)
    assert h["loss"][-1] < h["loss"][0] and "mae" in h and "val_mae" in h


def test_compute_loss_override_is_used_by_default_steps(kit, regression):
    class Frozen(fitkit.Model):
        def compute_loss(self, x, y, y_pred):
            return 0.0 * super().compute_loss(x, y, y_pred)

    net = kit.mlp(4, 1)
    model = Frozen(net)
    model.compile("sgd", "mse")
    before = kit.weights(net)
    history = model.fit(*regression, epochs=1, verbose=0)
    assert history.history["loss"] == [0.0]
    for a, b in zip(before, kit.weights(net), strict=True):
        assert (a == b).all()


def test_stop_training_set_in_a_batch_hook_ends_the_epoch_after_that_step(kit, regression):
    class StopAtStep3(Callback):
        def __init__(self):
            super().__init__()
            self.batches = []

        def on_train_batch_end(self, batch, logs=None):
            self.batches.append(batch)
            if batch == 2:
                self.model.stop_training = True

    model = fitkit.Model(kit.mlp(4, 1))
    model.compile("sgd", "mse")
    cb = StopAtStep3()
    history = model.fit(
        *regression, batch_size=16, epochs=3, validation_split=0.25, callbacks=[cb], verbose=0
    )
    assert cb.batches == [0, 1, 2] and len(history) == 1
    assert "val_loss" in history.history  # validation still runs, as in Keras
