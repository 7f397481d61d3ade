"""The ``fitkit`` command: ``fitkit info`` (versions, backend, devices, CUDA, the distributed
environment), ``fitkit launch`` (N training processes; the work is in launch.py), ``fitkit
serve`` (an exported model over HTTP; the work is in serving/) and ``fitkit fit / validate /
predict / export --config run.yaml`` (config-driven runs; the work is in config/).

Owns argument parsing and the info report; it asks the other modules for every fact it prints.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import platform
import sys

from .errors import FitkitError

# name shown -> the distributions that provide it (TensorFlow ships under several names)
_DISTS = {
    "torch": ("torch",),
    "tensorflow": (
        "tensorflow",
        "tensorflow-cpu",
        "tensorflow-macos",
        "tensorflow-intel",
        "tf-nightly",
    ),
    "keras": ("keras",),
    "numpy": ("numpy",),
    "pandas": ("pandas",),
}
_ENV_VARS = (
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
    "CUDA_VISIBLE_DEVICES",
)


def _version(name: str) -> str:
    for dist in _DISTS[name]:
        try:
            version = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
        return version if dist == name else f"{version} ({dist})"
    return "not installed"


def _tf_config_summary(raw: str) -> str:
    try:
        config = json.loads(raw)
        cluster = config.get("cluster", {})
        task = config.get("task", {})
        roles = ", ".join(f"{role} x{len(hosts)}" for role, hosts in cluster.items())
        return f"task {task.get('type', '?')} {task.get('index', '?')}; cluster: {roles or 'empty'}"
    except (ValueError, AttributeError, TypeError) as err:
        return f"not valid JSON with 'cluster' and 'task' ({err})"


def _devices_section(name: str) -> None:
    from . import devices

    print(f"devices ({name}):")
    for dev in devices.list_devices(backend=name):
        memory = f", {dev['memory_mb']} MiB" if dev["memory_mb"] is not None else ""
        model = f", {dev['description']}" if dev["description"] else ""
        print(f"  device: {dev['name']} ({dev['type']}) {dev['kind']}{memory}{model}")
    cuda = devices.cuda_info(backend=name)
    if cuda["available"]:
        print(f"cuda: available, {cuda['devices']} GPU(s), CUDA {cuda['version']}")
    else:
        print(f"cuda: not available ({'no GPU found' if cuda['built'] else 'not a CUDA build'})")


def _distributed_section() -> None:
    from . import distribute

    print("distributed environment:")
    shown = [f"{var}={os.environ[var]}" for var in _ENV_VARS if var in os.environ]
    print(f"  variables: {' '.join(shown) if shown else 'none set'}")
    if os.environ.get("TF_CONFIG"):
        print(f"  TF_CONFIG: {_tf_config_summary(os.environ['TF_CONFIG'])}")
    try:
        found = distribute.environment_name() or "none (single process)"
        print(f"  fitkit sees: {found}, rank {distribute.rank()} of {distribute.world_size()}")
    except (ValueError, TypeError) as err:
        print(f"  fitkit cannot read it: {err}")


def info(backend: str | None = None) -> None:
    """Print what ``fitkit info`` shows (the facts a bug report needs)."""
    from . import __version__
    from .backend import ENV_VAR, normalize
    from .backend import backend as default_backend

    print(
        f"fitkit {__version__}, python {platform.python_version()} "
        f"({platform.system()} {platform.machine()})"
    )
    print("versions:")
    for name in _DISTS:
        print(f"  {name:<12}{_version(name)}")
    name = normalize(backend) if backend else default_backend()
    chosen = (
        "--backend"
        if backend
        else (f"{ENV_VAR}" if os.environ.get(ENV_VAR) else "the first installed, torch first")
    )
    print(f"backend: {name} (from {chosen})")
    _devices_section(name)
    _distributed_section()


def _launch_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "launch",
        help="run a training script in N processes on this machine",
        description="Start N processes of SCRIPT: torch through torchrun (RANK, WORLD_SIZE, "
        "MASTER_ADDR... set), TensorFlow as N workers with TF_CONFIG. Output lines carry "
        "'[rank i] '; when one process fails the others are stopped and the launcher exits "
        "with its code. A rank whose fit/validate/predict makes no step progress for "
        "--timeout seconds (from its second step; e.g. one rank hangs and the others wait "
        "for it) is named, every process is stopped, and the launcher exits with 124. A busy "
        "--master-port or --workers port is named before anything starts. Inside, use "
        "fitkit.distribute.strategy('auto'). SIGTERM to a rank stops its fit at the next "
        "step boundary (within FITKIT_SIGTERM_TIMEOUT s; BackupAndRestore writes a backup "
        "there), then ends the process by SIGTERM.",
        epilog="Multi-node, torch: the same command on every node with --nnodes, --node-rank, "
        "--master-addr and --master-port. TensorFlow: --workers host:port,... lists every "
        "worker of every node (node 0's first), the same list on every node, with --node-rank.",
    )
    p.add_argument(
        "-n",
        "--nproc-per-node",
        dest="nproc",
        type=int,
        required=True,
        help="processes on this node",
    )
    p.add_argument(
        "--backend",
        help="torch or tensorflow (default: FITKIT_BACKEND, else the first installed, torch first)",
    )
    p.add_argument("--nnodes", type=int, default=1, help="nodes taking part (default 1)")
    p.add_argument("--node-rank", type=int, default=0, help="this node's rank (default 0)")
    p.add_argument("--master-addr", help="torch: address of node 0 (default 127.0.0.1)")
    p.add_argument(
        "--master-port",
        type=int,
        help="torch: port on node 0 (default: on one "
        "node torchrun's standalone mode opens a free one, on several 29500)",
    )
    p.add_argument("--workers", help="TensorFlow: host:port of every worker, comma-separated")
    p.add_argument(
        "--grace-period",
        type=float,
        default=None,
        help="seconds a stopped process gets before SIGKILL (default 10)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds a rank inside a "
        "step loop may make no progress before the launch is stopped as hung "
        "(default: FITKIT_LAUNCH_TIMEOUT, else 300; 0: never)",
    )
    p.add_argument(
        "-m", "--module", action="store_true", help="SCRIPT is a module name (python -m)"
    )
    p.add_argument("script", help="the training script (or module with -m)")
    p.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the script")


def _launch(args: argparse.Namespace) -> int:
    from . import launch
    from .backend import backend as default_backend
    from .backend import normalize

    name = normalize(args.backend) if args.backend else default_backend()
    if importlib.util.find_spec(name) is None:
        raise FitkitError(f"fitkit launch: the {name} backend is not installed here.")
    config = launch.LaunchConfig(
        nproc=args.nproc,
        script=args.script,
        args=args.args,
        backend=name,
        module=args.module,
        nnodes=args.nnodes,
        node_rank=args.node_rank,
        master_addr=args.master_addr,
        master_port=args.master_port,
        workers=[w.strip() for w in args.workers.split(",") if w.strip()] if args.workers else None,
        grace=launch.GRACE_S if args.grace_period is None else args.grace_period,
        timeout=_launch_timeout(args.timeout),
    )
    return launch.run(config)


def _launch_timeout(given: float | None) -> float:
    from . import launch

    raw = os.environ.get(launch.TIMEOUT_ENV, "").strip()
    if given is not None or not raw:
        return launch.TIMEOUT_S if given is None else given
    try:
        return float(raw)
    except ValueError:
        raise FitkitError(
            f"{launch.TIMEOUT_ENV}={raw!r}: give seconds (0: no watch), or "
            f"unset it for {launch.TIMEOUT_S:g}."
        ) from None


def _serve_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "serve",
        help="serve an exported model over HTTP (pip install 'fitkit[serve]')",
        description="Serve an artifact model.export wrote: POST /v1/predict, GET /health, "
        "GET /v1/metadata; concurrent requests are batched. SIGTERM finishes the requests in "
        "flight, then exits 0. See docs/deploy.md.",
    )
    p.add_argument("path", help="the exported artifact (.onnx, .pt2, .pt, SavedModel dir, .tflite)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: a free one)")
    p.add_argument("--max-batch-size", type=int, default=32, help="rows per batch (default 32)")
    p.add_argument(
        "--max-wait-ms", type=float, default=5.0, help="longest wait to fill a batch (default 5)"
    )
    p.add_argument("--workers", type=int, default=1, help="server processes (default 1)")
    p.add_argument(
        "--max-body-mb", type=float, default=64.0, help="largest request body (default 64 MB)"
    )


def _serve(args: argparse.Namespace) -> int:
    from .serving import serve

    if args.max_batch_size < 1 or args.max_wait_ms < 0 or args.workers < 1:
        raise FitkitError("--max-batch-size and --workers must be >= 1, --max-wait-ms >= 0")
    return serve(
        args.path,
        host=args.host,
        port=args.port,
        max_batch_size=args.max_batch_size,
        max_wait_ms=args.max_wait_ms,
        workers=args.workers,
        max_body_bytes=int(args.max_body_mb * 2**20),
    )


def main(argv: list[str] | None = None) -> int:
    """The ``fitkit`` console script; returns the exit code.

    >>> main(["info"])
    """
    from .config import COMMANDS

    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in COMMANDS:  # their options are the config's, parsed by jsonargparse
        from .config import runner

        return runner.main(argv[0], argv[1:])
    parser = argparse.ArgumentParser(prog="fitkit", description="fitkit's command line.")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:  # listed in `fitkit --help`; handled above
        sub.add_parser(command, help=f"{command} from a config file (fitkit {command} --help)")
    info_parser = sub.add_parser(
        "info", help="versions, backend, devices, CUDA, distributed environment"
    )
    info_parser.add_argument(
        "--backend", help="torch or tensorflow (default: the one fitkit would use)"
    )
    _launch_parser(sub)
    _serve_parser(sub)
    args = parser.parse_args(argv)
    try:
        if args.command == "info":
            info(args.backend)
            return 0
        if args.command == "serve":
            return _serve(args)
        return _launch(args)
    except FitkitError as err:
        parser.exit(2, f"fitkit {args.command}: error: {err}\n")


if __name__ == "__main__":
    sys.exit(main())
