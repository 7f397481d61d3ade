"""Backend resolution: FITKIT_BACKEND, the network's own type, and lazy adapter import.

Owns the one finder of a backend's modules (``backend_module``: fitkit/torch/<part>.py or
fitkit/tf/<part>.py) and the errors for unknown or missing backends. Imports a framework only
when one of its modules is actually requested.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from types import ModuleType
from typing import TYPE_CHECKING, Any

from .errors import BackendError, FitkitTypeError, FitkitValueError

if TYPE_CHECKING:
    from .adapter import Adapter

ENV_VAR = "FITKIT_BACKEND"
BACKENDS = ("torch", "tensorflow")
_ALIASES = {"torch": "torch", "pytorch": "torch", "tensorflow": "tensorflow", "tf": "tensorflow"}
_INSTALL = {
    "torch": "pip install 'fitkit[torch]'  (or: pip install torch)",
    "tensorflow": "pip install 'fitkit[tensorflow]'  (or: pip install tensorflow)",
}
_FRAMEWORK_MODULE = {"torch": "torch", "tensorflow": "tensorflow"}
_PACKAGE = {"torch": "fitkit.torch", "tensorflow": "fitkit.tf"}  # mirrored, file for file


def normalize(name: str, *, source: str = "backend") -> str:
    """Map a user-written backend name (``"pytorch"``, ``"tf"``…) to its canonical form."""
    key = str(name).strip().lower()
    if key not in _ALIASES:
        raise FitkitValueError(
            f"Unknown {source} {name!r}. Valid choices: 'torch' (alias 'pytorch') or "
            f"'tensorflow' (alias 'tf')."
        )
    return _ALIASES[key]


def _installed(name: str) -> bool:
    return _FRAMEWORK_MODULE[name] in sys.modules or (
        importlib.util.find_spec(_FRAMEWORK_MODULE[name]) is not None
    )


def _imported(name: str) -> bool:
    # a Keras 3 script may import only keras, which brings tensorflow in as its backend
    return _FRAMEWORK_MODULE[name] in sys.modules or (
        name == "tensorflow" and "keras" in sys.modules
    )


def backend() -> str:
    """The backend portable code runs on: FITKIT_BACKEND; else the framework the script has
    imported, when it imported one of the two; else torch if installed, else tensorflow.

    >>> import tensorflow, fitkit; fitkit.backend()  # FITKIT_BACKEND unset  # doctest: +SKIP
    'tensorflow'
    """
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        return normalize(env, source=f"{ENV_VAR} value")
    imported = [name for name in BACKENDS if _imported(name)]
    if len(imported) == 1:  # the script chose its framework by importing it
        return imported[0]
    for name in BACKENDS:
        if _installed(name):
            return name
    raise BackendError(
        "Neither torch nor tensorflow is installed. Install one: " + " or ".join(_INSTALL.values())
    )


def _net_backend(net: Any) -> str | None:
    """The backend a native network belongs to, judged by its type (never imports a framework)."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(net, torch.nn.Module):
        return "torch"
    keras = sys.modules.get("keras")
    if keras is not None and isinstance(net, (keras.Model, keras.layers.Layer)):
        return "tensorflow"
    tf = sys.modules.get("tensorflow")
    if tf is not None and isinstance(net, tf.Module):
        return "tensorflow"
    return None


def backend_for(net: Any) -> str:
    """Infer the backend from the network; check it against FITKIT_BACKEND when that is set."""
    found = _net_backend(net)
    if found is None:
        raise FitkitTypeError(
            f"fitkit.Model needs a native network: a torch.nn.Module, a keras.Model / "
            f"keras.layers.Layer, or a tf.Module; got {type(net).__module__}.{type(net).__name__}."
        )
    env = os.environ.get(ENV_VAR, "").strip()
    if env and normalize(env, source=f"{ENV_VAR} value") != found:
        raise BackendError(
            f"{ENV_VAR}={env!r} but the network is a {found} network "
            f"({type(net).__name__}). Unset {ENV_VAR}, set it to {found!r}, or build the "
            f"network with the other framework."
        )
    return found


def backend_module(backend: str, part: str) -> ModuleType:
    """The backend's module ``part`` ("adapter", "state", "devices", "events", "script"…):
    the same file name in fitkit/torch/ and fitkit/tf/, so callers never name a backend.
    Imported on first use; a backend whose framework is not installed is refused."""
    name = normalize(backend)
    if not _installed(name):
        raise BackendError(
            f"The {name!r} backend was requested but {_FRAMEWORK_MODULE[name]} is not installed. "
            f"Install it with: {_INSTALL[name]}"
        )
    return importlib.import_module(f"{_PACKAGE[name]}.{part}")


def adapter_module(name: str) -> ModuleType:
    """The adapter module for a backend name (``backend_module(name, "adapter")``)."""
    return backend_module(name, "adapter")


def backend_part(adapter: Adapter, part: str) -> ModuleType:
    """The module ``part`` of the backend an adapter belongs to (``backend_module``)."""
    return backend_module(adapter.name, part)


def loaded_backends() -> list[str]:
    """The backends whose framework is already imported (set_seed seeds each)."""
    return [n for n in BACKENDS if _FRAMEWORK_MODULE[n] in sys.modules]


def set_seed(seed: int) -> None:
    """Seed python, numpy and the backend(s) so two runs give the same history.

    >>> fitkit.set_seed(0)
    """
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    for name in loaded_backends() or [backend()]:
        backend_module(name, "adapter").set_seed(seed)
