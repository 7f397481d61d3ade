"""Device helpers facade: list devices, GPU memory growth, virtual (logical) devices.

Owns the public functions and backend choice; each adapter's ``devices`` module does the
framework work (torch.cuda, tf.config).
"""
from __future__ import annotations

import importlib

from .backend import backend as _backend
from .backend import normalize

_MODULES = {"torch": "fitkit.torch.devices", "tensorflow": "fitkit.tf.devices"}


def _impl(backend: str | None):
    name = normalize(backend) if backend else _backend()
    return importlib.import_module(_MODULES[name])


def list_devices(backend: str | None = None) -> list[dict]:
    """Every device the backend sees, as dicts with ``name`` and ``type``.

    >>> fitkit.devices.list_devices()
    [{'name': 'cpu', 'type': 'CPU'}]
    """
    return _impl(backend).list_devices()


def memory_growth(enabled: bool = True, backend: str | None = None) -> bool:
    """Let GPU memory grow on demand instead of reserving it all; returns whether a GPU exists."""
    return _impl(backend).memory_growth(enabled)


def virtual_devices(count: int, memory_limit: int | None = None,
                    backend: str | None = None) -> list[str]:
    """Split the first GPU (or the CPU when there is none) into ``count`` logical devices.

    >>> fitkit.devices.virtual_devices(2, memory_limit=1024)
    """
    return _impl(backend).virtual_devices(count, memory_limit)
