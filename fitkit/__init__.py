"""fitkit: one Keras-style training API for PyTorch and TensorFlow.

Public names only. Importing fitkit imports neither torch nor tensorflow; the adapter
for a backend is imported the first time it is needed.
"""

from . import callbacks, devices, distribute, metrics, schedules, script
from ._version import __version__ as __version__
from .backend import backend, set_seed
from .config import run
from .errors import (
    BackendError,
    FitkitAttributeError,
    FitkitError,
    FitkitTypeError,
    FitkitValueError,
    NotCompiledError,
    StepFailedError,
)
from .exported import load_exported
from .history import History
from .model import Model
from .sources import unpack

__all__ = [
    "BackendError",
    "FitkitAttributeError",
    "FitkitError",
    "FitkitTypeError",
    "FitkitValueError",
    "History",
    "Model",
    "NotCompiledError",
    "StepFailedError",
    "backend",
    "callbacks",
    "devices",
    "distribute",
    "load_exported",
    "metrics",
    "run",
    "schedules",
    "script",
    "set_seed",
    "unpack",
]
