"""Torch device helpers: the devices torch sees, CUDA visibility, the allocator's settings.

Owns the torch.cuda calls behind fitkit/devices.py (which documents the public functions);
process groups and multi-process training belong to distribute.py and ``fitkit launch``.
"""

from __future__ import annotations

import gc
import os
import warnings
from typing import Any

import torch

from ..errors import FitkitError, FitkitValueError

_ALLOC_VARS = ("PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF")  # torch reads either


def default_device() -> torch.device:
    """The device a new fitkit.Model trains on: the current CUDA device, else the CPU."""
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def resolve_device(device: Any) -> torch.device:
    """``fitkit.Model(net, device=...)`` as a torch.device that exists here: a name torch does
    not know ("gpu"), CUDA without a GPU, or a GPU index past the last one is refused, naming
    the devices there are (torch's own errors come later, mid-call, and name none)."""
    there = ", ".join(repr(d["name"]) for d in list_devices(initialize=False))
    if isinstance(device, int) and not isinstance(device, bool):
        device = f"cuda:{device}"  # an index: a GPU, as torch.device(0) on a CUDA build
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as err:
        gpu = (
            " (torch calls GPUs 'cuda')"
            if str(device).strip().lower().startswith(("gpu", "/gpu", "/device:gpu"))
            else ""
        )
        raise FitkitValueError(
            f"Model(device={device!r}) is not a torch device{gpu}; the devices here are {there}."
        ) from err
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if not count:
            raise FitkitValueError(
                f"Model(device={device!r}) needs a CUDA GPU, and torch sees none here (torch "
                f"{torch.__version__}, CUDA build: {torch.version.cuda or 'no'}); the devices "
                f"here are {there}. Pass device='cpu', or leave device out (a GPU when there "
                f"is one, else the CPU)."
            )
        if dev.index is not None and dev.index >= count:
            raise FitkitValueError(
                f"Model(device={device!r}): there is no GPU {dev.index}; torch sees {count} "
                f"GPU(s) here (the devices are {there}; CUDA_VISIBLE_DEVICES renumbers them "
                f"from cuda:0)."
            )
    if dev.type == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise FitkitValueError(
            f"Model(device={device!r}): MPS is not available here; the devices here are {there}."
        )
    return dev


def _entry(name: str, type_: str, memory_mb: int | None = None, description: str = "") -> dict:
    return {
        "name": name,
        "type": type_,
        "kind": "physical",
        "memory_mb": memory_mb,
        "description": description,
    }


def list_devices(initialize: bool = True) -> list[dict]:
    devices = [_entry("cpu", "CPU")]
    for i in range(torch.cuda.device_count()):  # counts without initialising CUDA
        if initialize:
            props = torch.cuda.get_device_properties(i)  # this initialises CUDA
            devices.append(_entry(f"cuda:{i}", "GPU", props.total_memory // 2**20, props.name))
        else:
            devices.append(_entry(f"cuda:{i}", "GPU"))
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append(_entry("mps", "MPS"))
    return devices


def _too_late(call: str, what: str) -> FitkitError:
    return FitkitError(
        f"fitkit.devices.{call} came too late: CUDA is already initialised in this process, so "
        f"{what} can no longer change. Move the call to the top of your script, before anything "
        f"touches the GPU (a tensor or model on 'cuda', torch.cuda.* queries, "
        f"fitkit.devices.list_devices(), fitkit.Model(...)), or set it in the environment of "
        f"the process."
    )


def set_visible_devices(indices: list[int]) -> None:
    value = ",".join(str(i) for i in indices) if indices else "-1"
    if os.environ.get("CUDA_VISIBLE_DEVICES") == value:
        return
    if torch.cuda.is_initialized():
        raise _too_late(f"set_visible_devices({indices})", "CUDA_VISIBLE_DEVICES")
    os.environ["CUDA_VISIBLE_DEVICES"] = value


def _merge_setting(conf: str, key: str, value: str) -> str:
    items = [
        part for part in conf.split(",") if part.strip() and part.split(":", 1)[0].strip() != key
    ]
    return ",".join(items + [f"{key}:{value}"])


def _allocator_settings() -> str:
    getter = getattr(torch._C, "_accelerator_getAllocatorSettings", None)
    if getter is not None:
        return getter()
    return ",".join(os.environ.get(var, "") for var in _ALLOC_VARS)


def memory_growth(enabled: bool = True) -> bool:
    if not torch.cuda.is_available():
        return False
    value = "True" if enabled else "False"
    wanted = f"expandable_segments:{value}"
    if torch.cuda.is_initialized():
        if wanted in _allocator_settings().replace(" ", ""):
            return True  # set before CUDA started: nothing to change
        raise _too_late(
            f"memory_growth({enabled})",
            f"the CUDA allocator's settings (PYTORCH_CUDA_ALLOC_CONF={wanted})",
        )
    # edit the variable(s) the user set (PYTORCH_CUDA_ALLOC_CONF wins when both are), else
    # create PYTORCH_CUDA_ALLOC_CONF; other settings in them are kept
    names = [var for var in _ALLOC_VARS if var in os.environ] or [_ALLOC_VARS[0]]
    for var in names:
        os.environ[var] = _merge_setting(os.environ.get(var, ""), "expandable_segments", value)
    setter = getattr(torch._C, "_accelerator_setAllocatorSettings", None)
    if setter is not None:  # torch reads the variables once: apply them in case it already did
        try:
            setter(os.environ[names[0]])
        except RuntimeError:  # the environment variable alone takes effect
            pass
    return True


def set_memory_limit(mb: int, device: int = 0) -> None:
    if not torch.cuda.is_available():
        raise FitkitError(
            f"fitkit.devices.set_memory_limit({mb}) limits GPU memory, but torch sees no CUDA "
            f"GPU here (torch {torch.__version__}, CUDA build: {torch.version.cuda or 'no'}). "
            f"Guard the call with `if fitkit.devices.cuda_info()['available']:`."
        )
    count = torch.cuda.device_count()
    if not 0 <= device < count:
        raise FitkitValueError(
            f"set_memory_limit: device {device} does not exist; torch sees "
            f"{count} GPU(s): cuda:0..cuda:{count - 1}."
        )
    total = torch.cuda.get_device_properties(device).total_memory
    fraction = min(1.0, mb * 2**20 / total)
    torch.cuda.set_per_process_memory_fraction(fraction, device)


def virtual_devices(count: int, memory_limit: int | None = None) -> list[str]:
    if count != 1:
        raise FitkitValueError(
            f"torch cannot split one device into {count} logical devices. Train on several "
            f"processes instead: `fitkit launch -n {count} train.py` (torchrun underneath) with "
            f"fitkit.distribute.strategy('ddp'), which also runs on CPUs; or use the TensorFlow "
            f"backend for logical devices."
        )
    if memory_limit is not None and torch.cuda.is_available():
        set_memory_limit(memory_limit, 0)
        return ["cuda:0"]
    return [device()]


def _warn_no_equivalent(call: str, what: str) -> None:
    warnings.warn(
        f"fitkit.devices.{call}: torch has no {what}; nothing was changed.",
        UserWarning,
        stacklevel=3,
    )


def soft_device_placement(enabled: bool = True) -> bool:
    if enabled:
        _warn_no_equivalent(
            "soft_device_placement(True)",
            "soft placement (an op runs where its tensors are, or fails)",
        )
    return False


def log_device_placement(enabled: bool = True) -> bool:
    if enabled:
        _warn_no_equivalent(
            "log_device_placement(True)", "device placement log (print tensor.device instead)"
        )
    return False


def empty_cache() -> None:
    gc.collect()  # unreachable tensors give their blocks back to the caching allocator first
    torch.cuda.empty_cache()  # a no-op until CUDA is initialised


def device() -> str:
    if not torch.cuda.is_available():
        return "cpu"
    index = torch.cuda.current_device() if torch.cuda.is_initialized() else 0
    return f"cuda:{index}"


def cuda_info() -> dict:
    count = torch.cuda.device_count()
    return {
        "built": torch.version.cuda is not None,
        "available": count > 0,
        "devices": count,
        "version": torch.version.cuda,
    }
