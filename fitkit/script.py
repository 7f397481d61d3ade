"""Script style: pieces for a hand-written loop (exact epoch means, the tutorial's printout).

Owns ``Mean`` / ``EpochLogs`` (device sums read once per log point), the print helpers and the
epoch skeleton the function-style loops share; formatting is display.py's, steps are the user's
(or fitkit.torch.loops / fitkit.tf.loops). Backend-free: a tensor's framework does the work
in its own script.py (fitkit/torch/, fitkit/tf/), imported only when such a tensor arrives.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from numbers import Integral, Number
from typing import Any, Protocol, SupportsFloat

from .backend import backend_module
from .display import dated_rule, epoch_line, step_line
from .errors import FitkitTypeError, FitkitValueError
from .history import History

__all__ = ["EpochLogs", "History", "Mean", "print_epoch", "print_rule", "print_step"]


def _framework(value: Any) -> str:
    """ "torch", "tensorflow" or "" (a host value), read from the value's type, no import."""
    root = type(value).__module__.split(".")[0]
    return root if root in ("torch", "tensorflow") else ""


def _batch_value(value: Any) -> Any:
    """A batch's value ready to add to a sum: a float on the host, else a detached 0-d device
    tensor in a wide float type (a tensor of per-sample values is averaged)."""
    kind = _framework(value)
    if kind:
        return backend_module(kind, "script").batch_value(value)
    if isinstance(value, Number) and isinstance(value, SupportsFloat):
        return float(value)
    if hasattr(value, "mean") and hasattr(value, "shape"):  # a numpy array or scalar
        return float(value.mean())
    raise FitkitTypeError(
        f"A logged value must be a number or a torch / TensorFlow tensor; "
        f"got {type(value).__name__}."
    )


def _add(total: Any, value: Any, n: int) -> Any:
    """``total + value * n`` on the value's device (torch sums in float64, in place)."""
    return backend_module(_framework(value), "script").add(total, value, n)


def read_floats(values: list) -> list[float]:
    """Device values as Python floats, one host sync per framework (values stacked)."""
    out: list[Any] = list(values)
    for kind in ("torch", "tensorflow"):
        where = [i for i, v in enumerate(values) if _framework(v) == kind]
        if where:
            read = backend_module(kind, "script").read([values[i] for i in where])  # host sync
            for i, value in zip(where, read, strict=True):
                out[i] = value
    return [float(v) for v in out]


def as_floats(*values: Any) -> list[float]:
    """Batch values (tensors, also of per-sample values, or numbers) as Python floats, read
    in one host sync per framework.

    >>> loss, accuracy = as_floats(loss, accuracy)
    """
    return read_floats([_batch_value(v) for v in values])  # host sync


class Mean:
    """The exact mean over samples of values given per batch (sum of value * n / samples).

    ``update`` takes a batch's mean (a device tensor or a float) and its number of samples;
    device values stay on the device until ``result`` reads them (one host sync).

    >>> loss_mean = Mean()
    >>> loss_mean.update(loss, len(labels))   # every step
    >>> loss_mean.result()                    # once per epoch: a float
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget every update (call it at each epoch's start)."""
        self.count = 0
        self._device_sum: Any = None
        self._host_sum = 0.0

    def update(self, value: Any, n: int = 1) -> None:
        """Add a batch's mean ``value`` (per-sample values are averaged) over ``n`` samples."""
        if isinstance(n, bool) or not isinstance(n, Integral) or n < 0:
            raise FitkitValueError(f"n is the batch's number of samples (an int >= 0); got {n!r}.")
        value = _batch_value(value)
        if isinstance(value, float):
            self._host_sum += value * int(n)
        else:
            self._device_sum = _add(self._device_sum, value, int(n))
        self.count += int(n)

    def parts(self) -> tuple[Any, float, int]:
        """(device sum or None, host sum, count): what ``result`` combines."""
        return self._device_sum, self._host_sum, self.count

    def result(self) -> float:
        """The mean so far as a float (NaN before any sample); reads the device once."""
        return _combine([self.parts()])[0]


class EpochLogs:
    """Several ``Mean`` values by name, read together: one host sync per ``result``.

    >>> train_logs = EpochLogs()
    >>> train_logs.update(len(labels), loss=loss, accuracy=accuracy)   # every step
    >>> train_logs.result()                                            # {'loss': ..., ...}
    >>> EpochLogs(prefix="val_")   # keys of result() become val_loss, val_accuracy
    """

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix
        self.means: dict[str, Mean] = {}

    def reset(self) -> None:
        """Forget every value (call it at each epoch's start)."""
        self.means = {}

    def update(self, n: int, /, **values: Any) -> None:
        """Add each named batch mean (a tensor or a float) over the batch's ``n`` samples."""
        for name, value in values.items():
            mean = self.means.get(name)
            if mean is None:
                mean = self.means[name] = Mean()
            mean.update(value, n)

    def result(self) -> dict[str, float]:
        """``{prefix + name: mean}`` as floats, every device sum read in one host sync."""
        values = _combine([m.parts() for m in self.means.values()])  # host sync
        return {self.prefix + name: v for name, v in zip(self.means, values, strict=True)}


def _combine(parts: list[tuple[Any, float, int]]) -> list[float]:
    """Means from (device sum, host sum, count) triples; all device sums read at once."""
    devices = iter(read_floats([d for d, _, _ in parts if d is not None]))  # host sync
    out = []
    for device_sum, host_sum, count in parts:
        total = host_sum + (next(devices) if device_sum is not None else 0.0)
        out.append(total / count if count else float("nan"))
    return out


def print_rule() -> None:
    """Print the tutorial's dated rule (a blank line, 80 '=', the time).

    >>> print_rule()                    # before each epoch: ====...====2024-05-01 12:00:00
    """
    print("\n" + dated_rule(), flush=True)


def print_step(step: int, logs: Mapping[str, float]) -> None:
    """Print ``[step = 100] loss: 0.513, accuracy: 0.764`` (values to 3 decimals).

    >>> print_step(100, {"loss": 0.5134, "accuracy": 0.7642})
    [step = 100] loss: 0.513, accuracy: 0.764
    """
    print(step_line(step, logs), flush=True)


def print_epoch(epoch: int, logs: Mapping[str, float]) -> None:
    """Print ``EPOCH = 1, loss = 0.513, ...``; ``epoch`` is 0-based, as ``History.append``
    takes it (both show it 1-based).

    >>> print_epoch(epoch, {**train_logs.result(), **valid_logs.result()})
    """
    print("\n" + epoch_line(epoch, logs), flush=True)


# ------------------------------------------------------- the function-style loops' skeleton


def model_attribute(model: Any, name: str, example: str) -> Any:
    """``model.<name>`` as the tutorial's function style sets it, or an error naming the fix."""
    value = getattr(model, name, None)
    if value is None:
        raise FitkitValueError(
            f"model.{name} is not set. The function style reads the optimizer, the loss and "
            f"the metric from attributes of the network; set it before training, e.g. "
            f"model.{name} = {example}"
        )
    return value


def metric_name_of(model: Any) -> str:
    """``model.metric_name``, "metric" when it is not set; refuses names that clash in logs."""
    name = getattr(model, "metric_name", None) or "metric"
    if not isinstance(name, str) or name == "loss" or name.startswith("val_"):
        raise FitkitValueError(
            f"model.metric_name names the metric's column (e.g. 'accuracy'); "
            f"it must be a string other than 'loss' and not start with "
            f"'val_'; got {name!r}."
        )
    return name


class Phase(Protocol):
    """One side of an epoch (training or validation) as a backend's loops module runs it."""

    def begin(self) -> None: ...  # reset the sums, set the network's mode

    def step(self, features: Any, labels: Any) -> None: ...

    def result(self) -> dict[str, float]: ...  # host sync


def check_loop_args(epochs: Any, dl_train: Any, dl_valid: Any, log_step_freq: Any) -> None:
    """train_model's arguments, checked before anything runs."""
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise FitkitValueError(f"epochs must be an int >= 1; got {epochs!r}.")
    if log_step_freq is not None and (
        isinstance(log_step_freq, bool) or not isinstance(log_step_freq, int) or log_step_freq < 1
    ):
        raise FitkitValueError(
            f"log_step_freq must be an int >= 1 (steps between step logs), "
            f"or None for no step logs; got {log_step_freq!r}."
        )
    for name, data in (("dl_train", dl_train), ("dl_valid", dl_valid)):
        if data is None and name == "dl_valid":
            continue
        if not isinstance(data, Iterable):
            raise FitkitTypeError(
                f"{name} must be an iterable of (features, labels) batches (a DataLoader, a "
                f"tf.data.Dataset, a list of pairs); got {type(data).__name__}."
            )
        if isinstance(data, Iterator) and (epochs > 1 or name == "dl_valid"):
            raise FitkitValueError(
                f"{name} is a one-shot iterator (a generator), which is empty after one pass. "
                f"Pass something that can be iterated once per epoch: a list of batches, a "
                f"DataLoader or a tf.data.Dataset."
            )


def _pair(batch: Any, name: str) -> tuple[Any, Any]:
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        return batch[0], batch[1]
    what = f"{len(batch)} items" if isinstance(batch, (tuple, list)) else type(batch).__name__
    raise FitkitValueError(
        f"{name} yielded {what}; the function style takes (features, labels) "
        f"pairs, as a DataLoader over TensorDataset(x, y) or "
        f"tf.data.Dataset.from_tensor_slices((x, y)) yields them."
    )


def _run(phase: Phase, data: Iterable, name: str, epoch: int, log_step_freq: int | None) -> dict:
    phase.begin()
    steps = 0
    for steps, batch in enumerate(data, 1):
        phase.step(*_pair(batch, name))
        if log_step_freq and steps % log_step_freq == 0:
            print_step(steps, phase.result())  # host sync: a step log
    if steps == 0:
        raise FitkitValueError(f"{name} yielded no batches in epoch {epoch + 1}.")
    return phase.result()  # host sync: the epoch's values


def epoch_loop(
    train: Phase,
    valid: Phase | None,
    *,
    epochs: int,
    dl_train: Iterable,
    dl_valid: Iterable | None,
    log_step_freq: int | None,
) -> History:
    """What ``train_model`` runs on both backends: the tutorial's printout around the epochs;
    device values are read only at step logs and epoch ends (each Phase's ``result``)."""
    history = History()
    print("Start Training...", flush=True)
    print_rule()
    for epoch in range(epochs):
        logs = _run(train, dl_train, "dl_train", epoch, log_step_freq)
        if valid is not None and dl_valid is not None:
            val = _run(valid, dl_valid, "dl_valid", epoch, None)
            logs.update({f"val_{k}": v for k, v in val.items()})
        history.append(epoch, logs)
        print_epoch(epoch, logs)
        print_rule()
    print("Finished Training...", flush=True)
    return history
