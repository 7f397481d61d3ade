"""Exact resume, checkpoints of the whole training state, interrupts and errors mid-fit."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import fitkit
from fitkit.callbacks import BackupAndRestore, Callback
from conftest import make_classes

SCRIPT = os.path.join(os.path.dirname(__file__), "scripts", "train_with_backup.py")


def dropout_net(kit):
    """A small classifier with dropout (so an RNG the resume must restore is in play)."""
    if kit.name == "torch":
        nn = kit.torch.nn
        return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 3))
    import keras

    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(16, activation="relu"),
                             keras.layers.Dropout(0.3), keras.layers.Dense(3)])


def fresh_model(kit):
    fitkit.set_seed(3)
    model = fitkit.Model(dropout_net(kit))
    model.compile("adam", "cross_entropy", metrics=["accuracy"], lr=0.01)
    return model


class StopAt(Callback):
    """Raise ``error`` after train step ``step`` (1-based) of ``epoch`` (0-based)."""

    def __init__(self, epoch, step, error):
        super().__init__()
        self.at, self.error, self.ended = (epoch, step), error, False

    def on_train_batch_end(self, batch, logs=None):
        if (self.model._fit_state.epoch, batch + 1) == self.at:
            raise self.error

    def on_train_end(self, logs=None):
        self.ended = True


# ---------------------------------------------------------------------- by hand
def test_a_checkpoint_saved_mid_epoch_resumes_to_the_uninterrupted_run(kit, tmp_path):
    x, y = make_classes(n=160, d=4)
    full = fresh_model(kit)
    expected = full.fit(x, y, batch_size=16, epochs=3, verbose=0)

    path = str(tmp_path / "mid.fitkit")

    class SaveThenStop(Callback):
        def on_train_batch_end(self, batch, logs=None):
            if (self.model._fit_state.epoch, batch + 1) == (1, 4):
                self.model.save_checkpoint(path)
                raise KeyboardInterrupt

    first = fresh_model(kit)
    with pytest.raises(KeyboardInterrupt):
        first.fit(x, y, batch_size=16, epochs=3, verbose=0, callbacks=[SaveThenStop()])

    second = fresh_model(kit)
    where = second.load_checkpoint(path)
    assert where == {"epoch": 2, "step": 4, "epochs": 3}
    resumed = second.fit(x, y, batch_size=16, epochs=3, verbose=0)
    for a, b in zip(full.get_weights(), second.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert resumed.history == expected.history


def test_load_checkpoint_refuses_another_network_before_changing_anything(kit, tmp_path):
    x, y = make_classes(n=64, d=4)
    model = fresh_model(kit)
    model.fit(x, y, epochs=1, verbose=0)
    model.save_checkpoint(tmp_path / "a.fitkit")
    other = fitkit.Model(kit.mlp(4, 3, hidden=8))
    other.compile("adam", "cross_entropy")
    before = other.get_weights()
    with pytest.raises(fitkit.FitkitValueError, match="do not match"):
        other.load_checkpoint(tmp_path / "a.fitkit")
    for a, b in zip(before, other.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_get_and_set_weights_round_trip(kit):
    model = fresh_model(kit)
    model.fit(*make_classes(n=64, d=4), epochs=1, verbose=0)
    saved = model.get_weights()
    other = fresh_model(kit)
    other.set_weights(saved)
    for a, b in zip(saved, other.get_weights()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(fitkit.FitkitValueError, match="get_weights"):
        other.set_weights(saved[:-1])


# ---------------------------------------------------------------------- interrupts
@pytest.mark.parametrize("error", [KeyboardInterrupt(), ZeroDivisionError("in a callback")])
def test_an_interrupted_fit_keeps_history_runs_train_end_and_leaves_the_model_usable(
        kit, capsys, error):
    x, y = make_classes(n=96, d=4)
    model = fresh_model(kit)
    stop = StopAt(1, 2, error)
    expected = KeyboardInterrupt if isinstance(error, KeyboardInterrupt) else \
        fitkit.StepFailedError
    with pytest.raises(expected):
        model.fit(x, y, batch_size=16, epochs=4, verbose=0, callbacks=[stop])
    assert stop.ended
    assert len(model.history) == 1
    assert "epoch 2, step 2" in model.history.stop_reason
    if isinstance(error, KeyboardInterrupt):
        assert "interrupted (Ctrl-C) at epoch 2, step 2" in capsys.readouterr().err
    if kit.name == "torch":
        assert model.net.training  # the mode it had before fit
    assert model.predict(x[:5]).shape == (5, 3)
    assert len(model.fit(x, y, batch_size=16, epochs=2, verbose=0)) == 2


# ---------------------------------------------------------------------- BackupAndRestore
def test_backup_is_deleted_after_a_complete_fit_and_kept_after_an_interrupt(kit, tmp_path):
    x, y = make_classes(n=64, d=4)
    folder = tmp_path / "backup"
    model = fresh_model(kit)
    with pytest.raises(KeyboardInterrupt):
        model.fit(x, y, batch_size=16, epochs=3, verbose=0,
                  callbacks=[StopAt(1, 1, KeyboardInterrupt()), BackupAndRestore(folder)])
    assert (folder / "backup.fitkit").exists()
    model = fresh_model(kit)
    history = model.fit(x, y, batch_size=16, epochs=3, verbose=0,
                        callbacks=[StopAt(9, 9, None), BackupAndRestore(folder, verbose=0)])
    assert history.epoch == [0, 1, 2]  # the restored first epoch, then two more
    assert not folder.exists()
    kept = tmp_path / "kept"
    fresh_model(kit).fit(x, y, epochs=1, verbose=0,
                         callbacks=[BackupAndRestore(kept, delete_checkpoint=False)])
    assert (kept / "backup.fitkit").exists()


def test_a_backup_made_with_other_callbacks_is_refused_by_name(kit, tmp_path):
    x, y = make_classes(n=64, d=4)
    with pytest.raises(KeyboardInterrupt):
        fresh_model(kit).fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[
            StopAt(1, 1, KeyboardInterrupt()), BackupAndRestore(tmp_path)])
    with pytest.raises(fitkit.FitkitValueError, match="same callbacks"):
        fresh_model(kit).fit(x, y, batch_size=16, epochs=2, verbose=0,
                             callbacks=[BackupAndRestore(tmp_path)])


def test_backup_save_freq_is_checked():
    with pytest.raises(fitkit.FitkitValueError, match="save_freq"):
        BackupAndRestore("b", save_freq=0)


# ---------------------------------------------------------------------- callbacks checked early
def test_a_monitored_key_that_will_never_exist_fails_before_training(kit):
    class Watches(Callback):
        monitor = "val_loss"

    model = fresh_model(kit)
    before = model.get_weights()
    with pytest.raises(fitkit.FitkitValueError, match=r"'val_loss'.*validation_data.*loss, "
                                                      r"accuracy, learning_rate"):
        model.fit(*make_classes(n=32, d=4), epochs=1, verbose=0, callbacks=[Watches()])
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_a_keras_callback_with_a_torch_network_gets_the_fitkit_equivalent_named(torch_kit):
    import keras  # a Keras network runs it (tests/tf/test_keras_callbacks.py)

    model = fresh_model(torch_kit)
    with pytest.raises(fitkit.FitkitTypeError, match="fitkit.callbacks.EarlyStopping"):
        model.fit(*make_classes(n=32, d=4), epochs=1, verbose=0,
                  callbacks=[keras.callbacks.EarlyStopping()])


# ---------------------------------------------------------------------- a real SIGKILL
def _run(*args, expect_kill=False):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, SCRIPT, *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=300)
    if expect_kill:
        assert done.returncode == -9, done.stderr[-2000:]
    else:
        assert done.returncode == 0, done.stderr[-2000:]


def _result(path):
    saved = np.load(path)
    weights = [saved[k] for k in saved.files if k != "history"]
    return weights, json.loads(bytes(saved["history"]))


@pytest.mark.slow
@pytest.mark.parametrize("backend, kill_at, extra", [
    ("torch", (2, 7), ["--arrays"]), ("torch", (0, 5), ["--loader"]),
    ("torch", (1, 5), ["--arrays", "--epoch-saves"]),
    ("tensorflow", (2, 7), ["--arrays"]), ("tensorflow", (1, 5), ["--epoch-saves"])])
def test_a_run_killed_mid_epoch_finishes_bit_identical_to_an_uninterrupted_one(
        tmp_path, backend, kill_at, extra):
    """Backups every 3 steps (resumed mid-epoch) or every epoch (resumed at a boundary)."""
    _run(backend, tmp_path / "unused", tmp_path / "full.npz", *extra)
    backup = tmp_path / "backup"
    _run(backend, backup, tmp_path / "x.npz", *kill_at, *extra, expect_kill=True)
    assert (backup / "backup.fitkit").exists()
    _run(backend, backup, tmp_path / "resumed.npz", *extra)
    full, resumed = _result(tmp_path / "full.npz"), _result(tmp_path / "resumed.npz")
    for a, b in zip(full[0], resumed[0]):
        np.testing.assert_array_equal(a, b)
    assert resumed[1] == full[1]
    assert not backup.exists()  # deleted after the complete run


def test_a_mid_epoch_backup_refuses_other_batches(kit, tmp_path):
    x, y = make_classes(n=64, d=4)
    with pytest.raises(KeyboardInterrupt):
        fresh_model(kit).fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[
            StopAt(0, 3, KeyboardInterrupt()), BackupAndRestore(tmp_path, save_freq=2)])
    with pytest.raises(fitkit.FitkitValueError, match="batch_size=16.*batch_size=32"):
        fresh_model(kit).fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=[
            StopAt(9, 9, None), BackupAndRestore(tmp_path, save_freq=2)])


def test_a_lightning_callback_gets_the_fitkit_equivalent_named(kit):
    # Lightning is not installed here: a class from its module path stands in for it
    LearningRateMonitor = type("LearningRateMonitor", (), {"__module__":
                                                           "lightning.pytorch.callbacks"})
    model = fresh_model(kit)
    with pytest.raises(fitkit.FitkitTypeError,
                       match=r"Lightning callback.*'learning_rate' column"):
        model.fit(*make_classes(n=32, d=4), epochs=1, verbose=0,
                  callbacks=[LearningRateMonitor()])
