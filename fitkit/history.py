"""History: what fit returns. Owns the per-epoch record, its DataFrame and its plot.

Knows nothing of backends or display; the facade appends one row per epoch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

# The history's learning-rate column(s): named here only, so a rename is one line.
LR_KEY = "learning_rate"  # Keras 3's key in the history, CSV and TensorBoard


def lr_columns(group_names: Sequence[Any], optimizer: int | None = None) -> list[str]:
    """The learning-rate columns for an optimizer's param groups, in group order.

    One group: ``learning_rate``. Several: ``learning_rate-<name>`` for groups given a
    ``"name"`` (all distinct strings), else ``learning_rate-group0``, ``-group1`` … (as
    Lightning's LearningRateMonitor tells groups apart). Optimizer ``i`` of several
    (``configure_optimizers``): ``learning_rate-opt<i>``, and ``-opt<i>-<group>`` for its groups.

    >>> lr_columns([None]), lr_columns([None, None]), lr_columns(["backbone", "head"])
    (['learning_rate'], ['learning_rate-group0', 'learning_rate-group1'],
     ['learning_rate-backbone', 'learning_rate-head'])
    >>> lr_columns([None], optimizer=1), lr_columns([None, None], optimizer=0)
    (['learning_rate-opt1'], ['learning_rate-opt0-group0', 'learning_rate-opt0-group1'])
    """
    prefix = LR_KEY if optimizer is None else f"{LR_KEY}-opt{optimizer}"
    if len(group_names) == 1:
        return [prefix]
    named = all(isinstance(n, str) and n for n in group_names) and len(set(group_names)) == len(
        group_names
    )
    labels = group_names if named else [f"group{i}" for i in range(len(group_names))]
    return [f"{prefix}-{label}" for label in labels]


def renamed_lr(key: str) -> str:
    """A history key of a file written before the rate was logged as ``learning_rate``
    (``lr``, ``lr-<group>``) under today's name; any other key unchanged."""
    if key == "lr" or key.startswith("lr-"):
        return LR_KEY + key[2:]
    return key


def is_lr_column(key: str) -> bool:
    """True for a learning-rate column (``lr``, or one param group's or optimizer's ``lr-…``)."""
    return key == LR_KEY or key.startswith(f"{LR_KEY}-")


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
        for key in logs:
            self.history.setdefault(key, [float("nan")] * len(self.epoch))
        for key in self.history:
            self.history[key].append(float(logs.get(key, float("nan"))))
        self.epoch.append(epoch)

    def __len__(self) -> int:
        return len(self.epoch)

    @property
    def df(self) -> pd.DataFrame:
        """A pandas DataFrame, one row per epoch: epoch (1-based), loss, metrics, val_*, lr
        (one ``lr-…`` column per param group, or per optimizer, when there are several)."""
        import pandas as pd

        frame = pd.DataFrame(self.history)
        frame.insert(0, "epoch", [e + 1 for e in self.epoch])
        return frame

    def plot(self, metrics: list[str] | None = None) -> Any:
        """A matplotlib figure: one panel per metric, train and validation curves together."""
        import matplotlib.pyplot as plt  # imported here only: plotting is optional

        names = metrics or [
            k for k in self.history if not k.startswith("val_") and not is_lr_column(k)
        ]
        fig, axes = plt.subplots(1, len(names), figsize=(4.5 * len(names), 3.5), squeeze=False)
        epochs = [e + 1 for e in self.epoch]
        for ax, name in zip(axes[0], names, strict=True):
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
