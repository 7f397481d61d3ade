"""Free-form class style on both backends: custom steps without targets, without a loss."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_unchanged

import fitkit


def _autoencoder(kit):
    if kit.name == "torch":
        nn = kit.torch.nn
        return nn.Sequential(nn.Linear(6, 3), nn.Tanh(), nn.Linear(3, 6))
    keras = kit.keras
    return keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(3, activation="tanh"), keras.layers.Dense(6)]
    )


class Reconstruct(fitkit.Model):
    """An autoencoder: the data are inputs only, the step computes its own loss."""

    def _loss(self, x, training):
        if self.backend == "torch":
            return ((self.net(x) - x) ** 2).mean()
        import tensorflow as tf

        return tf.reduce_mean((self.net(x, training=training) - x) ** 2)

    def train_step(self, batch):
        x, y, _ = self.unpack_batch(batch)
        assert y is None
        if self.backend == "torch":
            loss = self._loss(x, True)
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            return {"loss": loss}
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = self._loss(x, True)
        variables = self.net.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
        return {"loss": loss}

    def test_step(self, batch):
        x, _, _ = self.unpack_batch(batch)
        return {"reconstruction": self._loss(x, False)}


def test_custom_steps_train_on_inputs_only_without_a_compiled_loss(kit):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((256, 2)) @ rng.standard_normal((2, 6))).astype("float32")
    model = Reconstruct(_autoencoder(kit))
    model.compile("adam", lr=1e-2)  # no loss: the steps compute their own
    history = model.fit(x, epochs=8, batch_size=32, verbose=0, validation_split=0.25)
    assert history.history["loss"][-1] < 0.5 * history.history["loss"][0]
    assert "val_reconstruction" in history.history
    assert model.validate(x)["reconstruction"] == pytest.approx(
        float(((model.predict(x) - x) ** 2).mean()), rel=1e-4
    )


def test_a_default_step_still_needs_a_loss(kit):
    """compile(loss=None) trains on a loss the network's output carries (Hugging Face's);
    a network that returns none is refused at the first batch, before any step."""
    net = kit.mlp(4, 1)
    before = kit.weights(net)
    model = fitkit.Model(net)
    model.compile("adam")
    x, y = np.ones((8, 4), "float32"), np.ones((8, 1), "float32")
    with pytest.raises(fitkit.FitkitValueError, match=r"needs a loss.*returns a .* with no `loss`"):
        model.fit(x, y, epochs=1, verbose=0)
    with pytest.raises(fitkit.FitkitValueError, match="needs a loss"):
        model.validate(x, y)
    assert_unchanged(kit, net, before)


def test_custom_step_data_is_not_forced_through_the_network_first(kit):
    """The step feeds the network one entry of a dict: no pre-flight forward on the dict."""
    rng = np.random.default_rng(0)
    data = {
        "features": rng.standard_normal((64, 4)).astype("float32"),
        "ignored": rng.standard_normal((64, 9)).astype("float32"),
    }
    y = data["features"].sum(1, keepdims=True).astype("float32")

    class PicksFeatures(fitkit.Model):
        def train_step(self, batch):
            x, y, _ = self.unpack_batch(batch)
            return super().train_step((x["features"], y))

    model = PicksFeatures(kit.mlp(4, 1))
    model.compile("adam", "mse", metrics=["mae"], lr=1e-2)
    history = model.fit(data, y, epochs=5, batch_size=16, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert "mae" in history.history  # compiled metrics built from the step's own call


def test_configure_optimizers_chooses_optimizer_and_scheduler(kit, regression):
    if kit.name == "torch":
        import torch

        class Chosen(fitkit.Model):
            def configure_optimizers(self):
                opt = torch.optim.SGD(self.net.parameters(), lr=0.1)
                return {
                    "optimizer": opt,
                    "lr_scheduler": {
                        "scheduler": torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5),
                        "interval": "epoch",
                    },
                }
    else:
        import keras

        class Chosen(fitkit.Model):
            def configure_optimizers(self):
                return keras.optimizers.SGD(0.1), "step"

    model = Chosen(kit.mlp(4, 1))
    model.compile(loss="mse")
    history = model.fit(*regression, epochs=3, verbose=0)
    if kit.name == "torch":
        assert history.history["learning_rate"] == pytest.approx(
            [0.1, 0.05, 0.025]
        )  # used per epoch
    else:  # the portable "step" schedule: a third of the fit per step of x0.1
        assert history.history["learning_rate"] == pytest.approx([0.1, 0.01, 0.001], rel=1e-5)


def test_configure_optimizers_and_an_optimizer_argument_conflict(kit):
    class Chosen(fitkit.Model):
        def configure_optimizers(self):
            return None

    with pytest.raises(fitkit.FitkitValueError, match="pass neither optimizer"):
        Chosen(kit.mlp(4, 1)).compile("sgd", "mse")
    with pytest.raises(fitkit.FitkitValueError, match="returned no optimizer"):
        Chosen(kit.mlp(4, 1)).compile(loss="mse")


def _shared_model(kit):
    """The tutorial's LightModel.shared_step, as a fitkit.Model subclass on each backend."""
    if kit.name == "torch":
        import torch

        class Light(fitkit.Model):
            def shared_step(self, batch):
                x, y = self.unpack_batch(batch)[:2]
                y_pred = self(x)
                loss = torch.nn.functional.mse_loss(y_pred, y)
                return {"loss": loss, "mae": (y_pred - y).abs().mean()}
    else:
        import tensorflow as tf

        class Light(fitkit.Model):
            def shared_step(self, batch):
                x, y = self.unpack_batch(batch)[:2]
                y_pred = self(x)
                return {
                    "loss": tf.reduce_mean(tf.square(y_pred - y)),
                    "mae": tf.reduce_mean(tf.abs(y_pred - y)),
                }

    return Light


def test_shared_step_serves_train_and_validation_and_matches_compiled_fit(kit, regression):
    x, y = regression
    fitkit.set_seed(1)
    light = _shared_model(kit)(kit.mlp(4, 1))
    light.compile("sgd", lr=0.05)  # no loss: shared_step computes it
    fitkit.set_seed(1)
    plain = fitkit.Model(kit.mlp(4, 1))
    plain.compile("sgd", "mse", metrics=["mae"], lr=0.05)
    kwargs = dict(batch_size=32, epochs=3, shuffle=False, validation_split=0.25, verbose=0)
    ours, theirs = light.fit(x, y, **kwargs), plain.fit(x, y, **kwargs)
    for key in ("loss", "mae", "val_loss", "val_mae"):
        np.testing.assert_allclose(ours.history[key], theirs.history[key], rtol=1e-5)
    assert light.validate(x, y)["mae"] == pytest.approx(plain.validate(x, y)["mae"], rel=1e-5)


def test_shared_step_without_a_loss_entry_is_a_clear_error(kit, regression):
    class NoLoss(fitkit.Model):
        def shared_step(self, batch):
            return {"mae": 0.0}

    model = NoLoss(kit.mlp(4, 1))
    model.compile("sgd")
    with pytest.raises(fitkit.FitkitError, match="'loss' entry"):
        model.fit(*regression, epochs=1, verbose=0)


def test_two_optimizers_from_configure_optimizers_are_named_as_such(torch_kit):
    import torch

    class Gan(fitkit.Model):
        def configure_optimizers(self):
            params = list(self.net.parameters())
            return torch.optim.SGD(params[:2], lr=0.1), torch.optim.SGD(params[2:], lr=0.1)

    with pytest.raises(fitkit.FitkitValueError, match="returned 2 optimizers"):
        Gan(torch_kit.mlp(4, 1)).compile(loss="mse")
