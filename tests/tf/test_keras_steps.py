"""A keras.Model that customizes what happens in fit (its own train_step / test_step /
predict_step, compute_loss) trains under fitkit's fit with its own code, to Keras's numbers
(fitkit/tf/keras_steps.py)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from conftest import make_regression  # noqa: E402

import fitkit  # noqa: E402

pytestmark = pytest.mark.usefixtures("tf_kit")


def _weights_equal(a, b):
    for p, q in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_allclose(p, q, rtol=1e-6, atol=1e-7)


def _twins(build):
    """Two identical networks: one for Keras's fit, one for fitkit's."""
    nets = []
    for _ in range(2):
        keras.utils.set_random_seed(1)
        nets.append(build())
    return nets


def _functional(cls):
    inp = keras.Input((4,))
    hidden = keras.layers.Dense(8, activation="relu")(inp)
    return cls(inp, keras.layers.Dense(1)(hidden))


class GuideModel(keras.Model):
    """The Keras guide's custom train_step: compute_loss, self.optimizer, self.metrics."""

    def train_step(self, data):
        x, y = data[:2]
        with tf.GradientTape() as tape:
            y_pred = self(x, training=True)
            loss = self.compute_loss(x, y, y_pred, None)
        grads = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply(grads, self.trainable_variables)
        for metric in self.metrics:
            if metric.name == "loss":
                metric.update_state(loss)
            else:
                metric.update_state(y, y_pred)
        return {m.name: m.result() for m in self.metrics}


def test_the_keras_guides_train_step_trains_to_keras_numbers():
    x, y = make_regression(n=256)
    theirs, mine = _twins(lambda: _functional(GuideModel))
    theirs.compile(keras.optimizers.SGD(0.01), "mse", metrics=["mae"])
    model = fitkit.Model(mine)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "overrides train_step" warning any more
        model.compile(keras.optimizers.SGD(0.01), "mse", metrics=["mae"])
    args = dict(batch_size=32, epochs=3, shuffle=False, verbose=0, validation_data=(x[:64], y[:64]))
    expected = theirs.fit(x, y, **args).history
    history = model.fit(x, y, **args).history
    _weights_equal(theirs, mine)
    for key in ("loss", "mae", "val_loss", "val_mae"):
        np.testing.assert_allclose(history[key], expected[key], rtol=1e-6)
    assert model.optimizer is mine.optimizer
    ours, keras_eval = model.validate(x, y), theirs.evaluate(x, y, verbose=0, return_dict=True)
    assert ours == pytest.approx(keras_eval, rel=1e-6)


class FreezeFirst(keras.Model):
    """Updates only the last layer: the first one must not move."""

    def train_step(self, data):
        x, y = data[:2]
        with tf.GradientTape() as tape:
            loss = self.compute_loss(x, y, self(x, training=True))
        head = self.layers[-1].trainable_variables
        self.optimizer.apply(tape.gradient(loss, head), head)
        self._loss_tracker.update_state(loss)
        return {"loss": self._loss_tracker.result()}


def test_a_step_that_freezes_part_of_the_weights_leaves_them_as_keras_does():
    x, y = make_regression(n=128)
    theirs, mine = _twins(lambda: _functional(FreezeFirst))
    frozen = [np.array(v) for v in mine.layers[1].weights]
    head = np.array(mine.layers[-1].kernel)
    theirs.compile(keras.optimizers.Adam(0.01), "mse")
    model = fitkit.Model(mine)
    model.compile(keras.optimizers.Adam(0.01), "mse")
    expected = theirs.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0).history
    history = model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0).history
    for before, now in zip(frozen, mine.layers[1].weights, strict=True):
        np.testing.assert_array_equal(before, np.array(now))
    assert not np.allclose(np.array(mine.layers[-1].kernel), head)  # the head trained
    _weights_equal(theirs, mine)
    np.testing.assert_allclose(history["loss"], expected["loss"], rtol=1e-6)


class GAN(keras.Model):
    """A GAN-like step: two sub-networks, two optimizers from its own compile, its own
    trackers, noise from a seeded generator, data without targets."""

    def __init__(self):
        super().__init__()
        self.generator = keras.Sequential(
            [keras.Input((3,)), keras.layers.Dense(8, "relu"), keras.layers.Dense(4)]
        )
        self.discriminator = keras.Sequential(
            [keras.Input((4,)), keras.layers.Dense(8, "relu"), keras.layers.Dense(1)]
        )
        self.seeds = keras.random.SeedGenerator(7)
        self.d_tracker = keras.metrics.Mean(name="d_loss")
        self.g_tracker = keras.metrics.Mean(name="g_loss")

    @property
    def metrics(self):
        return [self.d_tracker, self.g_tracker]

    def compile(self, d_optimizer, g_optimizer):
        super().compile()
        self.d_optimizer, self.g_optimizer = d_optimizer, g_optimizer
        self.bce = keras.losses.BinaryCrossentropy(from_logits=True)

    def train_step(self, data):
        real = data  # x alone, as Keras gives data without targets
        n = tf.shape(real)[0]
        fake = self.generator(keras.random.normal((n, 3), seed=self.seeds))
        with tf.GradientTape() as tape:
            logits = self.discriminator(tf.concat([fake, real], 0))
            d_loss = self.bce(tf.concat([tf.ones((n, 1)), tf.zeros((n, 1))], 0), logits)
        weights = self.discriminator.trainable_weights
        self.d_optimizer.apply(tape.gradient(d_loss, weights), weights)
        with tf.GradientTape() as tape:
            fake = self.generator(keras.random.normal((n, 3), seed=self.seeds))
            g_loss = self.bce(tf.zeros((n, 1)), self.discriminator(fake))
        weights = self.generator.trainable_weights
        self.g_optimizer.apply(tape.gradient(g_loss, weights), weights)
        self.d_tracker.update_state(d_loss)
        self.g_tracker.update_state(g_loss)
        return {"d_loss": self.d_tracker.result(), "g_loss": self.g_tracker.result()}


def test_a_gan_like_step_with_its_own_optimizers_and_trackers_trains_as_keras():
    x, _ = make_regression(n=96)
    theirs, mine = _twins(GAN)
    for net in (theirs, mine):
        net.compile(keras.optimizers.Adam(1e-3), keras.optimizers.Adam(2e-3))
    model = fitkit.Model(mine)
    model.compile()  # the network's own compile holds its optimizers and losses
    expected = theirs.fit(x, batch_size=16, epochs=3, shuffle=False, verbose=0).history
    history = model.fit(x, batch_size=16, epochs=3, shuffle=False, verbose=0).history
    _weights_equal(theirs, mine)
    for key in ("d_loss", "g_loss"):  # running means, reset each epoch, as Keras logs them
        np.testing.assert_allclose(history[key], expected[key], rtol=1e-6)


def test_a_network_with_its_own_compile_must_be_compiled_by_it_first():
    model = fitkit.Model(GAN())
    with pytest.raises(fitkit.FitkitValueError, match=r"compile method of its own.*not compiled"):
        model.compile()
    net = GAN()
    net.compile(keras.optimizers.Adam(), keras.optimizers.Adam())
    with pytest.raises(fitkit.FitkitValueError, match="no optimizer, loss or metrics"):
        fitkit.Model(net).compile(loss="mse")


class Penalized(keras.Model):
    """compute_loss overridden, Keras's own train_step (Keras's guide: a loss it adds)."""

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        loss = super().compute_loss(x, y, y_pred, sample_weight, training)
        return loss + 0.5 * tf.reduce_mean(tf.square(y_pred))


def test_an_overridden_compute_loss_is_used_as_keras_uses_it():
    x, y = make_regression(n=128)
    theirs, mine = _twins(lambda: _functional(Penalized))
    theirs.compile(keras.optimizers.SGD(0.05), "mse", metrics=["mae"])
    model = fitkit.Model(mine)
    model.compile(keras.optimizers.SGD(0.05), "mse", metrics=["mae"])
    expected = theirs.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0).history
    history = model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0).history
    _weights_equal(theirs, mine)
    for key in ("loss", "mae"):
        np.testing.assert_allclose(history[key], expected[key], rtol=1e-6)


class Softmaxed(keras.Model):
    def predict_step(self, data):
        x = keras.utils.unpack_x_y_sample_weight(data)[0]
        return tf.nn.softmax(self(x, training=False))


def test_an_overridden_predict_step_gives_its_outputs():
    x, _ = make_regression(n=70)
    inp = keras.Input((4,))
    net = Softmaxed(inp, keras.layers.Dense(3)(inp))
    out = fitkit.Model(net).predict(x, batch_size=16)
    np.testing.assert_allclose(out, net.predict(x, batch_size=16, verbose=0), rtol=1e-6)
    np.testing.assert_allclose(out.sum(1), 1.0, rtol=1e-5)
    model = fitkit.Model(net)  # training stays fitkit's: its controls apply
    model.compile("sgd", "cross_entropy", clipnorm=1.0)
    model.fit(x, np.zeros(len(x), "int64"), epochs=1, verbose=0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"clipnorm": 1.0}, r"clipnorm cannot reach them.*Adam\(clipnorm"),
        ({"gradient_accumulation_steps": 2}, "gradient_accumulation_steps cannot reach"),
        ({"metrics": [fitkit.metrics.R2Score()]}, "R2Score is a fitkit metric"),
    ],
)
def test_what_cannot_reach_a_networks_own_step_is_refused(kwargs, match):
    model = fitkit.Model(_functional(GuideModel))
    with pytest.raises(fitkit.FitkitValueError, match=match):
        model.compile("sgd", "mse", **kwargs)


def test_a_checkpoint_of_a_networks_own_step_is_refused(tmp_path):
    """Its trackers and any optimizers of its own are not fitkit's to save: refused, with
    the weights saved instead."""
    x, y = make_regression(n=32)
    model = fitkit.Model(_functional(GuideModel))
    model.compile("sgd", "mse")
    model.fit(x, y, epochs=1, verbose=0)
    with pytest.raises(fitkit.FitkitValueError, match="save_weights"):
        model.save_checkpoint(str(tmp_path / "state.fitkit"))
    assert not (tmp_path / "state.fitkit").exists()
    model.save_weights(str(tmp_path / "w.weights.h5"))
