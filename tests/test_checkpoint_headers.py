"""Edited checkpoint headers and another optimizer's checkpoints: load_checkpoint checks every
field of the header against the model and refuses, naming the file, before any weight,
optimizer state, metric state or history changes."""

from __future__ import annotations

import copy
import re

import numpy as np
import pytest
from conftest import make_classes

import fitkit
from fitkit.callbacks import BackupAndRestore, Callback, EarlyStopping
from fitkit.checkpoint import load_state, save_state

REMOVED = object()


def _net(kit):
    if kit.name == "torch":
        nn = kit.torch.nn
        return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(0.2), nn.Linear(8, 3))
    import keras

    return keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dropout(0.2),
            keras.layers.Dense(3),
        ]
    )


def _model(kit, optimizer="adam", seed=0):
    fitkit.set_seed(seed)
    model = fitkit.Model(_net(kit))
    model.compile(optimizer, "cross_entropy", metrics=["accuracy"], lr=0.01, lr_schedule="cosine")
    return model


class SaveAt(Callback):
    """Save a checkpoint after step ``step`` of epoch 2 and stop (Ctrl-C)."""

    def __init__(self, path, step=3):
        super().__init__()
        self.path, self.step = path, step

    def on_train_batch_end(self, batch, logs=None):
        if (self.model.runtime.fit.epoch, batch + 1) == (1, self.step):
            self.model.save_checkpoint(self.path)
            raise KeyboardInterrupt


def _mid_epoch_checkpoint(kit, path, optimizer="adam"):
    x, y = make_classes(n=96, d=4)
    model = _model(kit, optimizer)
    with pytest.raises(KeyboardInterrupt):
        model.fit(
            x,
            y,
            batch_size=16,
            epochs=3,
            verbose=0,
            validation_data=(x[:32], y[:32]),
            callbacks=[EarlyStopping("loss", patience=5), SaveAt(path)],
        )
    return x, y


def _trained(kit, x, y, seed=7):
    """Another model with state of its own (weights, optimizer, metrics, history) to keep."""
    model = _model(kit, seed=seed)
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, validation_data=(x[:32], y[:32]))
    return model


def _snapshot(model):
    arrays, meta = model.runtime.adapter.get_state()
    return arrays, meta, copy.deepcopy(model.history.history), model.runtime.pending


def _assert_same(before, after):
    arrays, meta, history, resume = before
    new_arrays, new_meta, new_history, new_resume = after
    assert sorted(arrays) == sorted(new_arrays)
    for key in arrays:
        assert arrays[key].tobytes() == new_arrays[key].tobytes(), key
    assert meta == new_meta and history == new_history and resume is new_resume


def _walk(node, path=()):
    items = (
        node.items()
        if isinstance(node, dict)
        else enumerate(node)
        if isinstance(node, list)
        else ()
    )
    for key, value in items:
        yield path + (key,), value
        yield from _walk(value, path + (key,))


def _wrong_type(value):
    if isinstance(value, str):
        return 7
    if value is None:
        return {"x": 1}
    return "x"


def _edits(meta):
    """(where, what, new value) for every field: removed, of a wrong type, one element more
    or fewer, and each number in the network's and optimizer's lists (shapes, parameter
    indices) changed."""
    for path, value in _walk(meta):
        if not isinstance(path[-1], int):
            yield path, "removed", REMOVED
        yield path, "wrong type", _wrong_type(value)
        if isinstance(value, list) and value:
            yield path, "one more", value + [copy.deepcopy(value[-1])]
            yield path, "one fewer", value[:-1]
        if (
            path[0] in ("net", "optimizer") and isinstance(path[-1], int) and type(value) is int
        ):  # a number of a shape, a parameter's index
            yield path, "changed", value + 1


def _edited(meta, path, value):
    meta = copy.deepcopy(meta)
    node = meta
    for key in path[:-1]:
        node = node[key]
    if value is REMOVED:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return meta


def _free(path, what):
    """Edits a load by hand may take (they are not tried): a history column removed (the
    history's columns are the user's), which keys a TensorFlow step returned (only ever
    added to), and the saved callbacks' states (checked against the callbacks of the fit
    that uses them: see the next test)."""
    return (
        (path[:2] == ("history", "history") and len(path) == 3 and what == "removed")
        or (path[0] == "logs" and path[2:] == ("returned",) and what == "one fewer")
        or path[:2] == ("fit", "callbacks")
    )


@pytest.mark.slow
def test_every_edited_header_field_is_refused_before_anything_changes(kit, tmp_path):
    good = str(tmp_path / "good.fitkit")
    x, y = _mid_epoch_checkpoint(kit, good)
    arrays, meta = load_state(good)
    assert meta["fit"]["step"] == 3 and meta["scheduler"]  # the fields worth editing
    model = _trained(kit, x, y)
    before = _snapshot(model)
    path = str(tmp_path / "edited.fitkit")
    refused = 0
    for where, what, value in _edits(meta):
        if _free(where, what):
            continue
        save_state(path, arrays, _edited(meta, where, value))
        with pytest.raises(fitkit.FitkitError) as info:
            model.load_checkpoint(path)
        message = str(info.value)
        assert repr(path) in message and re.search("edited|match|optimizer", message), (
            where,
            what,
            message,
        )
        _assert_same(before, _snapshot(model))
        refused += 1
    assert refused > 200, refused  # every field was tried
    # the model is whole: the unedited file loads, and the fit goes on from it
    assert model.load_checkpoint(good) == {"epoch": 2, "step": 3, "epochs": 3}
    history = model.fit(
        x,
        y,
        batch_size=16,
        epochs=3,
        verbose=0,
        validation_data=(x[:32], y[:32]),
        callbacks=[EarlyStopping("loss", patience=5), SaveAt(path, step=99)],
    )
    assert len(history) == 3 and np.isfinite(history.history["loss"]).all()


class StopAt(Callback):
    """Ctrl-C after step 3 of epoch 2, when ``stop``."""

    def __init__(self, stop=True):
        super().__init__()
        self.stop = stop

    def on_train_batch_end(self, batch, logs=None):
        if self.stop and (self.model.runtime.fit.epoch, batch + 1) == (1, 3):
            raise KeyboardInterrupt


@pytest.mark.parametrize(
    "field,value",
    [
        ("wait", REMOVED),
        ("wait", "two"),
        ("wait", None),
        ("best_epoch", 1.5),
        ("best", [1]),
        ("extra", 1),
    ],
)
def test_an_edited_callback_state_in_a_backup_is_refused_at_train_begin(
    kit, tmp_path, field, value
):
    backup = str(tmp_path / "backup")
    x, y = make_classes(n=64, d=4)

    def callbacks(stop):
        return [
            EarlyStopping("loss", patience=5),
            BackupAndRestore(backup, save_freq=2, verbose=0),
            StopAt(stop),
        ]

    with pytest.raises(KeyboardInterrupt):
        _model(kit).fit(x, y, batch_size=16, epochs=3, verbose=0, callbacks=callbacks(True))
    path = str(tmp_path / "backup" / "backup.fitkit")
    arrays, meta = load_state(path)
    state = meta["fit"]["callbacks"][0]["state"]
    assert meta["fit"]["callbacks"][0]["class"] == "EarlyStopping" and "wait" in state
    if value is REMOVED:
        del state[field]
    else:
        state[field] = value
    save_state(path, arrays, meta)
    other = _model(kit, seed=5)
    weights = other.get_weights()
    with pytest.raises(fitkit.FitkitValueError) as info:
        other.fit(x, y, batch_size=16, epochs=3, verbose=0, callbacks=callbacks(False))
    message = str(info.value)
    assert repr(path) in message and "['fit']['callbacks'][0]['state']" in message, message
    for a, b in zip(weights, other.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert len(other.history) == 0


def test_another_optimizers_checkpoint_is_refused_and_the_model_still_trains(kit, tmp_path):
    """An SGD checkpoint into an Adam model: torch would take it and fail at the next step
    (KeyError: 'betas') with the model unable to train; TensorFlow's variables differ."""
    path = str(tmp_path / "sgd.fitkit")
    x, y = make_classes(n=64, d=4)
    sgd = _model(kit, "sgd")
    sgd.fit(x, y, batch_size=16, epochs=1, verbose=0)
    sgd.save_checkpoint(path)
    adam = _trained(kit, x, y)
    before = _snapshot(adam)
    with pytest.raises(fitkit.FitkitValueError) as info:
        adam.load_checkpoint(path)
    message = str(info.value)
    assert repr(path) in message
    if kit.name == "torch":
        assert "optimizer state of SGD" in message and "optimizer is Adam" in message
        assert "compile with the optimizer" in message
    else:
        assert "optimizer variables do not match" in message
    _assert_same(before, _snapshot(adam))
    history = adam.fit(x, y, batch_size=16, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
