"""The Callback base class and the list that dispatches to them.

Owns hook names (Keras's), the rule that batch hooks cost nothing when no callback overrides
them, the check of monitored keys at train begin, and each callback's resumable state.
The ready-made callbacks live beside this file, one family per file.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ..errors import FitkitTypeError, FitkitValueError

if TYPE_CHECKING:
    from ..model import Model

_BATCH_HOOKS = (
    "on_train_batch_begin",
    "on_train_batch_end",
    "on_test_batch_begin",
    "on_test_batch_end",
    "on_predict_batch_begin",
    "on_predict_batch_end",
)


class Callback:
    """Base class: override the hooks you need; ``self.model`` is the fitkit Model.

    >>> class StopAt(fitkit.callbacks.Callback):
    ...     def on_epoch_end(self, epoch, logs=None):
    ...         if logs["loss"] < 0.1:
    ...             self.model.stop_training = True
    """

    #: Runs after the others at each hook (a backup must see their updated state).
    runs_last = False

    #: Batch hooks needed only every N steps (a callback saving every N steps sets it):
    #: a graph backend then still runs several steps per compiled call.
    step_interval: int | None = None

    def __init__(self) -> None:
        self.model: Model = None  # type: ignore[assignment]  # None until set_model (Keras's way)
        self.params: dict = {}

    def uses(self, hook: str) -> bool:
        """Whether this callback needs ``hook`` called: by default, whether its class
        overrides it (a hook nobody uses costs nothing per step)."""
        return getattr(type(self), hook, None) is not getattr(Callback, hook)

    def monitored_keys(self) -> list[str]:
        """Log keys this callback reads; fit checks at train begin that they will exist."""
        monitor = getattr(self, "monitor", None)
        return [monitor] if isinstance(monitor, str) else []

    @property
    def state_key(self) -> str:
        """What a backup files this callback's state under, and a resumed fit matches it by:
        the class name, plus what tells two of a class apart (a monitor, a path); override it
        when two callbacks of one class would share it."""
        return type(self).__qualname__

    def _key(self, **fields: Any) -> str:
        """A state_key of the class name and ``fields`` (Lightning's layout)."""
        return f"{type(self).__qualname__}{fields!r}"

    def state_dict(self) -> dict:
        """JSON-able state that a resumed run must get back (counters, best values); {}
        (the default): the callback holds none, and a backup ignores it."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what ``state_dict`` returned."""

    def set_model(self, model: Model) -> None:
        """Called as fit, validate or predict starts, with the fitkit Model (``self.model``)."""
        self.model = model

    def set_params(self, params: dict) -> None:
        """Called after ``set_model``: fit's ``epochs``, ``batch_size``, ``initial_epoch``,
        ``steps`` (per epoch, None when unknown) and ``verbose``; ``{}`` for validate/predict."""
        self.params = params

    def on_train_begin(self, logs: Mapping | None = None) -> None:
        """Called once as fit starts, before the first epoch; ``logs`` is None."""

    def on_train_end(self, logs: Mapping | None = None) -> None:
        """Called once as fit ends, also after a stop or an error; ``logs``: the last
        epoch's logs (``{}`` if none finished)."""

    def on_epoch_begin(self, epoch: int, logs: Mapping | None = None) -> None:
        """Called before each epoch (``epoch`` 0-based; not again for an epoch resumed
        mid-way); ``logs`` is None."""

    def on_epoch_end(self, epoch: int, logs: Mapping | None = None) -> None:
        """Called after each epoch, its validation included; ``logs``: a dict of floats, the
        epoch's means (``loss``, metrics), ``val_`` ones when it validated, and ``lr``."""

    def on_train_batch_begin(self, batch: int, logs: Mapping | None = None) -> None:
        """Called before each training step (``batch``: its 0-based index in the epoch;
        before a group of steps run in one call, the group's first); ``logs`` is None."""

    def on_train_batch_end(self, batch: int, logs: Mapping | None = None) -> None:
        """Called after each training step (or group: ``batch`` is its last); ``logs``: the
        epoch's running means, read from the device only if used (a host sync)."""

    def on_test_begin(self, logs: Mapping | None = None) -> None:
        """Called as an evaluation starts (``validate``, or fit's validation); ``logs`` is None."""

    def on_test_end(self, logs: Mapping | None = None) -> None:
        """Called as an evaluation ends; ``logs``: its loss and metrics (no ``val_`` prefix)."""

    def on_test_batch_begin(self, batch: int, logs: Mapping | None = None) -> None:
        """Called before each evaluation step (or group); ``logs`` is None."""

    def on_test_batch_end(self, batch: int, logs: Mapping | None = None) -> None:
        """Called after each evaluation step (or group); ``logs``: the running means so far,
        read from the device only if used (a host sync)."""

    def on_predict_begin(self, logs: Mapping | None = None) -> None:
        """Called as ``predict`` starts; ``logs`` is None."""

    def on_predict_end(self, logs: Mapping | None = None) -> None:
        """Called as ``predict`` ends, before the outputs are returned; ``logs`` is None."""

    def on_predict_batch_begin(self, batch: int, logs: Mapping | None = None) -> None:
        """Called before each prediction step (or group); ``logs`` is None."""

    def on_predict_batch_end(self, batch: int, logs: Mapping | None = None) -> None:
        """Called after each prediction step (or group); ``logs`` is empty."""


def _overrides(cb: Callback, hook: str) -> bool:
    return cb.uses(hook)


# Callbacks of other libraries and their fitkit equivalents (same arguments where Keras's).
_EQUIVALENTS = {
    "EarlyStopping": "EarlyStopping",
    "ModelCheckpoint": "ModelCheckpoint",
    "BackupAndRestore": "BackupAndRestore",
    "LearningRateScheduler": "LearningRateScheduler",
    "ReduceLROnPlateau": "ReduceLROnPlateau",
    "CSVLogger": "CSVLogger",
    "TensorBoard": "TensorBoard",
    "TerminateOnNaN": "TerminateOnNaN",
    "LambdaCallback": "LambdaCallback",
    "LearningRateMonitor": "the history's 'learning_rate' column",
    "ProgbarLogger": "fit(verbose=...)",
    "TQDMProgressBar": "fit(verbose=...)",
    "RichProgressBar": "fit(verbose=...)",
    "GradientAccumulationScheduler": "compile(gradient_accumulation_steps=N)",
    "StochasticWeightAveraging": None,
}


def _foreign(cb: Any) -> str | None:
    """A clear message for a Keras or Lightning callback passed to fitkit."""
    module = type(cb).__module__.split(".")[0]
    library = {
        "keras": "Keras",
        "tf_keras": "Keras",
        "tensorflow": "Keras",
        "lightning": "Lightning",
        "pytorch_lightning": "Lightning",
    }.get(module)
    if library is None:
        return None
    name = type(cb).__name__
    same = _EQUIVALENTS.get(name)
    if same is None:
        hint = (
            "fitkit has no ready-made equivalent; subclass fitkit.callbacks.Callback "
            "(same hook names as Keras)."
        )
    elif same[0].isupper():
        hint = f"use fitkit.callbacks.{same} instead (same arguments as Keras's)."
    else:
        hint = f"use {same} instead."
    where = (
        " with a torch network (Keras callbacks run with a Keras network)"
        if library == "Keras"
        else ""
    )
    return (
        f"callbacks holds a {library} callback ({name}), which fitkit cannot drive{where}: {hint}"
    )


def match_states(callbacks: list, states: list[dict], path: str) -> tuple[list, list[str]]:
    """((callback, saved state) pairs, keys of saved states matched by none), by state_key;
    a key that several callbacks share on one side but not in the same number on the other
    cannot be matched, and is refused before any state is given back."""
    pairs, dropped = [], []
    for key in dict.fromkeys(s.get("key", s["class"]) for s in states):
        saved = [s["state"] for s in states if s.get("key", s["class"]) == key]
        legacy = all("key" not in s for s in states)  # an older backup: by class alone
        own = [
            cb for cb in callbacks if cb.state_key == key or (legacy and type(cb).__name__ == key)
        ]
        if len(own) != len(saved) and max(len(own), len(saved)) > 1 and own:
            raise FitkitValueError(
                f"{path!r} holds {len(saved)} state(s) filed under {key}, and this fit has "
                f"{len(own)} callback(s) under that key: which is which cannot be told. Give "
                f"each its own state_key (override the property), or resume with as many."
            )
        pairs += list(zip(own, saved, strict=False))  # saved may be longer: dropped below
        dropped += [key] * (len(saved) - len(own))
    return pairs, dropped


class CallbackList:
    """Calls each hook on every callback; batch hooks only on those that override them.

    fit, validate and predict build one from their ``callbacks`` argument; a hand-written
    loop can drive callbacks with one too.

    >>> show = fitkit.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: print(logs))
    >>> cbs = fitkit.callbacks.CallbackList([show], model, {"epochs": 10})
    >>> cbs.on_epoch_end(0, {"loss": 0.42})
    {'loss': 0.42}
    """

    def __init__(self, callbacks: Iterable[Callback] | None, model: Model, params: dict) -> None:
        self.params = params
        from .keras_bridge import wrap  # Keras callbacks of a Keras network run bridged

        callbacks = [wrap(cb, model) for cb in callbacks or []]
        # A stable sort: those that must see the others' updates (backups) go last.
        self.callbacks = sorted(callbacks, key=lambda cb: getattr(cb, "runs_last", False))
        for cb in self.callbacks:
            if not isinstance(cb, Callback):
                foreign = _foreign(cb)
                raise FitkitTypeError(
                    foreign
                    or (
                        f"callbacks must be fitkit.callbacks.Callback instances; got "
                        f"{type(cb).__name__}. Subclass fitkit.callbacks.Callback."
                    )
                )
            cb.set_model(model)
            cb.set_params(params)
        # Batch hooks are resolved once: a hook nobody overrides becomes None and is skipped.
        self.batch_hooks = {
            h: [getattr(cb, h) for cb in self.callbacks if _overrides(cb, h)] for h in _BATCH_HOOKS
        }

    def wants(self, hook: str) -> bool:
        """Whether some callback overrides batch hook ``hook`` (else calling it is skipped)."""
        return bool(self.batch_hooks[hook])

    def step_interval(self, kind: str) -> int | None:
        """Steps between the batch hooks of ``kind`` that every callback can live with:
        None when none has them, 1 when one needs every step."""
        hooks = (f"on_{kind}_batch_begin", f"on_{kind}_batch_end")
        wanting = [cb for cb in self.callbacks if any(_overrides(cb, h) for h in hooks)]
        if not wanting:
            return None
        if any(not cb.step_interval for cb in wanting):
            return 1
        return math.gcd(*(cb.step_interval or 1 for cb in wanting))  # each is set (above)

    def check_monitors(self, keys: Iterable[str]) -> None:
        """Every monitored key will be in the epoch logs; else a clear error, before training."""
        keys = list(keys)
        for cb in self.callbacks:
            for key in cb.monitored_keys():
                if key not in keys:
                    hint = (
                        " (validation keys need validation_data or validation_split)"
                        if key.startswith("val_")
                        else ""
                    )
                    raise FitkitValueError(
                        f"{type(cb).__name__} monitors {key!r}, which this fit will never "
                        f"log{hint}. The epoch logs will hold: {', '.join(keys)}."
                    )

    def state_dicts(self) -> list[dict]:
        """The resumable state of each callback that holds one, in order, filed under its
        ``state_key`` (and class name)."""
        return [
            {"class": type(cb).__name__, "key": cb.state_key, "state": state}
            for cb in self.callbacks
            for state in [cb.state_dict()]
            if state
        ]

    def load_state_dicts(self, states: list[dict], path: str = "the backup") -> None:
        """Give each callback the saved state filed under its ``state_key`` (several under
        one key: in order). Saved states that no callback matches and stateful callbacks
        with no saved state are warned about: those callbacks start afresh."""
        pairs, dropped = match_states(self.callbacks, states, path)
        fresh = [
            cb.state_key
            for cb in self.callbacks
            if all(cb is not c for c, _ in pairs) and cb.state_dict()
        ]
        for cb, state in pairs:
            cb.load_state_dict(state)
        if dropped:
            warnings.warn(
                f"{path!r} holds the state of {dropped}, which no callback of this "
                f"fit matches (by state_key: the class and, for one that monitors, "
                f"its monitor): that state is not restored.",
                stacklevel=2,
            )
        if fresh:
            warnings.warn(
                f"{path!r} holds no state for {fresh} of this fit: "
                f"{'it starts' if len(fresh) == 1 else 'they start'} afresh, as at "
                f"a first epoch.",
                stacklevel=2,
            )

    def call_batch(self, hook: str, step: int, logs: Mapping | None) -> None:
        """Call batch hook ``hook`` on the callbacks that override it."""
        for fn in self.batch_hooks[hook]:
            fn(step, logs)

    def __getattr__(self, hook: str) -> Callable[..., None]:
        if not hook.startswith("on_"):
            raise AttributeError(hook)

        def dispatch(*args: Any) -> None:
            for cb in self.callbacks:
                getattr(cb, hook)(*args)

        return dispatch
