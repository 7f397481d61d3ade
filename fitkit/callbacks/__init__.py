"""Backend-free callbacks with Keras's names and arguments, one file per family.

Callbacks see logs dicts and the facade only, never a framework; what a backend must do
(writing events, saving state) they ask of the model.
"""

from .backup import BackupAndRestore
from .base import Callback, CallbackList
from .events import LambdaCallback, TensorBoard, TerminateOnNaN
from .files import CSVLogger, ModelCheckpoint
from .monitor import EarlyStopping, ReduceLROnPlateau
from .schedule import LearningRateScheduler
from .trackers import MLflowLogger, WandbLogger

__all__ = [
    "BackupAndRestore",
    "CSVLogger",
    "Callback",
    "CallbackList",
    "EarlyStopping",
    "LambdaCallback",
    "LearningRateScheduler",
    "MLflowLogger",
    "ModelCheckpoint",
    "ReduceLROnPlateau",
    "TensorBoard",
    "TerminateOnNaN",
    "WandbLogger",
]
