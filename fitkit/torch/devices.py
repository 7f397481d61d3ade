"""Torch device helpers: which devices exist, memory growth and memory limits on CUDA.

Owns torch.cuda calls only; the public functions are in fitkit/devices.py.
"""
from __future__ import annotations

import torch

from ..errors import FitkitValueError


def default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def list_devices() -> list[dict]:
    devices = [{"name": "cpu", "type": "CPU"}]
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        devices.append({"name": f"cuda:{i}", "type": "GPU", "description": props.name,
                        "memory_bytes": props.total_memory})
    return devices


def memory_growth(enabled: bool = True) -> bool:
    """Torch's caching allocator already grows on demand; this reports whether a GPU exists.

    ``enabled=False`` is refused: torch has no way to reserve all memory up front.
    """
    if not enabled:
        raise FitkitValueError("torch always grows GPU memory on demand; "
                               "memory_growth(False) has no torch equivalent.")
    return torch.cuda.is_available()


def virtual_devices(count: int, memory_limit: int | None = None) -> list[str]:
    """Torch has no logical devices: only ``count=1`` with a memory limit (MiB) on CUDA."""
    if count != 1:
        raise FitkitValueError(
            f"torch cannot split one device into {count} logical devices. Run several "
            f"processes instead (torchrun), or use the TensorFlow backend for logical devices."
        )
    if memory_limit is not None and torch.cuda.is_available():
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, memory_limit * 2 ** 20 / total), 0)
        return ["cuda:0"]
    return [str(default_device())]
