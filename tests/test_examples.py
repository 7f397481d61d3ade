"""The examples run as a newcomer runs them, on both backends, and print what they promise."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str, backend: str, *args: str) -> str:
    env = {
        **os.environ,
        "FITKIT_BACKEND": backend,
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "PYTHONPATH": str(EXAMPLES.parent),
    }
    done = subprocess.run(
        [sys.executable, name, *args],
        cwd=EXAMPLES,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.parametrize("backend", ["torch", "tensorflow"])
def test_quickstart_prints_table_and_learns(backend, tmp_path):
    out = run_example("quickstart.py", backend, "--out", str(tmp_path))
    assert (tmp_path / "quickstart_history.png").exists() and "saved" in out
    assert "Total params: 1,185" in out and "| epoch |" in out and "val_accuracy" in out
    accuracy = float(out.split("validate:")[1].split("'accuracy': ")[1].split(",")[0])
    assert accuracy > 0.9


@pytest.mark.parametrize("backend", ["torch", "tensorflow"])
def test_quickstart_quick_mode_trains_two_epochs(backend, tmp_path):
    out = run_example("quickstart.py", backend, "--quick", "--out", str(tmp_path))
    assert out.count("| epoch |") == 2 and (tmp_path / "quickstart_history.png").exists()


@pytest.mark.parametrize("backend", ["torch", "tensorflow"])
def test_class_style_example(backend):
    out = run_example("class_style.py", backend)
    assert out.count("Epoch ") == 4 and "val_mae" in out


def test_train_on_batch_example():
    out = run_example("train_on_batch.py", "torch")
    assert out.count("epoch ") == 3 and "'accuracy'" in out
