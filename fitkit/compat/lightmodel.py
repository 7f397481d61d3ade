"""torchkeras 2.x's ``LightModel`` (the tutorial's class style): subclass it, write
``shared_step`` and ``configure_optimizers``; train it with fitkit's ``fit``, or with a
Lightning ``Trainer`` (it is a LightningModule when Lightning is installed).

Owns the translation of that class's contract (its Lightning hooks, its ``history``); the
training is fitkit.Model's (class style), or Lightning's own.

>>> from fitkit.compat.torchkeras import LightModel   # was: from torchkeras import LightModel
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Mapping
from typing import Any

import torch

from ..errors import FitkitTypeError
from ..history import History, is_lr_column
from ..model import Model as FitkitModel
from .torchkeras import check_net


def lightning_module() -> type:
    """The base class: ``pytorch_lightning.LightningModule`` (the tutorial imports
    ``pytorch_lightning as pl``), else ``lightning.pytorch``'s, else ``torch.nn.Module``."""
    for name in ("pytorch_lightning", "lightning"):
        if importlib.util.find_spec(name) is None:
            continue
        try:
            module = importlib.import_module(
                "pytorch_lightning" if name == "pytorch_lightning" else "lightning.pytorch"
            )
        except ImportError:  # installed but broken (e.g. for another torch): plain module
            continue
        return module.LightningModule
    return torch.nn.Module


class _Steps(FitkitModel):
    """The fitkit.Model that trains a LightModel: its net is the LightModel, whose
    ``shared_step`` and ``configure_optimizers`` are the class style's."""

    def shared_step(self, batch: tuple) -> dict:
        return self.net.shared_step(batch)

    def configure_optimizers(self) -> Any:
        return self.net.configure_optimizers()


def _rows(batch: Any) -> int | None:
    """The batch size Lightning should weigh a logged mean by (it warns when it guesses)."""
    first = batch[0] if isinstance(batch, (tuple, list)) and batch else batch
    return len(first) if isinstance(first, torch.Tensor) and first.dim() else None


_NEEDS = {
    "shared_step": "{} needs shared_step(self, batch) returning a dict with 'loss' (and any "
    "metrics), as torchkeras's LightModel did.",
    "configure_optimizers": "{} needs configure_optimizers(self) returning an optimizer, e.g. "
    "torch.optim.Adam(self.parameters(), lr=1e-2), or {{'optimizer': "
    "..., 'lr_scheduler': ...}}.",
}


class LightModel(lightning_module()):  # type: ignore[misc]
    """torchkeras 2.x's LightModel: wrap a network and write ``shared_step(batch)`` returning
    ``{"loss": ..., <metrics>}`` and ``configure_optimizers()``; ``history`` holds each epoch's
    logs (``epoch`` counted from 0, as Lightning's ``current_epoch``).

    >>> class Model(LightModel):
    ...     def shared_step(self, batch):
    ...         x, y = batch
    ...         prediction = self(x)
    ...         return {"loss": nn.BCELoss()(prediction, y), "acc": ...}
    ...     def configure_optimizers(self):
    ...         return torch.optim.Adam(self.parameters(), lr=1e-2)
    >>> model = Model(net)
    >>> history = model.fit(dl_train, validation_data=dl_val, epochs=10)   # fitkit's fit
    >>> pl.Trainer(max_epochs=10).fit(model, dl_train, dl_val)             # or Lightning's
    >>> dfhistory = pd.DataFrame(model.history)
    """

    def __init__(self, net: torch.nn.Module | None = None) -> None:
        super().__init__()
        if net is not None:
            check_net("LightModel", net)
        self.net = net
        self.history: dict[str, list[float]] = {}
        self.__dict__["_fitkit"] = None  # the fitkit.Model that trains it (not a submodule)
        self.__dict__["_validated"] = False  # Lightning: this epoch ran validation

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self.net is None:
            raise FitkitTypeError(
                "LightModel has no network: wrap one, Model(net=Net()), or "
                "define forward(self, x) in your subclass."
            )
        return self.net(*args, **kwargs)

    def shared_step(self, batch: Any) -> dict:
        """Override: one step for training and validation; return ``{"loss": loss, ...}``."""
        raise FitkitTypeError(_NEEDS["shared_step"].format(type(self).__name__))

    def configure_optimizers(self) -> Any:
        """Override: an optimizer, or ``{"optimizer": ..., "lr_scheduler": ...}``."""
        raise FitkitTypeError(_NEEDS["configure_optimizers"].format(type(self).__name__))

    # ------------------------------------------------------------------ fitkit's fit
    @property
    def fitkit(self) -> FitkitModel:
        """The fitkit.Model that trains this module, compiled on first use (compile it
        yourself first for the Trainer's flags: ``model.fitkit.compile(global_clipnorm=1.0)``)."""
        facade = self.__dict__["_fitkit"]
        if facade is None:
            for method in _NEEDS:  # refused before anything is built
                if getattr(type(self), method) is getattr(LightModel, method):
                    raise FitkitTypeError(_NEEDS[method].format(type(self).__name__))
            facade = self.__dict__["_fitkit"] = _Steps(self)
        if not facade.runtime.compiled:
            facade.compile()  # the optimizer and schedule come from configure_optimizers
        return facade

    def fit(self, x: Any = None, y: Any = None, **kwargs: Any) -> History:
        """Train with fitkit's ``fit`` (same arguments: ``epochs``, ``validation_data``,
        ``callbacks``, ...); returns its History and adds the epochs to ``history``.

        >>> model.fit(dl_train, validation_data=dl_val, epochs=10)
        """
        history = self.fitkit.fit(x, y, **kwargs)
        for epoch, row in zip(
            history.epoch, history.df.drop(columns="epoch").to_dict("records"), strict=True
        ):
            self._record({"epoch": epoch, **{k: v for k, v in row.items() if not is_lr_column(k)}})
        return history

    def evaluate(
        self, x: Any = None, y: Any = None, **kwargs: Any
    ) -> dict[str, float] | list[float]:
        """Loss and metrics over ``x`` (shared_step in evaluation), exact over samples; a list
        with ``return_dict=False``, as fitkit.Model's."""
        return self.fitkit.validate(x, y, **kwargs)

    def predict(self, x: Any, **kwargs: Any) -> Any:
        """The network's outputs for ``x`` (a DataLoader's labels are ignored), as numpy."""
        return self.fitkit.predict(x, **kwargs)

    def _record(self, row: Mapping[str, float]) -> None:
        """One epoch's row; a key missing on either side is NaN (no validation that epoch)."""
        done = len(self.history.get("epoch", []))
        for key in row:
            self.history.setdefault(key, [float("nan")] * done)
        for key, values in self.history.items():
            value = row.get(key, float("nan"))
            values.append(int(value) if key == "epoch" else float(value))

    # ------------------------------------------------------------------ Lightning's hooks
    def training_step(self, batch: Any, batch_idx: int) -> dict:
        logs = self.shared_step(batch)
        self.log_dict(
            dict(logs), on_step=False, on_epoch=True, prog_bar=True, batch_size=_rows(batch)
        )
        return logs

    def validation_step(self, batch: Any, batch_idx: int) -> dict:
        logs = {f"val_{k}": v for k, v in self.shared_step(batch).items()}
        self.log_dict(logs, on_step=False, on_epoch=True, prog_bar=True, batch_size=_rows(batch))
        return logs

    def test_step(self, batch: Any, batch_idx: int) -> dict:
        logs = {f"test_{k}": v for k, v in self.shared_step(batch).items()}
        self.log_dict(logs, on_step=False, on_epoch=True, batch_size=_rows(batch))
        return logs

    def on_validation_epoch_end(self) -> None:
        self.__dict__["_validated"] = not self.trainer.sanity_checking

    def on_train_epoch_end(self) -> None:
        """One ``history`` row: this epoch's means (Lightning ran validation before this)."""
        metrics = self.trainer.callback_metrics
        validated, self.__dict__["_validated"] = self.__dict__["_validated"], False
        train = {k: float(v) for k, v in metrics.items() if not k.startswith(("val_", "test_"))}
        val = {k: float(v) for k, v in metrics.items() if validated and k.startswith("val_")}
        self._record({"epoch": self.trainer.current_epoch, **train, **val})
