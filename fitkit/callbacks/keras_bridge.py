"""Keras callbacks under fitkit's fit: a ``keras.callbacks.Callback`` (a user's own, a third
party's, or Keras's built-ins) runs as it runs in ``keras.Model.fit``.

Owns wrapping one (``wrap``) and what it sees: Keras's hook calls and logs, ``self.model`` the
Keras network with fitkit's optimizer as ``model.optimizer``, ``model.stop_training`` passed
back to fitkit. Which hooks run and when is base.CallbackList's; fitkit's own callbacks and
their state are the rest of this package's.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .base import _BATCH_HOOKS, Callback

if TYPE_CHECKING:
    from ..model import Model

_HOOKS = (
    "on_train_begin",
    "on_train_end",
    "on_epoch_begin",
    "on_epoch_end",
    "on_test_begin",
    "on_test_end",
    "on_predict_begin",
    "on_predict_end",
    *_BATCH_HOOKS,
)


def is_keras_callback(cb: Any) -> bool:
    """Whether ``cb`` is a Keras callback (judged without importing Keras)."""
    keras = sys.modules.get("keras")
    return keras is not None and isinstance(cb, keras.callbacks.Callback)


def wrap(cb: Any, model: Model) -> Any:
    """``cb`` ready for a CallbackList: a Keras callback of a Keras network is bridged (its
    BackupAndRestore becomes fitkit's, which resumes mid-epoch); anything else is unchanged."""
    if not is_keras_callback(cb) or not _is_keras_net(getattr(model, "net", None)):
        return cb
    import keras

    if isinstance(cb, keras.callbacks.BackupAndRestore):
        from .backup import BackupAndRestore

        return BackupAndRestore(
            cb.backup_dir, save_freq=cb.save_freq, delete_checkpoint=cb.delete_checkpoint
        )
    return KerasCallback(cb)


def _is_keras_net(net: Any) -> bool:
    keras = sys.modules.get("keras")
    return keras is not None and isinstance(net, keras.Model)


class KerasCallback(Callback):
    """Drives one Keras callback from fitkit's hooks.

    >>> model.fit(x, y, validation_split=0.2, callbacks=[keras.callbacks.EarlyStopping(patience=2)])
    """

    def __init__(self, callback: Any) -> None:
        super().__init__()
        self.callback = callback
        import keras

        base = keras.callbacks.Callback
        # only the batch hooks the Keras callback overrides cost a call per step
        self._used = {
            h
            for h in _HOOKS
            if getattr(type(callback), h, None) is not getattr(base, h, None)
            or (
                h.startswith("on_train_batch")
                and getattr(type(callback), h.replace("train_", ""), None)
                is not getattr(base, h.replace("train_", ""))
            )
        }

    def uses(self, hook: str) -> bool:
        return hook in self._used

    def set_model(self, model: Model) -> None:
        super().set_model(model)
        net = model.net
        if model.runtime.compiled and getattr(net, "optimizer", None) is None:
            net.optimizer = model.optimizer  # Keras's callbacks read and set its rate
        self.callback.set_model(net)

    def set_params(self, params: dict) -> None:
        super().set_params(params)
        self.callback.set_params(
            {
                "verbose": params.get("verbose", 1),
                "epochs": params.get("epochs"),
                "steps": params.get("steps"),
            }
        )

    def _call(self, hook: str, *args: Any) -> None:
        *head, logs = args
        getattr(self.callback, hook)(*head, dict(logs) if logs is not None else None)
        net = self.model.net
        if getattr(net, "stop_training", False):  # Keras's way of stopping a fit
            self.model.stop_training = True

    def on_train_begin(self, logs: Mapping | None = None) -> None:
        self.model.net.stop_training = False
        if self.model.net.optimizer is not self.model.optimizer:
            self.model.net.optimizer = self.model.optimizer
        self._call("on_train_begin", logs)

    def on_train_end(self, logs: Mapping | None = None) -> None:
        self._call("on_train_end", logs)

    def on_epoch_begin(self, epoch: int, logs: Mapping | None = None) -> None:
        self._call("on_epoch_begin", epoch, logs)

    def on_epoch_end(self, epoch: int, logs: Mapping | None = None) -> None:
        self._call("on_epoch_end", epoch, logs)

    def on_test_begin(self, logs: Mapping | None = None) -> None:
        self._call("on_test_begin", logs)

    def on_test_end(self, logs: Mapping | None = None) -> None:
        self._call("on_test_end", logs)

    def on_predict_begin(self, logs: Mapping | None = None) -> None:
        self._call("on_predict_begin", logs)

    def on_predict_end(self, logs: Mapping | None = None) -> None:
        self._call("on_predict_end", logs)

    def on_train_batch_begin(self, batch: int, logs: Mapping | None = None) -> None:
        self._call("on_train_batch_begin", batch, logs)

    def on_train_batch_end(self, batch: int, logs: Mapping | None = None) -> None:
        self._call("on_train_batch_end", batch, logs)

    def on_test_batch_begin(self, batch: int, logs: Mapping | None = None) -> None:
        self._call("on_test_batch_begin", batch, logs)

    def on_test_batch_end(self, batch: int, logs: Mapping | None = None) -> None:
        self._call("on_test_batch_end", batch, logs)

    def on_predict_batch_begin(self, batch: int, logs: Mapping | None = None) -> None:
        self._call("on_predict_batch_begin", batch, logs)

    def on_predict_batch_end(self, batch: int, logs: Mapping | None = None) -> None:
        self._call("on_predict_batch_end", batch, logs)

    def __repr__(self) -> str:
        return f"KerasCallback({type(self.callback).__name__})"
