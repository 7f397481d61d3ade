"""The ``fitkit`` command: ``info`` prints every section, ``launch`` runs N ranks on both
backends with prefixed output, stops every process when one fails or on Ctrl-C, and refuses
inconsistent arguments before starting anything."""

from __future__ import annotations

import os
import pathlib
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest
from conftest import cli_env as _env
from conftest import fitkit_cli, process_gone

BACKENDS = ("torch", "tensorflow")
SCRIPT = str(pathlib.Path(__file__).parent / "scripts" / "cli_rank.py")


# ---------------------------------------------------------------- info
@pytest.mark.parametrize("backend", BACKENDS)
def test_info_prints_every_section(backend):
    done = fitkit_cli("info", env=_env(FITKIT_BACKEND=backend))
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.startswith("fitkit 0.1.0, python ")
    for section in (
        "versions:",
        f"backend: {backend} (from FITKIT_BACKEND)",
        f"devices ({backend}):",
        "cuda: ",
        "distributed environment:",
    ):
        assert section in out, out
    assert "  torch " in out and "  tensorflow " in out
    assert "CPU" in out
    if backend == "tensorflow":
        assert "logical" in out  # TF's logical devices are listed too
    assert "variables: none set" in out and "fitkit sees: none (single process), rank 0 of 1" in out


def test_info_summarises_the_distributed_environment():
    env = _env(
        FITKIT_BACKEND="torch",
        RANK="1",
        WORLD_SIZE="2",
        MASTER_ADDR="10.0.0.1",
        MASTER_PORT="29500",
    )
    out = fitkit_cli("info", env=env).stdout
    assert "RANK=1 WORLD_SIZE=2 MASTER_ADDR=10.0.0.1 MASTER_PORT=29500" in out
    assert "fitkit sees: ddp, rank 1 of 2" in out
    tf_config = (
        '{"cluster": {"worker": ["a:1", "b:2", "c:3"]}, "task": {"type": "worker", "index": 2}}'
    )
    out = fitkit_cli("info", "--backend", "torch", env=_env(TF_CONFIG=tf_config)).stdout
    assert "TF_CONFIG: task worker 2; cluster: worker x3" in out
    assert "backend: torch (from --backend)" in out
    assert "fitkit sees: multi_worker, rank 2 of 3" in out


def test_console_script_is_installed():
    exe = shutil.which("fitkit") or str(pathlib.Path(sys.executable).parent / "fitkit")
    if not os.path.exists(exe):
        pytest.skip("the fitkit console script is not installed (pip install -e .)")
    done = subprocess.run(
        [exe, "info", "--backend", "torch"], capture_output=True, text=True, env=_env(), timeout=120
    )
    assert done.returncode == 0 and "backend: torch" in done.stdout


# ---------------------------------------------------------------- launch: arguments
@pytest.mark.parametrize(
    "args, message",
    [
        (["launch", SCRIPT], "required: -n"),
        (["launch", "-n", "0", "--backend", "torch", SCRIPT], "at least 1"),
        (["launch", "-n", "2", "--backend", "torch", "missing.py"], "no such script"),
        (["launch", "-n", "2", "--backend", "mxnet", SCRIPT], "Unknown backend"),
        (["launch", "-n", "2", "--backend", "tf", "--master-addr", "h", SCRIPT], "--workers"),
        (["launch", "-n", "2", "--backend", "tf", "--nnodes", "2", SCRIPT], "--workers"),
        (["launch", "-n", "2", "--backend", "tf", "--workers", "a:1,b:2,c:3", SCRIPT], "multiple"),
        (["launch", "-n", "1", "--backend", "tf", "--workers", "a:1,b", SCRIPT], "host:port"),
        (["launch", "-n", "2", "--backend", "torch", "--workers", "a:1,b:2", SCRIPT], "TensorFlow"),
        (["launch", "-n", "2", "--backend", "torch", "--nnodes", "2", SCRIPT], "--master-addr"),
        (
            [
                "launch",
                "-n",
                "2",
                "--backend",
                "torch",
                "--nnodes",
                "2",
                "--node-rank",
                "2",
                "--master-addr",
                "h",
                SCRIPT,
            ],
            "--node-rank",
        ),
    ],
)
def test_launch_refuses_bad_arguments_before_starting(args, message):
    done = fitkit_cli(*args, timeout=60)
    assert done.returncode == 2
    assert message in done.stderr, done.stderr
    assert "hello from" not in done.stdout


def test_script_arguments_after_the_script_are_the_scripts():
    from fitkit import cli

    seen = {}
    parser_args = ["launch", "-n", "2", "--backend", "tf", SCRIPT, "-n", "5", "--backend", "x"]
    original = cli._launch
    try:
        cli._launch = lambda args: seen.update(vars(args)) or 0
        assert cli.main(parser_args) == 0
    finally:
        cli._launch = original
    assert seen["nproc"] == 2 and seen["backend"] == "tf"
    assert seen["args"] == ["-n", "5", "--backend", "x"]


# ---------------------------------------------------------------- launch: processes
@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_launch_runs_every_rank_with_prefixed_output(backend):
    done = fitkit_cli("launch", "-n", "2", "--backend", backend, SCRIPT)
    assert done.returncode == 0, done.stdout + done.stderr
    source = "RANK" if backend == "torch" else "TF_CONFIG"
    for rank in (0, 1):
        assert (
            f"[rank {rank}] hello from {source} {rank} of 2, FITKIT_BACKEND={backend}"
            in done.stdout
        )
        assert f"[rank {rank}] fitkit.distribute: rank {rank} of 2" in done.stdout
        assert f"[rank {rank}] rank {rank} done" in done.stdout
        assert f"[rank {rank}] a stderr line from {rank}" in done.stderr


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_failing_rank_stops_the_others_and_sets_the_exit_code(backend, tmp_path):
    started = str(tmp_path / "started")
    os.mkfifo(started)  # rank 1 fails once rank 0 has written its pid file and sleeps
    start = time.monotonic()
    done = fitkit_cli(
        "launch",
        "-n",
        "2",
        "--backend",
        backend,
        SCRIPT,
        "--fail-rank",
        "1",
        "--code",
        "7",
        "--sleep",
        "600",
        "--pid-dir",
        str(tmp_path),
        "--started",
        started,
        timeout=60,
    )
    assert time.monotonic() - start < 60
    assert done.returncode == 7, done.stdout + done.stderr
    assert "[rank 1] rank 1 fails with code 7" in done.stderr
    assert "rank 1" in done.stderr.splitlines()[-1] and "code 7" in done.stderr.splitlines()[-1]
    assert "[rank 0] rank 0 done" not in done.stdout  # stopped, not finished
    sleeper = int((tmp_path / "rank0.pid").read_text())
    assert process_gone(sleeper), "the sleeping rank outlived the launcher"


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_ctrl_c_stops_every_process(backend, tmp_path):
    launcher = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fitkit.cli",
            "launch",
            "-n",
            "2",
            "--backend",
            backend,
            SCRIPT,
            "--sleep",
            "600",
            "--pid-dir",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
        # as from a terminal: a test run started in the background inherits SIGINT ignored,
        # and Python then never raises KeyboardInterrupt
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    out_lines: list[str] = []
    both_started = threading.Event()

    def read_out() -> None:  # the relayed lines, until both ranks say they started
        for line in launcher.stdout:
            out_lines.append(line)
            if sum(" started" in seen for seen in out_lines) == 2:
                both_started.set()

    readers = [
        threading.Thread(target=read_out, daemon=True),
        threading.Thread(target=lambda: err_parts.append(launcher.stderr.read()), daemon=True),
    ]
    err_parts: list[str] = []
    for reader in readers:
        reader.start()
    try:
        assert both_started.wait(timeout=60), "the ranks did not start: " + "".join(out_lines)
        launcher.send_signal(signal.SIGINT)
        launcher.wait(timeout=60)
        for reader in readers:
            reader.join(timeout=60)
    finally:
        launcher.kill()
    out, err = "".join(out_lines), "".join(err_parts)
    assert launcher.returncode == 130, out + err
    assert "interrupted: stopping every process" in err
    for pid_file in tmp_path.glob("*.pid"):
        assert process_gone(int(pid_file.read_text()))


@pytest.mark.slow
def test_launching_torch_imports_no_framework_in_the_launcher():
    code = (
        "import sys\nfrom fitkit.cli import main\n"
        f"rc = main(['launch', '-n', '1', '--backend', 'torch', {SCRIPT!r}])\n"
        "print('RC', rc, 'LOADED', [m for m in ('torch', 'tensorflow') if m in sys.modules])"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=120
    )
    assert "RC 0 LOADED []" in done.stdout, done.stdout + done.stderr
