"""Portable metrics with arguments: ``metrics=[fitkit.metrics.TopKAccuracy(k=3)]``.

Owns the small, backend-free spec objects a user puts in ``compile(metrics=...)`` next to
strings; each adapter builds its own mirrored class from them. No framework is imported here.
"""

from __future__ import annotations

from numbers import Integral, Real
from typing import Any

from .errors import FitkitTypeError, FitkitValueError
from .specs import AUC_BINS, MetricSpec

__all__ = ["AUC", "Accuracy", "F1Score", "Precision", "R2Score", "Recall", "TopKAccuracy"]


def _threshold(value: float | None, metric: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, Real):
        raise FitkitTypeError(f"{metric}(threshold=...) takes a probability; got {value!r}.")
    if not 0.0 < value < 1.0:
        raise FitkitValueError(
            f"{metric}(threshold={value!r}): the threshold is a probability strictly between "
            f"0 and 1 (for logit outputs fitkit compares the logit with that probability's logit)."
        )
    return float(value)


def _positive_int(value: int, arg: str, metric: str, least: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < least:
        raise FitkitValueError(f"{metric}({arg}=...) takes an integer >= {least}; got {value!r}.")
    return int(value)


class Accuracy(MetricSpec):
    """Exact accuracy; ``threshold`` (a probability) for binary outputs.

    Without a threshold, binary outputs are cut at 0.5 (a logit of 0); class outputs are
    read by argmax and take no threshold.

    >>> model.compile("adam", "bce", metrics=[fitkit.metrics.Accuracy(threshold=0.3)])
    """

    backend_class = "Accuracy"

    def __init__(self, threshold: float | None = None, name: str | None = None) -> None:
        super().__init__(name, threshold=_threshold(threshold, "Accuracy"))

    def default_name(self, **kwargs: Any) -> str:
        """The name in the logs when ``name`` is not given."""
        return "accuracy"


class TopKAccuracy(MetricSpec):
    """A sample is right when its label is among the ``k`` highest scores.

    Labels are read as the targets come: integer labels, or one-hot rows.

    >>> model.compile("adam", "cross_entropy", metrics=[fitkit.metrics.TopKAccuracy(k=3)])
    """

    backend_class = "TopKAccuracy"

    def __init__(self, k: int = 5, name: str | None = None) -> None:
        super().__init__(name, k=_positive_int(k, "k", "TopKAccuracy"))

    def default_name(self, **kwargs: Any) -> str:
        """The name in the logs when ``name`` is not given."""
        return f"top_{kwargs['k']}_accuracy"


class _Ratio(MetricSpec):
    """Binary precision / recall / F1, or their macro average over classes for class outputs."""

    backend_class = "PrecisionRecall"
    kind = ""

    def __init__(self, threshold: float | None = None, name: str | None = None) -> None:
        super().__init__(name, kind=self.kind, threshold=_threshold(threshold, type(self).__name__))

    def default_name(self, **kwargs: Any) -> str:
        """The name in the logs when ``name`` is not given."""
        return {"f1": "f1_score"}.get(self.kind, self.kind)

    def __repr__(self) -> str:
        arg = self.kwargs["threshold"]
        args = ([f"threshold={arg!r}"] if arg is not None else []) + [f"name={self.name!r}"]
        return f"{type(self).__name__}({', '.join(args)})"


class Precision(_Ratio):
    """Precision (binary; macro over classes for class outputs); ``threshold`` for binary.

    >>> model.compile("adam", "bce", metrics=[fitkit.metrics.Precision(threshold=0.3)])
    """

    kind = "precision"


class Recall(_Ratio):
    """Recall (binary; macro over classes for class outputs); ``threshold`` for binary.

    >>> model.compile("adam", "cross_entropy", metrics=[fitkit.metrics.Recall()])
    """

    kind = "recall"


class F1Score(_Ratio):
    """F1 score (binary; macro over classes for class outputs); ``threshold`` for binary.

    >>> model.compile("adam", "bce_with_logits", metrics=[fitkit.metrics.F1Score()])
    """

    kind = "f1"


class AUC(MetricSpec):
    """ROC AUC over the epoch, from score histograms of ``bins`` bins (ties in a bin count half).

    >>> model.compile("adam", "bce", metrics=[fitkit.metrics.AUC(bins=400)])
    """

    backend_class = "AUC"

    def __init__(self, bins: int = AUC_BINS, name: str | None = None) -> None:
        super().__init__(name, bins=_positive_int(bins, "bins", "AUC", least=2))

    def default_name(self, **kwargs: Any) -> str:
        """The name in the logs when ``name`` is not given."""
        return "auc"


class R2Score(MetricSpec):
    """Coefficient of determination over the epoch (the mean over output columns).

    >>> model.compile("adam", "mse", metrics=[fitkit.metrics.R2Score()])
    """

    backend_class = "R2Score"

    def __init__(self, name: str | None = None) -> None:
        super().__init__(name)

    def default_name(self, **kwargs: Any) -> str:
        """The name in the logs when ``name`` is not given."""
        return "r2_score"
