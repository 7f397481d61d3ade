"""Device helpers facade: list devices, visible GPUs, memory growth and limits, virtual devices.

Owns the public functions, their argument checks and the backend choice; each adapter's devices
module does the framework work. Setters must run before the framework initialises its devices.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from .backend import backend as _backend
from .backend import backend_module
from .errors import FitkitTypeError, FitkitValueError

__all__ = [
    "cuda_info",
    "device",
    "empty_cache",
    "list_devices",
    "log_device_placement",
    "memory_growth",
    "set_memory_limit",
    "set_visible_devices",
    "soft_device_placement",
    "virtual_devices",
]

_GPU_NAME = re.compile(r"^(?:/?(?:physical_)?device:)?(?:cuda|gpu):(\d+)$", re.IGNORECASE)


def _impl(backend: str | None) -> Any:
    return backend_module(backend or _backend(), "devices")


def list_devices(initialize: bool = True, *, backend: str | None = None) -> list[dict]:
    """Every device the backend sees, physical and logical.

    Each entry is a dict: ``name`` (torch: "cpu", "cuda:0"; TF: "/physical_device:GPU:0",
    "/device:GPU:0"), ``type`` ("CPU", "GPU", "MPS"), ``kind`` ("physical" or "logical"),
    ``memory_mb`` (int, None when unknown: CPUs, TF's physical GPUs, logical GPUs without a
    limit) and ``description`` (the GPU's model where known, else ""). torch has no logical
    devices; TF lists its physical devices, then the logical ones it runs on.

    Listing logical devices (TF) or GPU details (torch) initialises the framework's devices,
    after which ``set_visible_devices``/``memory_growth``/``virtual_devices`` can no longer
    change. ``initialize=False`` lists only what is known without that (TF: physical devices;
    torch: GPUs without memory or model).

    >>> fitkit.devices.list_devices()          # torch, on a laptop
    [{'name': 'cpu', 'type': 'CPU', 'kind': 'physical', 'memory_mb': None, 'description': ''}]
    """
    return _impl(backend).list_devices(initialize)


def _gpu_index(device: Any) -> int:
    if isinstance(device, bool) or not isinstance(device, (int, str)):
        raise FitkitTypeError(
            f"set_visible_devices takes GPU indices or names such as 0, "
            f"'cuda:0', 'GPU:0'; got {device!r}."
        )
    if isinstance(device, int) or device.strip().isdigit():
        index = int(device)
    else:
        match = _GPU_NAME.match(device.strip())
        if not match:
            raise FitkitValueError(
                f"set_visible_devices: {device!r} is not a GPU; give GPU "
                f"indices or names such as 0, 'cuda:0', 'GPU:0' (the CPU "
                f"is always visible)."
            )
        index = int(match.group(1))
    if index < 0:
        raise FitkitValueError(f"set_visible_devices: GPU index {index} is negative.")
    return index


def set_visible_devices(
    devices: int | str | Sequence[int | str], *, backend: str | None = None
) -> None:
    """Use only these GPUs (indices or names: 0, "cuda:1", "GPU:1"); ``[]`` hides every GPU.

    The CPU stays visible. TF: ``tf.config.set_visible_devices``; torch: sets
    ``CUDA_VISIBLE_DEVICES`` (the chosen GPUs are then numbered cuda:0, cuda:1, ...). Both must
    happen before the framework initialises its devices; a late call raises FitkitError.

    >>> fitkit.devices.set_visible_devices([0])       # first lines of the script
    """
    items = [devices] if isinstance(devices, (int, str)) else list(devices)
    indices = [_gpu_index(d) for d in items]
    if len(set(indices)) != len(indices):
        raise FitkitValueError(f"set_visible_devices: {list(items)!r} names a GPU twice.")
    _impl(backend).set_visible_devices(indices)


def memory_growth(enabled: bool = True, *, backend: str | None = None) -> bool:
    """Take GPU memory as needed instead of all up front; returns whether a GPU exists.

    TF: ``tf.config.experimental.set_memory_growth`` on every GPU (TF otherwise reserves
    nearly all of each GPU at start). torch already takes memory on demand; True enables the
    caching allocator's expandable segments (``PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True``,
    less fragmentation), False restores torch's default. Without a GPU nothing changes and it
    returns False. Call it before the framework uses the GPU, else FitkitError.

    >>> fitkit.devices.memory_growth(True)
    False
    """
    return _impl(backend).memory_growth(bool(enabled))


def _positive(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise FitkitValueError(f"{name} must be a positive integer; got {value!r}.")
    return value


def set_memory_limit(mb: int, device: int = 0, *, backend: str | None = None) -> None:
    """Cap this process's memory on GPU ``device`` to ``mb`` MiB.

    TF: the GPU becomes one logical device with that limit (before TF initialises it);
    torch: ``torch.cuda.set_per_process_memory_fraction(mb / total)``, any time (allocations
    past it raise out-of-memory). Without a GPU: FitkitError.

    >>> if fitkit.devices.cuda_info()["available"]:
    ...     fitkit.devices.set_memory_limit(4096)
    """
    if isinstance(device, bool) or not isinstance(device, int):
        raise FitkitTypeError(f"set_memory_limit: device must be a GPU index; got {device!r}.")
    _impl(backend).set_memory_limit(_positive("set_memory_limit: mb", mb), device)


def virtual_devices(
    count: int, memory_limit: int | None = None, *, backend: str | None = None
) -> list[str]:
    """Split GPU 0 into ``count`` logical GPUs of ``memory_limit`` MiB (TF), or, without a
    GPU, the CPU into ``count`` logical CPUs (``memory_limit`` then ignored), so multi-device
    code (``fitkit.distribute.strategy("mirrored")``) runs on a laptop. Returns their names.

    TF only, before TF initialises its devices. torch has no logical devices: ``count > 1``
    raises FitkitValueError pointing to multi-process training with ``fitkit launch``;
    ``count=1`` applies ``memory_limit`` like ``set_memory_limit``.

    >>> fitkit.devices.virtual_devices(2, memory_limit=1024)  # TF, no GPU  # doctest: +SKIP
    ['/device:CPU:0', '/device:CPU:1']
    """
    count = _positive("virtual_devices: count", count)
    if memory_limit is not None:
        memory_limit = _positive("virtual_devices: memory_limit", memory_limit)
    return _impl(backend).virtual_devices(count, memory_limit)


def soft_device_placement(enabled: bool = True, *, backend: str | None = None) -> bool:
    """TF: run an op on the CPU when it has no kernel on the chosen device (any time).
    Returns whether soft placement is now on; torch has none (False, with a warning for True).

    >>> fitkit.devices.soft_device_placement(True, backend="tensorflow")
    True
    """
    return _impl(backend).soft_device_placement(bool(enabled))


def log_device_placement(enabled: bool = True, *, backend: str | None = None) -> bool:
    """TF: log the device of every op (any time). Returns whether logging is now on; torch
    has no placement log (False, with a warning for True).

    >>> fitkit.devices.log_device_placement(False)
    False
    """
    return _impl(backend).log_device_placement(bool(enabled))


def empty_cache(*, backend: str | None = None) -> None:
    """Give back what can be given back: collect unreachable tensors, then torch:
    ``torch.cuda.empty_cache()`` (cached blocks go back to the driver, visible in nvidia-smi).
    TF never returns GPU memory to the driver; only the collection happens (the memory goes
    back to TF's own pool; use ``memory_growth`` to make TF take less in the first place).

    >>> fitkit.devices.empty_cache()
    """
    _impl(backend).empty_cache()


def device(*, backend: str | None = None) -> str:
    """Where a new fitkit.Model trains: torch "cuda:0" / "cpu"; TF "/device:GPU:0" /
    "/device:CPU:0". Under a strategy the strategy places the replicas.

    >>> fitkit.devices.device()
    'cpu'
    """
    return _impl(backend).device()


def cuda_info(*, backend: str | None = None) -> dict:
    """CUDA as the backend sees it: ``built`` (a CUDA build), ``available`` (a GPU is usable),
    ``devices`` (count) and ``version`` (CUDA version of the build, or None).

    >>> fitkit.devices.cuda_info()["available"]
    False
    """
    return _impl(backend).cuda_info()
