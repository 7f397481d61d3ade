"""The tutorial's examples run in quick mode on both backends, learn, and save their plots.

Each example prints one ``RESULT key=value ...`` line and a ``saved <path>`` line per PNG; the
thresholds below are for ``--quick`` (small data, few epochs) and leave a wide margin.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"
BACKENDS = ["torch", "tensorflow"]


def run_quick(name: str, backend: str, out: pathlib.Path) -> str:
    env = {
        **os.environ,
        "FITKIT_BACKEND": backend,
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "PYTHONPATH": str(EXAMPLES.parent),
        "MPLBACKEND": "Agg",
    }
    # One OpenMP thread unless told otherwise: tests may share the cores with other
    # processes, and torch's spinning OpenMP threads then lose several times over
    # (cnn_digits --quick on torch: 12 s with one thread, 62 s with two on a loaded 2-core box).
    env.setdefault("OMP_NUM_THREADS", "1")
    done = subprocess.run(
        [sys.executable, name, "--quick", "--out", str(out)],
        cwd=EXAMPLES,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def result(out: str) -> dict[str, float]:
    """The values of the RESULT line: ``RESULT accuracy=0.95 top2=0.99`` -> a dict."""
    lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
    assert len(lines) == 1, out[-2000:]
    return {key: float(value) for key, value in (pair.split("=") for pair in lines[0].split()[1:])}


def assert_saved(out: str, tmp_path: pathlib.Path, names: list[str]) -> None:
    """Each PNG is in the --out folder, is a PNG, and its path was printed."""
    saved = [line.split(" ", 1)[1] for line in out.splitlines() if line.startswith("saved ")]
    for name in names:
        path = tmp_path / name
        assert str(path) in saved, saved
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_linear_regression_three_levels(backend, tmp_path):
    out = run_quick("linear_regression.py", backend, tmp_path)
    errors = result(out)
    assert set(errors) == {"low_error", "mid_error", "high_error"}
    # The largest distance of w1, w2 and b from 2, -3 and 3, for each level.
    assert all(error < 0.3 for error in errors.values()), errors
    assert "low level" in out and "mid level" in out and "high level" in out
    assert_saved(out, tmp_path, ["linear_regression_history.png"])


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_dnn_binary_rings(backend, tmp_path):
    out = run_quick("dnn_binary.py", backend, tmp_path)
    values = result(out)
    assert values["accuracy"] > 0.8 and values["auc"] > 0.85, values
    assert_saved(out, tmp_path, ["dnn_binary_history.png", "dnn_binary_boundary.png"])


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_cnn_digits(backend, tmp_path):
    out = run_quick("cnn_digits.py", backend, tmp_path)
    assert result(out)["accuracy"] > 0.6  # 10 classes; full mode reaches 0.95 or more
    assert "val_accuracy" in out
    assert_saved(out, tmp_path, ["cnn_digits_history.png"])


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_text_classification_varying_lengths(backend, tmp_path):
    out = run_quick("text_classification.py", backend, tmp_path)
    values = result(out)
    assert values["accuracy"] > 0.6 and values["top2"] > 0.8, values
    assert values["top2"] >= values["accuracy"]
    widths = out.split("padded widths of the first batches: [")[1].split("]")[0]
    assert len({int(w) for w in widths.split(",")}) > 1  # batches padded to their own length
    assert_saved(out, tmp_path, ["text_classification_history.png"])
