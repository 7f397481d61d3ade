"""Torch training state as numpy arrays + JSON: weights, optimizer, running logs, RNGs.

Owns what exact resume needs from torch (the twin of fitkit/tf/state.py); the file format
is checkpoint.py's, the fit position and host RNGs resume.py's.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import FitkitValueError
from ..resume import (as_arrays, check_same, host_rng_state, load_shared, save_shared,
                      set_host_rng_state)

# The attributes that hold a torch metric's running state (set by its reset()).
_METRIC_STATE = ("correct", "count", "total", "pos", "neg", "tp", "fp", "fn", "sums", "shift")


def to_array(tensor: torch.Tensor) -> np.ndarray:
    """A tensor as numpy, bit for bit (bfloat16 as its uint16 bits)."""
    tensor = tensor.detach().cpu()
    if tensor.dtype == torch.bfloat16:
        return tensor.view(torch.int16).numpy().view(np.uint16).copy()
    return tensor.numpy().copy()


def to_tensor(array: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    """``array`` back as a tensor of ``like``'s dtype and device."""
    if like.dtype == torch.bfloat16:
        return torch.from_numpy(array.view(np.int16).copy()).view(torch.bfloat16).to(like.device)
    return torch.from_numpy(np.array(array)).to(device=like.device, dtype=like.dtype)


# ---------------------------------------------------------------------- weights
def get_weights(adapter: Any) -> list[np.ndarray]:
    """Every parameter and buffer of the network, in state_dict order (Keras's get_weights)."""
    return [to_array(t) for t in adapter.net.state_dict().values()]


def set_weights(adapter: Any, weights: list) -> None:
    own = adapter.net.state_dict()
    shapes = [tuple(t.shape) for t in own.values()]
    given = [tuple(np.shape(w)) for w in weights]
    if shapes != given:
        raise FitkitValueError(f"set_weights got {len(given)} arrays of shapes {given[:4]}…; "
                               f"the network has {len(shapes)} of shapes {shapes[:4]}…. Pass "
                               f"what model.get_weights() returns.")
    with torch.no_grad():
        for t, w in zip(own.values(), weights):
            t.copy_(to_tensor(np.asarray(w), t))


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
    opt = adapter.optimizer.state_dict()
    values: dict = {}
    for index, entries in opt["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                arrays[f"optimizer/{index}/{key}"] = to_array(value)
            else:
                values[f"{index}/{key}"] = value
    meta["optimizer"] = {"param_groups": opt["param_groups"], "values": values,
                         "tensors": {f"{i}/{k}": [str(v.dtype), list(v.shape)]
                                     for i, e in opt["state"].items() for k, v in e.items()
                                     if isinstance(v, torch.Tensor)}}
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
    """Restore what get_state returned; every shape is checked before anything changes."""
    net = adapter.net.state_dict()
    check_same("network weights", [tuple((k, tuple(s))) for k, s in meta["net"]],
               [(k, tuple(v.shape)) for k, v in net.items()])
    groups = adapter.optimizer.state_dict()["param_groups"]
    if [len(g["params"]) for g in groups] != \
            [len(g["params"]) for g in meta["optimizer"]["param_groups"]]:
        raise FitkitValueError("The checkpoint's optimizer has other parameter groups than "
                               "this model's; compile with the same optimizer to resume.")
    with torch.no_grad():
        for k, t in net.items():
            t.copy_(to_tensor(arrays[f"net/{k}"], t))
    adapter.optimizer.load_state_dict(_optimizer_state(adapter, arrays, meta["optimizer"]))
    for mode, tracker in adapter._trackers.items():
        saved = meta["logs"].get(mode, {"count": 0, "keys": []})
        tracker.sums = {k: _tensor(arrays[f"logs/{mode}/{k}"], adapter.device)
                        for k in saved["keys"]}
        tracker.count = saved["count"]
    for i, (metric, saved) in enumerate(zip(adapter.metrics, meta["metrics"])):
        for name in _METRIC_STATE:
            key = f"metrics/{i}/{name}"
            if key in arrays:
                setattr(metric, name, _tensor(arrays[key], adapter.device))
            elif name in saved["scalars"]:
                setattr(metric, name, saved["scalars"][name])
    load_shared(adapter, arrays, meta, set_rng_state)


def _optimizer_state(adapter: Any, arrays: dict, saved: dict) -> dict:
    """The optimizer's state_dict rebuilt from arrays + JSON (tuples where torch keeps them)."""
    own_groups = adapter.optimizer.state_dict()["param_groups"]
    groups = []
    for own, group in zip(own_groups, saved["param_groups"]):
        groups.append({k: tuple(v) if isinstance(own.get(k), tuple) else v
                       for k, v in group.items()})
    state: dict = {}
    for key, value in saved["values"].items():
        index, name = key.split("/", 1)
        state.setdefault(int(index), {})[name] = value
    for key, (dtype, _) in saved["tensors"].items():
        index, name = key.split("/", 1)
        array = arrays[f"optimizer/{key}"]
        state.setdefault(int(index), {})[name] = \
            torch.from_numpy(array.view(np.int16).copy()).view(torch.bfloat16) \
            if dtype == "torch.bfloat16" else torch.from_numpy(np.array(array))
    return {"state": state, "param_groups": groups}


def _tensor(array: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.array(array)).to(device)


def _number(value: Any) -> Any:
    """An int / float count as JSON (a weighted count is a tensor: saved as an array)."""
    if isinstance(value, torch.Tensor):
        return value.item()  # host sync: saving a checkpoint reads every state
    return value
