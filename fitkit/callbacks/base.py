"""Backend-free callbacks: the Callback base class and the list that dispatches to them.

Owns hook names (Keras's), and the rule that batch hooks cost nothing when no callback
overrides them. Callbacks see logs dicts and the facade only, never a framework.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

from ..errors import FitkitTypeError

_BATCH_HOOKS = ("on_train_batch_begin", "on_train_batch_end",
                "on_test_batch_begin", "on_test_batch_end",
                "on_predict_batch_begin", "on_predict_batch_end")


class Callback:
    """Base class: override the hooks you need; ``self.model`` is the fitkit Model.

    >>> class StopAt(fitkit.callbacks.Callback):
    ...     def on_epoch_end(self, epoch, logs=None):
    ...         if logs["loss"] < 0.1:
    ...             self.model.stop_training = True
    """

    def __init__(self) -> None:
        self.model: Any = None
        self.params: dict = {}

    def set_model(self, model: Any) -> None:
        self.model = model

    def set_params(self, params: dict) -> None:
        self.params = params

    def on_train_begin(self, logs: Mapping | None = None) -> None: ...
    def on_train_end(self, logs: Mapping | None = None) -> None: ...
    def on_epoch_begin(self, epoch: int, logs: Mapping | None = None) -> None: ...
    def on_epoch_end(self, epoch: int, logs: Mapping | None = None) -> None: ...
    def on_train_batch_begin(self, batch: int, logs: Mapping | None = None) -> None: ...
    def on_train_batch_end(self, batch: int, logs: Mapping | None = None) -> None: ...
    def on_test_begin(self, logs: Mapping | None = None) -> None: ...
    def on_test_end(self, logs: Mapping | None = None) -> None: ...
    def on_test_batch_begin(self, batch: int, logs: Mapping | None = None) -> None: ...
    def on_test_batch_end(self, batch: int, logs: Mapping | None = None) -> None: ...
    def on_predict_begin(self, logs: Mapping | None = None) -> None: ...
    def on_predict_end(self, logs: Mapping | None = None) -> None: ...
    def on_predict_batch_begin(self, batch: int, logs: Mapping | None = None) -> None: ...
    def on_predict_batch_end(self, batch: int, logs: Mapping | None = None) -> None: ...


def _overrides(cb: Callback, hook: str) -> bool:
    return getattr(type(cb), hook, None) is not getattr(Callback, hook)


class CallbackList:
    """Calls each hook on every callback; batch hooks only on those that override them."""

    def __init__(self, callbacks: Iterable[Callback] | None, model: Any, params: dict) -> None:
        self.callbacks = list(callbacks or [])
        for cb in self.callbacks:
            if not isinstance(cb, Callback):
                raise FitkitTypeError(
                    f"callbacks must be fitkit.callbacks.Callback instances; got "
                    f"{type(cb).__name__}. Subclass fitkit.callbacks.Callback."
                )
            cb.set_model(model)
            cb.set_params(params)
        # Batch hooks are resolved once: a hook nobody overrides becomes None and is skipped.
        self.batch_hooks = {h: [getattr(cb, h) for cb in self.callbacks if _overrides(cb, h)]
                            for h in _BATCH_HOOKS}

    def wants(self, hook: str) -> bool:
        return bool(self.batch_hooks[hook])

    def call_batch(self, hook: str, step: int, logs: Mapping | None) -> None:
        for fn in self.batch_hooks[hook]:
            fn(step, logs)

    def __getattr__(self, hook: str):
        if not hook.startswith("on_"):
            raise AttributeError(hook)

        def dispatch(*args: Any) -> None:
            for cb in self.callbacks:
                getattr(cb, hook)(*args)
        return dispatch
