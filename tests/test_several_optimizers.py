"""Several optimizers (a GAN's): configure_optimizers returns them, a manual train_step gets them
from self.optimizers(), their states and schedulers resume exactly, the history logs each rate.

Owns the OptimizerSet contract on both backends; the one-optimizer class style is
test_class_style.py's, resume in general test_resume.py's.
"""

from __future__ import annotations

import numpy as np
import pytest

import fitkit
from fitkit.callbacks import BackupAndRestore, Callback


def real_samples(n: int = 96) -> np.ndarray:
    """The "real" data a toy generator learns to imitate: points around (3, 3)."""
    return np.random.default_rng(0).normal(3.0, 0.5, size=(n, 2)).astype("float32")


def torch_gan():
    """The user's code: a generator and a discriminator in one ModuleDict, two optimizers
    (Adam for the generator, SGD + StepLR for the discriminator), a manual train_step."""
    import torch

    bce = torch.nn.functional.binary_cross_entropy_with_logits

    class GAN(fitkit.Model):
        def configure_optimizers(self):
            opt_g = torch.optim.Adam(self.net["generator"].parameters(), lr=1e-2)
            opt_d = torch.optim.SGD(self.net["discriminator"].parameters(), lr=0.05, momentum=0.9)
            return [opt_g, opt_d], [torch.optim.lr_scheduler.StepLR(opt_d, 1, gamma=0.5)]

        def train_step(self, batch):
            real = self.unpack_batch(batch)[0]
            opt_g, opt_d = self.optimizers()
            gen, disc = self.net["generator"], self.net["discriminator"]
            fake = gen(torch.randn(len(real), 2))
            ones, zeros = torch.ones(len(real), 1), torch.zeros(len(real), 1)
            d_loss = bce(disc(real), ones) + bce(disc(fake.detach()), zeros)
            opt_d.zero_grad()
            d_loss.backward()
            opt_d.step()
            g_loss = bce(disc(fake), ones)
            opt_g.zero_grad()
            g_loss.backward()
            opt_g.step()
            return {"d_loss": d_loss.detach(), "g_loss": g_loss.detach()}

    fitkit.set_seed(0)
    net = torch.nn.ModuleDict(
        {
            "generator": torch.nn.Linear(2, 2),
            "discriminator": torch.nn.Sequential(
                torch.nn.Linear(2, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1)
            ),
        }
    )
    return GAN(net)


def tf_gan():
    """The same in Keras: two sub-models in one keras.Model, the noise drawn from a seed
    generator the network owns (so a resume restores it), a portable schedule by position."""
    import keras
    import tensorflow as tf

    class Pair(keras.Model):
        def __init__(self):
            super().__init__()
            self.generator = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
            self.discriminator = keras.Sequential(
                [keras.Input((2,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1)]
            )
            self.noise = keras.random.SeedGenerator(7)

        def call(self, x):
            return self.generator(x)

    bce = keras.losses.BinaryCrossentropy(from_logits=True)

    class GAN(fitkit.Model):
        def configure_optimizers(self):
            return (
                [keras.optimizers.Adam(1e-2), keras.optimizers.SGD(0.05, momentum=0.9)],
                [None, fitkit.schedules.StepDecay(step_size=1, gamma=0.5)],
            )

        def train_step(self, batch):
            real = self.unpack_batch(batch)[0]
            opt_g, opt_d = self.optimizers()
            gen, disc = self.net.generator, self.net.discriminator
            noise = keras.random.normal(tf.shape(real), seed=self.net.noise)
            ones, zeros = tf.ones_like(real[:, :1]), tf.zeros_like(real[:, :1])
            with tf.GradientTape() as tape:
                fake = gen(noise, training=True)
                d_loss = bce(ones, disc(real, training=True)) + bce(
                    zeros, disc(fake, training=True)
                )
            grads = tape.gradient(d_loss, disc.trainable_variables)
            opt_d.apply_gradients(zip(grads, disc.trainable_variables, strict=True))
            with tf.GradientTape() as tape:
                g_loss = bce(ones, disc(gen(noise, training=True), training=True))
            grads = tape.gradient(g_loss, gen.trainable_variables)
            opt_g.apply_gradients(zip(grads, gen.trainable_variables, strict=True))
            return {"d_loss": d_loss, "g_loss": g_loss}

    fitkit.set_seed(0)
    return GAN(Pair())


def gan(kit):
    model = torch_gan() if kit.name == "torch" else tf_gan()
    model.compile()  # optimizers and schedulers from configure_optimizers; no loss
    return model


class StopAt(Callback):
    """Ctrl-C after train step ``step`` (1-based) of epoch ``epoch`` (0-based): a fixed moment."""

    def __init__(self, epoch, step):
        super().__init__()
        self.at = (epoch, step)

    def on_train_batch_end(self, batch, logs=None):
        if (self.model.runtime.fit.epoch, batch + 1) == self.at:
            raise KeyboardInterrupt


def test_a_manual_step_gets_every_optimizer_and_the_history_logs_each_rate(kit):
    model = gan(kit)
    opt_g, opt_d = model.optimizers()
    assert type(opt_g).__name__ == "Adam" and type(opt_d).__name__ == "SGD"
    history = model.fit(real_samples(), epochs=3, batch_size=16, verbose=0)
    assert list(history.history) == ["d_loss", "g_loss", "learning_rate-opt0", "learning_rate-opt1"]
    np.testing.assert_allclose(history.history["learning_rate-opt0"], [1e-2] * 3, rtol=1e-6)
    np.testing.assert_allclose(
        history.history["learning_rate-opt1"], [0.05, 0.025, 0.0125], rtol=1e-6
    )
    assert all(np.isfinite(history.history["d_loss"]))


def test_several_optimizers_resume_from_a_backup_bit_for_bit(kit, tmp_path):
    x = real_samples()
    full = gan(kit)
    expected = full.fit(x, epochs=3, batch_size=16, verbose=0, shuffle=True)

    folder = tmp_path / "backup"
    with pytest.raises(KeyboardInterrupt):
        gan(kit).fit(
            x,
            epochs=3,
            batch_size=16,
            verbose=0,
            shuffle=True,
            callbacks=[StopAt(1, 4), BackupAndRestore(folder, save_freq=2)],
        )
    resumed = gan(kit)  # a fresh process's model: new optimizers, nothing built yet
    history = resumed.fit(
        x,
        epochs=3,
        batch_size=16,
        verbose=0,
        shuffle=True,
        callbacks=[StopAt(9, 9), BackupAndRestore(folder, verbose=0)],
    )
    assert history.history == expected.history
    for a, b in zip(full.get_weights(), resumed.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(
        full.optimizers(), resumed.optimizers(), strict=True
    ):  # the optimizers' own states
        if kit.name == "torch":
            for sa, sb in zip(a.state.values(), b.state.values(), strict=True):
                for key in sa:
                    np.testing.assert_array_equal(np.asarray(sa[key]), np.asarray(sb[key]))
        else:
            for va, vb in zip(a.variables, b.variables, strict=True):
                np.testing.assert_array_equal(np.asarray(va), np.asarray(vb))


def test_save_checkpoint_of_several_optimizers_continues_as_one_fit(kit, tmp_path):
    x = real_samples()
    expected = gan(kit).fit(x, epochs=2, batch_size=16, verbose=0)
    first = gan(kit)
    first.fit(x, epochs=1, batch_size=16, verbose=0)
    first.save_checkpoint(tmp_path / "gan.fitkit")
    again = gan(kit)
    assert again.load_checkpoint(tmp_path / "gan.fitkit")["epoch"] == 2  # 1-based: the next
    assert again.fit(x, epochs=2, batch_size=16, verbose=0).history == expected.history
    single = fitkit.Model(kit.mlp(2, 2))
    single.compile("adam", "mse")
    with pytest.raises(fitkit.FitkitValueError):
        single.load_checkpoint(tmp_path / "gan.fitkit")


def test_one_optimizer_names_refuse_to_guess_which_of_several(kit):
    model = gan(kit)
    for what in ("optimizer", "learning_rate"):
        with pytest.raises(fitkit.FitkitAttributeError, match=r"2 optimizers.*self.optimizers"):
            getattr(model, what)
    with pytest.raises(fitkit.FitkitAttributeError, match=r"model.learning_rate"):
        model.learning_rate = 0.1


def test_fitkit_steps_refuse_several_optimizers_before_building_anything(kit):
    if kit.name == "torch":
        import torch

        def two(net):
            params = list(net.parameters())
            return [torch.optim.SGD(params[:2], lr=0.1), torch.optim.SGD(params[2:], lr=0.1)]
    else:
        import keras

        def two(net):
            return [keras.optimizers.SGD(0.1), keras.optimizers.SGD(0.1)]

    class Default(fitkit.Model):
        def configure_optimizers(self):
            return two(self.net)

    class Shared(Default):
        def shared_step(self, batch):
            return {"loss": 0.0}

    for cls in (Default, Shared):
        model = cls(kit.mlp(4, 1))
        with pytest.raises(fitkit.FitkitValueError, match=r"2 optimizers.*Override train_step"):
            model.compile(loss="mse")
        assert not model.runtime.compiled

    class Manual(Default):
        def train_step(self, batch):
            return {}

    with pytest.raises(fitkit.FitkitValueError, match=r"clipnorm, lr\) with 2 optimizers"):
        Manual(kit.mlp(4, 1)).compile(clipnorm=1.0, lr=0.1)


def test_configure_optimizers_forms_for_several(torch_kit):
    import torch

    from fitkit.optimizer_sets import OptimizerSet, from_configured

    net = torch_kit.mlp(4, 1)
    params = list(net.parameters())
    a, b = torch.optim.SGD(params[:2], lr=0.1), torch.optim.SGD(params[2:], lr=0.1)
    step_b = torch.optim.lr_scheduler.StepLR(b, 1)
    for form, scheduled in (
        ([a, b], False),
        ((a, b), False),
        (([a, b], []), False),
        ([{"optimizer": a}, {"optimizer": b, "lr_scheduler": step_b}], True),
        (([a, b], [step_b]), True),
        (([a, b], [None, step_b]), True),
    ):
        found = from_configured(form, "epoch", "val_loss")
        assert isinstance(found, OptimizerSet) and found.optimizers == (a, b)
        assert found.schedules[0] is None
        assert (found.schedules[1] is not None and found.schedules[1].spec is step_b) == scheduled
    steps = from_configured(
        [
            {
                "optimizer": a,
                "lr_scheduler": {
                    "scheduler": torch.optim.lr_scheduler.StepLR(a, 1),
                    "interval": "step",
                },
            },
            {"optimizer": b},
        ],
        "epoch",
        "val_loss",
    )
    assert steps.schedules[0].every == "batch" and steps.schedules[1] is None
    for one in (a, (a, step_b), ([a], [step_b]), {"optimizer": a}):
        assert from_configured(one, "epoch", "val_loss") is None  # one optimizer's forms
    other = torch.optim.SGD(params[:2], lr=0.1)
    with pytest.raises(fitkit.FitkitValueError, match="did not return"):
        from_configured(([a, b], [torch.optim.lr_scheduler.StepLR(other, 1)]), "epoch", "v")
    with pytest.raises(fitkit.FitkitValueError, match="not an optimizer"):
        from_configured(([a, "sgd"], []), "epoch", "v")


def test_a_per_step_scheduler_of_one_of_several_steps_after_each_train_step(torch_kit):
    import torch

    class TwoHeads(fitkit.Model):
        def configure_optimizers(self):
            first, second = self.net[0], self.net[2]
            opt_a = torch.optim.SGD(first.parameters(), lr=0.1)
            opt_b = torch.optim.SGD(second.parameters(), lr=0.1)
            return [
                {"optimizer": opt_a},
                {
                    "optimizer": opt_b,
                    "lr_scheduler": {
                        "scheduler": torch.optim.lr_scheduler.StepLR(opt_b, 1, gamma=0.9),
                        "interval": "step",
                    },
                },
            ]

        def train_step(self, batch):
            x, y, _ = self.unpack_batch(batch)
            loss = torch.nn.functional.mse_loss(self.net(x), y)
            for opt in self.optimizers():
                opt.zero_grad()
            loss.backward()
            for opt in self.optimizers():
                opt.step()
            return {"loss": loss.detach()}

    x = np.ones((64, 4), "float32")
    model = TwoHeads(torch_kit.mlp(4, 1))
    model.compile()
    history = model.fit(x, x[:, :1], epochs=2, batch_size=16, verbose=0)
    np.testing.assert_allclose(history.history["learning_rate-opt1"], [0.1 * 0.9**4, 0.1 * 0.9**8])
    np.testing.assert_allclose(history.history["learning_rate-opt0"], [0.1, 0.1])
