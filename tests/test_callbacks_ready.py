"""The ready-made callbacks (Keras's names and rules) on both backends, with real small models.

A LambdaCallback that turns the learning rate negative from epoch 4 (gradient ascent) gives a
validation loss that falls for three epochs and then rises: the best epoch is known (3).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import assert_unchanged, compiled, make_classes, make_regression

import fitkit
from fitkit.callbacks import (
    CallbackList,
    CSVLogger,
    EarlyStopping,
    LambdaCallback,
    LearningRateScheduler,
    ModelCheckpoint,
    ReduceLROnPlateau,
    TensorBoard,
    TerminateOnNaN,
)
from fitkit.callbacks.base import _overrides
from fitkit.errors import FitkitError, FitkitTypeError, FitkitValueError


def _model(kit, lr=0.05, **compile_kwargs):
    model = fitkit.Model(kit.mlp(4, 1))
    model.compile("sgd", "mse", lr=lr, **compile_kwargs)
    return model


def _split(data):
    x, y = data
    return (x[:192], y[:192]), (x[192:], y[192:])


def _ascent_after(model, epoch, lr=0.05):
    """From ``epoch`` on (0-based) the rate is negative: the losses climb again."""
    return LambdaCallback(
        on_epoch_begin=lambda e, logs: setattr(model, "learning_rate", lr if e < epoch else -lr)
    )


def _ext(kit):
    return ".pt" if kit.name == "torch" else ".weights.h5"


# ---------------------------------------------------------------------- EarlyStopping
def test_early_stopping_stops_after_patience_and_restores_best_weights(kit, regression):
    (x, y), val = _split(regression)
    model = _model(kit)
    stop = EarlyStopping("val_loss", patience=2, restore_best_weights=True)
    history = model.fit(
        x, y, epochs=20, validation_data=val, verbose=0, callbacks=[_ascent_after(model, 3), stop]
    )
    val_loss = history.history["val_loss"]
    assert int(np.argmin(val_loss)) == 2 and len(history) == 5  # best epoch 3, then 2 worse
    assert stop.stopped_epoch == 4 and stop.best_epoch == 2
    assert history.stop_reason == (
        f"EarlyStopping: val_loss did not improve for 2 epochs (best {val_loss[2]:.4g} at epoch 3)"
    )
    assert model.validate(*val)["loss"] == pytest.approx(val_loss[2], rel=1e-5)


def test_early_stopping_without_restore_keeps_the_last_weights(kit, regression):
    (x, y), val = _split(regression)
    model = _model(kit)
    history = model.fit(
        x,
        y,
        epochs=20,
        validation_data=val,
        verbose=0,
        callbacks=[_ascent_after(model, 3), EarlyStopping(patience=2)],
    )
    assert model.validate(*val)["loss"] == pytest.approx(history.history["val_loss"][-1], rel=1e-5)


def test_early_stopping_baseline_counts_epochs_that_do_not_beat_it(kit, regression):
    # Keras 3's rule: epochs that improve but stay above the baseline still count, and
    # training stops at the first epoch that does not improve once patience is used up.
    (x, y), val = _split(regression)
    model = _model(kit)
    stop = EarlyStopping(patience=2, baseline=1e-9)
    history = model.fit(
        x, y, epochs=20, validation_data=val, verbose=0, callbacks=[_ascent_after(model, 3), stop]
    )
    assert len(history) == 4
    assert history.stop_reason.startswith("EarlyStopping: val_loss did not beat the baseline")


def test_early_stopping_start_from_epoch_skips_the_warm_up(kit, regression):
    x, y = regression
    for start, trained in [(0, 2), (3, 5)]:
        model = _model(kit)
        model.learning_rate = 0.0  # the loss never changes
        history = model.fit(
            x,
            y,
            epochs=20,
            shuffle=False,
            verbose=0,
            callbacks=[EarlyStopping("loss", start_from_epoch=start)],
        )
        assert len(history) == trained


def test_early_stopping_mode_and_arguments():
    assert EarlyStopping("val_accuracy").mode == "max"
    assert EarlyStopping("out_auc").mode == "max"
    assert EarlyStopping("val_r2_score").mode == "max"
    assert EarlyStopping("val_mae").mode == "min"
    assert EarlyStopping("accuracy_loss").mode == "min"
    assert EarlyStopping("val_accuracy", mode="min").mode == "min"
    with pytest.raises(FitkitValueError, match="mode"):
        EarlyStopping(mode="lowest")
    with pytest.raises(FitkitValueError, match="patience"):
        EarlyStopping(patience=-1)
    with pytest.raises(FitkitTypeError, match="monitor"):
        EarlyStopping(monitor=None)


class _Facade:
    """The facade's surface a callback uses, without a network (Keras's own unit cases)."""

    def __init__(self):
        self.stop_training, self.weights = False, -1
        self.history = fitkit.History()
        self.learning_rate = 0.1

    def get_weights(self):
        return self.weights

    def set_weights(self, weights):
        self.weights = weights


def _run(cb, values, key="val_loss", stop_at=None):
    facade = _Facade()
    cb.set_model(facade)
    cb.on_train_begin()
    trained = 0
    for epoch, value in enumerate(values):
        trained += 1
        facade.weights = epoch
        facade.history.append(epoch, {key: value})
        cb.on_epoch_end(epoch, {key: value})
        if epoch == stop_at:
            facade.stop_training = True
        if facade.stop_training:
            break
    cb.on_train_end()
    return trained, facade


def test_early_stopping_follows_keras_cases():
    trained, facade = _run(
        EarlyStopping(patience=2, restore_best_weights=True), [0.2, 0.15, 0.1, 0.11, 0.12]
    )
    assert (trained, facade.weights) == (5, 2)
    trained, facade = _run(
        EarlyStopping(patience=5, baseline=0.5, restore_best_weights=True),
        [0.9, 0.8, 0.7, 0.71, 0.72, 0.73],
    )
    assert (trained, facade.weights) == (5, 2)
    trained, facade = _run(
        EarlyStopping(patience=5, baseline=0.5, restore_best_weights=True),
        [0.9, 0.8, 0.7, 0.71, 0.72, 0.73],
        stop_at=3,
    )
    assert (trained, facade.weights) == (4, 2)
    trained, _ = _run(EarlyStopping(patience=1, min_delta=0.05), [1.0, 0.97, 0.96, 0.5])
    assert trained == 2  # 0.97 is not 0.05 better than 1.0


def test_early_stopping_state_survives_a_resume():
    stop = EarlyStopping(patience=3)
    _run(stop, [0.5, 0.4, 0.45])
    state = stop.state_dict()
    assert state == {"wait": 1, "best": 0.4, "best_epoch": 1, "stopped_epoch": 0}
    again = EarlyStopping(patience=3)
    again.load_state_dict(state)
    facade = _Facade()
    facade.history.append(0, {"val_loss": 0.5})  # a resumed fit's history holds epochs
    again.set_model(facade)
    again.on_train_begin()
    assert again.state_dict() == state


def test_monitored_key_missing_at_some_epochs_is_skipped_with_one_warning(kit, regression):
    (x, y), val = _split(regression)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = _model(kit).fit(
            x,
            y,
            epochs=5,
            validation_data=val,
            validation_freq=2,
            verbose=0,
            callbacks=[EarlyStopping(patience=1)],
        )
    assert len(history) == 5
    assert (
        sum(
            "EarlyStopping: 'val_loss' is not in this epoch's logs" in str(w.message)
            for w in caught
        )
        == 1
    )


def test_a_key_no_epoch_will_log_fails_at_train_begin(kit, regression):
    model = _model(kit)
    before = model.get_weights()
    with pytest.raises(FitkitValueError, match="EarlyStopping monitors 'val_loss'") as err:
        model.fit(*regression, epochs=2, verbose=0, callbacks=[EarlyStopping()])
    assert "loss" in str(err.value).split("will hold:")[1]
    for a, b in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------------- ReduceLROnPlateau
def _lrs(kit, **kwargs):
    # mode="max" on a falling loss: no epoch after the first improves, a plateau every epoch.
    x, y = make_regression(n=64)
    model = _model(kit, lr=0.01)
    cb = ReduceLROnPlateau("loss", mode="max", **kwargs)
    history = model.fit(x, y, epochs=8, verbose=0, callbacks=[cb])
    return [round(v, 7) for v in history.history["learning_rate"]], model, cb


def test_reduce_lr_on_plateau_lowers_the_rate_after_patience(kit):
    lrs, model, _ = _lrs(kit, factor=0.5, patience=2)
    assert lrs == [0.01, 0.01, 0.01, 0.005, 0.005, 0.0025, 0.0025, 0.00125]
    assert model.learning_rate == pytest.approx(0.00125)  # epoch 8 was the first of a wait


def test_reduce_lr_on_plateau_cooldown_and_min_lr(kit):
    lrs, _, _ = _lrs(kit, factor=0.5, patience=2, cooldown=2)
    assert lrs == [0.01, 0.01, 0.01, 0.005, 0.005, 0.005, 0.0025, 0.0025]
    lrs, _, _ = _lrs(kit, factor=0.5, patience=1, min_lr=0.004)
    assert lrs == [0.01, 0.01, 0.005, 0.004, 0.004, 0.004, 0.004, 0.004]


def test_reduce_lr_on_plateau_arguments_and_state():
    with pytest.raises(FitkitValueError, match="factor"):
        ReduceLROnPlateau(factor=1.0)
    with pytest.raises(FitkitValueError, match="min_lr"):
        ReduceLROnPlateau(min_lr=-1)
    cb = ReduceLROnPlateau(patience=1, factor=0.5)
    _, facade = _run(cb, [1.0, 1.0, 1.0])
    assert facade.learning_rate == pytest.approx(0.025)
    assert cb.state_dict() == {"best": 1.0, "wait": 0, "cooldown_counter": 0}


# ---------------------------------------------------------------------- LearningRateScheduler
def test_learning_rate_scheduler_two_and_one_argument_forms(kit, regression):
    x, y = regression
    history = _model(kit).fit(
        x,
        y,
        epochs=3,
        verbose=0,
        callbacks=[LearningRateScheduler(lambda epoch, lr: lr * 0.5 if epoch else lr)],
    )
    assert history.history["learning_rate"] == pytest.approx([0.05, 0.025, 0.0125])
    history = _model(kit).fit(
        x,
        y,
        epochs=3,
        verbose=0,
        callbacks=[LearningRateScheduler(lambda epoch: 0.1 / (epoch + 1))],
    )
    assert history.history["learning_rate"] == pytest.approx([0.1, 0.05, 0.1 / 3])


def test_learning_rate_scheduler_checks_the_schedule(kit, regression):
    with pytest.raises(FitkitTypeError, match="takes a function"):
        LearningRateScheduler(0.1)
    with pytest.raises(FitkitTypeError, match=r"schedule\(epoch, lr\)"):
        LearningRateScheduler(lambda: 0.1)
    with pytest.raises(FitkitTypeError, match="must return a number"):
        _model(kit).fit(
            *regression,
            epochs=2,
            verbose=0,
            callbacks=[LearningRateScheduler(lambda e, lr: "fast")],
        )
    with pytest.raises(FitkitValueError, match="finite number >= 0"):
        _model(kit).fit(
            *regression,
            epochs=2,
            verbose=0,
            callbacks=[LearningRateScheduler(lambda e, lr: math.nan)],
        )


# ---------------------------------------------------------------------- ModelCheckpoint
def test_model_checkpoint_names_files_from_epoch_and_logs(kit, regression, tmp_path):
    (x, y), val = _split(regression)
    pattern = str(tmp_path / "ckpt" / ("w-{epoch:02d}-{val_loss:.3f}" + _ext(kit)))
    history = _model(kit).fit(
        x, y, epochs=3, validation_data=val, verbose=0, callbacks=[ModelCheckpoint(pattern)]
    )
    expected = sorted(
        f"w-{e + 1:02d}-{v:.3f}{_ext(kit)}" for e, v in enumerate(history.history["val_loss"])
    )
    assert sorted(os.listdir(tmp_path / "ckpt")) == expected


def test_model_checkpoint_save_best_only_keeps_improvements(kit, regression, tmp_path):
    (x, y), val = _split(regression)
    model = _model(kit)
    pattern = str(tmp_path / ("best-{epoch:02d}" + _ext(kit)))
    history = model.fit(
        x,
        y,
        epochs=6,
        validation_data=val,
        verbose=0,
        callbacks=[_ascent_after(model, 3), ModelCheckpoint(pattern, save_best_only=True)],
    )
    assert sorted(os.listdir(tmp_path)) == [f"best-0{e}{_ext(kit)}" for e in (1, 2, 3)]
    model.load_weights(str(tmp_path / f"best-03{_ext(kit)}"))
    assert model.validate(*val)["loss"] == pytest.approx(history.history["val_loss"][2], rel=1e-5)


def test_model_checkpoint_every_n_steps_counts_across_epochs(kit, regression, tmp_path):
    x, y = regression[0][:128], regression[1][:128]  # 4 steps per epoch
    pattern = str(tmp_path / ("s-{epoch}-{batch}" + _ext(kit)))
    cb = ModelCheckpoint(pattern, save_freq=3)
    assert cb.step_interval == 3 and _overrides(cb, "on_train_batch_end")
    _model(kit).fit(x, y, batch_size=32, epochs=3, verbose=0, callbacks=[cb])
    # 12 steps: saved at steps 3, 6, 9, 12, or at the end of the call that ran them
    assert sorted(n.split(".")[0] for n in os.listdir(tmp_path)) == [
        "s-1-3",
        "s-2-2",
        "s-3-1",
        "s-3-4",
    ]
    assert cb.state_dict()["steps_since_save"] == 0
    # Several steps per call (3, then the epoch's last 1): hooks see each call's last step.
    chunked = str(tmp_path / "chunked" / ("s-{epoch}-{batch}" + _ext(kit)))
    _model(kit, steps_per_execution=3).fit(
        x, y, batch_size=32, epochs=3, verbose=0, callbacks=[ModelCheckpoint(chunked, save_freq=3)]
    )
    names = os.listdir(tmp_path / "chunked")
    assert len(names) == 4 and f"s-3-4{_ext(kit)}" in names
    every_two = str(tmp_path / "two" / ("s-{epoch}-{batch}-{loss:.2f}" + _ext(kit)))
    _model(kit).fit(
        x,
        y,
        batch_size=32,
        epochs=2,
        verbose=0,
        callbacks=[ModelCheckpoint(every_two, save_freq=2)],
    )
    assert sorted(n.rsplit("-", 1)[0] for n in os.listdir(tmp_path / "two")) == [
        "s-1-2",
        "s-1-4",
        "s-2-2",
        "s-2-4",
    ]


def test_model_checkpoint_epoch_saves_add_no_batch_hook():
    cb = ModelCheckpoint("w-{epoch}.pt")
    assert not _overrides(cb, "on_train_batch_end") and cb.step_interval is None
    assert type(ModelCheckpoint("w.pt", save_freq=5)).__name__ == "ModelCheckpoint"


def test_model_checkpoint_whole_state_when_not_weights_only(kit, regression, tmp_path):
    path = str(tmp_path / "state-{epoch}.fitkit")
    model = _model(kit)
    model.fit(
        *regression, epochs=2, verbose=0, callbacks=[ModelCheckpoint(path, save_weights_only=False)]
    )
    assert sorted(os.listdir(tmp_path)) == ["state-1.fitkit", "state-2.fitkit"]
    model.load_checkpoint(str(tmp_path / "state-1.fitkit"))
    assert len(model.history) == 1  # saved at the end of epoch 1


def test_model_checkpoint_errors_are_clear_and_early(kit, regression, tmp_path):
    model = _model(kit)
    with pytest.raises(FitkitValueError, match="'val_acc'"):
        model.fit(
            *regression,
            epochs=1,
            verbose=0,
            validation_split=0.25,
            callbacks=[ModelCheckpoint(str(tmp_path / "w-{val_acc:.2f}.pt"))],
        )
    (tmp_path / "folder").mkdir()
    with pytest.raises(FitkitValueError, match="is a folder"):
        model.fit(
            *regression, epochs=1, verbose=0, callbacks=[ModelCheckpoint(str(tmp_path / "folder"))]
        )
    assert os.listdir(tmp_path / "folder") == []
    with pytest.raises(FitkitValueError, match="validation logs"):
        ModelCheckpoint("w-{val_loss}.pt", save_freq=10)
    with pytest.raises(FitkitValueError, match="batch"):
        ModelCheckpoint("w-{batch}.pt")
    with pytest.raises(FitkitValueError, match="positional"):
        ModelCheckpoint("w-{}.pt")
    with pytest.raises(FitkitValueError, match="save_freq"):
        ModelCheckpoint("w.pt", save_freq="step")


def test_model_checkpoint_refuses_a_tf_weights_name_before_training(tf_kit, regression, tmp_path):
    model, net = compiled(tf_kit)
    model.fit(*regression, epochs=1, verbose=0)  # built, so its weights can be compared
    before = tf_kit.weights(net)
    with pytest.raises(FitkitValueError, match=r"'\.weights\.h5'.*save_weights_only=False"):
        model.fit(
            *regression, epochs=2, verbose=0, callbacks=[ModelCheckpoint(str(tmp_path / "b.ckpt"))]
        )
    assert_unchanged(tf_kit, net, before)
    assert os.listdir(tmp_path) == []


def test_model_checkpoint_skips_epochs_without_validation(kit, regression, tmp_path):
    (x, y), val = _split(regression)
    pattern = str(tmp_path / ("w-{epoch}-{val_loss:.2f}" + _ext(kit)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _model(kit).fit(
            x,
            y,
            epochs=4,
            validation_data=val,
            validation_freq=2,
            verbose=0,
            callbacks=[ModelCheckpoint(pattern)],
        )
    assert sorted(n.split("-")[1] for n in os.listdir(tmp_path)) == ["2", "4"]
    assert sum("ModelCheckpoint" in str(w.message) for w in caught) == 1


# ---------------------------------------------------------------------- CSVLogger
def _csv(path, sep=","):
    return pd.read_csv(path, sep=sep)


def test_csv_logger_rows_equal_the_history(kit, regression, tmp_path):
    (x, y), val = _split(regression)
    path = tmp_path / "logs" / "train.csv"
    model = fitkit.Model(kit.mlp(4, 1))
    model.compile("sgd", "mse", metrics=["mae"], lr=0.05)
    history = model.fit(
        x,
        y,
        epochs=3,
        validation_data=val,
        verbose=0,
        callbacks=[CSVLogger(str(path), separator=";")],
    )
    frame = _csv(path, ";")
    assert list(frame.columns) == ["epoch", *sorted(history.history)]
    assert frame["epoch"].tolist() == [0, 1, 2]
    for key, values in history.history.items():
        np.testing.assert_allclose(frame[key], values, rtol=1e-12)


def test_csv_logger_columns_that_appear_later(kit, regression, tmp_path):
    (x, y), val = _split(regression)
    path = tmp_path / "log.csv"
    history = _model(kit).fit(
        x,
        y,
        epochs=4,
        validation_data=val,
        validation_freq=2,
        verbose=0,
        callbacks=[CSVLogger(str(path))],
    )
    frame = _csv(path)
    assert list(frame.columns) == ["epoch", "learning_rate", "loss", "val_loss"]  # sorted, as Keras
    assert open(path).read().splitlines()[1].endswith(",NA")
    np.testing.assert_allclose(frame["val_loss"], history.history["val_loss"])  # NaN == NaN


def test_csv_logger_append_adds_rows_without_a_second_header(kit, regression, tmp_path):
    path = str(tmp_path / "log.csv")
    model = _model(kit)
    model.fit(*regression, epochs=2, verbose=0, callbacks=[CSVLogger(path)])
    model.fit(*regression, epochs=2, verbose=0, callbacks=[CSVLogger(path, append=True)])
    assert _csv(path)["epoch"].tolist() == [0, 1, 0, 1]
    model.fit(*regression, epochs=1, verbose=0, callbacks=[CSVLogger(path)])
    assert _csv(path)["epoch"].tolist() == [0]


def test_csv_logger_on_a_resumed_run_drops_the_rows_it_redoes(kit, regression, tmp_path):
    log, state = str(tmp_path / "log.csv"), str(tmp_path / "state-{epoch}.fitkit")
    model = _model(kit)
    model.fit(
        *regression,
        epochs=4,
        verbose=0,
        callbacks=[CSVLogger(log), ModelCheckpoint(state, save_weights_only=False)],
    )
    model.load_checkpoint(str(tmp_path / "state-2.fitkit"))  # two epochs done
    history = model.fit(*regression, epochs=4, verbose=0, callbacks=[CSVLogger(log)])
    frame = _csv(log)
    assert frame["epoch"].tolist() == [0, 1, 2, 3]
    np.testing.assert_allclose(frame["loss"][2:], history.history["loss"][2:], rtol=1e-12)


def test_a_backup_restore_continues_every_callback(kit, regression, tmp_path):
    """Killed at the start of epoch 4, run again: the files read as one run's, and the
    watching callbacks remember the epochs before the restore."""
    from fitkit.callbacks import BackupAndRestore

    def run(crash_at):
        fitkit.set_seed(0)
        model = _model(kit)

        def crash_then_ascend(epoch, logs):
            if epoch == crash_at:
                raise KeyboardInterrupt
            model.learning_rate = 0.05 if epoch < 3 else -0.05  # the best epoch is 3

        cbs = [
            EarlyStopping(patience=10),
            CSVLogger(str(tmp_path / "log.csv")),
            ModelCheckpoint(str(tmp_path / "c" / ("s-{epoch}-{batch}" + _ext(kit))), save_freq=5),
            LambdaCallback(on_epoch_begin=crash_then_ascend),
            BackupAndRestore(str(tmp_path / "backup"), verbose=0),
        ]
        return model.fit(
            *regression, epochs=6, validation_split=0.25, verbose=0, callbacks=cbs
        ), cbs

    with pytest.raises(KeyboardInterrupt):
        run(crash_at=3)
    history, cbs = run(crash_at=None)
    val_loss = history.history["val_loss"]
    assert len(history) == 6 and cbs[0].best == min(val_loss) == val_loss[2]
    assert cbs[0].best_epoch == 2 and cbs[0].wait == 3  # known only from before the restore
    assert _csv(tmp_path / "log.csv")["epoch"].tolist() == [0, 1, 2, 3, 4, 5]
    # 6 steps an epoch, a save every 5 steps counted across epochs and across the restore
    assert sorted(n.split(".")[0] for n in os.listdir(tmp_path / "c")) == [
        "s-1-5",
        "s-2-4",
        "s-3-3",
        "s-4-2",
        "s-5-1",
        "s-5-6",
        "s-6-5",
    ]


# ---------------------------------------------------------------------- TensorBoard
def _scalars(folder):
    """{tag: {step: value}} of every event file in ``folder`` (simple values or tensors)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util import tensor_util

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    found = {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}
    for tag in acc.Tags()["tensors"]:
        found[tag] = {
            e.step: float(tensor_util.make_ndarray(e.tensor_proto)) for e in acc.Tensors(tag)
        }
    return found


def test_tensorboard_writes_keras_layout_per_epoch(kit, regression, tmp_path):
    pytest.importorskip("tensorboard")
    (x, y), val = _split(regression)
    model = fitkit.Model(kit.mlp(4, 1))
    model.compile("sgd", "mse", metrics=["mae"], lr=0.05)
    cb = TensorBoard(str(tmp_path / "tb"))
    assert not _overrides(cb, "on_train_batch_end")
    history = model.fit(x, y, epochs=3, validation_data=val, verbose=0, callbacks=[cb])
    h = history.history
    train, valid = _scalars(tmp_path / "tb" / "train"), _scalars(tmp_path / "tb" / "validation")
    assert set(train) == {"epoch_loss", "epoch_mae", "epoch_learning_rate"}
    assert set(valid) == {"epoch_loss", "epoch_mae"}
    for tag, key, run in [
        ("epoch_loss", "loss", train),
        ("epoch_mae", "mae", train),
        ("epoch_learning_rate", "learning_rate", train),
        ("epoch_loss", "val_loss", valid),
        ("epoch_mae", "val_mae", valid),
    ]:
        assert sorted(run[tag]) == [0, 1, 2]
        assert [run[tag][e] for e in range(3)] == pytest.approx(h[key], rel=1e-6)


def test_tensorboard_every_n_steps(kit, regression, tmp_path):
    pytest.importorskip("tensorboard")
    x, y = regression[0][:128], regression[1][:128]  # 4 steps per epoch
    cb = TensorBoard(str(tmp_path), update_freq=2, write_lr=False)
    assert cb.step_interval == 2 and _overrides(cb, "on_train_batch_end")
    history = _model(kit).fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=[cb])
    train = _scalars(tmp_path / "train")
    assert sorted(train) == ["batch_loss", "epoch_loss"]
    assert sorted(train["batch_loss"]) == [2, 4, 6, 8]
    assert train["batch_loss"][4] == pytest.approx(history.history["loss"][0], rel=1e-6)
    assert train["batch_loss"][8] == pytest.approx(history.history["loss"][1], rel=1e-6)


def test_tensorboard_missing_package_names_the_extra(kit, regression, tmp_path, monkeypatch):
    for name in [m for m in sys.modules if m.startswith("tensorboard.")] + [
        "fitkit.torch.events",
        "fitkit.tf.events",
    ]:
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    model = _model(kit)
    with pytest.raises(FitkitError, match=r'pip install "fitkit\[tensorboard\]"'):
        model.fit(*regression, epochs=1, verbose=0, callbacks=[TensorBoard(str(tmp_path))])


def test_torch_fit_with_tensorboard_never_imports_tensorflow(tmp_path):
    pytest.importorskip("tensorboard")
    code = (
        "import os, sys, numpy as np, torch\n"
        "os.environ['FITKIT_BACKEND'] = 'torch'\n"
        "import fitkit\n"
        "model = fitkit.Model(torch.nn.Linear(2, 1)); model.compile('sgd', 'mse')\n"
        "x = np.ones((8, 2), 'float32'); y = np.ones((8, 1), 'float32')\n"
        f"cb = fitkit.callbacks.TensorBoard({str(tmp_path)!r}, update_freq=1)\n"
        "model.fit(x, y, epochs=2, verbose=0, callbacks=[cb])\n"
        "print('tensorflow' in sys.modules, sorted(os.listdir(" + repr(str(tmp_path)) + ")))\n"
    )
    out = (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        .stdout.strip()
        .splitlines()[-1]
    )
    assert out == "False ['train']"


# ---------------------------------------------------------------------- TerminateOnNaN
def test_terminate_on_nan_stops_at_a_non_finite_loss(kit, regression):
    model = _model(kit)
    blow_up = LambdaCallback(
        on_epoch_begin=lambda e, logs: setattr(model, "learning_rate", 0.05 if e == 0 else 1e30)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        history = model.fit(
            *regression,
            epochs=5,
            verbose=0,
            terminate_on_nan=False,
            callbacks=[blow_up, TerminateOnNaN()],
        )
    assert len(history) == 2
    assert history.stop_reason.startswith("TerminateOnNaN: the loss became")
    assert "at epoch 2, step" in history.stop_reason


# ---------------------------------------------------------------------- LambdaCallback
def test_lambda_callback_runs_the_given_hooks(kit, regression):
    seen = []
    cb = LambdaCallback(
        on_train_begin=lambda logs: seen.append("begin"),
        on_epoch_end=lambda epoch, logs: seen.append((epoch, "loss" in logs)),
        on_train_batch_end=lambda batch, logs: seen.append(batch),
        on_train_end=lambda logs: seen.append("end"),
    )
    _model(kit).fit(
        regression[0][:64], regression[1][:64], batch_size=32, epochs=2, verbose=0, callbacks=[cb]
    )
    assert seen == ["begin", 0, 1, (0, True), 0, 1, (1, True), "end"]


def test_lambda_callback_batch_hooks_cost_nothing_unless_given():
    epoch_only = LambdaCallback(on_epoch_end=lambda epoch, logs: None)
    assert type(epoch_only).__name__ == "LambdaCallback"
    assert isinstance(epoch_only, LambdaCallback)
    assert not CallbackList([epoch_only], None, {}).wants("on_train_batch_end")
    batch = LambdaCallback(
        on_batch_end=lambda batch, logs: None, on_test_batch_end=lambda batch, logs: None
    )
    hooks = CallbackList([batch, epoch_only], None, {})
    assert hooks.wants("on_train_batch_end") and hooks.wants("on_test_batch_end")
    assert not hooks.wants("on_train_batch_begin")
    with pytest.raises(FitkitTypeError, match="unknown hook 'on_epoch_finish'"):
        LambdaCallback(on_epoch_finish=print)
    with pytest.raises(FitkitTypeError, match="takes a function"):
        LambdaCallback(on_epoch_end=3)


# ---------------------------------------------------------------------- all of them
def _epoch_only(tmp_path, ext):
    return [
        EarlyStopping("loss", patience=5),
        ReduceLROnPlateau("loss", patience=5),
        LearningRateScheduler(lambda epoch, lr: lr),
        CSVLogger(str(tmp_path / "log.csv")),
        ModelCheckpoint(str(tmp_path / ("w-{epoch}" + ext))),
        TensorBoard(str(tmp_path / "tb")),
        LambdaCallback(on_epoch_end=lambda epoch, logs: None),
    ]


def test_epoch_only_callbacks_override_no_batch_hook(tmp_path):
    hooks = CallbackList(_epoch_only(tmp_path, ".pt"), None, {})
    assert not any(hooks.wants(h) for h in hooks.batch_hooks)
    assert hooks.step_interval("train") is None


def test_callback_state_is_json(kit, regression, tmp_path):
    import json

    pytest.importorskip("tensorboard")
    cbs = _epoch_only(tmp_path, _ext(kit))
    _model(kit).fit(*regression, epochs=2, verbose=0, callbacks=cbs)
    states = CallbackList(cbs, None, {}).state_dicts()
    assert json.loads(json.dumps(states)) == states


@pytest.mark.parametrize("log_step_freq", [None, 4])
def test_epoch_only_callbacks_add_no_host_sync(
    torch_kit, tmp_path, torch_sync_counter, log_step_freq
):
    """The sync count of tests/torch/test_torch_adapter.py, with every epoch-only callback."""
    pytest.importorskip("tensorboard")
    calls = torch_sync_counter
    x, y = make_classes(n=512)
    model = fitkit.Model(torch_kit.mlp(4, 3))
    model.compile("adam", "cross_entropy", metrics=["accuracy", "auc", "precision"])
    model.fit(x[:64], y[:64], verbose=0, epochs=1)  # warm-up outside the count
    calls.clear()
    epochs, steps = 3, 16
    model.fit(
        x,
        y,
        batch_size=32,
        epochs=epochs,
        verbose=2,
        log_step_freq=log_step_freq,
        callbacks=_epoch_only(tmp_path, ".pt"),
    )
    log_points = epochs * (1 + (steps // log_step_freq if log_step_freq else 0))
    # label range of the whole y, once before training; the first batch's predictions, once
    # (a logits loss: do they look like softmax probabilities?)
    prepare_checks = 2
    assert len(calls) <= log_points + prepare_checks, calls
