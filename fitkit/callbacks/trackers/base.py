"""What every experiment tracker shares: when a run opens, resumes and ends, which params,
metrics and files go to it, the rank-0 rule, and a backend failure that must not end training.

Each tracking library's calls are its own module's (mlflow_logger.py, wandb_logger.py); this
file never imports one.
"""

from __future__ import annotations

import glob
import importlib
import os
import string
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from numbers import Real
from typing import Any

from ... import distribute
from ...errors import FitkitError, FitkitValueError
from ..base import Callback
from ..monitor import is_step_count


def require(module: str, extra: str, owner: str) -> Any:
    """Import ``module``, or a FitkitError naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise FitkitError(
            f"{owner} needs the {module} package ({err}). Install it with: "
            f'pip install "fitkit[{extra}]"'
        ) from err


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as one level of dotted keys: {'compile': {'lr': 0.1}} -> {'compile.lr':
    0.1}; list items by index ('fit.callbacks.0.monitor'); an empty dict or list stays a value."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, (list, tuple)) and value:
            flat.update(flatten({str(i): v for i, v in enumerate(value)}, f"{name}."))
        else:
            flat[name] = value
    return flat


def _pattern_glob(pattern: str) -> str:
    """A ModelCheckpoint filepath pattern as a glob: each {field} may be anything."""
    parts = []
    for literal, field, _, _ in string.Formatter().parse(pattern):
        parts.append(glob.escape(literal))
        if field is not None:
            parts.append("*")
    return "".join(parts)


class Tracker(Callback):
    """Base class of MLflowLogger and WandbLogger: a fitkit callback that mirrors a fit into a
    tracking backend's run. Subclasses implement the ``_backend_*`` methods."""

    def __init__(self, log_every_n_steps: int | None, log_checkpoints: bool) -> None:
        super().__init__()
        if log_every_n_steps is not None and not is_step_count(log_every_n_steps):
            raise FitkitValueError(
                f"{type(self).__name__}(log_every_n_steps=...) takes None (epoch metrics only) "
                f"or a number of training steps >= 1; got {log_every_n_steps!r}."
            )
        self.log_every_n_steps = None if log_every_n_steps is None else int(log_every_n_steps)
        self.log_checkpoints = bool(log_checkpoints)
        if self.log_every_n_steps:
            self.step_interval = self.log_every_n_steps
        self.run_id: str | None = None  # known once the run opened (or a backup restored it)
        self.global_step = 0  # training steps seen by the batch hook, over fits and restores
        self._last_batch = -1
        self._open = False  # a run is open in this process
        self._failed: str | None = None  # a backend error disabled this tracker until train end
        self._params: dict[str, Any] = {}  # flattened params waiting for the run to open
        self._logged: dict[str, Any] = {}  # params already sent, by key
        self._files: list[tuple[str, str | None]] = []  # (path, folder) waiting for the run
        self._given_params = False  # log_params was called: fit's own params are not added
        self._fit_began = 0.0  # wall time this fit began: checkpoints written since then
        # wall time the fit a restore continues began: its checkpoints count too
        self._resumed_began: float | None = None
        self._fitting = False  # between this callback's train begin and train end
        self._ended_as = "FINISHED"  # how the run last ended: a reopened run ends so again
        self._restored = False  # the run id came from a backup: its run may be ahead of it
        self._logged_to = (-1, -1)  # (epoch, step) the run already holds: not logged again

    # ------------------------------------------------------------------ what subclasses do
    def _backend_connect(self) -> None:
        """Reach the store before training (a wrong URI fails here, before any epoch)."""

    def _backend_open(self, run_id: str | None) -> str:
        """Open run ``run_id`` again, or a new one (None); return its id."""
        raise NotImplementedError

    def _backend_params(self, params: dict[str, Any]) -> None:
        """Record flattened params (only those not sent yet, or changed)."""
        raise NotImplementedError

    def _backend_metrics(self, metrics: dict[str, float], step: int, epoch: int | None) -> None:
        """``epoch`` is set for an epoch's logs (step is the epoch then), None for step logs."""
        raise NotImplementedError

    def _backend_file(self, path: str, folder: str | None) -> None:
        """Log a file or a directory, under ``folder`` of the run's artifacts (None: its root)."""
        raise NotImplementedError

    def _backend_close(self, status: str) -> None:
        """End the open run with ``status``: 'FINISHED', 'FAILED' or 'KILLED' (Ctrl-C, SIGTERM)."""
        raise NotImplementedError

    def _backend_logged(self) -> tuple[int, int]:
        """The last epoch and step the open run holds metrics for; (-1, -1) if unknown."""
        return -1, -1

    def _where(self) -> str:
        """The store, as error messages name it."""
        return ""

    # ------------------------------------------------------------------ the public methods
    def log_params(self, params: Mapping[str, Any]) -> None:
        """Record ``params`` (a nested dict such as a resolved config) as the run's parameters,
        flattened to dotted keys ('compile.lr', 'fit.callbacks.0.monitor'). Before fit they
        wait for the run to open; after it ended, the same run is opened again for them."""
        if not isinstance(params, Mapping):
            raise FitkitValueError(
                f"{type(self).__name__}.log_params takes a mapping (a dict of the config); got "
                f"{type(params).__name__}."
            )
        self._given_params = True
        if not distribute.is_main_process():
            return
        self._params.update(flatten(params))
        self._send_now()

    def log_artifact(self, path: str) -> None:
        """Record the file or directory ``path`` (a config, an export) as an artifact of the
        run. Before fit it waits for the run to open; after it ended, the same run is opened
        again for it."""
        path = os.fspath(path)
        if not distribute.is_main_process():
            return  # (the file may be rank 0's alone: written there, or not yet visible)
        if not os.path.exists(path):
            raise FitkitValueError(
                f"{type(self).__name__}.log_artifact: {path!r} does not exist; give a file or "
                f"a directory."
            )
        self._files.append((os.path.abspath(path), None))
        self._send_now()

    def _send_now(self) -> None:
        """Inside a fit: send now if the run is open (else at its opening); outside one, to
        the run this tracker logged to, opened again and closed, if there is one yet."""
        if self._open:
            self._guarded("log", self._flush)
        elif self.run_id is not None and not self._fitting:
            self._open_run()
            self._flush()
            self._close(self._ended_as)  # as it ended: a failed run stays failed

    # ------------------------------------------------------------------ the run
    def _open_run(self) -> None:
        self.run_id = self._backend_open(self.run_id)
        self._open = True
        if self._restored:
            # A backup made before the last epoch end (every N steps) or just before a kill:
            # the epochs and steps this fit trains again are in the run already.
            self._restored = False
            self._logged_to = self._backend_logged()

    def _flush(self) -> None:
        fresh = {k: v for k, v in self._params.items() if self._logged.get(k, _UNSET) != v}
        if fresh:
            self._backend_params(fresh)
            self._logged.update(fresh)
        self._params = {}
        files, self._files = self._files, []
        for path, folder in files:
            self._backend_file(path, folder)

    def _close(self, status: str) -> None:
        if self._open:
            self._open = False
            self._ended_as = status
            self._backend_close(status)

    def _ready(self) -> bool:
        """Open the run on first use in a fit: after a BackupAndRestore (which runs after
        this callback's on_train_begin) gave back the run id it logged to."""
        if self._failed is not None or not distribute.is_main_process():
            return False
        if not self._open:
            return self._guarded("open", self._open_and_flush)
        return True

    def _open_and_flush(self) -> None:
        self._open_run()
        self._flush()

    def _guarded(self, what: str, action: Callable[[], None]) -> bool:
        """Run a backend call; an error warns once and disables the tracker for the rest of
        the fit, so a tracking store that fails never ends the training."""
        try:
            action()
        except Exception as err:  # noqa: BLE001 - any failure of the tracking library; training goes on
            self._failed = f"{type(err).__name__}: {err}"
            warnings.warn(
                f"{type(self).__name__}: {what} failed{self._where()} ({self._failed}); "
                f"training goes on, and this tracker logs nothing more in this fit.",
                stacklevel=3,
            )
            return False
        return True

    # ------------------------------------------------------------------ hooks
    def on_train_begin(self, logs: Mapping | None = None) -> None:
        self._fitting = True
        self._failed = None
        self._last_batch = -1
        self._fit_began = time.time()
        if not distribute.is_main_process():
            return
        try:
            self._backend_connect()  # errors here stop fit before training: nothing is lost
        except FitkitError as err:
            self._failed = str(err)  # (on_train_end, which fit runs next, leaves it alone)
            raise
        if not self._given_params:  # (a second fit's may differ: the first fit's stay)
            fit_params = {k: v for k, v in self._fit_params().items() if k not in self._logged}
            self._params = {**fit_params, **self._params}

    def _fit_params(self) -> dict[str, Any]:
        """What a plain fit records without log_params: fit's arguments, the optimizer and its
        rate, the backend."""
        model, params = self.model, self.params
        found: dict[str, Any] = {"backend": model.backend}
        for key in ("epochs", "batch_size", "initial_epoch", "steps"):
            if params.get(key) is not None:
                found[f"fit.{'steps_per_epoch' if key == 'steps' else key}"] = params[key]
        try:
            found["compile.optimizer"] = type(model.optimizer).__name__
            found["compile.learning_rate"] = float(model.learning_rate)
        except (FitkitError, TypeError, ValueError):
            pass  # several optimizers, or a rate that is a schedule: fit's params say enough
        return found

    def on_epoch_begin(self, epoch: int, logs: Mapping | None = None) -> None:
        self._last_batch = -1

    def uses(self, hook: str) -> bool:
        if hook == "on_train_batch_end":  # only step logging needs it: epochs cost nothing
            return self.log_every_n_steps is not None
        return super().uses(hook)

    def on_train_batch_end(self, batch: int, logs: Mapping | None = None) -> None:
        # Called once per compiled call, with its last step's index: count the difference.
        before = self.global_step
        self.global_step += batch - self._last_batch
        self._last_batch = batch
        every = self.log_every_n_steps or 1
        if self.global_step // every > before // every and logs:
            # Every rank reads the values (a collective under DDP); rank 0 writes them.
            values = {f"batch_{k}": float(v) for k, v in logs.items()}
            if self._ready():
                step = self.global_step
                if step <= self._logged_to[1]:
                    return
                self._guarded(
                    "logging step metrics", lambda: self._backend_metrics(values, step, None)
                )

    def on_epoch_end(self, epoch: int, logs: Mapping | None = None) -> None:
        values = {k: float(v) for k, v in (logs or {}).items() if isinstance(v, Real)}
        if self._ready() and epoch > self._logged_to[0]:
            self._guarded(
                "logging epoch metrics", lambda: self._backend_metrics(values, epoch, epoch)
            )

    def on_train_end(self, logs: Mapping | None = None) -> None:
        self._fitting = False
        resumed_began, self._resumed_began = self._resumed_began, None  # this fit's alone
        if not distribute.is_main_process():
            return
        if self._failed is not None:  # a broken store: end the run if it can, quietly
            try:
                self._close("FAILED")
            except Exception:  # noqa: BLE001 - already warned about this store's failure
                self._open = False
            return
        if not self._ready():
            return
        state = self.model.runtime.fit
        completed = state is None or state.completed
        if self.log_checkpoints:
            for path in self._checkpoints(resumed_began):
                self._files.append((path, "checkpoints"))
        reason = self.model.history.stop_reason if self.model.history is not None else None
        error = sys.exc_info()[1]  # on_train_end runs inside fit's except on an error
        if reason and error is not None and not completed:
            reason = f"{reason}: {error}"

        def last_logs() -> None:
            self._flush()
            self._end_note(reason)

        self._guarded("logging at train end", last_logs)
        status = (
            "FINISHED"
            if completed
            else ("KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED")
        )
        self._guarded("ending the run", lambda: self._close(status))

    def _end_note(self, reason: str | None) -> None:
        """Record why the fit stopped early (EarlyStopping, an error), where the backend can."""

    def _checkpoints(self, resumed_began: float | None) -> Iterator[str]:
        """The newest file each ModelCheckpoint of this fit wrote (the best one, with
        save_best_only; else the last), if written during this fit."""
        from ..files import ModelCheckpoint

        cbs = self.model.runtime.callbacks
        for cb in cbs.callbacks if cbs is not None else []:
            if not isinstance(cb, ModelCheckpoint):
                continue
            found = [p for p in glob.glob(_pattern_glob(cb.filepath)) if os.path.isfile(p)]
            # a resumed fit's best may be one the killed fit wrote before its last backup
            began = min(self._fit_began, resumed_began or self._fit_began)
            recent = [p for p in found if os.path.getmtime(p) >= began - 1]
            if recent:
                yield os.path.abspath(max(recent, key=os.path.getmtime))

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict:
        # Always the same keys (a restore checks a saved state against a fresh one's): ""
        # until a run is open, and on every rank but 0.
        return {
            "run_id": self.run_id or "",
            "global_step": self.global_step,
            "last_batch": self._last_batch,
            "fit_began": self._resumed_began or self._fit_began,
        }

    def load_state_dict(self, state: dict) -> None:
        """A resumed fit (BackupAndRestore, load_checkpoint) logs to the run it continues."""
        run_id = state["run_id"] or None
        if self._open and run_id != self.run_id:
            self._guarded("ending the run a restore replaces", lambda: self._close("KILLED"))
        self.run_id = run_id or self.run_id
        self._restored = run_id is not None
        self._logged_to = (-1, -1)
        self.global_step, self._last_batch = int(state["global_step"]), int(state["last_batch"])
        # (a backup written before this key existed: the checkpoints of this fit alone)
        began = state.get("fit_began")
        self._resumed_began = float(began) if began else None


class _Unset:
    pass


_UNSET = _Unset()
