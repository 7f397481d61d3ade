"""Keras weight files: save and load a keras.Model's weights, checked before anything changes.

Owns the '.weights.h5' format and the comparison of a file against the network; the
facade only passes the path through.
"""
from __future__ import annotations

import os
from typing import Any

import keras

from ..errors import FitkitTypeError, FitkitValueError


def _keras_net(net: Any, what: str) -> None:
    if not isinstance(net, keras.Model):
        raise FitkitTypeError(f"{what} needs a keras.Model; this network is a "
                              f"{type(net).__name__} (use tf.train.Checkpoint).")


def save_weights(net: Any, path: str) -> None:
    """A Keras model's weights as a '.weights.h5' file."""
    _keras_net(net, "save_weights")
    if not path.endswith(".weights.h5"):
        raise FitkitValueError(f"TensorFlow weights are saved as Keras '.weights.h5' files; "
                               f"got {path!r}. Use a path ending in '.weights.h5'.")
    net.save_weights(path)


def load_weights(net: Any, path: str, *, strict: bool = True) -> dict:
    """Load a file saved by ``save_weights`` into ``net``; returns what was skipped."""
    _keras_net(net, "load_weights")
    if not os.path.isfile(path):
        raise FitkitValueError(f"No weights file at {path!r}; check the path "
                               f"(save one with model.save_weights).")
    try:
        net.load_weights(path)
        return {"missing": [], "unexpected": [], "mismatched": []}
    except (ValueError, KeyError) as err:
        raise FitkitValueError(
            f"The weights in {path!r} come from another architecture and do not fit this "
            f"network: {err}"
        ) from err
