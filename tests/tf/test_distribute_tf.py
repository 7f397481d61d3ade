"""fitkit.distribute on TensorFlow: strategy names and errors in this process; MirroredStrategy
on 2 logical CPUs and MultiWorkerMirroredStrategy with 2 local workers in subprocesses (logical
devices and collectives are set up before TensorFlow initialises), each compared with training
on one device on the same global batches.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

import fitkit
from fitkit import launch
from fitkit.errors import FitkitError, FitkitValueError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPTS = os.path.join(ROOT, "tests", "scripts")


# A run that takes longer has hung. The runs take 15-40 s alone; on 2 loaded cores, with
# coverage tracing the subprocess (about 1.6x), they took over 90 s.
SLOW_RUN_S = 240


def _env(**extra: str) -> dict:
    env = dict(
        os.environ,
        FITKIT_BACKEND="tensorflow",
        TF_CPP_MIN_LOG_LEVEL="2",
        PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
    )
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


# ---------------------------------------------------------------------- in this process
def _net():
    fitkit.set_seed(1)
    return keras.Sequential(
        [keras.Input((5,)), keras.layers.Dense(4, activation="relu"), keras.layers.Dense(2)]
    )


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 5)).astype("float32")
    return x, (x[:, 0] > 0).astype("int64")


def test_ddp_is_torchs_and_names_the_tf_strategies(tf_kit):
    with pytest.raises(FitkitValueError, match="torch") as err:
        with fitkit.distribute.strategy("ddp"):
            pass
    assert "mirrored" in str(err.value) and "multi_worker" in str(err.value)
    assert fitkit.distribute.active() is None


def test_multi_worker_without_tf_config_says_how_to_start(tf_kit, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(FitkitError, match="fitkit launch -n N") as err:
        with fitkit.distribute.strategy("multi_worker"):
            pass
    assert "TF_CONFIG" in str(err.value)


def test_auto_without_gpus_is_none_and_trains_as_usual(tf_kit, monkeypatch):
    from fitkit.tf import distribute

    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert distribute.default_name() == "none"  # no GPU here (several would be "mirrored")
    x, y = _data()
    with fitkit.distribute.strategy("auto") as s:
        assert (s.name, s.replicas, s.rank, s.world_size) == ("none", 1, 0, 1)
        model = fitkit.Model(_net())
        model.compile("sgd", "cross_entropy", metrics=["accuracy"])
        fitkit.distribute.barrier()
    assert model.runtime.adapter.replicas is None  # the one-device path, unchanged
    plain = fitkit.Model(_net())
    plain.compile("sgd", "cross_entropy", metrics=["accuracy"])
    a = model.fit(x, y, batch_size=16, shuffle=False, verbose=0).history
    b = plain.fit(x, y, batch_size=16, shuffle=False, verbose=0).history
    assert a == b


def test_mirrored_on_one_device_trains_through_the_replicas_path(tf_kit):
    """One logical CPU here: a 1-replica MirroredStrategy, same numbers as no strategy."""
    x, y = _data()
    with fitkit.distribute.strategy("mirrored") as s:
        assert (s.name, s.rank, s.world_size, fitkit.distribute.is_main_process()) == (
            "mirrored",
            0,
            1,
            True,
        )
        model = fitkit.Model(_net())
        model.compile("adam", "cross_entropy", metrics=["accuracy"])
        history = model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    assert model.runtime.adapter.replicas is not None
    plain = fitkit.Model(_net())
    plain.compile("adam", "cross_entropy", metrics=["accuracy"])
    expected = plain.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    np.testing.assert_allclose(history.history["loss"], expected.history["loss"], atol=1e-6)
    assert history.history["accuracy"] == expected.history["accuracy"]
    np.testing.assert_allclose(model.predict(x, batch_size=16), plain.predict(x), atol=1e-5)
    arrays, _ = model.runtime.adapter.get_state()  # mirrored values read back as numpy
    assert np.isfinite(arrays["net/0"]).all()


def test_network_built_outside_the_strategy_is_refused(tf_kit):
    net = _net()
    with fitkit.distribute.strategy("mirrored"):
        model = fitkit.Model(net)
        with pytest.raises(FitkitValueError, match="build the network inside"):
            model.compile("adam", "mse")


def test_optimizer_made_outside_the_strategy_is_refused(tf_kit):
    optimizer = keras.optimizers.Adam()
    with fitkit.distribute.strategy("mirrored"):
        model = fitkit.Model(_net())
        with pytest.raises(FitkitValueError, match="optimizer='adam'"):
            model.compile(optimizer, "mse")


def test_compile_outside_the_block_is_refused(tf_kit):
    with fitkit.distribute.strategy("mirrored"):
        model = fitkit.Model(_net())
    with pytest.raises(FitkitValueError, match="inside the same `with` block"):
        model.compile("adam", "mse")


def test_unsupported_controls_under_a_strategy_say_so(tf_kit):
    with fitkit.distribute.strategy("mirrored"):
        model = fitkit.Model(_net())
        with pytest.raises(FitkitValueError, match=r"jit_compile=True.*not supported"):
            model.compile("adam", "mse", jit_compile=True)


# ---------------------------------------------------------------------- MirroredStrategy
def _compare(strategy: str, cases: list[str], timeout: float = SLOW_RUN_S) -> None:
    out = subprocess.run(
        [sys.executable, os.path.join(SCRIPTS, "tf_mirrored.py"), strategy, *cases],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=_env(),
    )
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads(out.stdout.strip().splitlines()[-1])
    for case in cases:
        single, distributed = results[case]["single"], results[case]["distributed"]
        assert results[case]["replicas"] == 2, case
        for a, b in zip(single["weights"], distributed["weights"], strict=True):
            np.testing.assert_allclose(b, a, atol=1e-5, rtol=0, err_msg=case)
        assert single["history"].keys() == distributed["history"].keys(), case
        for key, values in single["history"].items():
            np.testing.assert_allclose(
                distributed["history"][key], values, atol=1e-6, rtol=0, err_msg=f"{case}: {key}"
            )
        np.testing.assert_allclose(
            distributed["predict"],
            single["predict"],
            atol=1e-5,
            err_msg=f"{case}: predict (order kept)",
        )
        for key, value in single["validate"].items():
            assert distributed["validate"][key] == pytest.approx(value, abs=1e-6), case


def test_mirrored_two_devices_equals_one_device():
    """Arrays with an uneven last batch (100 rows, batch 32) and one where a replica gets
    no row (batch 33), tf.data, shuffled epochs, batch-style calls: same weights, history
    (accuracy exact over both replicas), validate and predictions in order."""
    _compare("mirrored", ["arrays", "odd", "dataset", "shuffle", "batch"])


@pytest.mark.slow
def test_mirrored_controls_outputs_and_checkpoints_equal_one_device():
    """Gradient accumulation (a partial last window), global clipping, R2 (a shared shift),
    two outputs with per-output losses, generators, save/load of a checkpoint, a class-style
    train_step that scales its loss with fitkit.tf.distribute.replica_share."""
    _compare("mirrored", ["accumulate", "clip", "r2", "multi", "generator", "checkpoint", "custom"])


@pytest.mark.slow
def test_central_storage_equals_one_device():
    _compare("central_storage", ["arrays", "r2"])


# ---------------------------------------------------------------------- MultiWorkerMirrored
def _launch(mode: str, out: str, timeout: float) -> subprocess.CompletedProcess:
    """tf_multi_worker.py in 2 local workers, started by ``fitkit launch -n 2`` (TF_CONFIG
    on free loopback ports)."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "fitkit.cli",
            "launch",
            "-n",
            "2",
            "--backend",
            "tensorflow",
            os.path.join(SCRIPTS, "tf_multi_worker.py"),
            mode,
        ],
        cwd=ROOT,
        timeout=timeout,
        env=_env(FITKIT_TEST_OUT=out),
        capture_output=True,
        text=True,
    )


@pytest.mark.slow
def test_multi_worker_two_processes_equal_one_process(tmp_path):
    """Each worker seeds differently: the shuffle (and the initial weights) are worker 0's."""
    single = tmp_path / "single.json"
    out = subprocess.run(
        [sys.executable, os.path.join(SCRIPTS, "tf_multi_worker.py"), "single"],
        cwd=ROOT,
        env=_env(FITKIT_TEST_OUT=str(single)),
        capture_output=True,
        text=True,
        timeout=SLOW_RUN_S,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    run = _launch("train", str(tmp_path / "workers.json"), timeout=SLOW_RUN_S)
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    expected = json.loads(single.read_text())
    got = json.loads((tmp_path / "workers.json").read_text())
    assert (got["rank"], got["world_size"]) == (0, 2)
    for a, b in zip(expected["weights"], got["weights"], strict=True):
        np.testing.assert_allclose(b, a, atol=1e-5, rtol=0)
    for key, values in expected["history"].items():
        np.testing.assert_allclose(got["history"][key], values, atol=1e-6, rtol=0, err_msg=key)
    np.testing.assert_allclose(got["predict"], expected["predict"], atol=1e-5)
    for key, value in expected["validate"].items():
        assert got["validate"][key] == pytest.approx(value, abs=1e-6)


@pytest.mark.slow
def test_multi_worker_crash_ends_the_run(tmp_path):
    """Worker 1 fails in epoch 2: the run ends non-zero (worker 0 does not hang)."""
    start = time.monotonic()
    run = _launch("crash", str(tmp_path / "never.json"), timeout=SLOW_RUN_S)
    assert run.returncode != 0, (run.stdout + run.stderr)[-3000:]
    # well before the launcher's own no-progress watch (launch.TIMEOUT_S) would end a hang
    assert time.monotonic() - start < launch.TIMEOUT_S / 2
    assert not (tmp_path / "never.json").exists()
