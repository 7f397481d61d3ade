"""torchkeras 2.x's ``Model`` on fitkit: the tutorial's torchkeras code runs with only its
import changed. Owns the translation of torchkeras's arguments and of what it printed and
returned; the training is fitkit.Model's (one loop), torchkeras 4's KerasModel torchkeras_v4.py's.

>>> from fitkit.compat import torchkeras          # was: import torchkeras
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import torch

from ..callbacks import Callback
from ..display import dated_rule
from ..errors import FitkitTypeError, FitkitValueError, NotCompiledError
from ..history import is_lr_column
from ..model import Model as FitkitModel

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Model", "summary"]  # and KerasModel (4.x), LightModel, below


def __getattr__(name: str) -> Any:
    """``torchkeras.KerasModel`` (4.x) and ``LightModel``, imported on first use: their
    modules import the helpers of this one (a cycle at load time), and LightModel imports
    Lightning when it is installed."""
    if name == "KerasModel":
        from .torchkeras_v4 import KerasModel

        return KerasModel
    if name == "LightModel":
        from .lightmodel import LightModel

        return LightModel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ---------------------------------------------------------------------- shared with 4.x
def rule() -> str:
    """torchkeras's dated rule after a blank line: 80 '=' and the time, with no space."""
    return "\n" + dated_rule()


def where(net: torch.nn.Module) -> torch.device:
    """The device of the network's parameters (the CPU for a network without any)."""
    param = next(net.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def whole(owner: str, arg: str, value: Any) -> int:
    """A whole number >= 1, else an error naming ``owner(arg=...)``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise FitkitValueError(f"{owner}({arg}=...) takes a whole number >= 1; got {value!r}.")
    return value


def check_net(owner: str, net: Any) -> None:
    if not isinstance(net, torch.nn.Module):
        what = f"the class {net.__name__}" if isinstance(net, type) else type(net).__name__
        raise FitkitTypeError(
            f"{owner}(net=...) takes a torch.nn.Module instance, e.g. "
            f"{owner}(CnnModel()); got {what}."
        )


def check_optimizer(owner: str, optimizer: Any) -> None:
    if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
        raise FitkitTypeError(
            f"{owner}(optimizer=...) takes a torch.optim optimizer, e.g. "
            f"torch.optim.Adam(model.parameters(), lr=1e-3), or None; got "
            f"{type(optimizer).__name__}."
        )


def check_loss(owner: str, arg: str, loss: Any) -> None:
    if not callable(loss):
        raise FitkitTypeError(
            f"{owner}({arg}=...) takes a loss called as {arg}(y_pred, y_true), "
            f"e.g. nn.CrossEntropyLoss(); got {loss!r}."
        )


def rounded(logs: Mapping[str, float]) -> dict[str, float]:
    """Logs as torchkeras printed them: Python floats rounded to 3 decimals."""
    return {k: round(float(v), 3) for k, v in logs.items()}


# ---------------------------------------------------------------------- 2.x printing
class TorchkerasPrinter(Callback):
    """What torchkeras 2.x's fit printed: ``{'step': 100, 'loss': 0.976, ...}`` every
    ``log_step_freq`` steps (the epoch's running logs), then a one-row table per epoch
    followed by the dated rule. Reads logs only at those points (no sync otherwise).

    >>> fitkit.Model(net).fit(dl, epochs=2, verbose=0, callbacks=[TorchkerasPrinter(100)])
    """

    def __init__(self, log_step_freq: int) -> None:
        super().__init__()
        self.every = log_step_freq
        self.step_interval = log_step_freq

    def on_train_batch_end(self, batch: int, logs: Mapping | None = None) -> None:
        if (batch + 1) % self.every == 0:
            print({"step": batch + 1, **rounded(logs or {})}, flush=True)

    def on_epoch_end(self, epoch: int, logs: Mapping | None = None) -> None:
        from prettytable import PrettyTable

        row = {
            "epoch": epoch + 1,
            **rounded({k: v for k, v in (logs or {}).items() if not is_lr_column(k)}),
        }
        table = PrettyTable(list(row))
        table.add_row(list(row.values()))
        print("\n", table)
        print(rule(), flush=True)


def _device(device: Any) -> torch.device | None:
    """compile's ``device``: used where it exists; a CUDA device without CUDA is ignored
    with a warning (torchkeras 2.x ignored it silently)."""
    if device is None:
        return None
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise FitkitValueError(
            f"compile(device=...) takes a torch device such as 'cuda:0' or "
            f"'cpu'; got {device!r} ({err})."
        ) from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        warnings.warn(
            f"compile(device={device!r}): CUDA is not available; training on the "
            f"CPU, as torchkeras did.",
            stacklevel=3,
        )
        return None
    return dev


# ---------------------------------------------------------------------- Model (2.x)
class Model(torch.nn.Module):
    """torchkeras 2.x's Model: a torch.nn.Module trained Keras-style by fitkit.Model.

    Wrap a network, or subclass and define ``forward``:

    >>> model = torchkeras.Model(CnnModel())
    >>> model.compile(loss_func=nn.CrossEntropyLoss(), metrics_dict={"accuracy": accuracy})
    >>> dfhistory = model.fit(3, dl_train=dl_train, dl_val=dl_val, log_step_freq=100)
    """

    # Set by compile in the instance's __dict__ (not the module's children): declared here
    # because torch.nn.Module's __getattr__ would otherwise type them as tensors or modules.
    loss_func: Callable
    metrics_dict: dict[str, Callable]
    optimizer: torch.optim.Optimizer

    def __init__(self, net: torch.nn.Module | None = None) -> None:
        super().__init__()
        if net is not None:
            check_net("torchkeras.Model", net)
        self.net = net
        self.history: dict[str, list[float]] = {}  # every epoch since compile, as torchkeras
        self._fitkit: FitkitModel | None = None  # the facade that trains this module
        self._fitkit_device: torch.device | None = None

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self.net is None:
            raise FitkitTypeError(self._no_net())
        return self.net(*args, **kwargs)

    def _no_net(self) -> str:
        return (
            "torchkeras.Model has no network: wrap one, torchkeras.Model(net=CnnModel()), "
            "or subclass torchkeras.Model and define forward(self, x)."
        )

    def _facade(self, device: torch.device | None = None) -> FitkitModel:
        """The fitkit.Model training this module, on ``device`` (else where it is now)."""
        device = device or self._fitkit_device or where(self)
        if self._fitkit is None or device != self._fitkit_device:
            self._fitkit, self._fitkit_device = FitkitModel(self, device=device), device
        return self._fitkit

    def _compiled(self, what: str) -> FitkitModel:
        if getattr(self, "loss_func", None) is None:
            raise NotCompiledError(
                f"{what} needs a compiled model: call model.compile(loss_func=...) first."
            )
        return self._facade()

    # ------------------------------------------------------------------ compile, fit
    def compile(
        self,
        loss_func: Callable,
        optimizer: torch.optim.Optimizer | None = None,
        metrics_dict: Mapping[str, Callable] | None = None,
        device: Any = None,
    ) -> None:
        """Loss ``loss_func(y_pred, y_true)``, optimizer (default Adam, lr 1e-3, as
        torchkeras), metrics ``{name: fn(y_pred, y_true)}`` returning a tensor or a float.

        >>> model.compile(loss_func=nn.BCELoss(), metrics_dict={"accuracy": accuracy})
        """
        check_loss("compile", "loss_func", loss_func)
        check_optimizer("compile", optimizer)
        if metrics_dict is not None and not (
            isinstance(metrics_dict, Mapping)
            and all(isinstance(k, str) and callable(v) for k, v in metrics_dict.items())
        ):
            raise FitkitTypeError(
                f"compile(metrics_dict=...) takes a dict {{name: fn(y_pred, "
                f"y_true)}}, e.g. {{'accuracy': accuracy}}; got "
                f"{metrics_dict!r}."
            )
        if self.net is None and type(self).forward is Model.forward:
            raise FitkitTypeError(self._no_net())
        dev = _device(device)
        # Kept out of the module's children: state_dict and print(model) stay the network's.
        self.__dict__["loss_func"] = loss_func
        self.__dict__["metrics_dict"] = dict(metrics_dict or {})
        self.__dict__["optimizer"] = optimizer or torch.optim.Adam(self.parameters(), lr=1e-3)
        self.device, self.history = dev, {}
        self._facade(dev).compile(
            optimizer=self.optimizer, loss=loss_func, metrics=self.metrics_dict or None
        )

    def fit(
        self, epochs: int, dl_train: Any, dl_val: Any = None, log_step_freq: int = 1
    ) -> pd.DataFrame:
        """Train ``epochs`` epochs on a DataLoader of ``(features, labels)``; returns the
        history since compile as a DataFrame: epoch, loss, <metrics>, val_loss, val_<metrics>.

        >>> dfhistory = model.fit(10, dl_train, dl_val=dl_val, log_step_freq=50)
        """
        facade = self._compiled("fit")
        whole("fit", "epochs", epochs)
        whole("fit", "log_step_freq", log_step_freq)
        if dl_train is None:
            raise FitkitValueError(
                "fit(dl_train=...) is None: pass a DataLoader of (features, labels) batches."
            )
        print("Start Training ...")
        print(rule(), flush=True)
        history = facade.fit(
            dl_train,
            epochs=epochs,
            validation_data=dl_val,
            verbose=0,
            shuffle=False,
            callbacks=[TorchkerasPrinter(log_step_freq)],
        )
        print("Finished Training...", flush=True)
        for key, values in history.history.items():
            if not is_lr_column(key):
                self.history.setdefault(key, []).extend(values)
        return self._frame()

    def _frame(self) -> pd.DataFrame:
        import pandas as pd

        frame = pd.DataFrame(self.history)
        frame.insert(0, "epoch", range(1, len(frame) + 1))
        return frame

    # ------------------------------------------------------------------ evaluate, predict
    def evaluate(self, dl_val: Any) -> dict[str, float]:
        """``{'val_loss': ..., 'val_<metric>': ...}`` over a DataLoader, exact over samples.

        >>> model.evaluate(dl_val)
        {'val_loss': 0.05, 'val_accuracy': 0.98}
        """
        logs = self._compiled("evaluate").validate(dl_val)
        assert isinstance(logs, dict)  # validate's return_dict=True
        return {f"val_{k}": v for k, v in logs.items()}

    def predict(self, dl: Any) -> torch.Tensor:
        """The network's outputs for every batch of ``dl`` (labels ignored), as one CPU tensor.

        >>> probs = model.predict(dl_val)
        """
        return torch.from_numpy(self._facade().predict(dl))

    def train_step(self, features: Any, labels: Any) -> dict[str, float]:
        """One optimisation step on one batch; that batch's loss and metrics."""
        return self._compiled("train_step").train_on_batch(features, labels, return_dict=True)

    def evaluate_step(self, features: Any, labels: Any) -> dict[str, float]:
        """Loss and metrics of one batch, ``val_`` prefixed."""
        logs = self._compiled("evaluate_step").test_on_batch(features, labels, return_dict=True)
        return {f"val_{k}": v for k, v in logs.items()}

    def summary(
        self, input_shape: Any, input_dtype: Any = torch.FloatTensor, batch_size: int = -1
    ) -> None:
        """Print layers, output shapes and parameter counts (fitkit's summary table) for an
        input of ``input_shape`` (without the batch dimension).

        >>> model.summary(input_shape=(1, 28, 28))
        """
        print(_summary_text(self._facade(), input_shape, input_dtype, None), flush=True)


# ---------------------------------------------------------------------- summary()
def summary(
    model: torch.nn.Module,
    input_shape: Any = None,
    input_dtype: Any = torch.FloatTensor,
    batch_size: int = -1,
    input_data: Any = None,
) -> str:
    """``torchkeras.summary``: print fitkit's summary table (layer, output shape, params) of
    ``model`` for an input of ``input_shape`` (no batch dimension), or for ``input_data``;
    returns the printed text, as torchkeras 3+ does (2.x returned None). A tensor in second
    place is ``input_data`` (torchkeras 3+'s order), a shape ``input_shape`` (2.x's).

    >>> torchkeras.summary(model, input_shape=(2,))
    """
    check_net("summary", model)
    if isinstance(input_shape, torch.Tensor):
        input_shape, input_data = None, input_shape
    if input_shape is None and input_data is None:
        raise FitkitValueError(
            "summary needs input_shape=(...) (without the batch dimension) "
            "or input_data=<a batch>, e.g. summary(model, input_shape=(2,))."
        )
    text = _summary_text(
        FitkitModel(model, device=where(model)), input_shape, input_dtype, input_data
    )
    print(text, flush=True)
    return text


def _summary_text(facade: FitkitModel, input_shape: Any, input_dtype: Any, input_data: Any) -> str:
    """fitkit's summary table for an input of ``input_shape`` in ``input_dtype`` (integer
    dtypes, token ids: a batch of zeros), or for ``input_data``."""
    dtype = getattr(input_dtype, "dtype", input_dtype)
    if not isinstance(dtype, torch.dtype):
        raise FitkitTypeError(
            f"summary(input_dtype=...) takes a tensor type or dtype such "
            f"as torch.FloatTensor or torch.long; got {input_dtype!r}."
        )
    if input_data is None and not dtype.is_floating_point:
        shape = tuple(input_shape) if isinstance(input_shape, (tuple, list)) else (input_shape,)
        input_data = torch.zeros((2, *shape), dtype=dtype)
    printed: list[str] = []
    facade.summary(
        input_shape=None if input_data is not None else input_shape,
        input_data=input_data,
        print_fn=printed.append,
    )
    return printed[0]
