"""torchkeras 4's live curves (``KerasModel.fit(plot=True)``): the monitored metric's train and
validation curves, the best epoch starred, redrawn after every epoch; in a notebook in place
(IPython's display), and saved as a PNG file (elsewhere the only view, its path printed).

Owns the drawing and where it goes; when it is drawn is KerasModel's (torchkeras_v4.py).
"""

from __future__ import annotations

import importlib
import importlib.util
import io
import os
from collections.abc import Mapping
from typing import Any

from ..callbacks import Callback
from ..display import in_notebook
from ..errors import FitkitValueError


def require_matplotlib(what: str) -> None:
    """Refuse ``what`` before any work when matplotlib (the ``plot`` extra) is missing."""
    if importlib.util.find_spec("matplotlib") is None:
        raise FitkitValueError(
            f"{what} draws the curves with matplotlib, which is not "
            f'installed: pip install "fitkit[plot]" (or matplotlib), or '
            f"pass plot=False."
        )


class LiveCurves(Callback):
    """Draw ``monitor``'s metric (train_<m> and val_<m>, in torchkeras 4's names) after each
    epoch into ``path`` (a PNG), and in a notebook into one output that is updated in place.

    >>> model.fit(x, y, epochs=20, callbacks=[LiveCurves("val_acc", "max", "history.png")])
    """

    def __init__(self, monitor: str, mode: str, path: str, names: Any) -> None:
        super().__init__()
        # ``watched``, not ``monitor``: the callback list checks monitors under fitkit's names
        self.watched, self.mode, self.path = monitor, mode, os.fspath(path)
        self.metric = (
            monitor.split("_", 1)[1] if monitor.startswith(("train_", "val_")) else monitor
        )
        self.names = names  # fitkit's epoch logs -> torchkeras 4's names
        self.rows: list[dict[str, float]] = []
        self.notebook = False
        self._handle: Any = None  # IPython's display handle, updated each epoch

    def on_train_begin(self, logs: Mapping | None = None) -> None:
        self.rows, self._handle = [], None
        self.notebook = in_notebook()
        if not self.notebook:
            print(f"\nView dynamic loss/metric plot: \n{os.path.abspath(self.path)}", flush=True)

    def on_epoch_end(self, epoch: int, logs: Mapping | None = None) -> None:
        self.rows.append({"epoch": epoch + 1, **self.names(logs or {})})
        png = self.draw()
        if self.notebook:
            # by name: IPython is optional (there in a notebook) and mypy may not find it
            ipython_display = importlib.import_module("IPython.display")
            image = ipython_display.Image(data=png)
            if self._handle is None:
                self._handle = ipython_display.display(image, display_id=True)
            else:
                self._handle.update(image)

    def draw(self) -> bytes:
        """The figure of the epochs so far, saved to ``path``; returns its PNG bytes."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure  # no pyplot: no window, no global figure
        from matplotlib.ticker import MaxNLocator

        fig = Figure(figsize=(6, 4))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        epochs = [row["epoch"] for row in self.rows]
        for key, style in (
            (f"train_{self.metric}", "bo--"),
            (f"val_{self.metric}", "co-"),
            (self.metric, "co-"),
        ):
            values = [row.get(key, float("nan")) for row in self.rows]
            if any(key in row for row in self.rows):
                ax.plot(epochs, values, style, label=key, clip_on=False)
        scores = [(row[self.watched], row["epoch"]) for row in self.rows if self.watched in row]
        if scores:
            best, at = (min if self.mode == "min" else max)(scores, key=lambda s: s[0])
            ax.plot(at, best, "r*", markersize=15, clip_on=False)
            ax.set_title(f"best {self.watched}={best:.4f} (@epoch {at})")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(self.metric)
        ax.legend(loc="best")
        folder = os.path.dirname(self.path)
        if folder:
            os.makedirs(folder, exist_ok=True)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        with open(self.path, "wb") as file:
            file.write(buffer.getvalue())
        return buffer.getvalue()
