"""Backend resolution: FITKIT_BACKEND, aliases, inference from the network, lazy imports."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys

import pytest

import fitkit

backend_mod = importlib.import_module("fitkit.backend")  # the module, not fitkit.backend()


@pytest.mark.parametrize(
    "value, expected",
    [
        ("torch", "torch"),
        ("pytorch", "torch"),
        ("PyTorch", "torch"),
        ("tensorflow", "tensorflow"),
        ("tf", "tensorflow"),
        (" TF ", "tensorflow"),
    ],
)
def test_env_var_and_aliases_resolve(monkeypatch, value, expected):
    monkeypatch.setenv("FITKIT_BACKEND", value)
    assert fitkit.backend() == expected


def test_unset_env_prefers_torch_when_installed(monkeypatch):
    monkeypatch.delenv("FITKIT_BACKEND", raising=False)
    assert fitkit.backend() == "torch"


def test_unset_env_falls_back_to_tensorflow_without_torch(monkeypatch):
    monkeypatch.delenv("FITKIT_BACKEND", raising=False)
    monkeypatch.setattr(backend_mod, "_installed", lambda name: name == "tensorflow")
    assert fitkit.backend() == "tensorflow"


def test_unknown_backend_names_value_and_choices(monkeypatch):
    monkeypatch.setenv("FITKIT_BACKEND", "jax")
    with pytest.raises(fitkit.FitkitError) as info:
        fitkit.backend()
    message = str(info.value)
    assert "'jax'" in message and "torch" in message and "tensorflow" in message


@pytest.mark.slow
@pytest.mark.parametrize(
    "imports, expected, devices",
    [
        ("import tensorflow", "tensorflow", "fitkit.devices.virtual_devices(2)"),
        ("import keras", "tensorflow", "fitkit.devices.virtual_devices(2)"),
        ("import torch", "torch", "fitkit.devices.list_devices()"),
    ],
)
def test_unset_env_follows_the_framework_the_script_imported(imports, expected, devices):
    # a script that imports only TensorFlow gets TensorFlow's devices, torch never loaded
    code = (
        f"{imports}\nimport sys, fitkit\nprint(fitkit.backend(), len({devices}))\n"
        "print(' '.join(m for m in ('torch', 'tensorflow') if m in sys.modules))"
    )
    env = {k: v for k, v in os.environ.items() if k != "FITKIT_BACKEND"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    chosen, count = out.stdout.splitlines()[-2].split()
    assert chosen == expected and int(count) >= (2 if expected == "tensorflow" else 1)
    assert out.stdout.splitlines()[-1].split() == [expected]


def test_missing_backend_names_pip_command(monkeypatch):
    monkeypatch.setattr(backend_mod, "_installed", lambda name: False)
    with pytest.raises(fitkit.BackendError, match="pip install"):
        backend_mod.adapter_module("tensorflow")
    monkeypatch.delenv("FITKIT_BACKEND", raising=False)
    with pytest.raises(fitkit.BackendError, match="pip install"):
        fitkit.backend()


def _modules_after(code: str, env_backend: str | None = None) -> set[str]:
    import os

    env = {k: v for k, v in os.environ.items() if k != "FITKIT_BACKEND"}
    if env_backend:
        env["FITKIT_BACKEND"] = env_backend
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            code + "\nimport sys\nprint(' '.join(m for m in "
            "('torch', 'tensorflow', 'keras') if m in sys.modules))",
        ],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return set(out.stdout.split())


def test_import_fitkit_imports_no_framework():
    assert _modules_after("import fitkit; fitkit.backend()") == set()


def test_torch_fit_never_imports_tensorflow():
    code = (
        "import numpy as np, torch, fitkit\n"
        "m = fitkit.Model(torch.nn.Linear(3, 1)); m.compile('adam', 'mse', ['mae'])\n"
        "m.fit(np.ones((8, 3), 'float32'), np.ones((8, 1), 'float32'), verbose=0)\n"
        "m.predict(np.ones((2, 3), 'float32')); m.summary((3,), print_fn=None)"
    )
    assert _modules_after(code) == {"torch"}


def test_tensorflow_fit_never_imports_torch():
    code = (
        "import numpy as np, keras, fitkit\n"
        "net = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])\n"
        "m = fitkit.Model(net); m.compile('adam', 'mse', ['mae'])\n"
        "m.fit(np.ones((8, 3), 'float32'), np.ones((8, 1), 'float32'), verbose=0)\n"
        "m.predict(np.ones((2, 3), 'float32')); m.summary((3,), print_fn=None)"
    )
    assert "torch" not in _modules_after(code, "tensorflow")


def test_model_infers_backend_from_network(kit):
    assert fitkit.Model(kit.mlp(3, 1)).backend == kit.name


def test_network_of_the_other_backend_mentions_env_var(monkeypatch, torch_kit):
    monkeypatch.setenv("FITKIT_BACKEND", "tensorflow")
    with pytest.raises(fitkit.BackendError, match="FITKIT_BACKEND"):
        fitkit.Model(torch_kit.mlp(3, 1))


@pytest.mark.parametrize("not_a_net", [object(), "net", [1, 2, 3]])
def test_non_network_is_refused_with_accepted_types(not_a_net):
    with pytest.raises(fitkit.FitkitTypeError, match=r"torch.nn.Module.*keras.Model"):
        fitkit.Model(not_a_net)


def test_set_seed_makes_two_fits_identical(kit, regression):
    x, y = regression
    runs = []
    for _ in range(2):
        fitkit.set_seed(7)
        model = fitkit.Model(kit.mlp(4, 1))
        model.compile("adam", "mse")
        runs.append(model.fit(x, y, epochs=2, verbose=0).history["loss"])
    assert runs[0] == runs[1]
