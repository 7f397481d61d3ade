"""What fit prints: a step bar, step logs, the per-epoch table or line, and summary tables;
the dated rule, step and EPOCH lines of the function / script styles (fitkit.script).

Owns formatting only (plus reading summary's ``input_shape`` argument, shared by both
summary modules). It never reads a device value: the facade hands it Python floats
that it has already read at a log point.
"""

from __future__ import annotations

import datetime
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from .errors import FitkitValueError


def _fmt(value: float) -> str:
    return f"{value:.4g}" if abs(value) < 1e-3 and value != 0 else f"{value:.4f}"


def format_logs(logs: Mapping[str, float]) -> str:
    return " - ".join(f"{k}: {_fmt(v)}" for k, v in logs.items())


def interactive(stream: Any = None) -> bool:
    """Whether a live bar suits ``stream``: a terminal, or a Jupyter kernel's output.

    Pipes, files, CI logs and pytest's capture are not: a bar there leaves '\\r' frames.
    """
    stream = sys.stdout if stream is None else stream
    try:
        if stream.isatty():
            return True
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        pass
    return in_notebook()


def in_notebook() -> bool:
    """Whether this runs in a Jupyter kernel (where IPython's display can redraw output)."""
    ipython = sys.modules.get("IPython")  # never imported here: only asked if already loaded
    shell = getattr(ipython, "get_ipython", lambda: None)()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


class EpochDisplay:
    """Per-verbosity output of one fit: 0 silent, 1 bar + table, 2 one line per epoch.

    With ``verbose=1`` the live bar is drawn only where it can redraw (``interactive``);
    elsewhere the same run prints plain lines: step logs, then the epoch's table.
    """

    def __init__(self, verbose: int, epochs: int) -> None:
        self.verbose = verbose
        self.epochs = epochs
        self.epoch: int | None = None  # the current epoch, 0-based, once begin_epoch ran
        self._bar = None

    def begin_epoch(self, epoch: int, steps: int | None) -> None:
        self.epoch = epoch
        if self.verbose == 1 and interactive():
            from tqdm.auto import tqdm  # notebook-aware bar

            self._bar = tqdm(
                total=steps,
                desc=f"Epoch {epoch + 1}/{self.epochs}",
                unit="step",
                leave=False,
                file=sys.stdout,
                mininterval=0.2,
            )

    def advance(self, steps: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(steps)

    def step_log(self, step: int, logs: Mapping[str, float]) -> None:
        if self.verbose == 0:
            return
        line = f"{step_label(self.epoch, step)} {format_logs(logs)}"
        if self._bar is not None:
            self._bar.set_postfix({k: _fmt(v) for k, v in logs.items()}, refresh=False)
            self._bar.write(line, file=sys.stdout)
        else:
            print(line, flush=True)

    def end_epoch(self, epoch: int, logs: Mapping[str, float], seconds: float) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self.verbose == 1:
            print(epoch_table(epoch, logs), flush=True)
        elif self.verbose == 2:
            print(
                f"Epoch {epoch + 1}/{self.epochs} - {seconds:.1f}s - {format_logs(logs)}",
                flush=True,
            )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def step_label(epoch: int | None, step: int) -> str:
    """``[epoch = 2, step = 30]`` (epoch shown 1-based, as in the table); ``[step = 30]`` alone."""
    return f"[step = {step}]" if epoch is None else f"[epoch = {epoch + 1}, step = {step}]"


def epoch_table(epoch: int, logs: Mapping[str, float]) -> str:
    """The tutorial's look: a dated rule, then a one-row prettytable of the epoch's logs."""
    from prettytable import PrettyTable

    table = PrettyTable(["epoch", *logs.keys()])
    table.add_row([epoch + 1, *(_fmt(v) for v in logs.values())])
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
    return f"{'=' * 60} {stamp}\n{table}"


# ------------------------------------------------- the tutorial's function / script style

RULE = "=" * 80  # the tutorial's rule: "==========" * 8, followed by the date


def _fmt3(value: float) -> str:
    return f"{value:.3f}" if abs(value) >= 1e-3 or value == 0 else f"{value:.3g}"


def dated_rule() -> str:
    """``====...====2024-05-01 12:00:00``: 80 '=' then the time, as the tutorial prints it."""
    return RULE + datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S")


def step_line(step: int, logs: Mapping[str, float]) -> str:
    """``[step = 100] loss: 0.513, accuracy: 0.764`` (the epoch's running values)."""
    return f"{step_label(None, step)} " + ", ".join(f"{k}: {_fmt3(v)}" for k, v in logs.items())


def epoch_line(epoch: int, logs: Mapping[str, float]) -> str:
    """``EPOCH = 1, loss = 0.513, accuracy = 0.764, val_loss = ...`` (``epoch`` 0-based,
    shown 1-based as in the per-epoch table)."""
    return f"EPOCH = {epoch + 1}, " + ", ".join(f"{k} = {_fmt3(v)}" for k, v in logs.items())


def shape_text(value: Any) -> str:
    """An output's shape as ``[-1, 64]`` (batch dimension as -1); nested outputs joined."""
    if isinstance(value, (tuple, list)):
        return ", ".join(shape_text(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}: {shape_text(v)}" for k, v in value.items())
    if hasattr(value, "shape"):
        return str([-1, *(None if d is None else int(d) for d in value.shape[1:])])
    return "?"


def summary_table(
    rows: Sequence[tuple[str, str, int]], total: int, trainable: int, param_bytes: int
) -> str:
    """One summary format for both backends: layer (type), output shape, params; totals."""
    width = 76
    lines = ["-" * width, f"{'Layer (type)':<40}{'Output Shape':<24}{'Param #':>12}", "=" * width]
    for name, shape, params in rows:
        lines.append(f"{name[:39]:<40}{shape[:23]:<24}{params:>12,}")
    lines += [
        "=" * width,
        f"Total params: {total:,}",
        f"Trainable params: {trainable:,}",
        f"Non-trainable params: {total - trainable:,}",
        "-" * width,
        f"Params size (MB): {param_bytes / 2**20:.6f}",
        "-" * width,
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------- summary's input_shape

SUMMARY_NEEDS_INPUT = (
    "summary does not know this network's input yet. Pass input_shape=... without the batch "
    "dimension (input_shape=8, input_shape=(1, 28, 28); a list or dict of shapes for several "
    "inputs), or input_data=<a batch>, or call summary after fit/predict, which show fitkit "
    "a batch."
)


def summary_shapes(input_shape: Any) -> Any:
    """``input_shape`` as shape tuples: one, or a list / dict of them (one per input).

    ``8`` means ``(8,)``; a tuple or list of ints is one shape; a tuple or list holding
    shapes (or ints) is one shape per input; a dict maps input names to shapes.
    """
    if isinstance(input_shape, dict):
        return {k: _one_shape(v, f"input_shape[{k!r}]") for k, v in input_shape.items()}
    if isinstance(input_shape, (tuple, list)) and any(
        isinstance(s, (tuple, list, dict)) for s in input_shape
    ):
        return [_one_shape(s, f"input_shape[{i}]") for i, s in enumerate(input_shape)]
    return _one_shape(input_shape, "input_shape")


def _one_shape(shape: Any, where: str) -> tuple:
    if isinstance(shape, dict) or (
        isinstance(shape, (tuple, list)) and any(isinstance(s, (tuple, list, dict)) for s in shape)
    ):
        raise FitkitValueError(
            f"{where} nests shapes too deeply ({shape!r}); give one shape "
            f"per input, e.g. input_shape={{'a': (3,), 'b': (2,)}}."
        )
    dims = list(shape) if isinstance(shape, (tuple, list)) else [shape]
    for dim in dims:
        if isinstance(dim, bool) or not hasattr(dim, "__index__") or int(dim) < 0:
            raise FitkitValueError(
                f"{where} must hold sizes (non-negative ints) without the batch dimension, "
                f"e.g. input_shape=(32,) or input_shape=8; got {shape!r}."
            )
    return tuple(int(d) for d in dims)
