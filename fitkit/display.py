"""What fit prints: a step bar, step logs, the per-epoch table or line, and summary tables.

Owns formatting only. It never reads a device value: the facade hands it Python floats
that it has already read at a log point.
"""
from __future__ import annotations

import datetime
import sys
from typing import Mapping, Sequence


def _fmt(value: float) -> str:
    return f"{value:.4g}" if abs(value) < 1e-3 and value != 0 else f"{value:.4f}"


def format_logs(logs: Mapping[str, float]) -> str:
    return " - ".join(f"{k}: {_fmt(v)}" for k, v in logs.items())


class EpochDisplay:
    """Per-verbosity output of one fit: 0 silent, 1 bar + table, 2 one line per epoch."""

    def __init__(self, verbose: int, epochs: int) -> None:
        self.verbose = verbose
        self.epochs = epochs
        self._bar = None

    def begin_epoch(self, epoch: int, steps: int | None) -> None:
        if self.verbose == 1:
            from tqdm.auto import tqdm  # notebook-aware bar

            self._bar = tqdm(total=steps, desc=f"Epoch {epoch + 1}/{self.epochs}",
                             unit="step", leave=False, file=sys.stdout, mininterval=0.2)

    def advance(self, steps: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(steps)

    def step_log(self, step: int, logs: Mapping[str, float]) -> None:
        if self.verbose == 0:
            return
        line = f"[step = {step}] {format_logs(logs)}"
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
            print(f"Epoch {epoch + 1}/{self.epochs} - {seconds:.1f}s - {format_logs(logs)}",
                  flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def epoch_table(epoch: int, logs: Mapping[str, float]) -> str:
    """The tutorial's look: a dated rule, then a one-row prettytable of the epoch's logs."""
    from prettytable import PrettyTable

    table = PrettyTable(["epoch", *logs.keys()])
    table.add_row([epoch + 1, *(_fmt(v) for v in logs.values())])
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
    return f"{'=' * 60} {stamp}\n{table}"


def shape_text(value) -> str:
    """An output's shape as ``[-1, 64]`` (batch dimension as -1); nested outputs joined."""
    if isinstance(value, (tuple, list)):
        return ", ".join(shape_text(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}: {shape_text(v)}" for k, v in value.items())
    if hasattr(value, "shape"):
        return str([-1, *(None if d is None else int(d) for d in value.shape[1:])])
    return "?"


def summary_table(rows: Sequence[tuple[str, str, int]], total: int, trainable: int,
                  param_bytes: int) -> str:
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
        f"Params size (MB): {param_bytes / 2 ** 20:.6f}",
        "-" * width,
    ]
    return "\n".join(lines)
