"""Examples 7-9 (four_ways, multi_io, devices) run in quick mode on both backends.

Each example prints one ``RESULT key=value ...`` line and a ``saved <path>`` line for its PNG;
devices.py also runs under ``fitkit launch -n 2`` (torch DDP over 2 CPU processes).
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"
BACKENDS = ["torch", "tensorflow"]


def run_quick(args: list[str], backend: str, out: pathlib.Path) -> str:
    """``python <args> --quick --out <out>`` in examples/, on ``backend``; its stdout."""
    env = {
        **os.environ,
        "FITKIT_BACKEND": backend,
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "PYTHONPATH": str(EXAMPLES.parent),
        "MPLBACKEND": "Agg",
    }
    # One OpenMP thread unless told otherwise: on a loaded machine torch's spinning OpenMP
    # threads lose many times over (see tests/test_examples_tutorial.py).
    env.setdefault("OMP_NUM_THREADS", "1")
    done = subprocess.run(
        [sys.executable, *args, "--quick", "--out", str(out)],
        cwd=EXAMPLES,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done.stdout


def result(out: str) -> dict[str, float]:
    """The values of the one RESULT line (a ``[rank 0] `` prefix allowed) as a dict."""
    lines = [line.split("RESULT ", 1)[1] for line in out.splitlines() if "RESULT " in line]
    assert len(lines) == 1, out[-2000:]
    return {key: float(value) for key, value in (pair.split("=") for pair in lines[0].split())}


def assert_saved(out: str, folder: pathlib.Path, name: str) -> None:
    """The PNG is in the --out folder, is a PNG, and its path was printed."""
    saved = [line.split("saved ", 1)[1] for line in out.splitlines() if "saved " in line]
    path = folder / name
    assert saved == [str(path)], saved
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_four_ways_agree(backend, tmp_path):
    out = run_quick(["four_ways.py"], backend, tmp_path)
    values = result(out)
    assert values["max_diff"] < 1e-4, values
    assert values["final_loss"] < 0.69, values  # it learns: below log(2) after 3 epochs
    table = out.split("training loss per epoch")[1]
    assert all(name in table for name in ("script", "function", "train_on_batch", "fit"))
    assert "===== script style" in out and "Finished Training" in out
    assert_saved(out, tmp_path, "four_ways_history.png")


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_multi_io_per_output_logs(backend, tmp_path):
    out = run_quick(["multi_io.py"], backend, tmp_path)
    values = result(out)
    assert values["segment_accuracy"] > 0.6, values  # 3 balanced classes: chance is 1/3
    assert values["spend_mae"] < 0.8, values
    assert "['loss', 'segment_loss', 'spend_loss', 'segment_accuracy', 'spend_mae']" in out
    assert "val_segment_accuracy" in out and "val_spend_mae" in out
    assert "predict returns the dict: {'segment': (3, 3), 'spend': (3, 1)}" in out
    assert_saved(out, tmp_path, "multi_io_history.png")


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_devices_one_process(backend, tmp_path):
    out = run_quick(["devices.py"], backend, tmp_path)
    values = result(out)
    assert "memory_growth(True) -> " in out and "\ndevices:\n" in out
    if backend == "tensorflow":  # the CPU split in two, MirroredStrategy over both
        assert "/device:CPU:1" in out and "strategy 'mirrored'" in out
        assert (values["replicas"], values["world_size"]) == (2, 1), values
    else:
        assert "strategy 'none': process rank 0 of world size 1" in out
        assert (values["replicas"], values["world_size"]) == (1, 1), values
    assert values["final_loss"] < 0.5, values
    assert_saved(out, tmp_path, "devices_history.png")


@pytest.mark.slow
@pytest.mark.parametrize("backend, strategy", [("torch", "ddp"), ("tensorflow", "multi_worker")])
def test_devices_under_fitkit_launch(backend, strategy, tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # 2 CPU processes, also on a 1-GPU machine
    launch = ["-m", "fitkit.cli", "launch", "-n", "2", "--backend", backend, "devices.py"]
    out = run_quick(launch, backend, tmp_path)
    values = result(out)
    assert (values["replicas"], values["world_size"]) == (2, 2), values
    for rank in (0, 1):  # every process says who it is; only rank 0 reports
        assert f"[rank {rank}] strategy '{strategy}': process rank {rank} of world size 2" in out
    assert "[rank 1] RESULT" not in out and "[rank 0] RESULT" in out
    assert "[rank 1] devices:" not in out and "[rank 0] devices:" in out
    assert_saved(out, tmp_path, "devices_history.png")
    # The global batch is split over the 2 processes: the numbers of one process.
    single = result(run_quick(["devices.py"], backend, tmp_path / "single"))
    assert abs(values["final_loss"] - single["final_loss"]) < 1e-3, (values, single)
