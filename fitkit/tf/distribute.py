"""tf.distribute behind fitkit.distribute: Mirrored, CentralStorage and MultiWorkerMirrored
strategies, and what a compiled model needs under one (replicas' loss shares, distributed
datasets of global batches, eager calls on every replica). The steps' loops are functions.py's.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import keras
import tensorflow as tf

from .. import distribute as facade
from ..arrays import leaves, map_optional
from ..errors import FitkitError, FitkitValueError
from ..sources import chunk_size, make_batch
from . import data

_SUM = tf.distribute.ReduceOp.SUM
_MADE: dict = {}  # strategies made so far, by name and devices: entering one again reuses it


# ---------------------------------------------------------------------- strategies
def default_name() -> str:
    """ "mirrored" when TensorFlow sees several GPUs (logical ones included), else "none"."""
    return "mirrored" if len(tf.config.list_logical_devices("GPU")) > 1 else "none"


class Strategy(facade.Strategy):
    """A tf.distribute strategy as fitkit.distribute's Strategy (see fitkit/distribute.py);
    nothing to close."""

    def __init__(self, name: str, native: Any, rank: int = 0, world_size: int = 1) -> None:
        self.name, self.native, self.rank, self.world_size = name, native, rank, world_size
        self.replicas = native.num_replicas_in_sync

    def scope(self) -> Any:
        return self.native.scope()

    def barrier(self) -> None:
        """A one-number all-reduce over every replica (every worker takes part)."""
        if self.world_size > 1:
            with self.native.scope():
                ones = self.native.run(lambda: tf.ones([], tf.float32))
                self.native.reduce(_SUM, ones, axis=None).numpy()  # host sync: a barrier


def _compute_devices() -> list[str]:
    """Every GPU (logical ones included), else every logical CPU."""
    gpus = tf.config.list_logical_devices("GPU")
    return [d.name for d in gpus or tf.config.list_logical_devices("CPU")]


def enter(name: str) -> Strategy:
    """The strategy named ``name`` (fitkit.distribute.strategy resolves "auto" first)."""
    if name == "auto":
        name = facade.environment_name() or default_name()
    if name == "none":
        return Strategy("none", tf.distribute.get_strategy())
    if name == "mirrored":
        return Strategy(name, _made(name, tf.distribute.MirroredStrategy))
    if name == "central_storage":
        return Strategy(
            name,
            _made(
                name,
                lambda devices: tf.distribute.experimental.CentralStorageStrategy(
                    compute_devices=devices
                ),
            ),
        )
    if name == "multi_worker":
        return _multi_worker()
    if name == "ddp":
        raise FitkitValueError(
            'strategy("ddp") is torch DistributedDataParallel; on TensorFlow use "mirrored" '
            '(several devices in one process) or "multi_worker" (several processes, started '
            "with `fitkit launch -n N script.py`)."
        )
    raise FitkitValueError(
        f"Unknown strategy {name!r} for TensorFlow; use one of {', '.join(facade.NAMES)}."
    )


def _port_taken(err: Exception) -> bool:
    """Whether a worker's server could not listen on its port. TF raises a generic OpError
    (UnknownError) that only its text tells apart; tests/test_launch_faults.py provokes it
    with a taken port."""
    return "Could not start gRPC server" in str(err)


def _made(name: str, make: Any) -> tf.distribute.Strategy:
    """One strategy per name and devices in a process: a second one would start its
    collectives' keys again, and collectives cache what their keys first carried."""
    devices = _compute_devices()
    key = (name, tuple(devices))
    if key not in _MADE:
        _MADE[key] = make(devices=devices)
    return _MADE[key]


def _multi_worker() -> Strategy:
    config = os.environ.get("TF_CONFIG")
    if not config:
        raise FitkitError(
            'strategy("multi_worker") needs a cluster: start the script with '
            "`fitkit launch -n N script.py` (it sets TF_CONFIG for each worker), or set "
            'TF_CONFIG yourself ({"cluster": {"worker": ["host:port", ...]}, "task": '
            '{"type": "worker", "index": i}}).'
        )
    try:
        key = ("multi_worker", config)
        native = _MADE.get(key) or _MADE.setdefault(
            key, tf.distribute.MultiWorkerMirroredStrategy()
        )
    except RuntimeError as err:
        raise FitkitError(
            f'strategy("multi_worker") must be entered before TensorFlow runs anything in '
            f"this process (no tensor, model or device listing before it): {err}"
        ) from err
    except tf.errors.OpError as err:
        if not _port_taken(err):
            raise
        task = json.loads(config)["task"]  # TensorFlow has read it: it is whole
        address = json.loads(config)["cluster"][task["type"]][int(task["index"])]
        raise FitkitError(
            f"TensorFlow could not start this worker's server on {address}: the port is in "
            f"use (another program listens on it, or took it after it was picked). Stop that "
            f"process or list free ports in TF_CONFIG / `fitkit launch --workers`; with "
            f"fitkit launch on one machine, run it again (it picks new ports)."
        ) from err
    resolver = native.cluster_resolver
    workers = json.loads(config).get("cluster", {})
    count = len(workers.get("worker", [])) + len(workers.get("chief", []))
    return Strategy(
        "multi_worker", native, rank=int(resolver.task_id or 0), world_size=max(count, 1)
    )


# ---------------------------------------------------------------------- compiled models
def for_compile(net: Any, controls: Any) -> Replicas | None:
    """The Replicas a model compiled now trains on (None: one device, the usual path), after
    checking that the network belongs to the active strategy and the controls work there."""
    active = facade.active()
    native = getattr(active, "native", None)
    if active is None or active.name == "none" or not isinstance(native, tf.distribute.Strategy):
        if any(isinstance(v, tf.distribute.DistributedValues) for v in _variables(net)):
            raise FitkitValueError(
                "The network was built inside fitkit.distribute.strategy(...), but compile "
                "is called outside it: call model.compile(...) inside the same `with` block."
            )
        return None
    strays = [v.name for v in _variables(net) if not native.extended.variable_created_in_scope(v)]
    if strays:
        raise FitkitValueError(
            f"The network's variables ({', '.join(strays[:3])}…) were created outside "
            f"fitkit.distribute.strategy({active.name!r}): build the network inside the `with` "
            f"block, as well as compile."
        )
    refused = [
        name
        for name, on in (
            ("precision='fp16'", controls.precision == "fp16"),
            ("jit_compile=True", controls.jit_compile),
            (
                "gradient_accumulation_steps > 1",
                controls.gradient_accumulation_steps > 1 and active.name == "central_storage",
            ),
        )
        if on
    ]
    if refused:
        raise FitkitValueError(
            f"compile({', '.join(refused)}) is not supported under "
            f"fitkit.distribute.strategy({active.name!r}) yet."
        )
    return Replicas(active)


def replica_share(x: Any) -> tf.Tensor:
    """In a class-style ``train_step`` under a strategy: this replica's rows / the global
    batch's rows, to multiply the loss by inside the tape (the replicas' gradients are
    summed); 1.0 on one device. fitkit's own step does this itself.

    >>> scaled = loss * fitkit.tf.distribute.replica_share(x)   # inside the GradientTape
    """
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return tf.constant(1.0)
    return _share(tf.shape(leaves(x)[0])[0])


def _share(rows: tf.Tensor) -> tf.Tensor:
    rows = tf.cast(rows, tf.float32)
    return tf.math.divide_no_nan(rows, tf.distribute.get_replica_context().all_reduce(_SUM, rows))


def unscaled(loss: Any) -> Any:
    """A Keras loss without Keras's division by the replicas in sync (Keras's own
    unscale_loss_for_distribution): fitkit logs the batch's mean loss and weighs each
    replica's gradient by its share of the rows (Replicas.share) instead."""

    def call(y: Any, y_pred: Any, sample_weight: Any) -> Any:
        value = loss(y, y_pred, sample_weight)
        n = tf.distribute.get_strategy().num_replicas_in_sync
        return value * tf.cast(n, value.dtype) if n > 1 else value

    return call


def _variables(net: Any) -> list:
    """The network's tf variables (Keras variables unwrapped)."""
    return [v.value if isinstance(v, keras.Variable) else v for v in getattr(net, "variables", [])]


class Replicas:
    """What a compiled model uses under a strategy; the adapter holds one (None otherwise)."""

    def __init__(self, strategy: Strategy) -> None:
        self.strategy = strategy
        self.native: tf.distribute.Strategy = strategy.native
        self.count = strategy.replicas
        self.multi_worker = strategy.name == "multi_worker"

    def scope(self) -> Any:
        return self.native.scope()

    def check_optimizer(self, optimizer: Any) -> None:
        """A Keras optimizer works with the strategy it was created under."""
        inner = getattr(optimizer, "inner_optimizer", optimizer)
        if getattr(inner, "_distribution_strategy", self.native) is not self.native:
            raise FitkitValueError(
                f"The optimizer {type(inner).__name__} was created outside "
                f"fitkit.distribute.strategy({self.strategy.name!r}): create it inside the "
                f"`with` block, or pass its name (optimizer='adam')."
            )

    def outside(self) -> bool:
        """True outside the replicas' steps (an eager check, cross-replica context)."""
        context = tf.distribute.get_replica_context()
        return context is None or context.strategy is not self.native

    def share(self, rows: tf.Tensor, dtype: Any) -> tf.Tensor:
        """This replica's rows / the global batch's rows (inside a step): each replica's
        gradient is scaled by it, so their sum is the gradient of the global batch's mean
        loss, exact for uneven and empty replicas."""
        return tf.cast(_share(rows), dtype)

    def all_reduce(self, values: list) -> list:
        """The sum over replicas of each (maybe None) tensor, inside a step."""
        present = [v for v in values if v is not None]
        summed = iter(tf.distribute.get_replica_context().all_reduce(_SUM, present))
        return [None if v is None else next(summed) for v in values]

    def run(self, fn: Any, *args: Any) -> Any:
        """``fn(*args)`` on every replica (each gets the same values), e.g. an eager check."""
        with self.native.scope():
            return self.native.run(fn, args=args)

    def predictor(self, step: Any, rows: int | None) -> Any:
        """``x -> predictions`` of a global batch, in its order, on every process: ``step``
        on each replica, outputs concatenated in replica order. One process: its replicas'
        local results (no collective). Several: an all-gather, whose shapes must not change
        between calls (a collective caches its first ones), so each replica's outputs are
        padded to ``rows`` (ceil(global batch / replicas)) and the padding dropped after."""
        native = self.native
        if not self.multi_worker:
            return lambda x: tf.nest.map_structure(
                lambda v: tf.concat(native.experimental_local_results(v), 0),
                native.run(lambda x_local: step((x_local, None)), args=(x,)),
            )

        def padded(x_local: Any) -> tuple:
            out = step((x_local, None))
            n = tf.shape(tf.nest.flatten(out)[0])[0]
            check = tf.debugging.assert_less_equal(
                n,
                rows,
                message=(
                    f"multi_worker predict: a batch is larger than the first one ({rows} rows "
                    f"per replica); give predict batches of one size"
                ),
            )
            with tf.control_dependencies([check]):
                out = tf.nest.map_structure(
                    lambda t: tf.pad(t, [[0, rows - n]] + [[0, 0]] * (t.shape.rank - 1)), out
                )
            return out, tf.reshape(n, [1])

        def run(x: Any) -> Any:
            out, counts = native.run(padded, args=(x,))
            counts = native.gather(counts, 0)
            keep = tf.reshape(tf.range(rows)[None, :] < counts[:, None], [-1])
            return tf.nest.map_structure(lambda v: tf.boolean_mask(native.gather(v, 0), keep), out)

        return run

    def from_first_replica(self, value: Any) -> tf.Tensor:
        """``value`` as replica 0 (worker 0) holds it, on every worker: an eager all-reduce
        where the other replicas add zeros."""
        value = tf.convert_to_tensor(value)

        def first() -> tf.Tensor:
            context = tf.distribute.get_replica_context()
            own = tf.cast(context.replica_id_in_sync_group == 0, value.dtype)
            return context.all_reduce(_SUM, value * own)

        with self.native.scope():
            return self.native.experimental_local_results(self.native.run(first))[0]

    def source(self, inner: Any) -> Source:
        return Source(inner, self)

    def distribute(self, dataset: tf.data.Dataset) -> Any:
        """A dataset of global batches, each split over the replicas (across workers too)."""
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.DATA
        )
        with self.native.scope():
            return self.native.experimental_distribute_dataset(dataset.with_options(options))

    def one_batch(self, batch: tuple) -> data.IteratorChunk:
        """A batch-style call's batch as one step of a distributed iterator."""
        dataset = tf.data.Dataset.from_tensors(_drop_none(*batch))
        return Chunk(iter(self.distribute(dataset)), 1, True, dataset.element_spec, _rows(batch))

    def rows_per_replica(self, chunk: Any) -> int | None:
        """The most rows a replica gets from the chunk's global batches (multi_worker)."""
        if not self.multi_worker:
            return None
        return -(-chunk.rows // self.count)


class Chunk(data.IteratorChunk):
    """Up to ``steps`` global batches drawn from a distributed iterator in one call.
    ``ran``: steps run when a call ran fewer on purpose (predict's first step alone)."""

    ran: int | None = None

    def __init__(
        self, iterator: Any, steps: int, known: bool, spec: Any = (), rows: int = 0
    ) -> None:
        super().__init__(iterator, steps, known)
        self.spec = spec  # the global batches' element_spec, for error messages
        self.rows = rows  # the first global batch's rows (the largest, as batches go)

    def describe(self) -> tuple[str, int]:
        shapes = [tuple(s.shape) for s in tf.nest.flatten(self.spec)]
        return ", ".join(str(s) for s in shapes), self.steps

    def done(self) -> int:
        return self.ran if self.ran is not None else super().done()


class Source:
    """Any batch source under a strategy: its global batches as a tf.data pipeline, split
    over the replicas, drawn several steps per compiled call. In-memory arrays are gathered
    per batch through the epoch's order (the same shuffle as on one device), a tf.data
    pipeline is distributed as it is, other iterables go through Dataset.from_generator.
    The first-batch checks see the inner source's first global batch (``peek``)."""

    predicts_in_chunks = True

    def __init__(self, inner: Any, replicas: Replicas) -> None:
        self.inner, self.replicas = inner, replicas
        self.one_shot, self.steps = inner.one_shot, inner.steps
        self._tensors: Any = None  # in-memory data as tf tensors, converted once

    def peek(self) -> tuple:
        return self.inner.peek()

    def targets(self) -> Any:
        return self.inner.targets()

    def map_inputs(self, fn: Any) -> None:
        self.inner.map_inputs(fn)
        self._tensors = None

    def split_labels(self, keys: Any) -> None:
        self.inner.split_labels(keys)

    def rng_state(self) -> dict:
        return self.inner.rng_state()

    def pass_rng_state(self) -> dict:
        return self.inner.pass_rng_state()

    def set_rng_state(self, states: dict) -> None:
        self.inner.set_rng_state(states)

    def __iter__(self) -> Iterator[tuple]:
        return iter(self.inner)

    def batches(
        self, group: int = 1, limit: int | None = None, skip: int | None = None
    ) -> Iterator[tuple]:
        """``(Chunk, steps)`` pairs over one distributed pass; the order is drawn now."""
        total = (
            self.steps if limit is None else limit if self.steps is None else min(limit, self.steps)
        )
        total = None if total is None else max(total - (skip or 0), 0)
        rows = _rows(self.inner.peek()) if self.replicas.multi_worker else 0
        dataset = self._dataset(skip, total)
        iterator = iter(self.replicas.distribute(dataset))
        return self._chunks(iterator, dataset.element_spec, rows, group, total)

    def _chunks(
        self, iterator: Any, spec: Any, rows: int, group: int, total: int | None
    ) -> Iterator[tuple]:
        done = 0
        while total is None or done < total:
            n = chunk_size(group) if total is None else min(chunk_size(group), total - done)
            chunk = Chunk(
                iterator,
                n,
                self.steps is not None or getattr(self.inner, "endless", False),
                spec,
                rows,
            )
            yield chunk, chunk.done
            done += chunk.done()
            if chunk.ran is None and chunk.done() < n:
                return

    def _dataset(self, skip: int | None, total: int | None) -> tf.data.Dataset:
        """This pass's global batches from batch ``skip`` on (None: a first pass, which may
        reuse the one the first-batch checks opened)."""
        inner = self.inner
        if isinstance(inner, data.TensorSource) and not inner.mapped:
            return self._arrays(skip or 0)
        if isinstance(inner, data.DatasetSource):
            dataset = inner._pipeline().map(_drop_none)
            return dataset.skip(skip) if skip else dataset
        spec = tf.nest.map_structure(_free_batch, _drop_none(*inner.peek()))  # first: a
        batches = (
            _drop_none(*b)
            for b, _ in inner.batches(  # generator's pass holds it
                1, None if total is None else (skip or 0) + total, skip=skip
            )
        )
        return tf.data.Dataset.from_generator(lambda: batches, output_signature=spec)

    def _arrays(self, skip: int) -> tf.data.Dataset:
        """Index batches in the epoch's order, each gathered from the data (no second copy
        per epoch); the order comes from the inner source's shuffle generator."""
        inner = self.inner
        if self._tensors is None:
            x = map_optional(data.to_tensor, inner.x)
            if inner.lazy and inner.input_map is not None:
                x = inner.input_map(x)
            self._tensors = (x, *(map_optional(data.to_tensor, v) for v in (inner.y, inner.w)))
        order = inner._order()
        if order is not None and self.replicas.multi_worker:  # worker 0's shuffle, on all
            order = self.replicas.from_first_replica(tf.cast(order, tf.int64))
        index = (
            tf.data.Dataset.range(inner.n)
            if order is None
            else tf.data.Dataset.from_tensor_slices(tf.cast(order, tf.int64))
        )
        tensors = self._tensors

        def take(i: tf.Tensor) -> tuple:
            return _drop_none(*(map_optional(lambda t: tf.gather(t, i), v) for v in tensors))

        index = index.batch(inner.batch_size)
        return (index.skip(skip) if skip else index).map(take)


def _drop_none(*batch: Any) -> tuple:
    """A batch for tf.data, which holds no None: (x,), (x, y) or (x, y, w)."""
    return tuple(p for p in make_batch(*(tuple(batch) + (None, None))[:3]) if p is not None)


def _rows(batch: tuple) -> int:
    """A batch's rows, from its first input's static shape (no value is read)."""
    return int(leaves(batch[0])[0].shape[0])


def _free_batch(t: Any) -> tf.TensorSpec:
    t = tf.convert_to_tensor(t)
    return tf.TensorSpec([None, *t.shape[1:]], t.dtype)
