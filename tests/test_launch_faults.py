"""``fitkit launch`` when something goes wrong: a rank that hangs ends the launch within
--timeout naming it, a rank that dies stops the others promptly, a busy port is named with its
fix (before anything starts where launch can see it; by the TensorFlow worker otherwise)."""

from __future__ import annotations

import io
import json
import pathlib
import socket
import subprocess
import sys
import time

import pytest
from conftest import cli_env as _env
from conftest import fitkit_cli, process_gone

from fitkit import heartbeat, launch

BACKENDS = ("torch", "tensorflow")
SCRIPTS = pathlib.Path(__file__).parent / "scripts"
HANG = str(SCRIPTS / "hang_rank.py")
RANK = str(SCRIPTS / "cli_rank.py")


def fitkit_launch(*args: str, env: dict | None = None, timeout: float = 240):
    return fitkit_cli("launch", *args, env=env, timeout=timeout)


def _held(count: int = 1) -> list[socket.socket]:
    """Sockets listening on loopback ports, held (busy) for the test's duration."""
    socks = []
    for _ in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        socks.append(sock)
    return socks


# ---------------------------------------------------------------------- a hung or a dead rank
@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_hung_rank_ends_the_launch_within_the_timeout_naming_it(backend, tmp_path):
    """Rank 1 sleeps for good before its 4th step; rank 0 waits for it in the step's
    all-reduce. Both go silent: the one behind is named, every process is stopped."""
    done = fitkit_launch(
        "-n",
        "2",
        "--backend",
        backend,
        "--timeout",
        "5",
        "--grace-period",
        "2",
        HANG,
        str(tmp_path),
        "hang",
        "1",
        "4",
    )
    assert done.returncode == launch.HUNG_EXIT, (done.stdout + done.stderr)[-3000:]
    assert "[rank 1] rank 1 hangs before step 4" in done.stderr
    report = next(line for line in done.stderr.splitlines() if "made no progress" in line)
    assert report.startswith("[fitkit launch] rank 1 made no progress for ")
    assert (
        "(last at train step 4, in its batch-begin hooks); rank 0 waits at train step 4" in report
    )
    assert "--timeout 5 s" in report and launch.TIMEOUT_ENV in report
    for rank in (0, 1):
        assert process_gone(int((tmp_path / f"rank{rank}.pid").read_text())), f"rank {rank} lives"


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_dead_rank_stops_the_others_promptly(backend, tmp_path):
    """Rank 1 exits with code 3 before its 4th step while rank 0 waits in an all-reduce."""
    done = fitkit_launch(
        "-n", "2", "--backend", backend, "--grace-period", "3", HANG, str(tmp_path), "die", "1", "4"
    )
    ended = time.time()
    assert done.returncode == 3, (done.stdout + done.stderr)[-3000:]
    took = ended - float((tmp_path / "died").read_text())
    assert took < 3 + 5, f"the launch ended {took:.1f} s after a rank died"
    assert process_gone(int((tmp_path / "rank0.pid").read_text()))


def test_the_watcher_names_the_rank_behind_and_times_no_first_step(tmp_path):
    """Beats written as two ranks' step loops write them; time is given, not waited for."""
    beats = {}
    for rank in (0, 1):
        beats[rank] = heartbeat._Beats(str(tmp_path / f"rank{rank}.beat"))
    watcher = heartbeat.Watcher(str(tmp_path), timeout=10)
    train = heartbeat.KINDS["train"]
    for rank in (0, 1):  # a first step (compiling) that is slow is not a hang
        beats[rank].write(train, heartbeat.RUNNING, 0)
    assert watcher.check(now=0.0) is None and watcher.check(now=100.0) is None
    for rank in (0, 1):
        beats[rank].write(train, heartbeat.END, 0)
        beats[rank].write(train, heartbeat.WAITING, 1)
    assert watcher.check(now=200.0) is None  # progress since the last look
    beats[0].write(train, heartbeat.BEGIN, 1)
    beats[0].write(train, heartbeat.RUNNING, 1)  # rank 0 runs step 2, rank 1 never gets its batch
    assert watcher.check(now=205.0) is None  # within the timeout
    report = watcher.check(now=216.0)
    assert report == (
        "rank 1 made no progress for 16 s (last at train step 2, waiting for its "
        "batch); rank 0 waits at train step 2, running it"
    )
    for rank in (0, 1):  # outside a step loop (between fits, after fit) nothing is timed
        beats[rank].write(0, 0, 0)
    assert heartbeat.Watcher(str(tmp_path), timeout=10).check(now=1e9) is None


# ---------------------------------------------------------------------- busy ports
def test_a_busy_master_port_is_named_before_any_rank_starts():
    with _held()[0] as busy:
        port = busy.getsockname()[1]
        done = fitkit_launch(
            "-n", "2", "--backend", "torch", "--master-port", str(port), RANK, timeout=60
        )
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"--master-port {port}: port {port} is already in use on this machine" in done.stderr
    assert "pick another --master-port, or leave it out" in done.stderr
    assert "hello from" not in done.stdout


def test_a_busy_worker_port_is_named_before_any_worker_starts():
    socks = _held(2)
    try:
        workers = [f"127.0.0.1:{s.getsockname()[1]}" for s in socks]
        done = fitkit_launch(
            "-n", "2", "--backend", "tensorflow", "--workers", ",".join(workers), RANK, timeout=60
        )
    finally:
        for sock in socks:
            sock.close()
    assert done.returncode == 2, done.stdout + done.stderr
    assert (
        f"--workers entry {workers[0]!r} (a worker of this node listens on it): port "
        f"{workers[0].rsplit(':')[1]} is already in use" in done.stderr
    )
    assert "leave --workers out and fitkit launch picks free ports" in done.stderr
    assert "hello from" not in done.stdout


@pytest.mark.slow
def test_a_worker_whose_port_was_taken_names_it_instead_of_grpcs_error():
    """A port taken after it was picked (launch cannot hold it for TensorFlow's server)."""
    socks = _held(2)
    try:
        workers = [f"127.0.0.1:{s.getsockname()[1]}" for s in socks]
        config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": 0}}
        done = subprocess.run(
            [
                sys.executable,
                "-c",
                "import fitkit\nwith fitkit.distribute.strategy('multi_worker'):\n    pass",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            env=_env(FITKIT_BACKEND="tensorflow", TF_CONFIG=json.dumps(config)),
        )
    finally:
        for sock in socks:
            sock.close()
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(
        "fitkit.errors.FitkitError: TensorFlow could not start this "
        f"worker's server on {workers[0]}: the port is in use"
    ), last
    assert "run it again (it picks new ports)" in last


def _torch_argv(**config) -> list[str]:
    (spec,) = launch.torch_specs(
        launch.LaunchConfig(nproc=2, script=RANK, args=[], backend="torch", **config), "l", "b"
    )
    return spec.argv


def test_one_node_torch_launch_leaves_the_port_to_the_system(monkeypatch):
    """No port is picked, freed and handed on (another program could take it in between):
    torchrun's store listens on port 0, with or without --master-addr."""
    monkeypatch.setattr(launch, "free_ports", lambda *a, **k: pytest.fail("a port was picked"))
    assert "--standalone" in _torch_argv()
    argv = _torch_argv(master_addr="127.0.0.1")
    assert argv[argv.index("--rdzv-endpoint") + 1] == "127.0.0.1:0"
    assert "--master-port" not in argv and "--standalone" not in argv
    argv = _torch_argv(master_port=29511)  # a port the user named is used as given
    assert argv[argv.index("--master-port") + 1] == "29511"


@pytest.mark.slow
def test_a_one_node_torch_launch_on_a_named_address_runs_on_a_system_picked_port():
    done = fitkit_launch("-n", "2", "--backend", "torch", "--master-addr", "127.0.0.1", RANK)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    for rank in (0, 1):
        assert f"[rank {rank}] fitkit.distribute: rank {rank} of 2" in done.stdout


def test_torchruns_own_port_error_is_recognised():
    """torchrun's message when its store cannot listen (copied from a real run)."""
    relay = launch._Relay()
    line = (
        b"torch.distributed.DistNetworkError: The server socket has failed to listen on "
        b"any local network address. port: 49501, useIpv6: false, code: -98, name: "
        b"EADDRINUSE, message: address already in use\n"
    )
    relay._copy(io.BytesIO(line), "", io.StringIO())
    assert relay.port_in_use


# ---------------------------------------------------------------------- arguments
@pytest.mark.parametrize(
    "args, env, message",
    [
        (["--timeout", "-1"], {}, "--timeout (or FITKIT_LAUNCH_TIMEOUT) must be seconds >= 0"),
        ([], {launch.TIMEOUT_ENV: "soon"}, "FITKIT_LAUNCH_TIMEOUT='soon': give seconds"),
        (["--master-port", "70000"], {}, "--master-port must be a port number 1-65535"),
    ],
)
def test_bad_timeouts_and_ports_are_refused_before_starting(args, env, message):
    done = fitkit_launch("-n", "2", "--backend", "torch", *args, RANK, env=_env(**env), timeout=60)
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert "hello from" not in done.stdout
