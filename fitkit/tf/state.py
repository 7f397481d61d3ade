"""TensorFlow training state as numpy arrays + JSON: variables, optimizer, running logs, RNGs.

Owns what exact resume needs from TensorFlow (the twin of fitkit/torch/state.py); the file
format is checkpoint.py's, the fit position and host RNGs resume.py's. Under a strategy the
adapter calls in its scope; values are read without collectives (see ``local_value``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf

# Private modules, read only: TensorFlow's global generator and eager op seeds, Keras's
# global seed generator have no public getter that does not make them.
from keras.src.backend.common import global_state
from tensorflow.python.eager import context
from tensorflow.python.ops import stateful_random_ops

from .. import statecheck as sc
from ..errors import FitkitValueError
from ..resume import check_same, host_rng_state, load_shared, save_shared, set_host_rng_state
from .data import shuffle_generator
from .metrics import _state


def local_value(variable: Any) -> Any:
    """A variable's value with no collective, so one process alone may read it: a state kept
    per replica (metric sums, tf.VariableSynchronization.ON_READ) is added up over this
    process's replicas (all of them, but for multi_worker: this worker's share), mirrored
    variables are read as they are."""
    inner = (
        getattr(variable, "value", variable) if isinstance(variable, keras.Variable) else variable
    )
    if (
        isinstance(inner, tf.distribute.DistributedValues)
        and inner.synchronization == tf.VariableSynchronization.ON_READ
    ):
        parts = [
            tf.convert_to_tensor(p)
            for p in tf.distribute.get_strategy().experimental_local_results(inner)
        ]
        return tf.add_n(parts) if inner.aggregation == tf.VariableAggregation.SUM else parts[0]
    return variable


def to_array(variable: Any) -> np.ndarray:
    """A variable's value as numpy, bit for bit (bfloat16 as its uint16 bits)."""
    value = keras.ops.convert_to_tensor(local_value(variable))
    if value.dtype == tf.bfloat16:
        return tf.bitcast(value, tf.uint16).numpy()
    return value.numpy()


def assign(variable: Any, array: np.ndarray) -> None:
    if variable.dtype in (tf.bfloat16, "bfloat16"):
        variable.assign(tf.bitcast(tf.constant(array, tf.uint16), tf.bfloat16))
    else:
        variable.assign(array)


def _net_variables(net: Any) -> list:
    """Every variable of the network: weights, non-trainable statistics, dropout seeds."""
    return list(net.variables)


def _optimizer_variables(optimizer: Any) -> list:
    return list(optimizer.variables)


# ---------------------------------------------------------------------- weights
def get_weights(adapter: Any) -> list[np.ndarray]:
    """Every weight of the network, in Keras's order (Keras's get_weights)."""
    return [to_array(v) for v in adapter.net.weights]


def set_weights(adapter: Any, weights: list) -> None:
    own = adapter.net.weights
    shapes = [tuple(v.shape) for v in own]
    given = [tuple(np.shape(w)) for w in weights]
    if shapes != given:
        raise FitkitValueError(
            f"set_weights got {len(given)} arrays of shapes {given[:4]}…; "
            f"the network has {len(shapes)} of shapes {shapes[:4]}…. Pass "
            f"what model.get_weights() returns."
        )
    for v, w in zip(own, weights, strict=True):
        assign(v, np.asarray(w))


# ---------------------------------------------------------------------- RNGs
def rng_state() -> dict[str, np.ndarray]:
    """python, numpy, and fitkit's shuffle generator (dropout seeds are network variables)."""
    arrays = host_rng_state()
    arrays["rng/shuffle"] = shuffle_generator().state.numpy()
    return arrays


def set_rng_state(arrays: dict[str, np.ndarray]) -> None:
    set_host_rng_state(arrays)
    shuffle_generator().state.assign(arrays["rng/shuffle"])


def all_rngs(adapter: Any) -> dict[str, Any]:
    """Every RNG a forward pass or the user's code may draw from, for the first-batch checks
    to put back as they found them: python, numpy, fitkit's shuffle generator, TensorFlow's
    global generator and eager op seeds, Keras's global seed generator and the network's
    seed generators. One not made yet is left alone (making it would draw a seed)."""
    states: dict[str, Any] = host_rng_state()
    for name, variable in _generator_states(adapter):
        states[name] = to_array(variable)  # host sync: a few small reads, per check
    op_seeds = getattr(context.context(), "_rng", None)  # set by tf.random.set_seed
    if op_seeds is not None:
        states["tf/op_seeds"] = op_seeds.getstate()
    return states


def set_all_rngs(adapter: Any, states: dict[str, Any]) -> None:
    """Put back what ``all_rngs`` returned (a generator that did not move is not touched)."""
    set_host_rng_state(states)
    for name, variable in _generator_states(adapter):
        if name in states and not np.array_equal(to_array(variable), states[name]):
            assign(variable, states[name])
    op_seeds = getattr(context.context(), "_rng", None)
    if op_seeds is not None and "tf/op_seeds" in states:
        op_seeds.setstate(states["tf/op_seeds"])


def _generator_states(adapter: Any) -> list[tuple[str, Any]]:
    """(name, state variable) of each random generator that exists now."""
    found = [
        ("rng/shuffle", getattr(shuffle_generator(create=False), "state", None)),
        (
            "tf/global",
            getattr(getattr(stateful_random_ops, "global_generator", None), "state", None),
        ),
        (
            "keras/global",
            getattr(global_state.get_global_attribute("global_seed_generator"), "state", None),
        ),
    ]
    found += [
        (f"net/{i}", v)
        for i, v in enumerate(_net_variables(adapter.net))
        if "seed_generator_state" in str(getattr(v, "path", None) or v.name)
    ]
    return [(name, v) for name, v in found if v is not None]


# ---------------------------------------------------------------------- the whole state
def get_state(adapter: Any) -> tuple[dict[str, np.ndarray], dict]:
    """(arrays, meta) of the network, the optimizer, the running logs and the RNGs."""
    arrays: dict[str, np.ndarray] = {}
    meta: dict = {"backend": "tensorflow"}
    net = _net_variables(adapter.net)
    arrays.update({f"net/{i}": to_array(v) for i, v in enumerate(net)})
    meta["net"] = [[_generic(v.path), list(v.shape)] for v in net]
    _build_optimizer(adapter)
    opt = _optimizer_variables(adapter.optimizer)
    arrays.update({f"optimizer/{i}": to_array(v) for i, v in enumerate(opt)})
    meta["optimizer"] = [[_generic(v.path), list(v.shape)] for v in opt]
    if len(adapter.optimizers) > 1:  # several (configure_optimizers): every one's state
        meta["optimizers"] = _save_others(adapter, arrays)
    meta["logs"] = {}
    for mode, tracker in adapter._trackers.items():
        arrays.update({f"logs/{mode}/{k}": to_array(v) for k, v in tracker.sums.items()})
        arrays[f"logs/{mode}/__count__"] = to_array(tracker.count)
        meta["logs"][mode] = {"keys": list(tracker.sums), "returned": sorted(tracker.returned)}
    meta["metrics"] = []
    for i, metric in enumerate(adapter.metrics):
        variables = _metric_variables(metric)
        arrays.update({f"metrics/{i}/{j}": to_array(v) for j, v in enumerate(variables)})
        meta["metrics"].append({"name": metric.name, "count": len(variables)})
    save_shared(adapter, arrays, meta, rng_state())
    return arrays, meta


def set_state(adapter: Any, arrays: dict[str, np.ndarray], meta: dict) -> None:
    """Restore what get_state returned; everything is checked (``check_state``) before
    anything changes."""
    check_state(adapter, arrays, meta)
    net = _net_variables(adapter.net)
    opt = _optimizer_variables(adapter.optimizer)
    for i, v in enumerate(net):
        assign(v, arrays[f"net/{i}"])
    for i, v in enumerate(opt):
        assign(v, arrays[f"optimizer/{i}"])
    for k, other in enumerate(adapter.optimizers[1:], 1):
        for i, v in enumerate(_optimizer_variables(other)):
            assign(v, arrays[f"optimizers/{k}/{i}"])
    for mode, tracker in adapter._trackers.items():
        saved = meta["logs"].get(mode)
        if saved is None:
            continue
        for key in saved["keys"]:
            if key not in tracker.sums:  # made here, before any trace, as the step would
                tracker.sums[key] = _state()
            tracker.sums[key].assign(arrays[f"logs/{mode}/{key}"])
        tracker.count.assign(arrays[f"logs/{mode}/__count__"])
        tracker.returned.update(saved["returned"])
    # strict=False: before its first batch a model has no metrics yet (check_metric_names)
    for i, (metric, saved) in enumerate(zip(adapter.metrics, meta["metrics"], strict=False)):
        for j, v in enumerate(_metric_variables(metric)[: saved["count"]]):
            assign(v, arrays[f"metrics/{i}/{j}"])
    load_shared(adapter, arrays, meta, set_rng_state)


def _generic(path: str) -> str:
    """A variable's path without Keras's numbering ("sequential_2/dense_4/kernel" ->
    "sequential/dense/kernel"): a network built again in the same process is the same one."""
    return re.sub(r"_\d+(?=[/_]|$)", "", path)


def _build_optimizer(adapter: Any) -> None:
    """Slots exist before they are saved or restored (a fresh run builds them at step 1).
    Several optimizers are built by their own steps, on the variables each one trains."""
    optimizer = adapter.optimizer
    if (
        isinstance(optimizer, keras.optimizers.Optimizer)
        and not optimizer.built
        and len(adapter.optimizers) == 1
    ):
        optimizer.build(adapter.net.trainable_variables)


def _save_others(adapter: Any, arrays: dict[str, np.ndarray]) -> dict:
    """Several optimizers: which of the network's trainable variables each one trains (to build
    it again on them at a restore, before its first step; None: not built yet) and the
    variables of every one but the first."""
    others = []
    for k, opt in enumerate(adapter.optimizers[1:], 1):
        variables = _optimizer_variables(opt)
        arrays.update({f"optimizers/{k}/{i}": to_array(v) for i, v in enumerate(variables)})
        others.append([[_generic(v.path), list(v.shape)] for v in variables])
    index = {id(v): i for i, v in enumerate(adapter.net.trainable_variables)}
    trains = []
    for opt in adapter.optimizers:
        held = list(getattr(opt, "_trainable_variables", [])) if opt.built else None
        if held is not None and any(id(v) not in index for v in held):
            raise FitkitValueError(
                "An optimizer from configure_optimizers() trains variables "
                "outside model.net, which a checkpoint cannot restore; keep "
                "every network the steps train inside model.net."
            )
        trains.append(None if held is None else [index[id(v)] for v in held])
    return {"trains": trains, "others": others}


def _build_several(adapter: Any, saved: dict | None) -> None:
    """Build each of several optimizers that is not built yet on the variables it trained in
    the saved run (a restore comes before any step), so its slots can take their values."""
    count = len((saved or {}).get("trains", [None]))
    if count != len(adapter.optimizers):
        raise FitkitValueError(
            f"The checkpoint has {count} optimizer(s), this model "
            f"{len(adapter.optimizers)}; compile with the same "
            f"configure_optimizers() to resume."
        )
    if saved is None:
        return
    variables = adapter.net.trainable_variables  # saved as indices: the same network's order
    for opt, trains in zip(adapter.optimizers, saved["trains"], strict=True):
        if trains is not None and not opt.built:
            opt.build([variables[i] for i in trains])


def _metric_variables(metric: Any) -> list:
    own = getattr(metric, "variables", None)
    if own is None and hasattr(metric, "metric"):  # a native keras metric
        own = metric.metric.variables
    return list(own or [])


# ---------------------------------------------------------------------- checks
def _pairs(v: Any) -> bool:
    return isinstance(v, list) and all(
        isinstance(e, list) and len(e) == 2 and isinstance(e[0], str) and sc.is_shape(e[1])
        for e in v
    )


def check_state(adapter: Any, arrays: dict[str, np.ndarray], meta: dict) -> None:
    """Every field ``set_state`` reads, against this model: a FitkitValueError (without the
    file's name: the caller adds it) for anything that would not restore exactly. Builds the
    optimizer's slots (as the first step would) to compare them."""
    claimed: set = set()
    net = _net_variables(adapter.net)
    saved = sc.field(meta, "net", "", _pairs, "a list of [path, shape]")
    check_same(
        "network variables",
        [(p, tuple(s)) for p, s in saved],
        [(_generic(v.path), tuple(v.shape)) for v in net],
    )
    several = meta.get("optimizers")  # several optimizers: what each trains, the others' slots
    if several is not None:
        count = len(adapter.net.trainable_variables)
        sc.field(
            several,
            "trains",
            "['optimizers']",
            lambda v: (
                isinstance(v, list)
                and all(
                    t is None
                    or (isinstance(t, list) and all(type(i) is int and 0 <= i < count for i in t))
                    for t in v
                )
            ),
            "a list (per optimizer) of the indices of the variables it trains",
        )
        sc.field(
            several,
            "others",
            "['optimizers']",
            lambda v: isinstance(v, list) and all(_pairs(o) for o in v),
            "a list (per optimizer after the first) of [path, shape]",
        )
    _build_several(adapter, several)
    _build_optimizer(adapter)
    opt = _optimizer_variables(adapter.optimizer)
    saved = sc.field(meta, "optimizer", "", _pairs, "a list of [path, shape]")
    check_same(
        "optimizer variables",
        [(p, tuple(s)) for p, s in saved],
        [(_generic(v.path), tuple(v.shape)) for v in opt],
    )
    others = (several or {}).get("others", [])
    if len(others) != len(adapter.optimizers) - 1:
        raise FitkitValueError(
            f"it holds the state of {len(others) + 1} optimizer(s) and this "
            f"model has {len(adapter.optimizers)}; compile with the same "
            f"configure_optimizers() to resume. Nothing was restored."
        )
    parts = [("net", net), ("optimizer", opt)]
    for k, (saved_k, other) in enumerate(zip(others, adapter.optimizers[1:], strict=True), 1):
        variables = _optimizer_variables(other)
        check_same(
            f"optimizer {k}'s variables",
            [(p, tuple(s)) for p, s in saved_k],
            [(_generic(v.path), tuple(v.shape)) for v in variables],
        )
        parts.append((f"optimizers/{k}", variables))
    for prefix, variables in parts:
        for i, v in enumerate(variables):
            sc.array(arrays, f"{prefix}/{i}", claimed, tuple(v.shape), _dtype(v.dtype))
    logs = sc.field(meta, "logs", "", lambda v: isinstance(v, dict), "a dict")
    for mode, entry in logs.items():
        where = f"['logs'][{mode!r}]"
        keys = sc.field(entry, "keys", where, sc.is_names, "a list of names")
        sc.field(
            entry,
            "returned",
            where,
            _names_from(keys),
            "a list of names from its 'keys'",
        )
        for key in keys + ["__count__"]:
            sc.array(arrays, f"logs/{mode}/{key}", claimed, (), np.float64)
    _check_metrics(adapter, arrays, meta, claimed)
    check_rngs(arrays, claimed)
    sc.check_scheduler(adapter, meta)
    update = adapter.accumulation
    if update is not None and any(k.startswith("accumulation/") for k in arrays):
        sc.array(arrays, "accumulation/count", claimed, (), np.int64)
        sc.array(arrays, "accumulation/rows", claimed, (), np.float64)
        for i, v in enumerate(adapter.net.trainable_variables):
            sc.array(arrays, f"accumulation/sum/{i}", claimed, tuple(v.shape), _dtype(v.dtype))
    sc.unclaimed(arrays, claimed, ("epoch_rng/", "accumulation/", "source/"))


def check_rngs(arrays: dict, claimed: set, prefix: str = "") -> None:
    """The RNG states ``set_rng_state`` sets: the host's, tried on fresh generators, and the
    shuffle generator's, shaped as its own."""
    sc.check_host_rngs(arrays, claimed, prefix)
    state = shuffle_generator().state
    sc.array(arrays, f"{prefix}rng/shuffle", claimed, tuple(state.shape), _dtype(state.dtype))


def _names_from(keys: list[str]) -> Callable[[Any], bool]:
    """A check: a list of names, each one in ``keys``."""
    return lambda v: sc.is_names(v) and set(v) <= set(keys)


def _check_metrics(adapter: Any, arrays: dict, meta: dict, claimed: set) -> None:
    saved = sc.field(
        meta,
        "metrics",
        "",
        lambda v: (
            isinstance(v, list)
            and all(
                isinstance(e, dict)
                and isinstance(e.get("name"), str)
                and sc.is_count(e.get("count"))
                for e in v
            )
        ),
        "a list of {name, count}",
    )
    names = sc.check_metric_names(saved, [m.name for m in adapter.metrics])
    for i, entry in enumerate(saved):
        variables = _metric_variables(adapter.metrics[i]) if names else None
        if variables is not None and entry["count"] != len(variables):
            raise sc.bad(
                f"['metrics'][{i}]['count']",
                entry["count"],
                f"{len(variables)} (the variables of metric {entry['name']!r})",
            )
        for j in range(entry["count"]):
            v = variables[j] if variables is not None else None
            sc.array(
                arrays,
                f"metrics/{i}/{j}",
                claimed,
                None if v is None else tuple(v.shape),
                None if v is None else _dtype(v.dtype),
            )


def _dtype(dtype: Any) -> np.dtype:
    """The numpy dtype ``to_array`` saves a variable of ``dtype`` as."""
    dtype = tf.as_dtype(dtype)
    return np.dtype(np.uint16) if dtype == tf.bfloat16 else np.dtype(dtype.as_numpy_dtype)
