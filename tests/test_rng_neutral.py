"""The first-batch checks draw nothing from the user's random generators: a fit seeded alike
equals a hand-written loop (torch) or Keras's fit (TensorFlow), dropout and loaders included."""

from __future__ import annotations

import random

import numpy as np
import pytest
from conftest import make_classes

import fitkit
from fitkit import checks, training


def noisy_net(kit):
    """Dense, dropout, then a layer that draws in inference mode too (as torch's functional
    dropout does by default): from the framework's RNG, python's and numpy's."""
    if kit.name == "torch":
        torch = kit.torch

        class Noise(torch.nn.Module):
            def forward(self, h):
                drift = random.random() * 0 + np.random.rand() * 0
                return torch.nn.functional.dropout(h, 0.2) + 0.01 * torch.randn_like(h) + drift

        torch.manual_seed(1)
        return torch.nn.Sequential(
            torch.nn.Linear(4, 16),
            torch.nn.ReLU(),
            torch.nn.Dropout(0.3),
            Noise(),
            torch.nn.Linear(16, 3),
        )
    import keras

    class Noise(keras.layers.Layer):
        def __init__(self):
            super().__init__()
            self.seeds = keras.random.SeedGenerator(5)

        def call(self, h, training=None):
            drift = random.random() * 0 + np.random.rand() * 0  # eager calls only
            return h + 0.01 * keras.random.normal(keras.ops.shape(h), seed=self.seeds) + drift

    keras.utils.set_random_seed(1)
    return keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dropout(0.3),
            Noise(),
            keras.layers.Dense(3),
        ]
    )


def rng_states(kit, net):
    """Every generator a user's code may draw from, as comparable values."""
    states = {"python": random.getstate(), "numpy": np.random.get_state()[1].tolist()}
    if kit.name == "torch":
        torch = kit.torch
        states["torch"] = torch.get_rng_state().tolist()
        if torch.cuda.is_available():  # the network runs there, drawing from CUDA's
            states["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    else:
        states["tf"] = kit.tf.random.get_global_generator().state.numpy().tolist()
        states["seeds"] = [v.numpy().tolist() for v in net.variables if "seed_generator" in v.path]
    return states


def test_the_first_batch_checks_leave_every_rng_as_they_found_them(kit):
    x, y = make_classes(n=64, d=4)
    net = noisy_net(kit)
    model = fitkit.Model(net)
    model.compile("sgd", "cross_entropy", metrics=["accuracy"])
    if kit.name == "tensorflow":
        kit.tf.random.get_global_generator()  # made now: the checks must not move it
    source = training.make_source(
        model.runtime.adapter, x, y, batch_size=16, shuffle=True, need_y=True
    )
    before = rng_states(kit, net)
    checks.check_first(model, source, "train")
    assert rng_states(kit, net) == before
    model.predict(x[:4])  # the network does draw in inference mode: the test can fail
    assert rng_states(kit, net) != before


class SkipsChecks(fitkit.Model):
    """The default step, overridden: fit then runs no first-batch check."""

    def train_step(self, batch):
        return super().train_step(batch)

    def test_step(self, batch):
        return super().test_step(batch)


def test_a_fit_equals_one_whose_first_batch_checks_are_skipped(kit):
    x, y = make_classes(n=96, d=4)
    weights = []
    for cls in (fitkit.Model, SkipsChecks):
        fitkit.set_seed(0)
        model = cls(noisy_net(kit))
        model.compile("sgd", "cross_entropy", lr=0.1)
        model.fit(x, y, batch_size=16, epochs=2, validation_data=(x[:32], y[:32]), verbose=0)
        weights.append(model.get_weights())
    for a, b in zip(*weights, strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_torch_fit_equals_a_hand_written_loop_seeded_alike(torch_kit):
    """Shuffled DataLoaders for training and validation (each pass draws its order and seeds
    from torch's RNG as it opens), dropout, a layer drawing in inference mode: bit for bit."""
    torch = torch_kit.torch
    x, y = make_classes(n=96, d=4)
    data = torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y))

    def loaders():
        return (
            torch.utils.data.DataLoader(data, batch_size=16, shuffle=True),
            torch.utils.data.DataLoader(data, batch_size=32, shuffle=True),
        )

    net = noisy_net(torch_kit)
    model = fitkit.Model(net)
    model.compile(
        torch.optim.SGD(net.parameters(), lr=0.1), torch.nn.CrossEntropyLoss(), metrics=["accuracy"]
    )
    device = model.runtime.adapter.device  # a GPU when there is one: the loop runs there too

    def generators():
        cuda = torch.cuda.get_rng_state_all() if device.type == "cuda" else []
        return [torch.get_rng_state(), *cuda]

    torch.manual_seed(5)
    train, val = loaders()
    model.fit(train, epochs=3, validation_data=val, verbose=0)
    after_fit = generators()

    net = noisy_net(torch_kit).to(device)
    optimizer, loss_fn = torch.optim.SGD(net.parameters(), lr=0.1), torch.nn.CrossEntropyLoss()
    torch.manual_seed(5)
    train, val = loaders()
    for _ in range(3):
        net.train()
        for xb, yb in train:
            optimizer.zero_grad()
            loss_fn(net(xb.to(device)), yb.to(device)).backward()
            optimizer.step()
        net.eval()
        with torch.no_grad():
            for xb, _yb in val:
                net(xb.to(device))
    for a, b in zip(model.get_weights(), net.state_dict().values(), strict=True):
        np.testing.assert_array_equal(a, b.detach().cpu().numpy())
    assert all(torch.equal(a, b) for a, b in zip(after_fit, generators(), strict=True))


def test_a_tensorflow_fit_equals_keras_fit_seeded_alike(tf_kit):
    """Dropout and a layer drawing in inference mode from its seed generator: fitkit's fit
    (checks, then graph steps) and Keras's fit draw the same numbers, bit for bit."""
    import keras

    x, y = make_classes(n=96, d=4)
    val = (x[:32], y[:32])

    def compiled_net():
        net = noisy_net(tf_kit)
        return (
            net,
            keras.optimizers.SGD(0.1),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )

    net, optimizer, loss = compiled_net()
    model = fitkit.Model(net)
    model.compile(optimizer, loss, metrics=["accuracy"])
    model.fit(x, y, batch_size=16, epochs=2, shuffle=False, validation_data=val, verbose=0)

    reference, optimizer, loss = compiled_net()
    reference.compile(optimizer, loss, metrics=["accuracy"])
    reference.fit(x, y, batch_size=16, epochs=2, shuffle=False, validation_data=val, verbose=0)
    for a, b in zip(model.get_weights(), reference.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("where", ["train", "validation"])
def test_a_dataloader_pass_is_drawn_when_it_runs_not_when_checked(torch_kit, where):
    """fit's validation loader is checked before training but runs after the first epoch:
    its pass is opened again then, drawing from torch's RNG where a loop would."""
    torch = torch_kit.torch
    x, y = make_classes(n=32, d=4)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y)),
        batch_size=16,
        shuffle=True,
    )
    model = fitkit.Model(torch_kit.mlp(4, 3))
    model.compile("sgd", "cross_entropy")
    source = training.make_source(
        model.runtime.adapter, loader, None, batch_size=16, shuffle=False, need_y=True
    )
    before = torch.get_rng_state()
    checks.check_first(model, source, "test", runs_next=where == "train")
    moved = not torch.equal(before, torch.get_rng_state())
    assert moved == (where == "train")  # the training pass runs next: its draw stays drawn
