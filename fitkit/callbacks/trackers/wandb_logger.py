"""WandbLogger: a fit mirrored into a Weights & Biases run, offline by default (its files wait
in ``<save_dir>/wandb/offline-run-*`` for ``wandb sync``), online when asked.

Owns the wandb calls; when to call them is trackers/base.py's.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from typing import Any, Literal, cast

from ...errors import FitkitValueError
from .base import Tracker, require

_MODES = ("offline", "online", "disabled")
_PLAIN = (str, int, float, bool, type(None), list, dict)  # what a W&B config holds as it is


class WandbLogger(Tracker):
    """Log a fit to Weights & Biases: config, metrics per epoch (and every N steps), the best
    checkpoint and any file you add.

    >>> tracker = fitkit.callbacks.WandbLogger(project="demo", save_dir="runs")

    then ``model.fit(x, y, epochs=5, callbacks=[tracker])``, and upload the offline run with
    ``wandb sync runs/wandb/offline-run-*``.

    ``mode``: ``"offline"`` (fitkit's default when ``WANDB_MODE`` is unset: a fit never waits
    for a network or a login), ``"online"`` or ``"disabled"``. The run, in ``project``, is
    named ``name`` with ``tags``; ``id`` continues an existing run (``resume="allow"``), as a
    fit resumed by BackupAndRestore does by itself. Its files go under ``save_dir`` (None:
    wandb's choice, ``WANDB_DIR`` or the working directory). Each ``wandb.log`` row of an epoch
    holds the history's keys and ``epoch``; ``log_every_n_steps=N`` adds rows of
    ``batch_<key>`` (the epoch's running means) and ``global_step`` every N training steps.
    Rows are numbered by the logger (``step``), so a resumed run continues the numbering.
    ``log_checkpoints``: at the end, the file a ModelCheckpoint of the fit wrote last (its
    best, with ``save_best_only``) is copied into the run's ``files/checkpoints/``.
    ``init_kwargs`` go to ``wandb.init`` as they are (``settings=``, ``group=``, ...). Needs
    ``pip install "fitkit[wandb]"``.
    """

    def __init__(
        self,
        project: str = "fitkit",
        name: str | None = None,
        save_dir: str | os.PathLike | None = None,
        mode: str | None = None,
        id: str | None = None,  # wandb.init's and Lightning's name
        tags: Sequence[str] | None = None,
        log_every_n_steps: int | None = None,
        log_checkpoints: bool = True,
        **init_kwargs: Any,
    ) -> None:
        super().__init__(log_every_n_steps, log_checkpoints)
        mode = mode if mode is not None else os.environ.get("WANDB_MODE", "offline")
        if mode not in _MODES:
            raise FitkitValueError(
                f"WandbLogger(mode=...) takes one of {', '.join(map(repr, _MODES))}; got {mode!r}."
            )
        require("wandb", "wandb", "WandbLogger")
        self.project = str(project)
        self.name = name
        self.save_dir = os.fspath(save_dir) if save_dir is not None else None
        self.mode = mode
        self.run_id = id
        self.tags = list(tags or [])
        self.init_kwargs = init_kwargs
        self.row = 0  # the next wandb.log step: rows logged over fits and restores
        self._run: Any = None

    @property
    def state_key(self) -> str:
        return self._key(project=self.project, save_dir=self.save_dir)

    def _where(self) -> str:
        return f" for W&B project {self.project!r} ({self.mode})"

    def _backend_connect(self) -> None:
        if self.save_dir is not None:
            os.makedirs(self.save_dir, exist_ok=True)  # wandb needs the folder to exist

    def _backend_open(self, run_id: str | None) -> str:
        import wandb

        self._run = wandb.init(
            project=self.project,
            name=self.name,
            dir=self.save_dir,
            mode=cast(Literal["offline", "online", "disabled"], self.mode),  # checked
            id=run_id,
            resume="allow" if run_id is not None else None,
            tags=self.tags or None,
            reinit="create_new",  # never finish or reuse a run of the user's own
            **self.init_kwargs,
        )
        return str(self._run.id)

    def _backend_params(self, params: dict[str, Any]) -> None:
        plain = {k: v if isinstance(v, _PLAIN) else str(v) for k, v in params.items()}
        self._run.config.update(plain, allow_val_change=True)

    def _backend_metrics(self, metrics: dict[str, float], step: int, epoch: int | None) -> None:
        row = {**metrics, "epoch": epoch} if epoch is not None else {**metrics, "global_step": step}
        self._run.log(row, step=self.row)
        self.row += 1

    def _backend_file(self, path: str, folder: str | None) -> None:
        # Copied into the run's folder: an offline run is synced later, when the original
        # (a checkpoint the next epoch overwrites) may have changed.
        target = os.path.join(self._run.dir, folder or "", os.path.basename(os.path.normpath(path)))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if os.path.isdir(path):
            shutil.copytree(path, target, dirs_exist_ok=True)
        else:
            shutil.copy2(path, target)
        self._run.save(
            os.path.join(target, "**", "*") if os.path.isdir(target) else target,
            base_path=self._run.dir,
            policy="now",
        )

    def _end_note(self, reason: str | None) -> None:
        self._run.summary["stop_reason"] = reason or "completed"

    def _backend_close(self, status: str) -> None:
        run, self._run = self._run, None
        run.finish(exit_code={"FINISHED": 0, "FAILED": 1, "KILLED": 255}[status])

    def state_dict(self) -> dict:
        return {**super().state_dict(), "row": self.row}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.row = int(state["row"])
