"""Backend-free callbacks with Keras's names and arguments, one file per family.

Callbacks see logs dicts and the facade only, never a framework; what a backend must do
(writing events, saving state) they ask of the model.
"""
from .base import Callback, CallbackList

__all__ = ["Callback", "CallbackList"]
