"""Shared fixtures: a tiny network and data for each backend, behind one small Kit interface.

Tests that take ``kit`` run once per backend; ``kit.mlp(...)`` builds the same network
on either framework, so facade tests read the same for torch and TensorFlow.
"""

from __future__ import annotations

import os
import pathlib
import select

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest -n N: N workers share the cores, so each (and the subprocesses it starts) runs
    # its framework on one thread instead of N threads each fighting for every core. Set
    # before torch or TensorFlow is imported: both read these when their thread pools start.
    # (TF's inter-op pool keeps its size: mirrored all-reduces over logical devices need
    # more than one thread.)
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS"):
        os.environ[_var] = "1"

import numpy as np
import pytest

import fitkit
from fitkit import heartbeat, launch

SLOW_LIST = pathlib.Path(__file__).with_name("slow_tests.txt")


def _slow_entries() -> list[str]:
    lines = SLOW_LIST.read_text(encoding="utf-8").splitlines()
    return [line.split()[0] for line in lines if line.strip() and not line.startswith("#")]


# Modules whose subprocesses run coverage-free: they re-run whole fits (examples, killed and
# resumed runs, SIGTERM reruns) whose code the in-process tests already cover, and tracing
# them cost 1.5x their time (test_resume's killed runs: 135 s against 92 s on 2 workers).
# Subprocess tests of code that runs only there (launch, distribute, hung ranks) keep it.
NO_SUBPROCESS_COVERAGE = {
    "test_resume",
    "test_signals",
    "test_examples",
    "test_examples_more",
    "test_examples_tutorial",
    "test_example_seq2seq",
    "test_example_deploy",
}


@pytest.fixture(autouse=True)
def _subprocess_coverage(request, monkeypatch):
    """coverage's subprocess patch starts tracing in a child that inherits
    COVERAGE_PROCESS_CONFIG; the listed modules' children do not get it."""
    if request.module.__name__.rsplit(".", 1)[-1] in NO_SUBPROCESS_COVERAGE:
        monkeypatch.delenv("COVERAGE_PROCESS_CONFIG", raising=False)


def pytest_collection_modifyitems(config, items) -> None:
    """Mark the tests listed in slow_tests.txt ``slow``. A listed test function that its
    module no longer defines (renamed, removed) is a usage error: the list cannot go stale
    unnoticed."""
    entries = set(_slow_entries())
    modules = {}
    for item in items:
        if item.nodeid.split("[")[0] in entries or item.nodeid in entries:
            item.add_marker(pytest.mark.slow)
        module = getattr(item, "module", None)
        if module is not None:
            modules[item.nodeid.split("::")[0]] = module
    stale = []
    ids = {item.nodeid for item in items}
    # a parametrization's id (a docs snippet's line number) is checked too, where whole
    # functions were collected (no node id given on the command line)
    whole = not any("::" in str(arg) for arg in config.args)
    for entry in sorted(entries):
        path, *names = entry.split("[")[0].split("::")
        if path in modules:
            owner = modules[path]
            for name in names:
                owner = getattr(owner, name, None)
            if owner is None or (whole and "[" in entry and entry not in ids):
                stale.append(entry)
    if stale:
        raise pytest.UsageError(f"{SLOW_LIST} names tests that do not exist: {stale}")


class TorchKit:
    name = "torch"

    def __init__(self):
        import torch

        self.torch = torch

    def mlp(self, n_in: int, n_out: int, hidden: int = 16, out_activation: str | None = None):
        nn = self.torch.nn
        layers = [nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, n_out)]
        if out_activation == "sigmoid":
            layers.append(nn.Sigmoid())
        elif out_activation == "softmax":
            layers.append(nn.Softmax(dim=-1))
        return nn.Sequential(*layers)

    def two_input_net(self, n_a: int, n_b: int, n_out: int = 1):
        nn, torch = self.torch.nn, self.torch

        class TwoInputs(nn.Module):
            def __init__(self):
                super().__init__()
                self.a = nn.Linear(n_a, 8)
                self.b = nn.Linear(n_b, 8)
                self.head = nn.Linear(16, n_out)

            def forward(self, a, b):
                return self.head(torch.relu(torch.cat([self.a(a), self.b(b)], dim=-1)))

        return TwoInputs()

    def tensor(self, array):
        return self.torch.as_tensor(array)

    def weights(self, net) -> list[np.ndarray]:
        return [p.detach().cpu().numpy().copy() for p in net.parameters()]

    def native_optimizer(self, net, lr=0.01):
        return self.torch.optim.SGD(net.parameters(), lr=lr)

    def native_loss(self):
        return self.torch.nn.MSELoss()

    def weights_path(self, tmp_path):
        return str(tmp_path / "w.pt")


class TFKit:
    name = "tensorflow"

    def __init__(self):
        import keras
        import tensorflow as tf

        self.keras, self.tf = keras, tf

    def mlp(self, n_in: int, n_out: int, hidden: int = 16, out_activation: str | None = None):
        layers = self.keras.layers
        return self.keras.Sequential(
            [
                self.keras.Input((n_in,)),
                layers.Dense(hidden, activation="relu"),
                layers.Dense(n_out, activation=out_activation),
            ]
        )

    def two_input_net(self, n_a: int, n_b: int, n_out: int = 1):
        keras = self.keras
        a, b = keras.Input((n_a,), name="a"), keras.Input((n_b,), name="b")
        h = keras.layers.Concatenate()([keras.layers.Dense(8)(a), keras.layers.Dense(8)(b)])
        out = keras.layers.Dense(n_out)(keras.layers.ReLU()(h))
        return keras.Model({"a": a, "b": b}, out)

    def tensor(self, array):
        return self.tf.convert_to_tensor(array)

    def weights(self, net) -> list[np.ndarray]:
        return [np.array(v) for v in net.trainable_variables]

    def native_optimizer(self, net, lr=0.01):
        return self.keras.optimizers.SGD(learning_rate=lr)

    def native_loss(self):
        return self.keras.losses.MeanSquaredError()

    def weights_path(self, tmp_path):
        return str(tmp_path / "w.weights.h5")


_KITS = {"torch": TorchKit, "tensorflow": TFKit}


@pytest.fixture(params=["torch", "tensorflow"])
def kit(request, monkeypatch):
    """One backend's helpers; FITKIT_BACKEND is set to match for the test's duration."""
    monkeypatch.setenv("FITKIT_BACKEND", request.param)
    fitkit.set_seed(0)
    return _KITS[request.param]()


@pytest.fixture
def torch_kit(monkeypatch):
    monkeypatch.setenv("FITKIT_BACKEND", "torch")
    fitkit.set_seed(0)
    return TorchKit()


@pytest.fixture
def tf_kit(monkeypatch):
    monkeypatch.setenv("FITKIT_BACKEND", "tensorflow")
    fitkit.set_seed(0)
    return TFKit()


def compiled(kit, n_in: int = 4, n_out: int = 1, loss="mse", **compile_kwargs):
    """A tiny MLP of ``kit``'s backend, compiled with SGD: (model, native net)."""
    net = kit.mlp(n_in, n_out)
    model = fitkit.Model(net)
    model.compile("sgd", loss, **compile_kwargs)
    return model, net


def assert_unchanged(kit, net, before) -> None:
    """The network's weights equal ``before`` (nothing trained, nothing loaded)."""
    for a, b in zip(before, kit.weights(net), strict=True):
        np.testing.assert_array_equal(a, b)


def make_regression(n: int = 256, d: int = 4, seed: int = 0):
    """y = x · w + small noise, shaped (n, 1), float32."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype("float32")
    w = rng.standard_normal((d, 1)).astype("float32")
    return x, (x @ w + 0.01 * rng.standard_normal((n, 1))).astype("float32")


def make_classes(n: int = 300, d: int = 4, classes: int = 3, seed: int = 0):
    """Separable-ish classes: label = argmax of a fixed linear map of x; int64 labels."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype("float32")
    w = rng.standard_normal((d, classes)).astype("float32")
    return x, np.argmax(x @ w, axis=1).astype("int64")


@pytest.fixture
def regression():
    return make_regression()


@pytest.fixture
def classes():
    return make_classes()


SYNC_METHODS = ("item", "tolist", "cpu", "numpy", "__float__", "__int__", "__bool__", "__index__")


@pytest.fixture
def torch_sync_counter(monkeypatch):
    """Names of every call that reads a torch tensor's value into Python, in order."""
    import torch

    calls = []
    for name in SYNC_METHODS:
        original = getattr(torch.Tensor, name)

        def counting(self, *args, _original=original, _name=name, **kwargs):
            calls.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counting)
    return calls


def process_gone(pid: int, within: float = 10.0) -> bool:
    """``pid`` (any process, not only a child) exits within ``within`` seconds: waited for on a
    Linux pidfd, which becomes readable when the process ends (a zombie counts as ended)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True  # already gone and reaped
    try:
        readable, _, _ = select.select([fd], [], [], within)
        return bool(readable)
    finally:
        os.close(fd)


# ---------------------------------------------------------------- fitkit's CLI in a subprocess
# what a test's own launch must not inherit from a launch the suite itself runs under
_LAUNCH_VARS = (
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "MASTER_ADDR",
    "MASTER_PORT",
    "TF_CONFIG",
    "TORCHELASTIC_RUN_ID",
    "FITKIT_BACKEND",
    heartbeat.ENV,
    launch.TIMEOUT_ENV,
)


def cli_env(**extra: str) -> dict[str, str]:
    """This process's environment without launch and backend variables, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in _LAUNCH_VARS}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    env.update(extra)
    return env


def fitkit_cli(*args: str, env: dict | None = None, timeout: float = 120):
    """``python -m fitkit.cli *args``, its output captured."""
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "fitkit.cli", *args],
        capture_output=True,
        text=True,
        env=env or cli_env(),
        timeout=timeout,
    )
