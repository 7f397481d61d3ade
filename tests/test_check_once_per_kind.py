"""The first-batch check's forward pass runs once per kind of input (structure, dtypes,
shapes past the batch dimension) and mode since compile, not once per fit; the targets are
still checked on every call, and a new kind of input gets the whole check again."""

from __future__ import annotations

import numpy as np
import pytest

import fitkit

torch = pytest.importorskip("torch")


@pytest.fixture
def counted(monkeypatch):
    """A compiled torch model and the list its network's forward calls append to."""
    monkeypatch.setenv("FITKIT_BACKEND", "torch")
    fitkit.set_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    calls: list = []
    net.register_forward_hook(lambda module, args, out: calls.append(tuple(args[0].shape)))
    model = fitkit.Model(net)
    model.compile("adam", "cross_entropy", metrics=["accuracy"])
    return model, calls


def _data(rows: int = 32, width: int = 4, classes: int = 3):
    rng = np.random.default_rng(0)
    return rng.standard_normal((rows, width)).astype("float32"), rng.integers(0, classes, rows)


def test_a_second_fit_on_the_same_kind_of_input_runs_no_extra_forward_pass(counted):
    model, calls = counted
    x, y = _data()
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert len(calls) == 3  # the check's pass, then 2 steps
    calls.clear()
    model.fit(x[:24], y[:24], batch_size=8, epochs=1, verbose=0)  # other rows, same kind
    assert len(calls) == 3  # 3 steps, no check pass
    calls.clear()
    model.validate(x, y, batch_size=16)  # another mode: checked once
    model.validate(x, y, batch_size=16)
    assert len(calls) == 1 + 2 + 2


def test_the_targets_are_still_checked_on_every_fit(counted):
    model, _ = counted
    x, y = _data()
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    with pytest.raises(fitkit.errors.FitkitValueError, match="label"):
        model.fit(x, y + 5, batch_size=16, epochs=1, verbose=0)  # labels past 3 classes


def test_another_kind_of_input_and_a_new_compile_get_the_whole_check(counted):
    model, calls = counted
    x, y = _data()
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    wide, _ = _data(width=5)
    with pytest.raises(fitkit.errors.FitkitValueError, match="first batch of inputs"):
        model.fit(wide, y, batch_size=16, epochs=1, verbose=0)
    model.compile("adam", "cross_entropy", metrics=["accuracy"])
    calls.clear()
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert len(calls) == 3  # checked again after compile
