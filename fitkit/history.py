"""History: what fit returns. Owns the per-epoch record, its DataFrame and its plot.

Knows nothing of backends or display; the facade appends one row per epoch.
"""
from __future__ import annotations

from typing import Any, Mapping


class History:
    """Per-epoch logs of a fit: ``.history`` (dict of lists, as Keras), ``.df``, ``.plot()``.

    >>> history = model.fit(x, y, epochs=3)
    >>> history.df[["epoch", "loss"]]
    """

    def __init__(self) -> None:
        self.epoch: list[int] = []
        self.history: dict[str, list[float]] = {}
        self.stop_reason: str | None = None  # why fit stopped early (e.g. a NaN loss)

    def append(self, epoch: int, logs: Mapping[str, float]) -> None:
        """Record one epoch; keys first seen later are back-filled with NaN."""
        for key, value in logs.items():
            self.history.setdefault(key, [float("nan")] * len(self.epoch))
        for key in self.history:
            self.history[key].append(float(logs.get(key, float("nan"))))
        self.epoch.append(epoch)

    def __len__(self) -> int:
        return len(self.epoch)

    @property
    def df(self):
        """A pandas DataFrame, one row per epoch: epoch (1-based), loss, metrics, val_*, lr."""
        import pandas as pd

        frame = pd.DataFrame(self.history)
        frame.insert(0, "epoch", [e + 1 for e in self.epoch])
        return frame

    def plot(self, metrics: list[str] | None = None) -> Any:
        """A matplotlib figure: one panel per metric, train and validation curves together."""
        import matplotlib.pyplot as plt  # imported here only: plotting is optional

        names = metrics or [k for k in self.history if not k.startswith("val_") and k != "lr"]
        fig, axes = plt.subplots(1, len(names), figsize=(4.5 * len(names), 3.5), squeeze=False)
        epochs = [e + 1 for e in self.epoch]
        for ax, name in zip(axes[0], names):
            ax.plot(epochs, self.history[name], "o-", label=name)
            if f"val_{name}" in self.history:
                ax.plot(epochs, self.history[f"val_{name}"], "s--", label=f"val_{name}")
            ax.set_xlabel("epoch")
            ax.set_title(name)
            ax.legend()
        fig.tight_layout()
        return fig

    def __repr__(self) -> str:
        return f"History(epochs={len(self)}, keys={list(self.history)})"
