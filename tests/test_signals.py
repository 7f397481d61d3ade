"""SIGTERM during fit: it stops at the next step boundary as Ctrl-C does, BackupAndRestore
writes a backup there, on_train_end runs, the process ends by SIGTERM, and the rerun finishes
bit-identical to an uninterrupted run. The handler exists only in the main thread during fit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest
from conftest import make_classes

import fitkit
import fitkit.signals
from fitkit.callbacks import BackupAndRestore, Callback

SCRIPT = os.path.join(os.path.dirname(__file__), "scripts", "train_sigterm.py")


def _run(backend, backup, out, *extra, env=None):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
    return subprocess.run(
        [sys.executable, SCRIPT, backend, str(backup), str(out), *extra],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def _result(path):
    saved = np.load(path)
    return ([saved[k] for k in saved.files if k != "history"], json.loads(bytes(saved["history"])))


# ---------------------------------------------------------------------- in a real process
@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """backend -> (weights, history) of the script run without a signal: the same for every
    signal case of that backend, so it runs once per backend (per test process)."""
    runs: dict[str, tuple] = {}

    def run(backend: str) -> tuple:
        if backend not in runs:
            folder = tmp_path_factory.mktemp(f"uninterrupted-{backend}")
            done = _run(backend, folder / "unused", folder / "full.npz")
            assert done.returncode == 0, done.stderr[-2000:]
            runs[backend] = _result(folder / "full.npz")
        return runs[backend]

    return run


@pytest.mark.slow
@pytest.mark.parametrize(
    "backend, at", [("torch", (1, 4)), ("tensorflow", (1, 4)), ("torch", (2, 10))]
)  # (2, 10): the last step
def test_sigterm_backs_up_at_the_step_and_the_rerun_finishes_bit_identical(
    tmp_path, backend, at, uninterrupted
):
    """Backups are scheduled at epoch ends only: the rerun resuming at the signal's step
    shows the backup made at the signal."""
    backup, out = tmp_path / "backup", tmp_path / "stopped.npz"
    stopped = _run(backend, backup, out, "--at", *map(str, at))
    where = f"epoch {at[0] + 1}, step {at[1]}"
    assert stopped.returncode == -signal.SIGTERM, stopped.stderr[-2000:]
    assert (tmp_path / "stopped.npz.ended").read_text() == f"terminated (SIGTERM) at {where}"
    assert (
        f"fit terminated (SIGTERM) at {where}; model.history keeps {at[0]} finished"
        in stopped.stderr
    )
    assert f"BackupAndRestore: SIGTERM: backed up at {where}" in stopped.stdout
    assert not out.exists()  # the script did not go on after fit
    resumed = _run(backend, backup, tmp_path / "resumed.npz")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resuming from {backup / 'backup.fitkit'} at {where}." in resumed.stdout
    full, again = uninterrupted(backend), _result(tmp_path / "resumed.npz")
    for a, b in zip(full[0], again[0], strict=True):
        np.testing.assert_array_equal(a, b)
    assert again[1] == full[1]
    assert not backup.exists()  # deleted after the complete run


@pytest.mark.slow
def test_a_second_sigterm_stops_at_once_without_a_backup_at_the_signal(tmp_path):
    backup = tmp_path / "backup"
    stopped = _run("torch", backup, tmp_path / "o.npz", "--at", "1", "4", "--twice")
    assert stopped.returncode == -signal.SIGTERM, stopped.stderr[-2000:]
    assert "a second SIGTERM: stopping now" in stopped.stderr
    assert "backed up" not in stopped.stdout
    assert (tmp_path / "o.npz.ended").exists()  # on_train_end ran, as after Ctrl-C
    resumed = _run("torch", backup, tmp_path / "r.npz")
    assert "at epoch 2, step 0." in resumed.stdout  # the epoch-end backup, made before


@pytest.mark.slow
def test_no_step_boundary_within_the_timeout_stops_fit_then(tmp_path):
    """The SIGTERM comes in a validation step that then sleeps 120 s; 1 s allowed."""
    stopped = _run(
        "tensorflow",
        tmp_path / "b",
        tmp_path / "o.npz",
        "--at",
        "0",
        "0",
        "--stall-in-validation",
        env={fitkit.signals.TIMEOUT_ENV: "1"},
    )
    assert stopped.returncode == -signal.SIGTERM, stopped.stderr[-2000:]
    assert "no step boundary within 1 s of SIGTERM (FITKIT_SIGTERM_TIMEOUT)" in stopped.stderr
    assert (tmp_path / "o.npz.ended").read_text() == "terminated (SIGTERM) at epoch 1, step 10"


# ---------------------------------------------------------------------- in this process
class SendAt(Callback):
    """SIGTERM to this process after train step ``step`` (1-based) of the first epoch; notes
    the SIGTERM handler seen during fit."""

    def __init__(self, step=None):
        super().__init__()
        self.step, self.seen = step, None

    def on_train_begin(self, logs=None):
        self.seen = signal.getsignal(signal.SIGTERM)

    def on_train_batch_end(self, batch, logs=None):
        if self.model.runtime.fit.epoch == 0 and batch + 1 == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


def _model(kit):
    fitkit.set_seed(0)
    model = fitkit.Model(kit.mlp(4, 3))
    model.compile("adam", "cross_entropy", lr=0.01)
    return model


def test_a_handler_of_your_own_gets_the_signal_and_fit_raises_terminated(kit, tmp_path):
    """Your handler, installed before fit, is called once fit has stopped and backed up; it
    lets the process live, so fit raises Terminated (a KeyboardInterrupt)."""
    x, y = make_classes(n=64, d=4)
    calls = []

    def handler(signum, frame):
        calls.append(signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        send = SendAt(step=2)
        with pytest.raises(fitkit.signals.Terminated) as err:
            _model(kit).fit(
                x,
                y,
                batch_size=16,
                epochs=3,
                verbose=0,
                callbacks=[send, BackupAndRestore(tmp_path, verbose=0)],
            )
        assert isinstance(err.value, KeyboardInterrupt) and err.value.at_boundary
        assert calls == [signal.SIGTERM]  # once: fit stopped, then handed it on
        assert send.seen is not handler  # fitkit's, during fit
        assert signal.getsignal(signal.SIGTERM) is handler  # yours again
    finally:
        signal.signal(signal.SIGTERM, previous)
    where = _model(kit).load_checkpoint(str(tmp_path / "backup.fitkit"))
    assert (where["epoch"], where["step"]) == (1, 2)


def test_the_handler_exists_only_during_fit_and_only_in_the_main_thread(kit):
    x, y = make_classes(n=32, d=4)
    before = signal.getsignal(signal.SIGTERM)
    send = SendAt()
    _model(kit).fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[send])
    assert callable(send.seen) and send.seen is not before
    assert signal.getsignal(signal.SIGTERM) is before
    in_thread = SendAt()
    thread = threading.Thread(
        target=lambda: _model(kit).fit(
            x, y, batch_size=16, epochs=1, verbose=0, callbacks=[in_thread]
        )
    )
    thread.start()
    thread.join()
    assert in_thread.seen is before  # a fit outside the main thread installs nothing


def test_an_ignored_sigterm_stays_ignored(kit):
    x, y = make_classes(n=64, d=4)
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        history = _model(kit).fit(
            x, y, batch_size=16, epochs=2, verbose=0, callbacks=[SendAt(step=2)]
        )
        assert len(history) == 2 and signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_bad_sigterm_timeout_is_refused_before_training(kit, monkeypatch):
    x, y = make_classes(n=32, d=4)
    model = _model(kit)
    before = model.get_weights()
    monkeypatch.setenv(fitkit.signals.TIMEOUT_ENV, "soon")
    with pytest.raises(fitkit.FitkitValueError, match="FITKIT_SIGTERM_TIMEOUT='soon'"):
        model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    for a, b in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
