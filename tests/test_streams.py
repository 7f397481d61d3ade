"""steps_per_epoch keeps one pass over the data across epochs, as Keras's fit does: a
repeat()ed dataset, a loader or a list of batches goes on where the last epoch stopped, and
a new pass opens only where the last one ended (fitkit/streams.py)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from conftest import make_classes, make_regression

import fitkit
from fitkit.callbacks import BackupAndRestore, Callback


def _net(kit, seed=1):
    fitkit.set_seed(seed)
    return kit.mlp(4, 1, hidden=8)


def _batches(x, y, size):
    return [(x[i : i + size], y[i : i + size]) for i in range(0, len(x), size)]


def _fit(kit, data, **fit_kwargs):
    net = _net(kit)
    model = fitkit.Model(net)
    model.compile(kit.native_optimizer(net, lr=0.01), "mse")
    history = model.fit(data, verbose=0, **fit_kwargs)
    return model, history


@pytest.mark.parametrize("n_batches", [12, 10])
def test_a_list_of_batches_with_steps_per_epoch_continues_across_epochs(kit, n_batches):
    """3 epochs of 4 steps over 12 (or 10) batches train on each batch once, in order, as
    one epoch over them does; with 10 the third epoch ends with the data (2 steps)."""
    x, y = make_regression(n=16 * n_batches)
    batches = _batches(x, y, 16)
    once, _ = _fit(kit, batches, epochs=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        stream, history = _fit(kit, batches, epochs=3, steps_per_epoch=4)
    for a, b in zip(once.get_weights(), stream.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    short = [str(w.message) for w in caught if "pass ended" in str(w.message)]
    assert len(history) == 3 and len(short) == (n_batches == 10)
    if short:
        assert "after 2 of steps_per_epoch=4 steps in epoch 3" in short[0]


def test_a_new_pass_opens_where_the_last_one_ended(kit):
    """10 batches, 4 per epoch: epochs of 4, 4, 2 (the data ends), then 4 of a new pass."""
    x, y = make_regression(n=160)
    batches = _batches(x, y, 16)
    once, _ = _fit(kit, batches + batches[:4], epochs=1)
    with pytest.warns(UserWarning, match="pass ended after 2 of steps_per_epoch=4"):
        stream, history = _fit(kit, batches, epochs=4, steps_per_epoch=4)
    assert len(history) == 4
    for a, b in zip(once.get_weights(), stream.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_a_generator_that_runs_out_still_stops_training(kit):
    x, y = make_regression(n=96)
    with pytest.warns(
        UserWarning, match="ran out after 2 of steps_per_epoch=4 steps in epoch 2; training stops"
    ):
        _, history = _fit(kit, iter(_batches(x, y, 16)), epochs=5, steps_per_epoch=4)
    assert len(history) == 2


def test_a_torch_dataloader_with_steps_per_epoch_continues_across_epochs(torch_kit):
    torch = torch_kit.torch
    x, y = make_regression(n=160)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.as_tensor(x), torch.as_tensor(y)), batch_size=16
    )
    once, _ = _fit(torch_kit, loader, epochs=1)
    stream, _ = _fit(torch_kit, loader, epochs=2, steps_per_epoch=5)
    for a, b in zip(once.get_weights(), stream.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------------- Keras's own numbers
def _keras_pair(tf_kit):
    keras = tf_kit.keras
    nets = []
    for _ in range(2):
        keras.utils.set_random_seed(1)
        nets.append(
            keras.Sequential(
                [keras.Input((4,)), keras.layers.Dense(8, "relu"), keras.layers.Dense(1)]
            )
        )
    nets[0].compile(keras.optimizers.SGD(0.01), "mse")
    model = fitkit.Model(nets[1])
    model.compile(keras.optimizers.SGD(0.01), "mse")
    return nets[0], model


@pytest.mark.parametrize("data", ["repeat", "finite", "arrays"])
def test_steps_per_epoch_trains_as_keras_fit_on_the_same_pipeline(tf_kit, data):
    """400 rows in batches of 32 (13 batches), 5 steps per epoch: on a repeat()ed dataset
    the epochs go on through rows 160-399; on a finite one (or arrays) the third epoch
    ends with the data and the fourth starts a new pass, as Keras's fit does."""
    tf = tf_kit.tf
    x = np.random.default_rng(0).standard_normal((400, 4)).astype("float32")
    y = x.sum(1, keepdims=True)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    args = {
        "repeat": ((ds.repeat(),), {}),
        "finite": ((ds,), {}),
        "arrays": ((x, y), {"batch_size": 32, "shuffle": False}),
    }[data]
    keras_net, model = _keras_pair(tf_kit)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Keras's "ran out of data" and ours
        theirs = keras_net.fit(*args[0], epochs=4, steps_per_epoch=5, verbose=0, **args[1])
        ours = model.fit(*args[0], epochs=4, steps_per_epoch=5, verbose=0, **args[1])
    for a, b in zip(keras_net.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(ours.history["loss"], theirs.history["loss"], rtol=1e-6)


def test_a_repeated_dataset_runs_whole_chunks_with_no_host_count(tf_kit):
    """A repeat()ed dataset never ends: its chunks' step counts are known without a read."""
    tf = tf_kit.tf
    x, y = make_regression(n=64)
    source = fitkit.Model(tf_kit.mlp(4, 1)).runtime.adapter.batch_source(
        tf.data.Dataset.from_tensor_slices((x, y)).batch(16).repeat(), batch_size=16, shuffle=False
    )
    assert source.endless
    chunk, steps = next(iter(source.batches(8, 3)))
    assert chunk.known and steps() == 3  # not read from the call's count (never made)


# ---------------------------------------------------------------------- resume
def _classifier(kit):
    fitkit.set_seed(3)
    model = fitkit.Model(kit.mlp(4, 3, hidden=16))
    model.compile("adam", "cross_entropy", metrics=["accuracy"], lr=0.01)
    return model


class SaveThenStop(Callback):
    def __init__(self, path, at):
        super().__init__()
        self.path, self.at = path, at

    def on_train_batch_end(self, batch, logs=None):
        if (self.model.runtime.fit.epoch, batch + 1) == self.at:
            self.model.save_checkpoint(self.path)
            raise KeyboardInterrupt


def test_a_checkpoint_mid_pass_resumes_to_the_uninterrupted_run(kit, tmp_path):
    """Shuffled arrays, 10 batches, 3 per epoch: a checkpoint at epoch 3, step 2 is 8
    steps into the pass; the resumed fit draws the same order and goes on from there."""
    x, y = make_classes(n=160, d=4)
    args = dict(batch_size=16, epochs=5, steps_per_epoch=3, verbose=0)
    full = _classifier(kit)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # epoch 4 ends with the pass
        expected = full.fit(x, y, **args)
        path = str(tmp_path / "mid.fitkit")
        with pytest.raises(KeyboardInterrupt):
            _classifier(kit).fit(x, y, **args, callbacks=[SaveThenStop(path, (2, 2))])
        second = _classifier(kit)
        assert second.load_checkpoint(path) == {"epoch": 3, "step": 2, "epochs": 5}
        resumed = second.fit(x, y, **args)
    for a, b in zip(full.get_weights(), second.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert resumed.history == expected.history


class FailAt(Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise RuntimeError("killed")


def test_backup_and_restore_at_epoch_ends_resumes_a_stream(kit, tmp_path):
    """BackupAndRestore (every epoch) on batches that go on across epochs: the resumed run
    starts its epoch where the pass was, not at the data's first batch."""
    x, y = make_regression(n=16 * 12)
    batches = _batches(x, y, 16)
    args = dict(epochs=4, steps_per_epoch=3)
    full, _ = _fit(kit, batches, **args)
    backup = BackupAndRestore(str(tmp_path / "backup"), verbose=0)
    with pytest.raises(fitkit.StepFailedError, match="killed"):
        _fit(kit, batches, **args, callbacks=[FailAt(2), backup])
    resumed, history = _fit(kit, batches, **args, callbacks=[FailAt(99), backup])
    assert backup.restored == {"epoch": 3, "step": 0, "epochs": 4} and len(history) == 4
    for a, b in zip(full.get_weights(), resumed.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_backup_and_restore_resumes_a_repeated_dataset(tf_kit, tmp_path):
    tf = tf_kit.tf
    x, y = make_regression(n=160)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(16).repeat()
    args = dict(epochs=4, steps_per_epoch=4)
    full, _ = _fit(tf_kit, ds, **args)
    backup = BackupAndRestore(str(tmp_path / "backup"), save_freq=3, verbose=0)
    with pytest.raises(fitkit.StepFailedError, match="killed"):
        _fit(tf_kit, ds, **args, callbacks=[FailAt(3), backup])
    resumed, _ = _fit(tf_kit, ds, **args, callbacks=[FailAt(99), backup])
    assert backup.restored == {"epoch": 3, "step": 3, "epochs": 4}
    for a, b in zip(full.get_weights(), resumed.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
