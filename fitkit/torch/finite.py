"""Whether a torch network's weights are all finite, as one device-side flag (no read here).

Owns that flag; the adapter's read_logs reads it with the logs, in the same transfer, at log
points only (fitkit/finite.py's guard asks for it). The TensorFlow twin is fitkit/tf/finite.py.
"""

from __future__ import annotations

from typing import Any

import torch


def flag(net: Any, device: torch.device) -> torch.Tensor:
    """A 0-d bool tensor on ``device`` (the logs'): every floating parameter and buffer of
    ``net`` is finite (a network spread over devices: each flag is brought over)."""
    with torch.no_grad():
        flags = [
            torch.isfinite(t).all().to(device)
            for t in (*net.parameters(), *net.buffers())
            if t.is_floating_point()
        ]
        return torch.stack(flags).all() if flags else torch.tensor(True, device=device)
