"""Experiment trackers: MLflowLogger and WandbLogger, fitkit callbacks that mirror a fit into
an MLflow or W&B run (params, metrics, checkpoints, files).

The tracking libraries are imported when a tracker is made, never by ``import fitkit``.
"""

from .base import Tracker, flatten
from .mlflow_logger import MLflowLogger
from .wandb_logger import WandbLogger

__all__ = ["MLflowLogger", "Tracker", "WandbLogger", "flatten"]
