"""Weight files on both backends: all-or-nothing loads, damaged and foreign files, atomic
saves, strict=False reports, tied weights and wrapper prefixes (torch)."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest

import fitkit


def _unchanged(kit, net, before):
    for a, b in zip(before, kit.weights(net), strict=True):
        np.testing.assert_array_equal(a, b)


def _refused(kit, net, path, match, **kwargs):
    """load_weights raises a FitkitValueError naming the file and ``match``; nothing changes."""
    before = kit.weights(net)
    with pytest.raises(fitkit.FitkitValueError) as info:
        fitkit.Model(net).load_weights(path, **kwargs)
    message = str(info.value)
    assert path in message
    assert re.search(match, message), message
    _unchanged(kit, net, before)
    return message


def _saved(kit, tmp_path, name=None, **mlp):
    path = str(tmp_path / name) if name else kit.weights_path(tmp_path)
    net = kit.mlp(4, 1, **mlp)
    fitkit.Model(net).save_weights(path)
    return net, path


# ---------------------------------------------------------------------- all or nothing
def test_a_later_misfit_leaves_every_weight_unchanged(kit, tmp_path):
    """The first layers fit, the last does not: a layer-by-layer loader would change the first."""
    _, path = _saved(kit, tmp_path)
    net = kit.mlp(4, 2)
    message = _refused(kit, net, path, "another architecture.*shape mismatches")
    assert "nothing was loaded" in message and "strict=False" in message


def test_a_full_load_returns_empty_lists_and_copies_every_weight(kit, tmp_path):
    saved, path = _saved(kit, tmp_path)
    net = kit.mlp(4, 1)
    assert fitkit.Model(net).load_weights(path) == {
        "missing": [],
        "unexpected": [],
        "mismatched": [],
    }
    _unchanged(kit, net, kit.weights(saved))


def test_strict_false_loads_what_matches_and_reports_the_rest(kit, tmp_path):
    saved, path = _saved(kit, tmp_path)
    net = kit.mlp(4, 2)
    before = kit.weights(net)
    with pytest.warns(UserWarning, match="strict=False.*skipped.*shape mismatches"):
        report = fitkit.Model(net).load_weights(path, strict=False)
    assert len(report["mismatched"]) == 2 and not report["missing"] and not report["unexpected"]
    after, theirs = kit.weights(net), kit.weights(saved)
    np.testing.assert_array_equal(after[0], theirs[0])  # first layer loaded
    np.testing.assert_array_equal(after[1], theirs[1])
    np.testing.assert_array_equal(after[2], before[2])  # last layer kept
    np.testing.assert_array_equal(after[3], before[3])


def test_strict_false_refuses_a_file_where_nothing_matches(kit, tmp_path):
    _, path = _saved(kit, tmp_path)
    net = kit.mlp(3, 2, hidden=5)
    _refused(kit, net, path, "Nothing .* matches", strict=False)


# ---------------------------------------------------------------------- damaged, foreign
def _damage(path: str, how: str) -> None:
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        if how == "truncated":
            f.write(data[: len(data) // 2])
        elif how == "random":
            f.write(b"garbage!" + np.random.default_rng(0).bytes(400))
        # "empty": nothing


@pytest.mark.parametrize("how", ["truncated", "random", "empty"])
def test_damaged_files_are_refused(kit, tmp_path, how):
    _, path = _saved(kit, tmp_path)
    _damage(path, how)
    _refused(kit, kit.mlp(4, 1), path, "truncated|corrupt|empty")


def test_a_missing_file_or_a_folder_is_refused(kit, tmp_path):
    _refused(kit, kit.mlp(4, 1), str(tmp_path / "nothing" / "w.bin"), "No weights file")
    _refused(kit, kit.mlp(4, 1), str(tmp_path), "folder")


def _foreign_files(kit, tmp_path) -> list[tuple[str, str]]:
    """(path, expected cause) of files the other framework wrote."""
    if kit.name == "torch":
        import h5py

        path = str(tmp_path / "keras.weights.h5")
        with h5py.File(path, "w") as f:
            f.create_dataset("layers/dense/vars/0", data=np.zeros((4, 16), "float32"))
        return [(path, "HDF5")]
    import torch
    from safetensors.torch import save_file

    state = torch.nn.Linear(4, 1).state_dict()
    save_file(state, str(tmp_path / "w.safetensors"))
    torch.save(state, str(tmp_path / "w.pt"))
    torch.save(state, str(tmp_path / "disguised.weights.h5"))
    return [
        (str(tmp_path / "w.safetensors"), "safetensors"),
        (str(tmp_path / "w.pt"), "torch.save"),
        (str(tmp_path / "disguised.weights.h5"), "torch.save"),
    ]


def test_files_of_the_other_framework_are_refused(kit, tmp_path):
    for path, cause in _foreign_files(kit, tmp_path):
        _refused(kit, kit.mlp(4, 1), path, cause)


class _Whole:
    """A pickled object that is not a tensor (unpickling it would import this module)."""


@pytest.mark.parametrize("payload", ["module", "object"])
def test_torch_pickled_objects_are_refused_for_safety(torch_kit, tmp_path, payload):
    import torch

    path = str(tmp_path / "whole.pt")
    net = torch_kit.mlp(4, 1)
    torch.save(net if payload == "module" else {"w": torch.ones(1), "o": _Whole()}, path)
    before = torch_kit.weights(net)
    with pytest.raises(fitkit.FitkitValueError) as info:
        fitkit.Model(net).load_weights(path)
    message = str(info.value)
    assert path in message and "safety" in message and "arbitrary code" in message
    assert "state_dict()" in message and "save_weights" in message
    assert "weights_only" not in message
    assert info.value.__cause__ is None and info.value.__suppress_context__
    _unchanged(torch_kit, net, before)


def test_torch_non_state_dict_files_are_refused(torch_kit, tmp_path):
    import torch

    path = str(tmp_path / "ckpt.pt")
    torch.save({"epoch": 3, "state_dict": torch_kit.mlp(4, 1).state_dict()}, path)
    _refused(torch_kit, torch_kit.mlp(4, 1), path, "not a state dict.*state_dict")


# ---------------------------------------------------------------------- saving
def test_save_creates_missing_folders(kit, tmp_path):
    path = str(tmp_path / "a" / "b" / os.path.basename(kit.weights_path(tmp_path)))
    net = kit.mlp(4, 1)
    fitkit.Model(net).save_weights(path)
    other = kit.mlp(4, 1)
    fitkit.Model(other).load_weights(path)
    _unchanged(kit, other, kit.weights(net))
    assert os.listdir(tmp_path / "a" / "b") == [os.path.basename(path)]  # no temp files left


def test_save_under_a_file_names_the_path(kit, tmp_path):
    (tmp_path / "plain").write_text("not a folder")
    for path in (
        str(tmp_path / "plain" / "w.weights.h5"),
        str(tmp_path / "plain" / "deeper" / "w.weights.h5"),
    ):
        with pytest.raises(fitkit.FitkitValueError, match=re.escape(path)):
            fitkit.Model(kit.mlp(4, 1)).save_weights(path)


def test_save_into_a_read_only_folder_names_the_path(kit, tmp_path):
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        pytest.skip("root writes through chmod; test_save_under_a_file covers unwritable paths")
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        path = str(folder / "w.weights.h5")
        with pytest.raises(fitkit.FitkitValueError, match=re.escape(path)):
            fitkit.Model(kit.mlp(4, 1)).save_weights(path)
    finally:
        folder.chmod(0o700)


def test_a_crash_while_saving_keeps_the_previous_file(kit, tmp_path, monkeypatch):
    _net, path = _saved(kit, tmp_path)
    old = open(path, "rb").read()

    def crash(obj, target):  # torch.save(state, file) / bytes_to(temp path, data)
        if isinstance(target, str):
            with open(target, "wb") as f:
                f.write(b"half a file")
        else:
            target.write(b"half a file")
        raise OSError(28, "No space left on device")

    if kit.name == "torch":
        import torch

        monkeypatch.setattr(torch, "save", crash)
    else:
        from fitkit.tf import weights as tf_weights

        monkeypatch.setattr(tf_weights, "bytes_to", lambda tmp, data: crash(data, tmp))
    with pytest.raises(fitkit.FitkitValueError, match=re.escape(path) + ".*No space left"):
        fitkit.Model(kit.mlp(4, 1)).save_weights(path)
    assert open(path, "rb").read() == old
    assert os.listdir(tmp_path) == [os.path.basename(path)]


# ---------------------------------------------------------------------- ties, prefixes
def _tied_torch():
    import torch

    class Tied(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Embedding(6, 4)
            self.b = torch.nn.Linear(4, 6, bias=False)
            self.b.weight = self.a.weight

        def forward(self, x):
            return self.b(self.a(x))

    return Tied()


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_torch_tied_weights_round_trip_and_stay_tied(torch_kit, tmp_path, suffix):
    path = str(tmp_path / f"tied{suffix}")
    saved = _tied_torch()
    fitkit.Model(saved).save_weights(path)
    net = _tied_torch()
    assert fitkit.Model(net).load_weights(path)["missing"] == []
    assert net.a.weight is net.b.weight
    np.testing.assert_array_equal(
        net.a.weight.detach().cpu().numpy(), saved.a.weight.detach().cpu().numpy()
    )


def test_torch_tie_saved_once_by_safetensors_save_model_loads(torch_kit, tmp_path):
    from safetensors.torch import save_model

    saved, path = _tied_torch(), str(tmp_path / "m.safetensors")
    save_model(saved, path)
    net = _tied_torch()
    fitkit.Model(net).load_weights(path)
    assert net.a.weight is net.b.weight
    np.testing.assert_array_equal(
        net.b.weight.detach().cpu().numpy(), saved.a.weight.detach().cpu().numpy()
    )


def test_keras_shared_layer_round_trips(tf_kit, tmp_path):
    import keras

    def shared():
        dense, inp = keras.layers.Dense(4), keras.Input((4,))
        return keras.Model(inp, dense(dense(inp)))

    path = str(tmp_path / "s.weights.h5")
    saved, net = shared(), shared()
    fitkit.Model(saved).save_weights(path)
    fitkit.Model(net).load_weights(path)
    _unchanged(tf_kit, net, tf_kit.weights(saved))


@pytest.mark.parametrize(
    "wrap_saved, wrap_loaded",
    [("dp", None), (None, "dp"), ("compile", None), (None, "compile"), ("dp", "compile")],
)
def test_torch_wrapper_prefixes_are_set_aside(torch_kit, tmp_path, wrap_saved, wrap_loaded):
    import torch

    def wrap(net, how):
        return {"dp": torch.nn.DataParallel, "compile": torch.compile, None: lambda n: n}[how](net)

    saved, net = torch_kit.mlp(4, 1), torch_kit.mlp(4, 1)
    path = str(tmp_path / "w.safetensors")
    fitkit.Model(wrap(saved, wrap_saved)).save_weights(path)
    report = fitkit.Model(wrap(net, wrap_loaded)).load_weights(path)
    assert report == {"missing": [], "unexpected": [], "mismatched": []}
    _unchanged(torch_kit, net, torch_kit.weights(saved))
