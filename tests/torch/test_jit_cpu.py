"""jit_compile=True on torch's CPU: the step's graphs compile once (not per accumulation step
or per window), and the first fit warns with its measured compile time and the advice.

torch.compile runs with the "eager" backend here: dynamo traces, guards and counts graphs
as it does for inductor, without inductor's tens of seconds of code generation.
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
import pytest

import fitkit

torch = pytest.importorskip("torch")
from torch._dynamo.utils import counters  # noqa: E402 - after the importorskip


@pytest.fixture
def eager_backend(monkeypatch):
    monkeypatch.setenv("FITKIT_BACKEND", "torch")
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
    torch._dynamo.reset()
    counters.clear()
    yield counters
    torch._dynamo.reset()


def _compiled(accumulate: int) -> fitkit.Model:
    fitkit.set_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    model = fitkit.Model(net)
    model.compile(
        "adam",
        "cross_entropy",
        metrics=["accuracy"],
        gradient_accumulation_steps=accumulate,
        jit_compile=True,
    )
    return model


def _fit(model: fitkit.Model, epochs: int) -> list:
    """The jit warnings of ``epochs`` epochs over 80 rows (5 full batches of 16 each)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((80, 4)).astype("float32")
    y = rng.integers(0, 3, 80)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(x, y, batch_size=16, epochs=epochs, shuffle=False, verbose=0)
    return [w for w in caught if "jit_compile=True on the CPU" in str(w.message)]


@pytest.mark.parametrize("accumulate", [1, 3])
def test_the_train_step_compiles_once_whatever_the_accumulation(eager_backend, accumulate):
    # with 3 batches per window, windows straddle epochs and fits: each step of a window
    # (backward only, or backward and update) must run the same compiled graphs
    model = _compiled(accumulate)
    _fit(model, 1)
    graphs = eager_backend["stats"]["unique_graphs"]
    assert 1 <= graphs <= 2  # forward, loss and metrics; a resume frame at most
    _fit(model, 3)
    assert eager_backend["stats"]["unique_graphs"] == graphs  # no recompilation
    assert model.history.history["loss"][-1] < model.history.history["loss"][0]


def test_the_first_fit_on_the_cpu_warns_once_with_the_measured_compile_time(eager_backend):
    model = _compiled(1)
    caught = _fit(model, 2)
    assert len(caught) == 1  # the train step's first call only: not each step, not predict
    text = str(caught[0].message)
    assert text.startswith("jit_compile=True on the CPU: torch.compile took ")
    assert " s to compile the train step (its first call)." in text
    assert "compile with jit_compile=False" in text and "benchmarks/jit_cpu.py" in text
    assert _fit(model, 1) == []  # compiled already: no second warning
