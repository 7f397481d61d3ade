"""Torch training state as numpy arrays + JSON: weights, optimizer, running logs, RNGs.

Owns what exact resume needs from torch (the twin of fitkit/tf/state.py); the file format
is checkpoint.py's, the fit position and host RNGs resume.py's.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .. import statecheck as sc
from ..errors import FitkitValueError
from ..resume import (
    as_arrays,
    check_same,
    host_rng_state,
    load_shared,
    save_shared,
    set_host_rng_state,
)

# The attributes that hold a torch metric's running state (set by its reset()).
_METRIC_STATE = ("correct", "count", "total", "pos", "neg", "tp", "fp", "fn", "sums", "shift")


def to_array(tensor: torch.Tensor) -> np.ndarray:
    """A tensor as numpy, bit for bit (bfloat16 as its uint16 bits)."""
    tensor = tensor.detach().cpu()
    if tensor.dtype == torch.bfloat16:
        return tensor.view(torch.int16).numpy().view(np.uint16).copy()
    return tensor.numpy().copy()


def assign(tensor: torch.Tensor, array: np.ndarray) -> None:
    """Copy ``array`` (what ``to_array`` saved) into ``tensor``, keeping its dtype and device."""
    if tensor.dtype == torch.bfloat16:
        value = torch.from_numpy(array.view(np.int16).copy()).view(torch.bfloat16)
    else:
        value = torch.from_numpy(np.array(array)).to(dtype=tensor.dtype)
    with torch.no_grad():
        tensor.copy_(value.to(tensor.device))


# ---------------------------------------------------------------------- weights
def get_weights(adapter: Any) -> list[np.ndarray]:
    """Every parameter and buffer of the network, in state_dict order (Keras's get_weights)."""
    return [to_array(t) for t in adapter.net.state_dict().values()]


def set_weights(adapter: Any, weights: list) -> None:
    own = adapter.net.state_dict()
    shapes = [tuple(t.shape) for t in own.values()]
    given = [tuple(np.shape(w)) for w in weights]
    if shapes != given:
        raise FitkitValueError(
            f"set_weights got {len(given)} arrays of shapes {given[:4]}…; "
            f"the network has {len(shapes)} of shapes {shapes[:4]}…. Pass "
            f"what model.get_weights() returns."
        )
    with torch.no_grad():
        for t, w in zip(own.values(), weights, strict=True):
            assign(t, np.asarray(w))


# ---------------------------------------------------------------------- RNGs
def rng_state() -> dict[str, Any]:
    """python, numpy, torch's CPU generator and, once CUDA is in use, each GPU's. torch's
    states stay CPU byte tensors (taken at every epoch's start: cheap); a checkpoint turns
    them into arrays (resume.as_arrays) when it saves."""
    states: dict[str, Any] = host_rng_state()
    states["rng/torch"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            states[f"rng/cuda/{i}"] = s
    return states


def _byte_tensor(value: Any) -> torch.Tensor:
    return value if isinstance(value, torch.Tensor) else torch.from_numpy(np.array(value))


def set_rng_state(states: dict[str, Any]) -> None:
    set_host_rng_state(states)
    torch.set_rng_state(_byte_tensor(states["rng/torch"]))
    cuda = sorted(k for k in states if k.startswith("rng/cuda/"))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([_byte_tensor(states[k]) for k in cuda])


def all_rngs(adapter: Any) -> dict[str, Any]:
    """Every RNG a forward pass or the user's code may draw from, for the first-batch checks
    to put back as they found them: those ``rng_state`` saves, CUDA's too once the network
    is on a GPU (a check may be CUDA's first use)."""
    states = rng_state()
    if adapter.device.type == "cuda" and not any(k.startswith("rng/cuda/") for k in states):
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            states[f"rng/cuda/{i}"] = s
    return states


def set_all_rngs(adapter: Any, states: dict[str, Any]) -> None:
    """Put back what ``all_rngs`` returned."""
    set_rng_state(states)


class LoaderRngs:
    """A DataLoader's own generators (its ``generator=``, its sampler's): a pass draws its
    order and worker seeds from them instead of torch's global RNG, so a backup saves them."""

    def __init__(self, generators: list) -> None:
        self.generators = generators

    def get(self) -> dict[str, torch.Tensor]:
        """CPU byte tensors (taken as each pass opens: cheap); arrays once a backup saves."""
        return {f"generator/{i}": g.get_state() for i, g in enumerate(self.generators)}

    def set(self, states: dict) -> None:
        for i, generator in enumerate(self.generators):
            if f"generator/{i}" in states:
                generator.set_state(_byte_tensor(states[f"generator/{i}"]))


def loader_rngs(data: Any) -> LoaderRngs | None:
    """The generators a loader's passes draw from, when it has its own (else None)."""
    found: list = []
    batch_sampler = getattr(data, "batch_sampler", None)
    for owner in (data, getattr(data, "sampler", None), getattr(batch_sampler, "sampler", None)):
        generator = getattr(owner, "generator", None)
        if isinstance(generator, torch.Generator) and all(generator is not g for g in found):
            found.append(generator)
    return LoaderRngs(found) if found else None


# ---------------------------------------------------------------------- the whole state
def get_state(adapter: Any) -> tuple[dict[str, np.ndarray], dict]:
    """(arrays, meta) of the network, the optimizer, the running logs and the RNGs."""
    arrays: dict[str, np.ndarray] = {}
    meta: dict = {"backend": "torch"}
    net = adapter.net.state_dict()
    arrays.update({f"net/{k}": to_array(v) for k, v in net.items()})
    meta["net"] = [[k, list(v.shape)] for k, v in net.items()]
    meta["optimizer"] = _save_optimizer(adapter.optimizer, "optimizer", arrays)
    if len(adapter.optimizers) > 1:  # several (configure_optimizers): every one's state
        meta["optimizers"] = [
            _save_optimizer(opt, f"optimizers/{i}", arrays)
            for i, opt in enumerate(adapter.optimizers[1:], 1)
        ]
    meta["logs"] = {}
    for mode, tracker in adapter._trackers.items():
        arrays.update({f"logs/{mode}/{k}": to_array(v) for k, v in tracker.sums.items()})
        meta["logs"][mode] = {"count": _number(tracker.count), "keys": list(tracker.sums)}
    meta["metrics"] = []
    for i, metric in enumerate(adapter.metrics):
        scalars = {}
        for name in _METRIC_STATE:
            value = getattr(metric, name, "absent")
            if isinstance(value, torch.Tensor):
                arrays[f"metrics/{i}/{name}"] = to_array(value)
            elif value != "absent":
                scalars[name] = _number(value)
        meta["metrics"].append({"name": metric.name, "scalars": scalars})
    save_shared(adapter, arrays, meta, as_arrays(rng_state()))
    return arrays, meta


def set_state(adapter: Any, arrays: dict[str, np.ndarray], meta: dict) -> None:
    """Restore what get_state returned; everything is checked (``check_state``) before
    anything changes."""
    check_state(adapter, arrays, meta)
    net = adapter.net.state_dict()
    saved_opts = [meta["optimizer"], *meta.get("optimizers", [])]  # checked above
    with torch.no_grad():
        for k, t in net.items():
            assign(t, arrays[f"net/{k}"])
    for i, (opt, saved) in enumerate(zip(adapter.optimizers, saved_opts, strict=True)):
        prefix = "optimizer" if i == 0 else f"optimizers/{i}"
        opt.load_state_dict(_optimizer_state(opt, arrays, saved, prefix))
    for mode, tracker in adapter._trackers.items():
        saved = meta["logs"].get(mode, {"count": 0, "keys": []})
        tracker.sums = {
            k: _tensor(arrays[f"logs/{mode}/{k}"], adapter.device) for k in saved["keys"]
        }
        tracker.count = saved["count"]
    # strict=False: before its first batch a model has no metrics yet (check_metric_names)
    for i, (metric, saved) in enumerate(zip(adapter.metrics, meta["metrics"], strict=False)):
        for name in _METRIC_STATE:
            key = f"metrics/{i}/{name}"
            if key in arrays:
                setattr(metric, name, _tensor(arrays[key], adapter.device))
            elif name in saved["scalars"]:
                setattr(metric, name, saved["scalars"][name])
    load_shared(adapter, arrays, meta, set_rng_state)


def _save_optimizer(optimizer: Any, prefix: str, arrays: dict[str, np.ndarray]) -> dict:
    """An optimizer's state: its tensors into ``arrays`` under ``prefix``; returns the JSON."""
    opt = optimizer.state_dict()
    values: dict = {}
    for index, entries in opt["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                arrays[f"{prefix}/{index}/{key}"] = to_array(value)
            else:
                values[f"{index}/{key}"] = value
    return {
        "class": type(optimizer).__name__,
        "param_groups": opt["param_groups"],
        "values": values,
        "tensors": {
            f"{i}/{k}": [str(v.dtype), list(v.shape)]
            for i, e in opt["state"].items()
            for k, v in e.items()
            if isinstance(v, torch.Tensor)
        },
    }


def _optimizer_state(optimizer: Any, arrays: dict, saved: dict, prefix: str) -> dict:
    """An optimizer's state_dict rebuilt from arrays + JSON (tuples where torch keeps them)."""
    own_groups = optimizer.state_dict()["param_groups"]
    groups = []
    for own, group in zip(own_groups, saved["param_groups"], strict=True):
        groups.append(
            {k: tuple(v) if isinstance(own.get(k), tuple) else v for k, v in group.items()}
        )
    state: dict = {}
    for key, value in saved["values"].items():
        index, name = key.split("/", 1)
        state.setdefault(int(index), {})[name] = value
    for key, (dtype, _) in saved["tensors"].items():
        index, name = key.split("/", 1)
        array = arrays[f"{prefix}/{key}"]
        state.setdefault(int(index), {})[name] = (
            torch.from_numpy(array.view(np.int16).copy()).view(torch.bfloat16)
            if dtype == "torch.bfloat16"
            else torch.from_numpy(np.array(array))
        )
    return {"state": state, "param_groups": groups}


def _tensor(array: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.array(array)).to(device)


def _number(value: Any) -> Any:
    """An int / float count as JSON (a weighted count is a tensor: saved as an array)."""
    if isinstance(value, torch.Tensor):
        return value.item()  # host sync: saving a checkpoint reads every state
    return value


# ---------------------------------------------------------------------- checks
def check_state(adapter: Any, arrays: dict[str, np.ndarray], meta: dict) -> None:
    """Every field ``set_state`` reads, against this model: a FitkitValueError (without the
    file's name: the caller adds it) for anything that would not restore exactly."""
    claimed: set = set()
    net = adapter.net.state_dict()
    saved = sc.field(
        meta,
        "net",
        "",
        lambda v: (
            isinstance(v, list)
            and all(
                isinstance(e, list) and len(e) == 2 and isinstance(e[0], str) and sc.is_shape(e[1])
                for e in v
            )
        ),
        "a list of [name, shape]",
    )
    check_same(
        "network weights",
        [(k, tuple(s)) for k, s in saved],
        [(k, tuple(v.shape)) for k, v in net.items()],
    )
    for k, t in net.items():
        sc.array(arrays, f"net/{k}", claimed, tuple(t.shape), _dtype(t.dtype))
    saved_opts = [
        sc.field(meta, "optimizer", "", lambda v: isinstance(v, dict), "a dict"),
        *sc.field(
            {"optimizers": meta.get("optimizers", [])},
            "optimizers",
            "",
            lambda v: isinstance(v, list) and all(isinstance(o, dict) for o in v),
            "a list of dicts",
        ),
    ]
    if len(saved_opts) != len(adapter.optimizers):
        raise FitkitValueError(
            f"it holds the state of {len(saved_opts)} optimizer(s) and this "
            f"model has {len(adapter.optimizers)}; compile with the same "
            f"configure_optimizers() to resume. Nothing was restored."
        )
    for i, (opt, saved) in enumerate(zip(adapter.optimizers, saved_opts, strict=True)):
        where, prefix = (
            ("['optimizer']", "optimizer")
            if i == 0
            else (f"['optimizers'][{i - 1}]", f"optimizers/{i}")
        )
        _check_optimizer(opt, saved, where, prefix, arrays, claimed)
    logs = sc.field(meta, "logs", "", lambda v: isinstance(v, dict), "a dict")
    for mode, entry in logs.items():
        sc.field(entry, "count", f"['logs'][{mode!r}]", sc.is_number, "a number")
        for key in sc.field(entry, "keys", f"['logs'][{mode!r}]", sc.is_names, "a list of names"):
            sc.array(arrays, f"logs/{mode}/{key}", claimed)
    _check_metrics(adapter, arrays, meta, claimed)
    check_rngs(arrays, claimed)
    sc.check_scheduler(adapter, meta)
    if adapter.accumulation is not None:
        update = adapter.accumulation
        for key in ("count", "rows", "first"):
            sc.array(arrays, f"accumulation/{key}", claimed, (), kinds="iuf")
        params = [p for g in adapter.optimizer.param_groups for p in g["params"]]
        for i, p in enumerate(params):
            if f"accumulation/grad/{i}" in arrays:
                sc.array(arrays, f"accumulation/grad/{i}", claimed, tuple(p.shape))
        if update.scaler is not None and "accumulation/scaler/scale" in arrays:
            sc.array(arrays, "accumulation/scaler/growth", claimed, (), kinds="iuf")
    sc.unclaimed(arrays, claimed, ("epoch_rng/", "accumulation/", "source/"))


def check_rngs(arrays: dict, claimed: set, prefix: str = "") -> None:
    """The RNG states ``set_rng_state`` sets, tried on fresh generators."""
    sc.check_host_rngs(arrays, claimed, prefix)
    state = sc.array(arrays, f"{prefix}rng/torch", claimed, dtype=np.uint8)
    cuda = [k for k in arrays if k.startswith(f"{prefix}rng/cuda/")]
    try:
        torch.Generator().set_state(torch.from_numpy(np.array(state)))
        for key in cuda:
            sc.array(arrays, key, claimed, dtype=np.uint8)
    except (RuntimeError, ValueError) as err:
        raise FitkitValueError(
            f"its torch generator state ({prefix}rng/torch) is not valid "
            f"({err}): the file was edited or damaged. Nothing was "
            f"restored."
        ) from None
    if cuda and torch.cuda.is_available() and len(cuda) > torch.cuda.device_count():
        raise FitkitValueError(
            f"it holds the RNGs of {len(cuda)} GPUs and this machine has "
            f"{torch.cuda.device_count()}; resume on as many GPUs."
        )


def _check_optimizer(
    optimizer: Any, saved: dict, where: str, prefix: str, arrays: dict, claimed: set
) -> None:
    name = type(optimizer).__name__
    own = optimizer.state_dict()
    # None: a format-1 file, which did not name the class; its settings keys still must match
    kind = sc.field(
        saved, "class", where, lambda v: v is None or isinstance(v, str), "a class name"
    )
    groups = sc.field(
        saved,
        "param_groups",
        where,
        lambda v: isinstance(v, list) and all(isinstance(g, dict) for g in v),
        "a list of dicts",
    )
    if kind not in (name, None) or any(
        # strict=False: the groups' count is compared just below, with its own message
        sorted(g) != sorted(o)
        for g, o in zip(groups, own["param_groups"], strict=False)
    ):
        raise FitkitValueError(
            f"it holds the optimizer state of {kind} (settings "
            f"{sorted(groups[0]) if groups else []}), and this model's optimizer is {name} "
            f"(settings {sorted(own['param_groups'][0])}): that state would not fit. Nothing "
            f"was restored; compile with the optimizer the checkpoint was saved with."
        )
    if [g.get("params") for g in groups] != [g["params"] for g in own["param_groups"]]:
        raise FitkitValueError(
            "its optimizer has other parameter groups than this model's; "
            "compile with the same optimizer and parameter groups to resume. "
            "Nothing was restored."
        )
    for i, (group, mine) in enumerate(zip(groups, own["param_groups"], strict=True)):
        for key, value in mine.items():
            if key != "params":
                sc.like(group[key], value, f"{where}['param_groups'][{i}][{key!r}]")
    ids = {str(i) for g in own["param_groups"] for i in g["params"]}

    def entry(key: str) -> bool:
        return key.count("/") >= 1 and key.split("/", 1)[0] in ids

    values = sc.field(
        saved,
        "values",
        where,
        lambda v: isinstance(v, dict) and all(entry(k) for k in v),
        "a dict {'<param>/<name>': value}",
    )
    tensors = sc.field(
        saved,
        "tensors",
        where,
        lambda v: (
            isinstance(v, dict)
            and all(
                entry(k)
                and isinstance(d, list)
                and len(d) == 2
                and isinstance(d[0], str)
                and sc.is_shape(d[1])
                for k, d in v.items()
            )
        ),
        "a dict {'<param>/<name>': [dtype, shape]}",
    )
    for key, value in values.items():
        sc.like(value, None, f"{where}['values'][{key!r}]")
    for key, (dtype, shape) in tensors.items():
        index, part = key.split("/", 1)
        mine = own["state"].get(int(index), {}).get(part)
        if isinstance(mine, torch.Tensor) and (
            str(mine.dtype) != dtype or list(mine.shape) != shape
        ):
            raise sc.bad(
                f"{where}['tensors'][{key!r}]",
                [dtype, shape],
                f"[{str(mine.dtype)!r}, {list(mine.shape)}] as this optimizer's",
            )
        sc.array(
            arrays,
            f"{prefix}/{key}",
            claimed,
            tuple(shape),
            np.uint16 if dtype == "torch.bfloat16" else None,
        )


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
                and isinstance(e.get("scalars"), dict)
                for e in v
            )
        ),
        "a list of {name, scalars}",
    )
    names = sc.check_metric_names(saved, [m.name for m in adapter.metrics])
    for i, entry in enumerate(saved):
        metric = adapter.metrics[i] if names else None
        for key, value in entry["scalars"].items():
            if key not in _METRIC_STATE or not (value is None or sc.is_number(value)):
                raise sc.bad(f"['metrics'][{i}]['scalars'][{key!r}]", value, "a number or null")
        held = set(entry["scalars"]) | {n for n in _METRIC_STATE if f"metrics/{i}/{n}" in arrays}
        if metric is not None and held != {n for n in _METRIC_STATE if hasattr(metric, n)}:
            raise sc.bad(f"['metrics'][{i}]", entry, f"the state of metric {metric.name!r}")
        for name in _METRIC_STATE:
            if f"metrics/{i}/{name}" in arrays:
                mine = getattr(metric, name, None)
                shape = tuple(mine.shape) if isinstance(mine, torch.Tensor) else None
                dtype = _dtype(mine.dtype) if isinstance(mine, torch.Tensor) else None
                sc.array(arrays, f"metrics/{i}/{name}", claimed, shape, dtype)


def _dtype(dtype: torch.dtype) -> np.dtype:
    """The numpy dtype ``to_array`` saves a tensor of ``dtype`` as."""
    return (
        np.dtype(np.uint16)
        if dtype == torch.bfloat16
        else torch.empty((), dtype=dtype).numpy().dtype
    )
