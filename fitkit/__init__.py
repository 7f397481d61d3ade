"""fitkit: one Keras-style training API for PyTorch and TensorFlow.

Public names only. Importing fitkit imports neither torch nor tensorflow; the adapter
for a backend is imported the first time it is needed.
"""
from . import callbacks, devices, distribute, metrics, schedules, script
from .backend import backend, set_seed
from .errors import (BackendError, FitkitAttributeError, FitkitError, FitkitTypeError,
                     FitkitValueError, NotCompiledError, StepFailedError)
from .history import History
from .model import Model
from .sources import unpack

__version__ = "0.1.0"

__all__ = [
    "Model", "History", "backend", "set_seed", "callbacks", "devices", "distribute", "metrics",
    "schedules", "script", "unpack", "FitkitError", "FitkitValueError", "FitkitTypeError",
    "FitkitAttributeError", "NotCompiledError", "BackendError", "StepFailedError",
]
