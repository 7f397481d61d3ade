"""The few torch / safetensors errors fitkit must tell apart by their text (no type exists):
each is provoked for real here, so a torch that rewords one fails this file, not a user."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from fitkit.torch import summary, weights


def _load_error(path: str) -> BaseException:
    with pytest.raises(weights._UNREADABLE) as info:
        torch.load(path, map_location="cpu", weights_only=True)
    return info.value


def test_a_pickled_module_is_told_from_a_damaged_file(tmp_path):
    whole = str(tmp_path / "whole.pt")
    torch.save(torch.nn.Linear(2, 2), whole)
    refused = _load_error(whole)
    assert isinstance(refused, pickle.UnpicklingError) and weights._refused_global(refused)

    damaged = str(tmp_path / "damaged.pt")
    torch.save(torch.nn.Linear(2, 2).state_dict(), damaged, _use_new_zipfile_serialization=False)
    data = bytearray(open(damaged, "rb").read())
    data[len(data) // 3 : len(data) // 3 + 40] = b"\xff" * 40  # garbled pickle opcodes
    open(damaged, "wb").write(bytes(data))
    broken = _load_error(damaged)
    assert not weights._refused_global(broken)


def test_damaged_files_raise_the_listed_types(tmp_path):
    rng = np.random.default_rng(0)
    saved = str(tmp_path / "w.pt")
    torch.save(torch.nn.Linear(4, 3).state_dict(), saved)
    data = open(saved, "rb").read()
    for i, damaged in enumerate(
        [data[: len(data) // 2], b"garbage!" + rng.bytes(400), data[:20] + rng.bytes(300)]
    ):
        path = str(tmp_path / f"d{i}.pt")
        open(path, "wb").write(damaged)
        assert not weights._refused_global(_load_error(path))


def test_an_embedding_given_floats_is_an_index_error():
    with pytest.raises(RuntimeError) as info:
        torch.nn.Embedding(5, 2)(torch.zeros(3))
    assert summary.index_error(info.value)
    with pytest.raises(RuntimeError) as other:
        torch.nn.Linear(3, 2)(torch.zeros(2, 4))  # a shape mismatch is not one
    assert not summary.index_error(other.value)


def test_a_safetensors_write_error_gives_its_errno(tmp_path):
    safetensors = pytest.importorskip("safetensors.torch")
    with pytest.raises(weights._safetensors().SafetensorError) as info:
        safetensors.save_file({"w": torch.ones(2)}, str(tmp_path / "missing" / "w.safetensors"))
    err = weights._os_error(info.value)
    assert isinstance(err, FileNotFoundError), info.value
