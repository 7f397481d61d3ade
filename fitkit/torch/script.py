"""torch's part of the script style (fitkit/script.py): a batch's value made ready to sum,
sums kept on the device, and several device values read in one host sync.

Mirrored name for name by fitkit/tf/script.py; what the sums mean is fitkit/script.py's.
"""

from __future__ import annotations

import torch


def batch_value(value: torch.Tensor) -> torch.Tensor:
    """A detached 0-d tensor in a wide float type (a tensor of per-sample values averaged)."""
    value = value.detach()
    if value.dtype not in (torch.float32, torch.float64):
        value = value.float()
    return value.mean() if value.ndim else value


def add(total: torch.Tensor | None, value: torch.Tensor, n: int) -> torch.Tensor:
    """``total + value * n``, summed in float64 in place (mps has no float64: its own type)."""
    if total is None:
        wide = value.double() if value.device.type != "mps" else value
        return wide * n
    return total.add_(value, alpha=n)


def read(values: list[torch.Tensor]) -> list[float]:
    """0-d tensors as floats: one host sync when they share a device and type."""
    if len({(v.device, v.dtype) for v in values}) == 1:
        return [float(v) for v in torch.stack(values).tolist()]  # host sync
    return [v.item() for v in values]  # host sync: mixed devices
