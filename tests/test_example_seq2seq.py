"""examples/seq2seq_dates.py runs in quick mode on both backends, learns, and saves its plots.

Quick mode trains 3 epochs on 2000 dates; its greedy exact-match on 1000 held-out dates came
out at 0.93 (torch) and 0.89 (TensorFlow), so the threshold below leaves a wide margin.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


def run_quick(backend: str, out: pathlib.Path) -> str:
    env = {
        **os.environ,
        "FITKIT_BACKEND": backend,
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "PYTHONPATH": str(EXAMPLES.parent),
        "MPLBACKEND": "Agg",
    }
    # One OpenMP thread unless told otherwise: on a shared, loaded machine torch's spinning
    # OpenMP threads lose several times over.
    env.setdefault("OMP_NUM_THREADS", "1")
    done = subprocess.run(
        [sys.executable, "seq2seq_dates.py", "--quick", "--out", str(out)],
        cwd=EXAMPLES,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["torch", "tensorflow"])
def test_seq2seq_dates_translates(backend, tmp_path):
    out = run_quick(backend, tmp_path)
    lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
    assert len(lines) == 1, out[-2000:]
    key, value = lines[0].split()[1].split("=")
    assert key == "exact_match" and float(value) > 0.5, lines[0]
    # The class-style steps logged both exact accuracies, for training and validation.
    assert "val_sequence_accuracy" in out and "val_accuracy" in out
    assert out.count(" -> ") >= 6  # a few example translations
    suffix = ".pt" if backend == "torch" else ".weights.h5"
    assert (tmp_path / f"seq2seq_dates_best{suffix}").is_file()  # ModelCheckpoint's file
    saved = [line.split(" ", 1)[1] for line in out.splitlines() if line.startswith("saved ")]
    for name in ["seq2seq_dates_history.png", "seq2seq_dates_attention.png"]:
        path = tmp_path / name
        assert str(path) in saved, saved
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
