"""Compiled TensorFlow steps: tf.functions per kind of input, chunks of steps in one call.

Owns tracing (a free batch dimension, one function per structure/dtypes/ranks, relaxed
shapes on a new length), the graph loops over Chunks and dataset iterators, and their
strategy.run twin (DistributedStep). What a step does is the adapter's; batches come from
data.py (distributed ones from distribute.py).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import tensorflow as tf

from ..arrays import leaves, map_optional
from ..sources import make_batch, unpack
from . import data


def _relaxed(value: Any) -> Any:
    """A TensorSpec with a free batch dimension (None stays None: a Python constant)."""
    if value is None:
        return None
    return (
        tf.TensorSpec([None, *value.shape[1:]], value.dtype)
        if value.shape.rank
        else tf.TensorSpec([], value.dtype)
    )


def own_stats(fn: Callable) -> Callable:
    """``fn`` with retrace statistics of its own: TensorFlow counts traces per code object,
    so the same closure made for every model would share one count and warn ("5 out of the
    last N calls ... triggered tf.function retracing") once a process builds a few models."""
    return functools.partial(fn)


def kind_of(item: Any) -> tuple:
    """What forces a new trace: each leaf's dtype and rank (None for a missing part)."""
    return tuple(None if t is None else (t.dtype, t.shape.rank) for t in tf.nest.flatten(item))


def needs_autograph(step: Callable) -> bool:
    """Whether tracing ``step`` converts its Python control flow (AutoGraph): a step of a
    user's Model subclass (a class-style override of any step, ``shared_step``,
    ``compute_loss``...) may branch on tensors, as it could before; fitkit's own steps branch
    with tf.cond / tf.while_loop already, and converting them (every function they call, at
    every trace) cost most of a first fit (1.8 of 2.3 CPU s on a small MLP,
    benchmarks/first_fit.py). Keras traces its own steps unconverted too."""
    owner = getattr(step, "__self__", None)  # the Model whose bound method this is
    where = type(owner).__module__ if owner is not None else getattr(step, "__module__", "")
    return not (where or "").startswith("fitkit.")


def jit_step(step: Callable, autograph: bool = False) -> Callable:
    """One step XLA-compiled (jit_compile=True): shapes are fixed per XLA compilation, so
    the loops over chunks and iterators stay outside it and call it once per batch."""
    return tf.function(step, jit_compile=True, reduce_retracing=True, autograph=autograph)


def chunk_loop(run: Callable) -> Callable:
    """``run`` over every batch of a Chunk, in a graph loop (Python paid once per chunk)."""

    def run_chunk(x: Any, y: Any, w: Any, batch_size: tf.Tensor) -> None:
        steps = (tf.shape(leaves(x)[0])[0] + batch_size - 1) // batch_size

        def body(i: tf.Tensor) -> tuple:
            cut = lambda t: t[i * batch_size : (i + 1) * batch_size]  # noqa: E731
            run(make_batch(*(map_optional(cut, v) for v in (x, y, w))))
            return (i + 1,)

        tf.while_loop(lambda i: i < steps, body, (tf.constant(0),))

    return run_chunk


def iterator_loop(run: Callable) -> Callable:
    """``run`` over up to ``steps`` elements of a dataset iterator, stopping exactly where
    the data ends; the compiled call returns the number of steps it ran."""

    def run_iterator(iterator: Any, steps: tf.Tensor) -> tf.Tensor:
        def body(i: tf.Tensor, _: tf.Tensor) -> Any:
            element = iterator.get_next_as_optional()

            def step() -> tuple:
                run(element.get_value())
                return i + 1, tf.constant(False)

            return tf.cond(element.has_value(), step, lambda: (i, tf.constant(True)))

        count, _ = tf.while_loop(
            lambda i, ended: tf.logical_and(i < steps, ~ended),
            body,
            (tf.constant(0), tf.constant(False)),
        )
        return count

    return run_iterator


def predict_chunk(step: Callable) -> Callable:
    """Predictions for a Chunk of batches in one call: the first batch's outputs give the
    structure and dtypes, a graph loop writes the others, and they come back concatenated."""

    def run_chunk(x: Any, y: Any, w: Any, batch_size: tf.Tensor) -> Any:
        steps = (tf.shape(leaves(x)[0])[0] + batch_size - 1) // batch_size

        def cut(i: Any) -> Any:
            return map_optional(lambda t: t[i * batch_size : (i + 1) * batch_size], x)

        first = step((cut(0), None))
        arrays = [
            tf.TensorArray(t.dtype, size=steps, infer_shape=False).write(0, t)
            for t in tf.nest.flatten(first)
        ]

        def body(i: tf.Tensor, arrays: list) -> tuple:
            out = tf.nest.flatten(step((cut(i), None)))
            return i + 1, [a.write(i, o) for a, o in zip(arrays, out, strict=True)]

        _, arrays = tf.while_loop(lambda i, _: i < steps, body, (tf.constant(1), arrays))
        return tf.nest.pack_sequence_as(first, [a.concat() for a in arrays])

    return run_chunk


def predict_iterator(step: Callable, template: Any) -> Callable:
    """Predictions for up to ``steps`` batches of a dataset iterator in one call, stopping
    where the data ends: returns (steps run, outputs concatenated). ``template`` is an
    earlier batch's outputs: their structure, dtypes and shapes past the batch dimension."""
    flat = tf.nest.flatten(template)

    def run_iterator(iterator: Any, steps: tf.Tensor) -> Any:
        arrays = [
            tf.TensorArray(
                t.dtype,
                size=0,
                dynamic_size=True,
                infer_shape=False,
                element_shape=[None, *t.shape[1:]],
            )
            for t in flat
        ]

        def body(i: tf.Tensor, ended: tf.Tensor, arrays: list) -> Any:
            element = iterator.get_next_as_optional()

            def step_once() -> tuple:
                out = tf.nest.flatten(step((unpack(element.get_value())[0], None)))
                return (
                    i + 1,
                    tf.constant(False),
                    [a.write(i, o) for a, o in zip(arrays, out, strict=True)],
                )

            return tf.cond(element.has_value(), step_once, lambda: (i, tf.constant(True), arrays))

        count, _, arrays = tf.while_loop(
            lambda i, ended, _: tf.logical_and(i < steps, ~ended),
            body,
            (tf.constant(0), tf.constant(False), arrays),
        )
        return count, tf.nest.pack_sequence_as(template, [a.concat() for a in arrays])

    return run_iterator


@tf.function(reduce_retracing=True, autograph=False)
def graph_label_stats(labels: tf.Tensor) -> tf.Tensor:
    """[min, max, the first non-whole label or NaN], compiled: checks run on every batch-style
    call, where eager ops would cost more than the step."""
    values = tf.cast(tf.reshape(labels, [-1]), tf.float64)
    fractional = tf.boolean_mask(values, values != tf.round(values))
    odd = tf.concat([fractional[:1], tf.constant([float("nan")], tf.float64)], 0)[0]
    return tf.stack([tf.reduce_min(values), tf.reduce_max(values), odd])


class CompiledStep:
    """A step compiled for one batch and for a Chunk of batches (a loop inside the graph).

    One tf.function per kind of input (structure, dtypes, ranks). The first batch of a kind
    is traced with its batch dimension free, so a partial last batch needs no new trace;
    another shape of the same kind (a sequence length, a padded batch) retraces once and
    relaxes to the dimensions in common, as Keras does. ``eager=True`` runs the Python step
    as it is (compile(run_eagerly=True)). ``autograph``: see ``needs_autograph``.
    """

    def __init__(
        self,
        run: Callable,
        run_chunk: Callable,
        run_iterator: Callable | None,
        *,
        eager: bool = False,
        predicts: bool = False,
        autograph: bool = False,
    ) -> None:
        self.run, self.run_chunk, self.run_iterator, self.eager = (
            run,
            run_chunk,
            run_iterator,
            eager,
        )
        self.predicts = predicts  # predict: an iterator call returns the outputs too
        self.autograph = autograph
        self.template: Any = None  # a single batch's outputs (predict: shapes and dtypes)
        self.functions: dict[tuple, Any] = {}  # tf.function objects

    def compile(self, fn: Callable) -> Any:
        """``fn`` as a tf.function (one of this step's loops, or a batch-style call)."""
        return tf.function(fn, reduce_retracing=True, autograph=self.autograph)

    def __call__(self, item: Any) -> Any:
        if isinstance(item, data.IteratorChunk):
            return self._iterate(item)
        chunk = isinstance(item, data.Chunk)
        args = tuple(item) if chunk else (item,)
        if self.eager:
            out = (self.run_chunk if chunk else self.run)(*args)
        else:
            kind = (chunk, kind_of(args))
            fn = self.functions.get(kind)
            if fn is None:
                fn = self.compile(self.run_chunk if chunk else self.run)
                fn.get_concrete_function(*tf.nest.map_structure(_relaxed, args))
                self.functions[kind] = fn
            out = fn(*args)
        if self.predicts and self.template is None:
            self.template = out
        return out

    def _iterate(self, chunk: Any) -> Any:
        """Several steps over a dataset iterator in one call; tf.function traces once per
        element spec (a padded batch's free dimensions need no new trace). A predict call
        returns the chunk's outputs."""
        steps = tf.constant(chunk.steps, tf.int32)
        # a predict call: the first batch ran alone, its outputs shape the others'
        run = predict_iterator(self.run, self.template) if self.predicts else self.run_iterator
        if run is None:
            raise RuntimeError("this step has no iterator loop")
        if self.eager:
            result = run(chunk.iterator, steps)
        else:
            key = (
                "iterator",
                None
                if self.template is None
                else tuple((t.dtype, t.shape[1:]) for t in tf.nest.flatten(self.template)),
            )
            fn = self.functions.get(key)
            if fn is None:
                fn = self.functions[key] = self.compile(run)
            result = fn(chunk.iterator, steps)
        if self.predicts:
            chunk.count, outputs = result
            return outputs
        chunk.count = result
        return None

    def tracing_count(self) -> int:
        return sum(f.experimental_get_tracing_count() for f in self.functions.values())


class DistributedStep:
    """A step under a tf.distribute strategy: every call draws global batches from a
    distributed iterator (a ``distribute.Chunk``; a batch-style call's batch becomes one) and
    runs the step on each replica with ``strategy.run``, several steps per compiled call.

    ``after`` runs in cross-replica context after each step (an accumulation window's
    update). Predictions come back in the global order (``Replicas.predictor``); the first
    predict call runs one step alone, whose outputs shape the loops' arrays (as CompiledStep
    does).
    """

    def __init__(
        self,
        replicas: Any,
        step: Callable,
        *,
        after: Callable | None = None,
        eager: bool = False,
        predicts: bool = False,
        autograph: bool = False,
    ) -> None:
        self.replicas, self.step, self.eager, self.predicts = replicas, step, eager, predicts
        self.autograph = autograph
        native = replicas.native

        def each(batch: Any) -> None:
            native.run(step, args=(batch,))
            if after is not None:
                after()

        self.each = each
        self.template: Any = None
        self.functions: dict[Any, Any] = {}  # tf.function objects

    def __call__(self, item: Any) -> Any:
        if not isinstance(item, data.IteratorChunk):  # a batch-style call
            item = self.replicas.one_batch(item)
        steps = tf.constant(item.steps, tf.int32)
        with self.replicas.scope():
            if not self.predicts:
                item.count = self._compiled("iterator", iterator_loop(self.each))(
                    item.iterator, steps
                )
                return None
            rows = self.replicas.rows_per_replica(item)
            predict = self.replicas.predictor(self.step, rows)
            if self.template is None:
                item.ran = 1
                first = lambda iterator: predict(iterator.get_next()[0])  # noqa: E731
                self.template = self._compiled(("first", rows), first)(item.iterator)
                return self.template
            key = (rows, tuple((t.dtype, t.shape[1:]) for t in tf.nest.flatten(self.template)))
            run = predict_iterator(lambda batch: predict(batch[0]), self.template)
            item.count, outputs = self._compiled(key, run)(item.iterator, steps)
            return outputs

    def _compiled(self, key: Any, fn: Callable) -> Callable:
        if self.eager:
            return fn
        if key not in self.functions:
            self.functions[key] = tf.function(fn, reduce_retracing=True, autograph=self.autograph)
        return self.functions[key]

    def tracing_count(self) -> int:
        return sum(f.experimental_get_tracing_count() for f in self.functions.values())
