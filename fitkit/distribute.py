"""Multi-device and multi-process training on the engines users trust: torch.distributed (DDP
under torchrun, DataParallel) and tf.distribute (Mirrored, CentralStorage, MultiWorkerMirrored).

Owns the public entry points, the choice of a strategy from its name and the environment, and
the process facts (rank, world size) every layer asks; each backend's distribute.py builds and
drives its framework's strategy.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from typing import Any

from .backend import backend as _backend
from .backend import backend_module
from .errors import FitkitValueError

__all__ = [
    "Strategy",
    "active",
    "barrier",
    "environment_name",
    "is_main_process",
    "rank",
    "strategy",
    "world_size",
]

NAMES = ("none", "auto", "mirrored", "central_storage", "multi_worker", "ddp")
_ACTIVE: list = []  # the strategy entered with ``strategy(...)``: one at a time


def _impl(backend: str | None) -> Any:
    return backend_module(backend or _backend(), "distribute")


def environment_name() -> str:
    """What the environment asks for: torchrun's variables -> "ddp", TF_CONFIG ->
    "multi_worker", else "" (the backend then looks for several GPUs).

    >>> fitkit.distribute.environment_name()  # under `fitkit launch -n 2` with torch  # doctest: +SKIP
    'ddp'
    """
    if "TORCHELASTIC_RUN_ID" in os.environ or ("RANK" in os.environ and "WORLD_SIZE" in os.environ):
        return "ddp"
    if os.environ.get("TF_CONFIG"):
        return "multi_worker"
    return ""


@contextlib.contextmanager
def strategy(name: str = "auto", *, backend: str | None = None) -> Iterator[Any]:
    """Train on several devices or processes: build and compile the net inside.

    ``name``: "none", "auto" (torchrun -> "ddp", TF_CONFIG -> "multi_worker", several GPUs ->
    "mirrored", else "none"), "mirrored" (TF: MirroredStrategy over the GPUs or logical CPUs;
    torch: DataParallel), "central_storage" (TF), "multi_worker" (TF, from TF_CONFIG), "ddp"
    (torch DistributedDataParallel under torchrun / ``fitkit launch``).
    Inside, ``fit``/``validate``/``predict`` shard the data, sum losses and metric states over
    every replica (exact over all samples), and only the main process prints and saves.

    >>> with fitkit.distribute.strategy("auto"):
    ...     model = fitkit.Model(build_net()); model.compile("adam", "mse")
    ...     model.fit(x, y, batch_size=64)      # 64: the global batch, as in Keras
    """
    if name not in NAMES:
        raise FitkitValueError(f"strategy name must be one of {', '.join(NAMES)}; got {name!r}.")
    if _ACTIVE:
        raise FitkitValueError(
            "fitkit.distribute.strategy(...) is already active; enter one strategy at a time."
        )
    impl = _impl(backend)
    chosen = impl.enter(environment_name() or impl.default_name() if name == "auto" else name)
    _ACTIVE.append(chosen)
    try:
        with chosen.scope():
            yield chosen
    finally:
        _ACTIVE.pop()
        chosen.close()


class Strategy:
    """What each backend's ``enter(name)`` returns (fitkit/{torch,tf}/distribute.py).

    ``native`` is the framework's object (a tf.distribute.Strategy, a torch process group or
    None); ``replicas`` the replicas in sync (devices x processes); ``scope()`` a context the
    net and compile are built in; ``close()`` ends it (e.g. destroys the process group).

    >>> with fitkit.distribute.strategy("auto") as s:
    ...     print(s.name, s.rank, s.world_size, s.replicas)
    """

    name: str = "none"
    native: Any = None
    rank: int = 0
    world_size: int = 1
    replicas: int = 1

    def scope(self) -> Any:
        """The context the net and compile are built in (entered by ``strategy(...)``)."""
        return contextlib.nullcontext()

    def barrier(self) -> None:
        """Wait for every process."""

    def close(self) -> None:
        """End the strategy (called when the ``strategy(...)`` block ends)."""


def active() -> Any:
    """The strategy entered with ``strategy(...)``, or None.

    >>> with fitkit.distribute.strategy("none") as s:
    ...     assert fitkit.distribute.active() is s
    """
    return _ACTIVE[-1] if _ACTIVE else None


def rank() -> int:
    """This process's rank (0 when not distributed): the strategy's, else the environment's.

    >>> print(f"rank {fitkit.distribute.rank()} of {fitkit.distribute.world_size()}")
    """
    if _ACTIVE:
        return _ACTIVE[-1].rank
    if "RANK" in os.environ:
        return int(os.environ["RANK"])
    config = os.environ.get("TF_CONFIG")
    if config:
        task = json.loads(config).get("task", {})
        return int(task.get("index", 0)) if task.get("type", "worker") in ("worker", "chief") else 0
    return 0


def world_size() -> int:
    """Processes taking part (1 when not distributed).

    >>> fitkit.distribute.world_size()
    1
    """
    if _ACTIVE:
        return _ACTIVE[-1].world_size
    if "WORLD_SIZE" in os.environ:
        return int(os.environ["WORLD_SIZE"])
    config = os.environ.get("TF_CONFIG")
    if config:
        return len(json.loads(config).get("cluster", {}).get("worker", [])) or 1
    return 1


def is_main_process() -> bool:
    """True on rank 0: the process that prints, writes history files and checkpoints.

    >>> if fitkit.distribute.is_main_process():
    ...     history.df.to_csv("history.csv")
    """
    return rank() == 0


def barrier() -> None:
    """Wait until every process reaches this point (a no-op in one process).

    >>> fitkit.distribute.barrier()   # e.g. before other ranks read what rank 0 wrote
    """
    if _ACTIVE:
        _ACTIVE[-1].barrier()
