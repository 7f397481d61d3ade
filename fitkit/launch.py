"""``fitkit launch``: start N training processes on this machine (torchrun for torch, one
TF_CONFIG worker each for TensorFlow), relay their output with rank prefixes, stop them all
when one fails, when one stops making progress (--timeout), or on Ctrl-C. Argument parsing is
cli.py's; what a process does with its environment (strategies, ranks) is fitkit.distribute's;
the progress beats' format is heartbeat.py's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from types import FrameType
from typing import IO

from . import heartbeat
from .errors import FitkitValueError

GRACE_S = 10.0  # after the first signal, how long processes get before SIGKILL
TIMEOUT_S = 300.0  # a rank inside a step loop with no progress for this long: a hung launch
TIMEOUT_ENV = "FITKIT_LAUNCH_TIMEOUT"
HUNG_EXIT = 124  # the launcher's exit code when it stopped a hung launch (as `timeout`'s)
_KILL = getattr(signal, "SIGKILL", signal.SIGTERM)  # (Windows has no SIGKILL)
_TORCH_ROOT_CAUSE = re.compile(r"Root Cause")
_TORCH_EXITCODE = re.compile(r"^\s*exitcode\s*:\s*(-?\d+)")
_TORCH_RANK = re.compile(r"^\s*rank\s*:\s*(\d+)")
_DIST_VARS = (
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "GROUP_RANK",
    "MASTER_ADDR",
    "MASTER_PORT",
    "TORCHELASTIC_RUN_ID",
    "TF_CONFIG",
)


@dataclasses.dataclass
class LaunchConfig:
    """What ``fitkit launch`` was asked for (see ``fitkit launch --help``)."""

    nproc: int
    script: str
    args: list[str]
    backend: str
    module: bool = False
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str | None = None
    master_port: int | None = None
    workers: list[str] | None = None
    grace: float = GRACE_S
    timeout: float = TIMEOUT_S  # 0: no watch


@dataclasses.dataclass
class _Spec:
    label: str  # the prefix of its output lines ("" for torchrun: it prefixes per rank itself)
    argv: list[str]
    env: dict[str, str]


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct TCP ports free on ``host`` right now."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((host, 0))
            ports.append(sock.getsockname()[1])
        return ports


def check(config: LaunchConfig) -> LaunchConfig:
    """Refuse inconsistent arguments before any process starts (FitkitValueError)."""
    if config.nproc < 1:
        raise FitkitValueError(f"-n must be at least 1; got {config.nproc}.")
    if not config.module and not os.path.isfile(config.script):
        raise FitkitValueError(f"no such script: {config.script!r} (use -m for a module).")
    if config.workers is not None:
        if config.backend != "tensorflow":
            raise FitkitValueError(
                "--workers lists TensorFlow workers; torch uses --nnodes, "
                "--node-rank, --master-addr and --master-port."
            )
        if len(config.workers) % config.nproc:
            raise FitkitValueError(
                f"--workers lists {len(config.workers)} workers, not a "
                f"multiple of -n {config.nproc} (workers per node)."
            )
        config.nnodes = len(config.workers) // config.nproc if config.nnodes == 1 else config.nnodes
        if config.nnodes * config.nproc != len(config.workers):
            raise FitkitValueError(
                f"--workers lists {len(config.workers)} workers but --nnodes "
                f"{config.nnodes} x -n {config.nproc} = "
                f"{config.nnodes * config.nproc}."
            )
        for worker in config.workers:
            if not re.fullmatch(r"[^\s:,]+:\d+", worker):
                raise FitkitValueError(f"--workers: {worker!r} is not host:port.")
    if config.master_port is not None and not 0 < config.master_port < 65536:
        raise FitkitValueError(
            f"--master-port must be a port number 1-65535; got {config.master_port}."
        )
    if not config.timeout >= 0:
        raise FitkitValueError(
            f"--timeout (or {TIMEOUT_ENV}) must be seconds >= 0 (0: no "
            f"watch); got {config.timeout}."
        )
    if config.nnodes < 1 or not 0 <= config.node_rank < config.nnodes:
        raise FitkitValueError(
            f"--node-rank must be in 0..{config.nnodes - 1} for --nnodes "
            f"{config.nnodes}; got {config.node_rank}."
        )
    if config.backend == "tensorflow":
        if config.master_addr is not None or config.master_port is not None:
            raise FitkitValueError(
                "TensorFlow has no master process: list every worker with "
                "--workers host1:port,host2:port,... instead of "
                "--master-addr/--master-port."
            )
        if config.nnodes > 1 and config.workers is None:
            raise FitkitValueError(
                "TensorFlow on several nodes needs --workers "
                "host1:port,host2:port,... (every worker of every node, in "
                "node order), the same list on each node."
            )
    elif config.nnodes > 1 and config.master_addr is None:
        raise FitkitValueError(
            "torch on several nodes needs --master-addr (the address of "
            "node 0, reachable from every node) and the same --master-port "
            "on every node."
        )
    return config


def check_ports(config: LaunchConfig) -> None:
    """The ports this node's processes will listen on are free: bound here for a moment, so a
    busy one is named before any process starts (the frameworks' own errors name no fix)."""
    if config.backend == "torch":
        port = config.master_port or (29500 if config.nnodes > 1 else None)
        if port is not None and config.node_rank == 0:  # node 0 listens on it
            default = "" if config.master_port else " (the default on several nodes)"
            _check_port(
                port,
                f"--master-port {port}{default}",
                "pick another --master-port"
                + (
                    ""
                    if config.nnodes > 1
                    else ", or leave it out and fitkit launch lets torchrun pick a free one"
                ),
            )
        return
    first = config.node_rank * config.nproc
    for worker in (config.workers or [])[first : first + config.nproc]:
        _check_port(
            int(worker.rsplit(":", 1)[1]),
            f"--workers entry {worker!r} (a worker of this node listens on it)",
            "list free ports in --workers"
            + (
                ""
                if config.nnodes > 1
                else ", or leave --workers out and fitkit launch picks free ports"
            ),
        )


def _check_port(port: int, what: str, fix: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        if os.name != "nt":  # as the frameworks' servers: a finished run's TIME_WAIT is fine
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("", port))
        except OSError as err:
            raise FitkitValueError(
                f"{what}: port {port} is already in use on this machine ({err.strerror or err})"
                f": another run or another program listens on it. Stop that process, or "
                f"{fix}."
            ) from err


def _child_env(backend: str, beat_dir: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _DIST_VARS}
    env.update(FITKIT_BACKEND=backend, PYTHONUNBUFFERED="1")
    env[heartbeat.ENV] = beat_dir
    return env


def _target(config: LaunchConfig) -> list[str]:
    return (["-m", config.script] if config.module else [config.script]) + list(config.args)


def torch_specs(config: LaunchConfig, log_dir: str, beat_dir: str) -> list[_Spec]:
    """One torchrun process that starts ``nproc`` workers: static rendezvous on the master,
    or on one node without --master-port, a c10d store (torchrun's standalone mode without
    --master-addr) that listens on a port the system picks (no port picked here and freed for
    torchrun: another program could take it in between)."""
    env = _child_env("torch", beat_dir)
    env["TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE"] = "[rank ${rank}] "
    argv = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        str(config.nproc),
        "--nnodes",
        str(config.nnodes),
        "--node-rank",
        str(config.node_rank),
    ]
    port = config.master_port
    if port is None and config.nnodes == 1 and config.master_addr is None:
        argv.append("--standalone")
    elif port is None and config.nnodes == 1:
        # as standalone, on the given address: the store listens on port 0, the system's pick
        argv += ["--rdzv-backend", "c10d", "--rdzv-endpoint", f"{config.master_addr}:0"]
        argv += ["--rdzv-id", uuid.uuid4().hex]
    else:
        argv += ["--master-addr", config.master_addr or "127.0.0.1"]
        argv += ["--master-port", str(29500 if port is None else port)]
    argv += ["--tee", "3", "--log-dir", log_dir]  # tee: prefixed output, per rank
    if config.module:
        argv.append("--module")
    return [_Spec("", argv + [config.script] + list(config.args), env)]


def tf_specs(config: LaunchConfig, beat_dir: str) -> list[_Spec]:
    """``nproc`` workers, each with TF_CONFIG naming the whole cluster and its own index.

    Free ports are picked here and freed: each worker must listen on the port the cluster
    lists, which no one can hold for it. One taken in between fails that worker with a fitkit
    error naming it (fitkit/tf/distribute.py)."""
    workers = config.workers or [f"127.0.0.1:{p}" for p in free_ports(config.nproc)]
    specs = []
    for local in range(config.nproc):
        index = config.node_rank * config.nproc + local
        env = _child_env("tensorflow", beat_dir)
        env["TF_CONFIG"] = json.dumps(
            {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        )
        specs.append(_Spec(f"[rank {index}] ", [sys.executable, *_target(config)], env))
    return specs


class _Relay:
    """Threads that copy each process's stdout/stderr, line by line, to ours with a prefix."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.threads: list[threading.Thread] = []
        self.child_exitcode: int | None = None  # the failing worker's code, read from torchrun
        self.child_rank: int | None = None  # and its rank
        self.port_in_use = False  # torchrun could not listen on the master port

    def start(self, stream: IO[bytes], prefix: str, out: IO[str]) -> None:
        thread = threading.Thread(target=self._copy, args=(stream, prefix, out), daemon=True)
        thread.start()
        self.threads.append(thread)

    def _copy(self, stream: IO[bytes], prefix: str, out: IO[str]) -> None:
        root_cause = False
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace")
            if not prefix:  # torchrun's own report names the first failing worker's code
                root_cause = root_cause or bool(_TORCH_ROOT_CAUSE.search(line))
                code = _TORCH_EXITCODE.search(line) if root_cause else None
                if code and self.child_exitcode is None:
                    self.child_exitcode = int(code.group(1))
                rank = _TORCH_RANK.search(line) if root_cause else None
                if rank and self.child_rank is None:
                    self.child_rank = int(rank.group(1))
                self.port_in_use = self.port_in_use or "EADDRINUSE" in line
            with self.lock, contextlib.suppress(OSError, ValueError):  # our output closed:
                out.write(prefix + line if line.endswith("\n") else prefix + line + "\n")
                out.flush()  # keep draining, so no process blocks on a full pipe
        stream.close()

    def join(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def say(self, message: str) -> None:
        with self.lock:
            sys.stderr.write(f"[fitkit launch] {message}\n")
            sys.stderr.flush()


def _die_with_parent() -> None:  # Linux: a child gets SIGTERM if the launcher dies
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - best effort, other systems have no prctl
        pass


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if hasattr(os, "killpg"):
            os.killpg(proc.pid, sig)  # each child leads its own process group
        elif sig == _KILL:
            proc.kill()
        else:
            proc.terminate()


def stop(
    procs: list[subprocess.Popen],
    first: int = signal.SIGTERM,
    grace: float = GRACE_S,
    ranks: heartbeat.Watcher | None = None,
) -> None:
    """Send ``first`` to every running process, wait ``grace`` seconds, then SIGKILL (also
    the ranks that beat: torchrun starts its workers in sessions of their own)."""
    if ranks is not None:
        ranks.poll()
    running = [p for p in procs if p.poll() is None]
    for proc in running:
        _signal_group(proc, first)
    deadline = time.monotonic() + grace
    while any(p.poll() is None for p in running) and time.monotonic() < deadline:
        time.sleep(0.05)
    for proc in running:
        if proc.poll() is None:
            _signal_group(proc, _KILL)
            proc.wait()
    if ranks is not None:
        ranks.kill(_KILL)


class _Terminated(Exception):
    """The launcher itself got SIGTERM."""


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        raise _Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _exit_status(code: int) -> int:
    return 128 - code if code < 0 else code  # killed by signal N: 128 + N, as shells do


def run(config: LaunchConfig) -> int:
    """Start the processes, relay their output, wait; returns the launcher's exit code:
    0 when all succeed, else the first failing process's code, or HUNG_EXIT when a rank made
    no progress for ``config.timeout`` seconds (the others are stopped)."""
    check(config)
    check_ports(config)
    log_dir = tempfile.mkdtemp(prefix="fitkit-launch-")
    beat_dir = os.path.join(log_dir, "beats")
    os.mkdir(beat_dir)
    specs = (
        torch_specs(config, log_dir, beat_dir)
        if config.backend == "torch"
        else tf_specs(config, beat_dir)
    )
    relay, procs = _Relay(), []
    ranks = heartbeat.Watcher(beat_dir, config.timeout)
    try:
        with _sigterm_raises():
            try:
                for spec in specs:  # one by one: if a start fails, finally stops those started
                    procs.append(  # noqa: PERF401 - a comprehension would lose the started ones
                        subprocess.Popen(
                            spec.argv,
                            env=spec.env,
                            stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE,
                            start_new_session=True,
                            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
                        )
                    )
                for spec, proc in zip(specs, procs, strict=True):
                    assert proc.stdout is not None and proc.stderr is not None  # both PIPE
                    relay.start(proc.stdout, spec.label, sys.stdout)
                    relay.start(proc.stderr, spec.label, sys.stderr)
                return _wait(config, specs, procs, relay, ranks)
            except KeyboardInterrupt:
                relay.say("interrupted: stopping every process")
                stop(procs, signal.SIGINT, config.grace, ranks)
                return 130
            except _Terminated:
                relay.say("terminated: stopping every process")
                stop(procs, signal.SIGTERM, config.grace, ranks)
                return 128 + signal.SIGTERM
    finally:
        stop(procs, signal.SIGTERM, config.grace, ranks)  # nothing outlives the launcher
        relay.join()
        shutil.rmtree(log_dir, ignore_errors=True)


def _wait(
    config: LaunchConfig,
    specs: list[_Spec],
    procs: list[subprocess.Popen],
    relay: _Relay,
    ranks: heartbeat.Watcher,
) -> int:
    watched = 0.0
    while True:
        codes = [p.poll() for p in procs]
        failed = next((i for i, c in enumerate(codes) if c not in (None, 0)), None)
        if failed is not None:
            break
        if all(c == 0 for c in codes):
            return 0
        now = time.monotonic()
        if now - watched >= 0.5:  # the ranks' progress, twice a second
            watched = now
            hung = None
            if config.timeout:
                hung = ranks.check(now)
            else:  # no limit: still read the slots, so that stop() knows every rank's process
                ranks.poll(now)
            if hung:
                relay.say(
                    f"{hung}. No progress for more than --timeout {config.timeout:g} s: "
                    f"stopping every process. (If a step, a validation pass or an "
                    f"epoch's end can take longer, raise --timeout or {TIMEOUT_ENV}.)"
                )
                stop(procs, signal.SIGTERM, config.grace, ranks)
                return HUNG_EXIT
        time.sleep(0.05)
    code = codes[failed]
    assert code is not None  # ``failed`` indexes a process that has exited
    others = sum(c is None for c in codes)
    stop(procs, signal.SIGTERM, config.grace, ranks)
    relay.join()
    if config.backend == "torch":
        child_code = relay.child_exitcode
        if child_code is not None and child_code != 0:  # torchrun's report names the worker
            code, rank = child_code, relay.child_rank
            which = "a worker" if rank is None else f"rank {rank}"
            relay.say(f"torchrun stopped every worker: {which} failed with exit code {code}")
        elif relay.port_in_use:
            port = config.master_port or 29500
            relay.say(
                f"torchrun could not listen on --master-port {port}: the port is in use "
                f"(another run or program took it). Stop that process or pick another "
                f"--master-port."
            )
        else:
            relay.say(f"torchrun exited with code {code}")
    else:
        relay.say(
            f"{specs[failed].label.strip()} exited with code {code}; stopped the other "
            f"{others} process(es)"
        )
    return _exit_status(code)
