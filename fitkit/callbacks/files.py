"""Callbacks that write files during training: ModelCheckpoint and CSVLogger.

Owns file names (Keras's patterns), when to write, and what a resumed run does to files a
previous run wrote; the bytes of weights and training state are the facade's
(``save_weights`` / ``save_checkpoint``), the watching rules monitor.py's.
"""

from __future__ import annotations

import csv
import os
import string
import warnings
from collections.abc import Iterator, Mapping
from numbers import Real
from typing import TYPE_CHECKING, Any

from .. import distribute
from ..errors import FitkitTypeError, FitkitValueError
from ..history import LR_KEY
from .base import Callback
from .monitor import Improvement, check_monitor, check_number, is_step_count

if TYPE_CHECKING:
    from ..model import Model

_PATH_ONLY = ("epoch", "batch")  # filepath fields that are not log keys


def _fields(owner: str, pattern: str) -> list[str]:
    """The names a ``str.format`` pattern uses, each once, in order ('{val_loss:.3f}' -> 'val_loss')."""
    try:
        parsed = list(string.Formatter().parse(pattern))
    except ValueError as err:
        raise FitkitValueError(
            f"{owner}: {pattern!r} is not a valid format pattern ({err}); "
            f"write fields as {{epoch:02d}} or {{val_loss:.3f}}, and a "
            f"literal brace as {{{{ or }}}}."
        ) from err
    names: list[str] = []
    for _, field, _, _ in parsed:
        if field is None:
            continue
        root = field.split(".")[0].split("[")[0]
        if not root or root.isdigit():
            raise FitkitValueError(
                f"{owner}: {pattern!r} has a positional field {{{field}}}; "
                f"name a log key instead, e.g. {{epoch:02d}} or "
                f"{{val_loss:.3f}}."
            )
        if root not in names:
            names.append(root)
    return names


class _Fields(Mapping):
    """What a filepath is formatted with: epoch (1-based), batch, the logs, and the rate.

    Keys are read one by one, so step logs are read from the device only if the pattern
    (or ``save_best_only``) needs them.
    """

    def __init__(self, model: Model, epoch: int, batch: int | None, logs: Mapping | None) -> None:
        self.model, self.logs = model, logs or {}
        self.fixed = (
            {"epoch": epoch + 1} if batch is None else {"epoch": epoch + 1, "batch": batch + 1}
        )

    def __getitem__(self, key: str) -> Any:
        if key in self.fixed:
            return self.fixed[key]
        if key in self.logs:
            return self.logs[key]
        if key == LR_KEY:  # step logs hold no rate; the model knows it
            return self.model.learning_rate
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter({**self.fixed, **dict(self.logs)})

    def __len__(self) -> int:
        return len(list(iter(self)))


class _Zeros(dict):
    def __missing__(self, key: str) -> int:
        return 0


# ---------------------------------------------------------------------- ModelCheckpoint
class ModelCheckpoint(Callback):
    """Save the weights (or the whole training state) every epoch or every N steps.

    >>> fitkit.callbacks.ModelCheckpoint("ckpt/w-{epoch:02d}-{val_loss:.3f}.pt",
    ...                                  save_best_only=True)

    ``filepath`` is formatted as Keras does, with ``epoch`` (1-based), the epoch's log keys
    and, for step saves, ``batch`` (1-based step in the epoch). ``save_weights_only=True``
    (fitkit's default) calls ``model.save_weights(path)``: torch '.pt' / '.safetensors',
    TensorFlow '.weights.h5'; ``False`` calls ``model.save_checkpoint(path)`` (weights,
    optimizer and the rest of the training state in one file). ``save_best_only`` saves only
    when ``monitor`` improves (``mode``, starting from ``initial_value_threshold``).
    ``save_freq``: ``"epoch"``, or a number of training steps, counted across epochs (the
    logs then are the epoch's running training logs).
    """

    def __init__(
        self,
        filepath: str,
        monitor: str = "val_loss",
        verbose: int = 0,
        save_best_only: bool = False,
        save_weights_only: bool = True,
        mode: str = "auto",
        save_freq: str | int = "epoch",
        initial_value_threshold: float | None = None,
    ) -> None:
        super().__init__()
        name = "ModelCheckpoint"
        if not isinstance(filepath, (str, os.PathLike)):
            raise FitkitTypeError(
                f"ModelCheckpoint(filepath=...) takes a path (str or "
                f"PathLike) such as 'ckpt/w-{{epoch:02d}}.pt'; got "
                f"{type(filepath).__name__}."
            )
        self.filepath = os.fspath(filepath)
        self.monitor = check_monitor(name, monitor)
        self.verbose = verbose
        self.save_best_only = bool(save_best_only)
        self.save_weights_only = bool(save_weights_only)
        self.is_better = Improvement(name, self.monitor, mode, 0)
        self.mode = self.is_better.mode
        if save_freq != "epoch" and not is_step_count(save_freq):
            raise FitkitValueError(
                f"ModelCheckpoint(save_freq=...) takes 'epoch' or a number of "
                f"training steps >= 1; got {save_freq!r}."
            )
        self.save_freq = save_freq
        self.best = check_number(
            name, "initial_value_threshold", initial_value_threshold, allow_none=True
        )
        self.fields = _fields(name, self.filepath)
        self._check_step_fields()
        self.steps_since_save = 0
        self._last_batch = -1
        self._epoch = 0
        self._warned: set[str] = set()
        if save_freq != "epoch":
            self.step_interval = int(save_freq)

    def _check_step_fields(self) -> None:
        """Fields and a monitor that can never be known when the checkpoint is written."""
        if self.save_freq == "epoch":
            if "batch" in self.fields:
                raise FitkitValueError(
                    f"ModelCheckpoint: filepath {self.filepath!r} uses {{batch}}, which exists "
                    f"only for step saves (save_freq=N); remove it or pass save_freq=N."
                )
            return
        val = [f for f in self.fields if f.startswith("val_")]
        if self.save_best_only and self.monitor.startswith("val_"):
            val.append(f"monitor={self.monitor!r}")
        if val:
            raise FitkitValueError(
                f"ModelCheckpoint(save_freq={self.save_freq}) saves in the middle of an epoch, "
                f"where there are no validation logs yet; {', '.join(val)} cannot be known "
                f"then. Use training keys (e.g. 'loss') or save_freq='epoch'."
            )

    def monitored_keys(self) -> list[str]:
        keys = [f for f in self.fields if f not in _PATH_ONLY]
        if self.save_best_only and self.monitor not in keys:
            keys.append(self.monitor)
        return keys

    def on_train_begin(self, logs: Mapping | None = None) -> None:
        try:
            example = self.filepath.format_map(_Zeros(epoch=1, batch=1))
        except (ValueError, TypeError, IndexError, AttributeError) as err:
            raise FitkitValueError(
                f"ModelCheckpoint: filepath {self.filepath!r} cannot be "
                f"formatted with numbers ({err}); use numeric formats such as "
                f"{{epoch:02d}} or {{val_loss:.3f}}."
            ) from err
        if os.path.isdir(example) or self.filepath.endswith(("/", os.sep)):
            raise FitkitValueError(
                f"ModelCheckpoint: filepath {self.filepath!r} is a folder; give a file name "
                f"inside it, e.g. {os.path.join(self.filepath, 'weights-{epoch:02d}.pt')!r}."
            )
        # refused here, not at the first save an epoch later
        if (
            self.save_weights_only
            and self.model.backend == "tensorflow"
            and not example.endswith(".weights.h5")
        ):
            raise FitkitValueError(
                f"ModelCheckpoint: TensorFlow weights are saved as Keras '.weights.h5' files; "
                f"filepath {self.filepath!r} ends otherwise. Use a path ending in '.weights.h5', "
                f"or save_weights_only=False for a fitkit checkpoint (any name)."
            )
        self._warned = set()

    def on_epoch_begin(self, epoch: int, logs: Mapping | None = None) -> None:
        self._epoch, self._last_batch = epoch, -1

    def uses(self, hook: str) -> bool:
        if hook == "on_train_batch_end":  # only step saves need it: epoch saves cost nothing
            return self.save_freq != "epoch"
        return super().uses(hook)

    def on_train_batch_end(self, batch: int, logs: Mapping | None = None) -> None:
        # Called once per compiled call, with its last step's index: count the difference.
        self.steps_since_save += batch - self._last_batch
        self._last_batch = batch
        every = self.step_interval  # int(save_freq): this hook runs only with one
        if every and self.steps_since_save >= every:
            # Keep the phase when a call ran past the save step: the next save is still
            # save_freq steps after the last one was due, not after this call.
            self.steps_since_save %= every
            self._save(self._epoch, batch, logs)

    def on_epoch_end(self, epoch: int, logs: Mapping | None = None) -> None:
        if self.save_freq == "epoch":
            self._save(epoch, None, logs)

    def _warn_once(self, key: str, text: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(f"ModelCheckpoint: {text}", stacklevel=4)

    def _save(self, epoch: int, batch: int | None, logs: Mapping | None) -> None:
        fields = _Fields(self.model, epoch, batch, logs)
        try:
            path = self.filepath.format_map(fields)
        except KeyError as err:
            key = err.args[0]
            if str(key).startswith("val_"):  # an epoch without validation (validation_freq)
                self._warn_once(
                    key, f"no {key!r} in this epoch's logs; the epochs without it are not saved."
                )
                return
            raise FitkitValueError(
                f"ModelCheckpoint: filepath {self.filepath!r} uses {{{key}}}, which is not in "
                f"the logs; they hold: epoch, {', '.join(fields.logs)}."
            ) from None
        where = f"Epoch {epoch + 1}" + (f", step {batch + 1}" if batch is not None else "")
        if self.save_best_only:
            current = (logs or {}).get(self.monitor)
            if current is None:
                self._warn_once(
                    self.monitor,
                    f"no {self.monitor!r} in this epoch's logs; "
                    f"save_best_only skips the epochs without it.",
                )
                return
            current = float(current)
            if not self.is_better(current, self.best):
                if self.verbose:
                    print(
                        f"{where}: {self.monitor} did not improve from {self.best:.5g}", flush=True
                    )
                return
            if self.verbose:
                before = "nothing" if self.best is None else f"{self.best:.5g}"
                print(
                    f"{where}: {self.monitor} improved from {before} to {current:.5g}, "
                    f"saving to {path}",
                    flush=True,
                )
            self.best = current
        elif self.verbose:
            print(f"{where}: saving to {path}", flush=True)
        if not distribute.is_main_process():
            return  # every rank keeps the same count and best value; rank 0 writes
        folder = os.path.dirname(path)
        if folder:
            os.makedirs(folder, exist_ok=True)
        if self.save_weights_only:
            self.model.save_weights(path)
        else:
            self.model.save_checkpoint(path)

    @property
    def state_key(self) -> str:
        return self._key(filepath=self.filepath, monitor=self.monitor, mode=self.mode)

    def state_dict(self) -> dict:
        return {
            "best": self.best,
            "steps_since_save": self.steps_since_save,
            "last_batch": self._last_batch,
            "epoch": self._epoch,
        }

    def load_state_dict(self, state: dict) -> None:
        self.best = state["best"]
        self.steps_since_save = int(state["steps_since_save"])
        self._last_batch, self._epoch = int(state["last_batch"]), int(state["epoch"])


# ---------------------------------------------------------------------- CSVLogger
class CSVLogger(Callback):
    """Write one row per epoch to a CSV file, as Keras does: ``epoch`` (from 0), then the
    log keys in sorted order.

    >>> fitkit.callbacks.CSVLogger("training.csv")

    Each row is on disk when its epoch ends. A key that appears later (validation every N
    epochs) adds its column to the whole file; a missing value is written ``NA``.
    ``append=True`` adds rows to an existing file (its header stays). A resumed run (a
    BackupAndRestore restore) always appends, dropping the rows of the epochs it redoes.
    The file is started (or emptied) when the first epoch of a fit ends.
    """

    def __init__(self, filename: str, separator: str = ",", append: bool = False) -> None:
        super().__init__()
        if not isinstance(filename, (str, os.PathLike)):
            raise FitkitTypeError(
                f"CSVLogger(filename=...) takes a path such as 'log.csv'; "
                f"got {type(filename).__name__}."
            )
        if not isinstance(separator, str) or len(separator) != 1:
            raise FitkitValueError(
                f"CSVLogger(separator=...) takes one character such as ',' "
                f"or ';'; got {separator!r}."
            )
        self.filename = os.fspath(filename)
        self.sep = separator
        self.append = bool(append)
        self.keys: list[str] | None = None

    def on_train_begin(self, logs: Mapping | None = None) -> None:
        if os.path.isdir(self.filename):
            raise FitkitValueError(
                f"CSVLogger: {self.filename!r} is a folder; give a file "
                f"path, e.g. {os.path.join(self.filename, 'log.csv')!r}."
            )
        self.keys = None
        self._opened = False

    def _open(self, epoch: int) -> None:
        """At the first epoch end of a fit (a backup is restored by then, whatever the order
        of the callbacks): start the file, or continue it."""
        folder = os.path.dirname(self.filename)
        if folder:
            os.makedirs(folder, exist_ok=True)
        self._opened = True
        # This fit continues a backup when the history holds epochs from before this one.
        again = len(self.model.history) > 1 if self.model.history is not None else False
        if not (self.append or again) or not os.path.exists(self.filename):
            open(self.filename, "w").close()
            return
        rows = self._read()
        if not rows:
            return
        header, body = rows[0], rows[1:]
        self.keys = header[1:]
        if again:  # the epochs this run trains again lose their old rows
            kept = [r for r in body if not _epoch_at_least(r, epoch)]
            if len(kept) != len(body):
                self._rewrite(header, kept)

    def _read(self) -> list[list[str]]:
        with open(self.filename, newline="") as f:
            return [row for row in csv.reader(f, delimiter=self.sep) if row]

    def _rewrite(self, header: list[str], body: list[list[str]]) -> None:
        tmp = f"{self.filename}.tmp"
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f, delimiter=self.sep)
            writer.writerow(header)
            writer.writerows(body)
        os.replace(tmp, self.filename)

    def on_epoch_end(self, epoch: int, logs: Mapping | None = None) -> None:
        if not distribute.is_main_process():
            return  # rank 0 writes the file
        logs = dict(logs or {})
        if not getattr(self, "_opened", False):
            self._open(epoch)
        if self.keys is None:
            self.keys = sorted(logs)
            self._rewrite(["epoch", *self.keys], [])
        elif set(logs) - set(self.keys):  # new columns: widen the rows written so far
            old = self._read()
            keys = sorted(set(self.keys) | set(logs))
            where = {k: i + 1 for i, k in enumerate(self.keys)}
            body = [
                [r[0], *(r[where[k]] if k in where and where[k] < len(r) else "NA" for k in keys)]
                for r in old[1:]
            ]
            self.keys = keys
            self._rewrite(["epoch", *keys], body)
        row = [epoch, *(_cell(logs[k]) if k in logs else "NA" for k in self.keys)]
        with open(self.filename, "a", newline="") as f:
            csv.writer(f, delimiter=self.sep).writerow(row)


def _cell(value: Any) -> Any:
    return float(value) if isinstance(value, Real) else value


def _epoch_at_least(row: list[str], start: int) -> bool:
    try:
        return int(row[0]) >= start
    except (ValueError, IndexError):
        return False
