"""BackupAndRestore: a fit that is killed resumes, with the same command, exactly where its last
backup was made (mid-epoch included), and ends as the uninterrupted run would have.

Owns when a backup is written, restored and deleted; what a backup holds (the whole training
state, one atomic file) is fitting.py's and the backends' state.py's.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from .. import distribute
from ..errors import FitkitValueError
from .base import Callback

BACKUP_FILE = "backup.fitkit"


class BackupAndRestore(Callback):
    """Back up the training state every epoch (or every N steps); restore it at train begin.

    Run the same script again after a crash, a kill or a reboot: fit starts from the backup
    with the same weights, optimizer, schedulers, RNGs, data order, history and callback
    states, so it finishes as if never stopped. The backup is deleted when fit completes
    (``delete_checkpoint=False`` keeps it), and kept when it stops on an error or Ctrl-C.
    SIGTERM (a scheduler's or a preemptible machine's) stops fit at the next step boundary,
    where a backup is written: the rerun resumes from that step (see ``fitkit.signals``).

    >>> model.fit(x, y, epochs=50, callbacks=[BackupAndRestore("run/backup", save_freq=100)])
    """

    runs_last = True  # it saves the other callbacks' state after their epoch-end updates

    def __init__(
        self,
        backup_dir: str,
        save_freq: str | int = "epoch",
        delete_checkpoint: bool = True,
        verbose: int = 1,
    ) -> None:
        super().__init__()
        if save_freq != "epoch" and (
            isinstance(save_freq, bool) or not isinstance(save_freq, int) or save_freq < 1
        ):
            raise FitkitValueError(
                f"save_freq must be 'epoch' or a whole number of steps >= 1; got {save_freq!r}."
            )
        if not isinstance(backup_dir, (str, os.PathLike)) or not str(backup_dir):
            raise FitkitValueError(f"backup_dir must be a folder path; got {backup_dir!r}.")
        self.backup_dir = str(backup_dir)
        self.path = os.path.join(self.backup_dir, BACKUP_FILE)
        self.save_freq = save_freq
        self.delete_checkpoint = delete_checkpoint
        self.verbose = verbose
        self.step_interval = save_freq if isinstance(save_freq, int) else None
        self.restored: dict | None = None  # where the last restore put the fit

    def uses(self, hook: str) -> bool:
        if hook == "on_train_batch_end":
            return self.save_freq != "epoch"
        return super().uses(hook)

    def on_train_begin(self, logs: Mapping | None = None) -> None:
        if os.path.exists(self.backup_dir) and not os.path.isdir(self.backup_dir):
            raise FitkitValueError(f"backup_dir {self.backup_dir!r} is a file; give a folder.")
        self.restored = None
        if os.path.exists(self.path):
            self.restored = self.model.load_checkpoint(self.path)
            if self.verbose:
                where = self.restored
                print(
                    f"BackupAndRestore: resuming from {self.path} at epoch {where['epoch']}"
                    f", step {where['step']}.",
                    flush=True,
                )

    def on_train_batch_end(self, batch: int, logs: Mapping | None = None) -> None:
        if isinstance(self.save_freq, int) and (batch + 1) % self.save_freq == 0:
            self.model.save_checkpoint(self.path)

    def on_epoch_end(self, epoch: int, logs: Mapping | None = None) -> None:
        if self.save_freq == "epoch":
            self.model.save_checkpoint(self.path)

    def backup(self, why: str) -> None:
        """Write the backup now: fit calls this at the step boundary where SIGTERM stops it."""
        self.model.save_checkpoint(self.path)
        state = self.model.runtime.fit  # the running fit's (backup runs only inside one)
        if self.verbose and distribute.is_main_process() and state is not None:
            step = state.loop.steps_done if state.loop is not None else state.step
            where = (
                f"epoch {state.epoch + 1}, step {step}"
                if step or not state.epoch
                else f"the end of epoch {state.epoch}"
            )
            print(
                f"BackupAndRestore: {why}: backed up at {where} to {self.path}; run the same "
                f"command again to resume there.",
                flush=True,
            )

    def on_train_end(self, logs: Mapping | None = None) -> None:
        state = self.model.runtime.fit
        if (
            state is not None
            and state.completed
            and self.delete_checkpoint
            and distribute.is_main_process()
            and os.path.exists(self.path)
        ):
            os.remove(self.path)
            if not os.listdir(self.backup_dir):
                os.rmdir(self.backup_dir)
