"""Keras callbacks under fitkit's fit run as under keras.Model.fit: the hooks with Keras's
logs, self.model the Keras network, stop_training honoured, the optimizer's rate read and
set; Keras's built-ins give Keras's results."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from conftest import make_classes

import fitkit


def _pair(tf_kit):
    """A Keras network compiled by Keras and its twin wrapped by fitkit (same weights)."""
    import keras

    theirs, ours = tf_kit.mlp(4, 3), tf_kit.mlp(4, 3)
    ours.set_weights(theirs.get_weights())
    theirs.compile(
        keras.optimizers.SGD(0.1),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model = fitkit.Model(ours)
    model.compile("sgd", "cross_entropy", metrics=["accuracy"], lr=0.1)
    return theirs, model


def _fit_both(tf_kit, make_callbacks, epochs=6):
    x, y = make_classes(n=128, d=4)
    theirs, model = _pair(tf_kit)
    kwargs = dict(
        batch_size=32, epochs=epochs, shuffle=False, verbose=0, validation_data=(x[:64], y[:64])
    )
    expected = theirs.fit(x, y, callbacks=make_callbacks("keras"), **kwargs).history
    history = model.fit(x, y, callbacks=make_callbacks("fitkit"), **kwargs).history
    return expected, history, theirs, model


def test_a_users_keras_callback_sees_keras_logs_and_its_stop_is_honoured(tf_kit):
    import keras

    class StopWhenGood(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seen, self.batches = [], 0

        def on_train_batch_end(self, batch, logs=None):
            self.batches += 1

        def on_epoch_end(self, epoch, logs=None):
            self.seen.append((epoch, sorted(logs), type(self.model).__name__))
            if epoch == 1:
                self.model.stop_training = True

    made = {}
    expected, history, _, _ = _fit_both(tf_kit, lambda who: [made.setdefault(who, StopWhenGood())])
    assert len(history["loss"]) == len(expected["loss"]) == 2
    ours, theirs = made["fitkit"], made["keras"]
    assert ours.batches == theirs.batches == 8
    assert [(e, n) for e, _, n in ours.seen] == [(e, n) for e, _, n in theirs.seen]
    for (_, keys, _), (_, keras_keys, _) in zip(ours.seen, theirs.seen, strict=True):
        assert set(keras_keys) <= set(keys) | {"learning_rate"}


def test_a_keras_callback_reads_and_sets_the_learning_rate(tf_kit):
    import keras

    class Halve(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            rate = float(self.model.optimizer.learning_rate)
            self.model.optimizer.learning_rate = rate / 2

    expected, history, _theirs, model = _fit_both(tf_kit, lambda who: [Halve()], epochs=3)
    assert model.learning_rate == pytest.approx(0.1 / 8)
    np.testing.assert_allclose(history["loss"], expected["loss"], rtol=1e-5)


@pytest.mark.parametrize(
    "make",
    [
        lambda k, d: k.callbacks.EarlyStopping(
            "val_loss", patience=1, min_delta=0.05, restore_best_weights=True
        ),
        lambda k, d: k.callbacks.ReduceLROnPlateau(
            "val_loss", factor=0.5, patience=0, min_delta=0.05
        ),
        lambda k, d: k.callbacks.LearningRateScheduler(lambda epoch, lr: lr * 0.7),
        lambda k, d: k.callbacks.TerminateOnNaN(),
        lambda k, d: k.callbacks.CSVLogger(str(d / "log.csv")),
        lambda k, d: k.callbacks.ModelCheckpoint(
            str(d / "best.weights.h5"), "val_loss", save_best_only=True, save_weights_only=True
        ),
        lambda k, d: k.callbacks.TensorBoard(str(d / "tb")),
    ],
    ids=[
        "EarlyStopping",
        "ReduceLROnPlateau",
        "LearningRateScheduler",
        "TerminateOnNaN",
        "CSVLogger",
        "ModelCheckpoint",
        "TensorBoard",
    ],
)
def test_keras_builtin_callbacks_give_kerass_results(tf_kit, tmp_path, make):
    import keras

    dirs = {"keras": tmp_path / "keras", "fitkit": tmp_path / "fitkit"}
    for d in dirs.values():
        d.mkdir()
    expected, history, theirs, model = _fit_both(tf_kit, lambda who: [make(keras, dirs[who])])
    assert len(history["loss"]) == len(expected["loss"])
    for key in ("loss", "val_loss", "accuracy"):
        np.testing.assert_allclose(history[key], expected[key], rtol=1e-5, atol=1e-6)
    for a, b in zip(model.net.get_weights(), theirs.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    if "learning_rate" in expected:
        np.testing.assert_allclose(history["learning_rate"], expected["learning_rate"], rtol=1e-6)
    files = sorted(p.name for p in dirs["keras"].iterdir())
    assert sorted(p.name for p in dirs["fitkit"].iterdir()) == files
    if "log.csv" in files:
        rows = [list(csv.DictReader(open(dirs[w] / "log.csv"))) for w in ("keras", "fitkit")]
        assert [r["epoch"] for r in rows[0]] == [r["epoch"] for r in rows[1]]
        np.testing.assert_allclose(
            [float(r["loss"]) for r in rows[1]], [float(r["loss"]) for r in rows[0]], rtol=1e-5
        )


def test_a_keras_callback_on_a_torch_network_is_refused(torch_kit):
    import keras

    x, y = make_classes(n=32, d=4)
    model = fitkit.Model(torch_kit.mlp(4, 3))
    model.compile("sgd", "cross_entropy")
    with pytest.raises(fitkit.FitkitTypeError, match="Keras callback"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[keras.callbacks.EarlyStopping()])


def test_kerass_backup_and_restore_becomes_fitkits_which_resumes_mid_epoch(tf_kit, tmp_path):
    import keras

    x, y = make_classes(n=128, d=4)
    _, model = _pair(tf_kit)
    backup = keras.callbacks.BackupAndRestore(
        str(tmp_path / "backup"), save_freq=2, delete_checkpoint=False
    )
    model.fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=[backup])
    assert any((tmp_path / "backup").iterdir())  # fitkit's backup files, kept as asked
