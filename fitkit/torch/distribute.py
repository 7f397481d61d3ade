"""Torch strategies behind fitkit.distribute: "none", "ddp" (DistributedDataParallel, one
process per device, started by ``fitkit launch`` / torchrun) and "mirrored" (DataParallel).

Owns the process group and what DDP changes in a run: the wrapped network, each step's share
of the loss, logs and metric states combined over processes when read, predictions gathered
in order. An adapter attaches once (created or compiled inside ``strategy(...)``); each
process's share of the data is data.py's, the accumulation window controls.py's.

Choices: ``batch_size`` is the global batch everywhere (fit's, a Dataset's and a DataLoader's,
which must divide by the processes), split between processes, so a script trains the same
in one process or N. "mirrored" without two GPUs warns and trains on one device. Under
"ddp", a model built inside the ``with`` block may fit / validate / predict after it (Keras's
pattern): the process group lives until the last such model is released or the process ends.
"""

from __future__ import annotations

import atexit
import gc
import os
import warnings
import weakref
from collections.abc import Callable, Sized
from typing import Any, cast

import torch
import torch.distributed as dist

from .. import distribute as facade
from ..errors import FitkitError, FitkitValueError
from . import data
from .devices import default_device

_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def default_name() -> str:
    """What "auto" means here: "mirrored" with several CUDA GPUs, else "none" (under
    torchrun it is "ddp": the facade reads the environment first)."""
    return "mirrored" if torch.cuda.device_count() > 1 else "none"


def enter(name: str) -> facade.Strategy:
    """The strategy ``name`` for torch (``fitkit.distribute.strategy`` enters it)."""
    if name == "ddp":
        return DDP()
    if name == "mirrored":
        gpus = torch.cuda.device_count()
        if gpus > 1:
            return Mirrored(gpus)
        warnings.warn(
            f"strategy('mirrored') needs at least two CUDA GPUs; this machine has "
            f"{gpus}: training on one device ({default_device()}), as "
            f"strategy('none').",
            stacklevel=3,
        )
        return Single()
    if name in ("central_storage", "multi_worker"):
        raise FitkitValueError(
            f"strategy({name!r}) is a TensorFlow strategy (tf.distribute); torch has no such "
            f"strategy. On torch use strategy('ddp') (DistributedDataParallel, one process per "
            f"device or machine, started with `fitkit launch -n N script.py`)."
        )
    if name == "none":
        return Single()
    raise FitkitValueError(
        f"Unknown strategy {name!r} for torch; use 'none', 'auto', 'mirrored' or 'ddp'."
    )


class Single(facade.Strategy):
    """One process on one device: nothing changes."""

    backend, name, places_net = "torch", "none", False

    def __init__(self) -> None:
        self.device = default_device()

    def attach(self, adapter: Any) -> None:
        return None


class Mirrored(facade.Strategy):
    """torch.nn.DataParallel over the visible GPUs, in one process: each (global) batch is
    split over the GPUs for the forward pass; the gradients meet on cuda:0."""

    backend, name, places_net = "torch", "mirrored", True

    def __init__(self, gpus: int) -> None:
        self.replicas, self.device = gpus, torch.device("cuda", 0)
        warnings.warn(
            f"strategy('mirrored') on torch is DataParallel over {gpus} GPUs (one "
            f"process, slower than DDP). torch recommends DistributedDataParallel: "
            f"strategy('ddp'), started with `fitkit launch -n {gpus} script.py`.",
            stacklevel=4,
        )

    def attach(self, adapter: Any) -> None:
        self.native = torch.nn.DataParallel(adapter.net, device_ids=list(range(self.replicas)))
        adapter._forward = adapter._eval_forward = self.native
        return None


class DDP(facade.Strategy):
    """DistributedDataParallel from torchrun's variables: gloo on CPU, nccl on CUDA (device
    cuda:LOCAL_RANK). A process group created here is destroyed by ``close``."""

    backend, name, places_net = "torch", "ddp", True

    def __init__(self) -> None:
        missing = [k for k in _ENV if k not in os.environ]
        if missing:
            raise FitkitError(
                f"strategy('ddp') runs one process per device, started by a launcher that sets "
                f"{', '.join(_ENV)}; {', '.join(missing)} {'is' if len(missing) == 1 else 'are'}"
                f" not set. Start the script with `fitkit launch -n N script.py` or `torchrun "
                f"--nproc-per-node N script.py` (N: this machine's GPUs, or CPU processes)."
            )
        if not dist.is_available():
            raise FitkitError(
                "strategy('ddp') needs torch.distributed, which this torch build lacks."
            )
        self.rank, self.world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        self.replicas, local = self.world_size, int(os.environ["LOCAL_RANK"])
        if torch.cuda.is_available():
            if local >= torch.cuda.device_count():
                raise FitkitError(
                    f"LOCAL_RANK={local}, but this machine has "
                    f"{torch.cuda.device_count()} GPU(s): start at most one "
                    f"process per GPU."
                )
            self.device, kind = torch.device("cuda", local), "nccl"
            torch.cuda.set_device(self.device)
        else:
            self.device, kind = torch.device("cpu"), "gloo"
        self.owns_group = not dist.is_initialized()
        if self.owns_group:
            dist.init_process_group(kind, rank=self.rank, world_size=self.world_size)
        self.native = dist.group.WORLD
        self.closed = self.scope_ended = False
        self.runs: list[weakref.ref] = []  # the wrapped networks (Replicas), released by destroy()
        self.models = 0  # adapters attached and not yet garbage collected

    def barrier(self) -> None:
        if self.closed:
            return
        if self.device.type == "cuda":
            dist.barrier(device_ids=[self.device.index])
        else:
            dist.barrier()

    def close(self) -> None:
        """The ``with`` block ends: models built in it keep the process group (Keras's pattern
        of fit after the scope), so it is destroyed once the last of them is released, or at
        exit; with none, now."""
        self.scope_ended = True
        if self.models:
            atexit.register(self.destroy)
        else:
            self.destroy()

    def released(self) -> None:
        """A model's adapter was garbage collected: the last one after the block ends the group."""
        self.models -= 1
        if self.scope_ended and not self.models:
            self.destroy()

    def destroy(self) -> None:
        """Release the DDP wrappers, then destroy the process group (a DDP wrapper still
        alive then can abort the process at exit on gloo: "terminate called without an
        active exception")."""
        if self.closed:
            return
        for ref in self.runs:
            run = ref()
            if run is not None:
                run.ddp = None
        self.runs.clear()
        gc.collect()
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
        self.closed = True
        atexit.unregister(self.destroy)

    def attach(self, adapter: Any) -> Replicas:
        run = Replicas(self, adapter)  # the adapter holds it; here only weakly, so that
        self.runs.append(weakref.ref(run))  # releasing the model can end the group
        self.models += 1
        weakref.finalize(adapter, self.released)
        return run


class Replicas:
    """One adapter's DDP machinery, and the ``comm`` its sharded sources ask (rank,
    world_size, broadcast, draw_seed).

    Steps: the train step calls ``forward`` (DDP's, which all-reduces gradients in
    backward); the loss of a process is weighed by its rows (controls.Update), so the
    average over processes is the global batch's mean even when the last batch splits
    unevenly. Reads: tracker sums and counts and metric states of every process are gathered
    in one collective at each read (a log point: every process reads at the same points).
    """

    def __init__(self, strategy: DDP, adapter: Any) -> None:
        from torch.nn.parallel import DistributedDataParallel

        self.strategy, self.device = strategy, strategy.device
        self.rank, self.world_size = strategy.rank, strategy.world_size
        ids = [self.device.index] if self.device.type == "cuda" else None
        self.ddp = DistributedDataParallel(adapter.net, device_ids=ids)
        self.update: Any = None  # the adapter's controls.Update (accumulation window)
        self.rows = 0  # this process's rows in the running step
        self.total: int | None = None  # rows over every process in it (None: each the whole)
        self.forwarded = False  # the running step went through DDP's forward
        self.positions: list[range] = []  # the rows each predicted batch holds
        adapter._forward = self.forward

    def check_open(self) -> None:
        if self.strategy.closed:
            raise FitkitError(
                "This model's strategy('ddp') process group is destroyed (the process is "
                "exiting). Call fit / validate / predict before the script ends."
            )

    # ------------------------------------------------------------------ comm
    def broadcast(self, tensor: torch.Tensor) -> torch.Tensor:
        """Rank 0's ``tensor`` on every process (on the tensor's device)."""
        moved = tensor.to(self.device)
        dist.broadcast(moved, 0)
        return moved.to(tensor.device)

    def draw_seed(self) -> int:
        """A seed drawn from torch's RNG on rank 0, the same on every process."""
        seed = self.broadcast(torch.empty((), dtype=torch.int64).random_())
        return int(seed)  # host sync: once per shuffled loader pass

    def loader(self, source: Any, batch_size: int, shuffle: bool) -> tuple:
        return distributed_loader(source, batch_size, shuffle, self)

    def all_gather(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        out = [torch.empty_like(tensor) for _ in range(self.world_size)]
        dist.all_gather(out, tensor.contiguous())
        return out

    # ------------------------------------------------------------------ steps
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The network through DDP; a window's non-final batches skip the all-reduce."""
        update = self.update
        self.ddp.require_backward_grad_sync = update is None or update.syncs_next()
        self.forwarded = True
        return self.ddp(*args, **kwargs)

    def total_rows(self, rows: int) -> int:
        """Rows over every process in the running step."""
        return rows * self.world_size if self.total is None else self.total

    def make_function(self, step: Callable, mode: str, tracker: Any, outputs: Any) -> Callable:
        """The adapter's make_function under DDP: each batch's share noted for the update
        and for predict's gather; an empty share logs zeros over zero rows."""
        if mode == "predict":

            def run_predict(batch: tuple) -> Any:
                positions = getattr(batch, "positions", None)
                self.positions.append(
                    range(data.rows(batch[0])) if positions is None else positions
                )
                with torch.no_grad():
                    return step(tuple(batch))

            return run_predict

        def run(batch: tuple) -> None:
            rows = data.rows(batch[0])
            self.rows, self.total, self.forwarded = rows, getattr(batch, "total", None), False
            logs = step(tuple(batch))
            if outputs.parts:
                logs = {**logs, **outputs.take_parts()}
            if not rows:  # the mean of no rows is NaN: this share adds nothing
                logs = {k: torch.zeros((), device=self.device) for k in logs}
            tracker.update(logs, rows)

        if mode == "train":
            return run

        def run_test(batch: tuple) -> None:
            with torch.no_grad():
                run(batch)

        return run_test

    def compiled(self, adapter: Any) -> None:
        self.update = adapter._update
        adapter.optimizer.register_step_pre_hook(self.before_step)

    def before_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        """Optimizer pre-hook: average the gradients DDP's forward did not (a custom
        train_step that calls ``self.net``), each process's weighed by its rows."""
        if self.forwarded:
            return
        scale = 1.0 if self.total is None else self.rows * self.world_size / self.total
        self.average(
            [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None],
            scale,
        )

    def average(self, grads: list[torch.Tensor], scale: float = 1.0) -> None:
        """Gradients averaged over processes in place (one all-reduce), as DDP does."""
        if not grads:
            return
        flat = torch._utils._flatten_dense_tensors(grads)
        flat.mul_(scale / self.world_size)
        dist.all_reduce(flat)
        for grad, value in zip(
            grads, torch._utils._unflatten_dense_tensors(flat, grads), strict=True
        ):
            grad.copy_(value)

    # ------------------------------------------------------------------ reads
    def log_values(self, tracker: Any, metrics: list) -> dict[str, torch.Tensor]:
        """Loss and metric values over every process, as 0-d tensors (no host read).

        Each process's running sums, counts and metric states go in one float64 vector,
        gathered in one collective; each metric combines them (``merge``) and reads its
        result from the combination, then gets its own running state back.
        """
        built = [m for m in metrics if m.mode is not None]
        shared = [m for m in built if m.state_names]
        parts = [*tracker.sums.values(), tracker.count]
        for metric in shared:
            parts += metric.local_state()
        parts = [torch.as_tensor(p, dtype=torch.float64, device=self.device) for p in parts]
        sizes = [p.numel() for p in parts]
        every = [
            list(row.split(sizes))
            for row in self.all_gather(torch.cat([p.reshape(-1) for p in parts]))
        ]
        every = [[v.reshape(p.shape) for v, p in zip(row, parts, strict=True)] for row in every]
        keys, n = list(tracker.sums), len(tracker.sums)
        count = sum(row[n] for row in every).clamp_min(1)
        values = {k: sum(row[i] for row in every) / count for i, k in enumerate(keys)}
        at = n + 1
        for metric in built:
            if metric not in shared:  # a torchmetrics metric syncs itself in compute()
                values[metric.name] = metric.result()
                continue
            width = len(metric.state_names)
            merged = metric.merge([row[at : at + width] for row in every])
            at += width
            own = {k: getattr(metric, k) for k in metric.state_names}
            try:
                for k, v in merged.items():
                    setattr(metric, k, v)
                values[metric.name] = metric.result()
            finally:
                for k, v in own.items():
                    setattr(metric, k, v)
        return values

    def gather(self, outputs: list) -> Any:
        """Every process's predictions, in the pass's order (rows that several processes
        predicted, e.g. a batch-style call's, kept once)."""
        seen, self.positions = self.positions[-len(outputs) :], []
        local = torch.cat(
            [torch.arange(r.start, r.stop, r.step, dtype=torch.int64) for r in seen]
        ).to(self.device)
        counts = torch.cat(self.all_gather(local.new_tensor([local.numel()])))
        most = int(counts.max())  # host sync: once, when predictions leave the device
        where = torch.cat(self.all_gather(_pad(local, most, -1)))
        keep = where >= 0
        index = where[keep]
        n = int(index.max()) + 1 if index.numel() else 0  # host sync: the same read
        return _merge(outputs, lambda t: self._gather_rows(t, most, keep, index, n))

    def _gather_rows(
        self, local: torch.Tensor, most: int, keep: torch.Tensor, index: torch.Tensor, n: int
    ) -> torch.Tensor:
        dtype = local.dtype
        if dtype in (torch.bfloat16, torch.bool):  # not every backend sends these
            local = local.float()
        every = torch.cat(self.all_gather(_pad(local, most, 0)))[keep]
        out = every.new_empty((n, *every.shape[1:]))
        out[index] = every
        return out if dtype == torch.bfloat16 else out.to(dtype)


_LOADER_OPTIONS = (
    "num_workers",
    "collate_fn",
    "pin_memory",
    "timeout",
    "worker_init_fn",
    "multiprocessing_context",
    "generator",
    "prefetch_factor",
    "persistent_workers",
    "pin_memory_device",
    "in_order",
)


def distributed_loader(source: Any, batch_size: int, shuffle: bool, comm: Any) -> tuple:
    """A map-style Dataset, or a DataLoader over one with a plain sequential or random
    sampler, rebuilt on a DistributedSampler: ``(loader, restart, plan)``; anything else
    comes back as ``(data, None, None)`` (every process then reads all of it).

    The batch size is global, as fit's ``batch_size`` (a DataLoader's included): each
    process loads ``batch_size // world_size`` rows per step. A shuffled pass draws the
    sampler's epoch from torch's RNG on rank 0 (broadcast), so epochs reshuffle and a
    resumed fit draws the same order.
    """
    from torch.utils.data import (
        DataLoader,
        Dataset,
        DistributedSampler,
        IterableDataset,
        RandomSampler,
        SequentialSampler,
    )

    if isinstance(source, DataLoader):
        sampler = source.sampler
        plain = type(sampler) is SequentialSampler or (
            type(sampler) is RandomSampler
            and not sampler.replacement
            and getattr(sampler, "_num_samples", None) is None
        )
        if source.batch_size is None or isinstance(source.dataset, IterableDataset) or not plain:
            return source, None, None
        dataset, size, drop_last = source.dataset, source.batch_size, source.drop_last
        shuffle, what = type(sampler) is RandomSampler, "the DataLoader's batch_size"
        options = {k: getattr(source, k) for k in _LOADER_OPTIONS if hasattr(source, k)}
        if not source.num_workers:
            options.pop("prefetch_factor", None)
    elif (
        isinstance(source, Dataset)
        and not isinstance(source, IterableDataset)
        and hasattr(source, "__len__")
    ):
        dataset, size, drop_last, options, what = source, batch_size, False, {}, "batch_size"
    else:
        return source, None, None
    data.check_divisible(size, comm.world_size, what)
    n = len(cast(Sized, dataset))  # map-style, with a __len__ (checked above)
    sampler = DistributedSampler(
        dataset, num_replicas=comm.world_size, rank=comm.rank, shuffle=shuffle, drop_last=False
    )
    loader = DataLoader(dataset, batch_size=size // comm.world_size, sampler=sampler, **options)

    def restart() -> Any:
        sampler.set_epoch(comm.draw_seed())
        return loader

    steps = n // size if drop_last else -(-n // size)
    return loader, restart if shuffle else None, (n, size, steps, shuffle)


def _pad(tensor: torch.Tensor, rows: int, fill: float) -> torch.Tensor:
    """``tensor`` with rows of ``fill`` added up to ``rows`` (all_gather takes equal sizes)."""
    extra = rows - tensor.shape[0]
    if not extra:
        return tensor
    return torch.cat([tensor, tensor.new_full((extra, *tensor.shape[1:]), fill)])


def _merge(outputs: list, gather: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """Each output (a tensor, or a dict / tuple of them) concatenated and gathered."""
    first = outputs[0]
    if isinstance(first, torch.Tensor):
        return gather(torch.cat(outputs))
    if isinstance(first, dict):
        return {k: _merge([o[k] for o in outputs], gather) for k in first}
    return type(first)(_merge([o[i] for o in outputs], gather) for i in range(len(first)))
