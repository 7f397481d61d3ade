"""torchkeras 4.x's ``KerasModel`` on fitkit (``torchkeras.KerasModel`` in the compat module).

Owns the translation of its arguments (patience / monitor / ckpt_path become fitkit's
EarlyStopping and ModelCheckpoint, lr_scheduler a per-step lr_schedule) and of its history's
column names; the training is fitkit.Model's, torchkeras 2.x's Model is torchkeras.py's.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import torch

from ..callbacks import Callback, EarlyStopping, ModelCheckpoint
from ..errors import FitkitTypeError, FitkitValueError
from ..history import LR_KEY, is_lr_column
from ..model import Model as FitkitModel
from .live_plot import LiveCurves, require_matplotlib
from .torchkeras import check_loss, check_net, check_optimizer, rule, whole

if TYPE_CHECKING:
    import pandas as pd

_PRECISION = {"no": "32", "fp16": "fp16", "bf16": "bf16"}  # accelerate's names -> fitkit's


class NamedMetric:
    """A torchkeras 4 metric under its ``metrics_dict`` name, in the shape fitkit reads
    native metrics: ``update`` / ``compute`` / ``reset`` (torchmetrics), or torchkeras's own
    modules whose call updates the state.

    >>> NamedMetric("acc", torchmetrics.Accuracy(task="multiclass", num_classes=10))
    """

    def __init__(self, name: str, metric: Any) -> None:
        self.name, self.metric = name, metric

    def update(self, y_pred: torch.Tensor, y_true: torch.Tensor) -> None:
        (getattr(self.metric, "update", None) or self.metric)(y_pred, y_true)

    def compute(self) -> Any:
        return self.metric.compute()

    def reset(self) -> None:
        self.metric.reset()

    def to(self, device: Any) -> NamedMetric:
        if hasattr(self.metric, "to"):
            self.metric.to(device)
        return self


def _check_metrics(metrics_dict: Any) -> dict:
    if metrics_dict is None:
        return {}
    if isinstance(metrics_dict, Mapping) and all(
        isinstance(k, str)
        and hasattr(v, "compute")
        and hasattr(v, "reset")
        and (hasattr(v, "update") or callable(v))
        for k, v in metrics_dict.items()
    ):
        return dict(metrics_dict)
    raise FitkitTypeError(
        f"KerasModel(metrics_dict=...) takes {{name: metric}} with metric objects that have "
        f"update (or are called), compute and reset, such as torchmetrics.Accuracy(...); got "
        f"{metrics_dict!r}."
    )


class _Printer(Callback):
    """What torchkeras 4's fit printed with ``plot=False`` (its progress bars as one line per
    stage): the dated rule and ``Epoch i / n``, the epoch's logs, and when ``monitor``
    reaches a new best or training stops early."""

    def __init__(self, monitor: str, mode: str, patience: int, stopper: EarlyStopping) -> None:
        super().__init__()
        # ``watched``, not ``monitor``: the callback list checks monitors under fitkit's names
        self.watched, self.mode, self.patience = monitor, mode, patience
        self.stopper = stopper
        self.best: float | None = None

    def on_epoch_begin(self, epoch: int, logs: Mapping | None = None) -> None:
        print(rule())
        print(f"Epoch {epoch + 1} / {self.params.get('epochs')}\n", flush=True)

    def on_epoch_end(self, epoch: int, logs: Mapping | None = None) -> None:
        named = torchkeras_logs(logs or {})
        for stage in ("train", "val"):
            part = {
                k: v
                for k, v in named.items()
                if k.startswith(stage) or (stage == "train" and is_lr_column(k))
            }
            if part:
                print(f"[{stage}] " + ", ".join(f"{k}={v:.4g}" for k, v in part.items()))
        value = named.get(self.watched)
        if value is not None and (
            self.best is None or (value < self.best if self.mode == "min" else value > self.best)
        ):
            self.best = value
            print(f"<<<<<< reach best {self.watched} : {value} >>>>>>", flush=True)

    def on_train_end(self, logs: Mapping | None = None) -> None:
        if self.stopper.stopped_epoch:
            print(
                f"<<<<<< {self.watched} without improvement in {self.patience} epoch, "
                f"early stopping >>>>>>\n",
                flush=True,
            )


_Value = TypeVar("_Value")  # an epoch's value, or a history's list of them


def torchkeras_logs(logs: Mapping[str, _Value]) -> dict[str, _Value]:
    """fitkit's epoch logs (or history) under torchkeras 4's names and order: train_loss,
    train_<m>, lr, val_loss, val_<m>."""
    train = {
        f"train_{k}": v for k, v in logs.items() if not k.startswith("val_") and not is_lr_column(k)
    }
    lr = {"lr" + k[len(LR_KEY) :]: v for k, v in logs.items() if is_lr_column(k)}
    return {**train, **lr, **{k: v for k, v in logs.items() if k.startswith("val_")}}


def fitkit_key(monitor: str) -> str:
    """torchkeras 4's name of a logged quantity as fitkit logs it ('train_acc' -> 'acc')."""
    return monitor[len("train_") :] if monitor.startswith("train_") else monitor


class KerasModel(torch.nn.Module):
    """torchkeras 4.x's KerasModel: ``fit`` with early stopping and a best checkpoint,
    trained by fitkit.Model.

    >>> model = torchkeras.KerasModel(net, loss_fn=nn.CrossEntropyLoss(),
    ...                               metrics_dict={"acc": Accuracy()})
    >>> dfhistory = model.fit(dl_train, val_data=dl_val, epochs=20, patience=3,
    ...                       monitor="val_acc", mode="max")
    """

    # Set in the instance's __dict__ (not the module's children): declared here because
    # torch.nn.Module's __getattr__ would otherwise type them as tensors or modules.
    loss_fn: Callable
    metrics_dict: dict[str, Any]
    optimizer: torch.optim.Optimizer
    lr_scheduler: Any

    def __init__(
        self,
        net: torch.nn.Module,
        loss_fn: Any,
        metrics_dict: Mapping | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        lr_scheduler: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        check_net("KerasModel", net)
        check_loss("KerasModel", "loss_fn", loss_fn)
        check_optimizer("KerasModel", optimizer)
        if kwargs:
            raise FitkitTypeError(
                f"KerasModel got {sorted(kwargs)}: torchkeras passed extra "
                f"arguments to custom StepRunners, which fitkit does not "
                f"have; override fitkit.Model.train_step instead."
            )
        self.net = net
        # Kept out of the module's children: state_dict and print(model) stay the network's.
        self.__dict__.update(
            loss_fn=loss_fn,
            metrics_dict=_check_metrics(metrics_dict),
            optimizer=optimizer or torch.optim.Adam(net.parameters(), lr=3e-4),
            lr_scheduler=lr_scheduler,
        )
        self.history: dict[str, list[float]] = {}
        self._fitkit: FitkitModel | None = None
        self._cpu: bool | None = None
        self._compiled = False  # whether the facade has been compiled

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.net(*args, **kwargs)

    def _facade(self, cpu: bool = False) -> FitkitModel:
        """The fitkit.Model training ``net``; built again when ``cpu`` changes."""
        if self._fitkit is None or cpu != self._cpu:
            self._fitkit = FitkitModel(self.net, device="cpu" if cpu else None)
            self._cpu, self._compiled = cpu, False
        return self._fitkit

    def _compile(
        self, cpu: bool, mixed_precision: str = "no", gradient_accumulation_steps: int = 1
    ) -> FitkitModel:
        if mixed_precision not in _PRECISION:
            raise FitkitValueError(
                f"fit(mixed_precision=...) takes one of {list(_PRECISION)}; "
                f"got {mixed_precision!r}."
            )
        facade = self._facade(cpu)
        metrics = [NamedMetric(k, v) for k, v in self.metrics_dict.items()]
        # torchkeras 4 (accelerate) clips the global gradient norm at 1.0 and steps the
        # scheduler after every optimizer step: the same here.
        facade.compile(
            optimizer=self.optimizer,
            loss=self.loss_fn,
            metrics=metrics or None,
            lr_schedule=self.lr_scheduler,
            lr_schedule_every="batch",
            global_clipnorm=1.0,
            precision=_PRECISION[mixed_precision],
            gradient_accumulation_steps=gradient_accumulation_steps,
        )
        self._compiled = True
        return facade

    def fit(
        self,
        train_data: Any,
        val_data: Any = None,
        epochs: int = 10,
        ckpt_path: str = "checkpoint",
        patience: int = 5,
        monitor: str = "val_loss",
        mode: str = "min",
        callbacks: Iterable[Callback] | None = None,
        plot: bool = False,
        wandb: Any = False,
        mixed_precision: str = "no",
        cpu: bool = False,
        gradient_accumulation_steps: int = 1,
    ) -> pd.DataFrame:
        """Train until ``epochs`` or ``patience`` epochs without a better ``monitor``; the
        best epoch's weights are saved to ``ckpt_path`` and restored at the end. Returns the
        history: epoch, train_loss, train_<m>, lr, val_loss, val_<m>. ``plot=True`` draws the
        monitored metric's curves after each epoch: live in a notebook, and into
        ``history.png`` next to ``ckpt_path`` (matplotlib: ``pip install "fitkit[plot]"``).

        >>> dfhistory = model.fit(dl_train, val_data=dl_val, epochs=10, patience=2)
        """
        whole("fit", "epochs", epochs)
        if mode not in ("min", "max"):
            raise FitkitValueError(f"fit(mode=...) takes 'min' or 'max'; got {mode!r}.")
        if wandb:
            raise FitkitValueError(
                "fit(wandb=...) is not supported; log with fitkit's "
                "callbacks (CSVLogger, TensorBoard) instead."
            )
        if plot:
            require_matplotlib("fit(plot=True)")
        if not isinstance(ckpt_path, (str, os.PathLike)):
            raise FitkitTypeError(f"fit(ckpt_path=...) takes a file path; got {ckpt_path!r}.")
        facade = self._compile(bool(cpu), mixed_precision, gradient_accumulation_steps)
        names = ["train_loss", *(f"train_{k}" for k in self.metrics_dict), "lr"]
        if val_data is not None:
            names += ["val_loss", *(f"val_{k}" for k in self.metrics_dict)]
        if monitor not in names:
            raise FitkitValueError(
                f"fit(monitor={monitor!r}) is not a logged quantity; this fit "
                f"logs: {', '.join(names)}."
            )
        key = fitkit_key(monitor)
        stopper = EarlyStopping(key, patience=patience, mode=mode, restore_best_weights=True)
        watch = [
            stopper,
            ModelCheckpoint(os.fspath(ckpt_path), monitor=key, mode=mode, save_best_only=True),
        ]
        if plot:  # torchkeras 4's VisMetric: the curves instead of the printed lines
            folder = os.path.dirname(os.fspath(ckpt_path))
            watch.append(
                LiveCurves(monitor, mode, os.path.join(folder, "history.png"), torchkeras_logs)
            )
        else:
            watch.append(_Printer(monitor, mode, patience, stopper))
        history = facade.fit(
            train_data,
            validation_data=val_data,
            epochs=epochs,
            verbose=0,
            shuffle=False,
            callbacks=[*watch, *(callbacks or [])],
        )
        self.history = {"epoch": [e + 1 for e in history.epoch], **torchkeras_logs(history.history)}
        import pandas as pd

        return pd.DataFrame(self.history)

    def evaluate(self, val_data: Any, quiet: bool = False) -> dict[str, float]:
        """``{'val_loss': ..., 'val_<m>': ...}`` over ``val_data``, exact over samples.

        >>> model.evaluate(dl_val)
        """
        facade = self._fitkit
        if facade is None or not self._compiled:  # compiled implies a facade
            facade = self._compile(bool(self._cpu))
        values = facade.validate(val_data)
        assert isinstance(values, dict)  # validate's return_dict=True
        logs = {f"val_{k}": v for k, v in values.items()}
        if not quiet:
            print("[val] " + ", ".join(f"{k}={v:.4g}" for k, v in logs.items()), flush=True)
        return logs

    def save_ckpt(self, ckpt_path: str = "checkpoint") -> None:
        """Save the network's weights (what ``fit`` saves at each best epoch)."""
        (self._fitkit or self._facade(False)).save_weights(os.fspath(ckpt_path))

    def load_ckpt(self, ckpt_path: str = "checkpoint") -> None:
        """Load weights that ``fit`` or ``save_ckpt`` saved (checked whole before loading).

        >>> model.load_ckpt("checkpoint")
        """
        (self._fitkit or self._facade(False)).load_weights(os.fspath(ckpt_path))
