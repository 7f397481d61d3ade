"""Multi-device training facade (planned: Mirrored on TensorFlow, DDP under torchrun).

Owns the public entry point only; the strategies arrive with the distribution issue.
"""
from __future__ import annotations

from .errors import FitkitError


def strategy(name: str = "mirrored"):
    """Not available yet: multi-device training is a later milestone of fitkit."""
    raise FitkitError(
        f"fitkit.distribute.strategy({name!r}) is not available yet in this version. "
        "Train on one device for now, or use tf.distribute / torch.distributed directly."
    )
