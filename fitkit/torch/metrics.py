"""Torch metric states: accuracy and friends accumulated on the device, read at log points.

Owns the formulas; they mirror fitkit/tf/metrics.py line for line so a string metric
gives the same number on both backends, and which attributes hold each running state (DDP
combines them over processes: fitkit/torch/distribute.py). Choosing and naming metrics is
the adapter's job.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .. import specs
from ..errors import FitkitValueError
from ..identifiers import portable_metric
from ..specs import AUC_BINS
from ..targets import TargetMode


class StateMetric:
    """A metric whose state lives on the device; ``result`` is a 0-d tensor (no sync).

    ``update`` takes an optional ``sample_weight`` of shape (N,), spread over each sample's
    values. Unweighted counts stay Python ints; weighted ones become device tensors.
    ``state_names``: the attributes holding the running state, which ``merge`` combines
    over processes under DDP (sums, unless a metric says otherwise).
    """

    state_names: tuple[str, ...] = ()

    def __init__(self, name: str) -> None:
        self.name = name
        self.mode: TargetMode | None = None
        self.width = 1

    def build(self, mode: TargetMode, width: int, device: torch.device) -> None:
        self.mode, self.width, self.device = mode, width, device
        self.reset()

    @property
    def built_mode(self) -> TargetMode:
        """The target mode ``build`` set (every update comes after it)."""
        if self.mode is None:
            raise RuntimeError(f"metric {self.name!r} was used before build()")
        return self.mode

    def reset(self) -> None:
        """Zero the running state (each metric's own)."""

    def update(
        self, y_pred: torch.Tensor, y: torch.Tensor, sample_weight: torch.Tensor | None = None
    ) -> None:
        raise NotImplementedError

    def result(self) -> torch.Tensor:
        raise NotImplementedError

    def local_state(self) -> list[torch.Tensor]:
        """The running state as float64 tensors of fixed shapes, in ``state_names`` order."""
        return [
            torch.as_tensor(getattr(self, k), dtype=torch.float64, device=self.device)
            for k in self.state_names
        ]

    def merge(self, states: list[list[torch.Tensor]]) -> dict[str, torch.Tensor]:
        """The state over every process, from each one's ``local_state()``: sums."""
        return {
            k: torch.stack([s[i] for s in states]).sum(0) for i, k in enumerate(self.state_names)
        }


def _spread(sample_weight: torch.Tensor, n: int) -> torch.Tensor:
    """float64 weights of ``n`` flattened values: each sample's weight over its own values."""
    w = sample_weight.reshape(-1).double()
    return w if w.shape[0] == n else w.reshape(-1, 1).expand(-1, n // w.shape[0]).reshape(-1)


def _ratio(total: torch.Tensor, count: int | torch.Tensor) -> torch.Tensor:
    """total / count, 0 where count is 0 (Keras's divide_no_nan); an int count is exact."""
    if isinstance(count, int):
        return total.double() / max(count, 1)
    return torch.where(count != 0, total / count, 0.0)


def _labels(
    y_pred: torch.Tensor, y: torch.Tensor, mode: TargetMode, cut: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Predicted and true labels, flattened, for the accuracy family."""
    if mode.task == "binary":
        return (y_pred > cut).reshape(-1), (y > 0.5).reshape(-1)
    pred = y_pred.argmax(-1)
    true = y.argmax(-1) if mode.task == "categorical" else y
    if pred.dim() != 1 or true.dim() != 1:  # the common (N,) case needs no reshape op
        pred, true = pred.reshape(-1), true.reshape(-1)
    return pred, true if true.dtype == torch.int64 else true.long()


def _one_hot(labels: torch.Tensor, width: int) -> torch.Tensor:
    """(M, width) bool rows; unlike F.one_hot, never reads the labels on the host to check them."""
    return labels.reshape(-1, 1) == torch.arange(width, device=labels.device)


def _probabilities(
    y_pred: torch.Tensor, y: torch.Tensor, mode: TargetMode, width: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores in [0, 1] and 0/1 targets, flattened (one-vs-rest for class outputs)."""
    if mode.task == "binary":
        scores = torch.sigmoid(y_pred) if mode.from_logits else y_pred
        return scores.reshape(-1), y.reshape(-1).to(scores.dtype)
    scores = torch.softmax(y_pred, -1) if mode.from_logits else y_pred
    target = y if mode.task == "categorical" else _one_hot(y.reshape(-1), width)
    return scores.reshape(-1), target.reshape(-1).to(scores.dtype)


class Accuracy(StateMetric):
    """Exact accuracy: correct predictions / samples (or weights) over the epoch."""

    state_names = ("correct", "count")

    def __init__(
        self, name: str = "accuracy", task: str | None = None, threshold: float | None = None
    ) -> None:
        super().__init__(name)
        self.task, self.threshold = task, threshold

    def build(self, mode: TargetMode, width: int, device: torch.device) -> None:
        task = specs.metric_task(self.name, self.own_task(mode.task), mode.task, self.threshold)
        self.cut = specs.binary_threshold(mode.from_logits, self.threshold)
        super().build(TargetMode(task, mode.from_logits), width, device)

    def own_task(self, target_task: str) -> str | None:
        return self.task

    def reset(self) -> None:
        self.correct = torch.zeros((), dtype=torch.int64, device=self.device)
        self.count: int | torch.Tensor = 0

    def update(
        self, y_pred: torch.Tensor, y: torch.Tensor, sample_weight: torch.Tensor | None = None
    ) -> None:
        pred, true = _labels(y_pred, y, self.built_mode, self.cut)
        self.add(pred == true, sample_weight)

    def add(self, hit: torch.Tensor, sample_weight: torch.Tensor | None) -> None:
        if sample_weight is None:
            self.correct += hit.sum()
            self.count += hit.numel()
        else:  # float64 device tensors from here on (an int64 count promotes)
            w = _spread(sample_weight, hit.numel())
            self.correct = self.correct + (w * hit).sum()
            self.count = self.count + w.sum()

    def result(self) -> torch.Tensor:
        return _ratio(self.correct, self.count)


class TopKAccuracy(Accuracy):
    """A sample is right when its label is among the ``k`` highest scores."""

    def __init__(self, name: str = "top_k_accuracy", k: int = 5, task: str | None = None) -> None:
        super().__init__(name, task=task)
        self.k = k

    def own_task(self, target_task: str) -> str:
        return self.task or ("categorical" if target_task == "categorical" else "sparse")

    def update(
        self, y_pred: torch.Tensor, y: torch.Tensor, sample_weight: torch.Tensor | None = None
    ) -> None:
        true = (y.argmax(-1) if self.built_mode.task == "categorical" else y).reshape(-1, 1).long()
        top = y_pred.reshape(true.shape[0], -1).topk(min(self.k, self.width), dim=-1).indices
        self.add((top == true).any(-1), sample_weight)


class ErrorMean(StateMetric):
    """mae / mse / rmse over every predicted value of the epoch (weighted per sample)."""

    state_names = ("total", "count")

    def __init__(self, name: str, kind: str) -> None:
        super().__init__(name)
        self.kind = kind

    def reset(self) -> None:
        self.total = torch.zeros((), dtype=torch.float64, device=self.device)
        self.count: int | torch.Tensor = 0

    def update(
        self, y_pred: torch.Tensor, y: torch.Tensor, sample_weight: torch.Tensor | None = None
    ) -> None:
        diff = y_pred - y.reshape(y_pred.shape).to(y_pred.dtype)
        err = diff.abs() if self.kind == "mae" else diff * diff
        if sample_weight is None:
            self.total += err.sum()
            self.count += diff.numel()
        else:
            w = _spread(sample_weight, err.numel())
            self.total += (w * err.reshape(-1)).sum()
            self.count = self.count + w.sum()

    def result(self) -> torch.Tensor:
        mean = _ratio(self.total, self.count)
        return mean.sqrt() if self.kind == "rmse" else mean


class AUC(StateMetric):
    """ROC AUC from (weighted) score histograms (``bins`` bins, ties in a bin count half)."""

    state_names = ("pos", "neg")

    def __init__(self, name: str = "auc", bins: int = AUC_BINS) -> None:
        super().__init__(name)
        self.bins = bins

    def reset(self) -> None:
        self.pos = torch.zeros(self.bins, dtype=torch.float64, device=self.device)
        self.neg = torch.zeros(self.bins, dtype=torch.float64, device=self.device)

    def update(
        self, y_pred: torch.Tensor, y: torch.Tensor, sample_weight: torch.Tensor | None = None
    ) -> None:
        scores, target = _probabilities(y_pred, y, self.built_mode, self.width)
        bins = (scores.double() * self.bins).long().clamp_(0, self.bins - 1)
        target = target.double()
        negative = 1.0 - target
        if sample_weight is not None:
            w = _spread(sample_weight, target.numel())
            target, negative = target * w, negative * w
        self.pos.scatter_add_(0, bins, target)
        self.neg.scatter_add_(0, bins, negative)

    def result(self) -> torch.Tensor:
        above = self.pos.flip(0).cumsum(0).flip(0) - self.pos  # positives in higher bins
        pairs = (self.neg * (above + 0.5 * self.pos)).sum()
        return _ratio(pairs, self.pos.sum() * self.neg.sum())


class PrecisionRecall(StateMetric):
    """Binary precision / recall / F1, or their macro average over classes for class outputs."""

    state_names = ("tp", "fp", "fn")

    def __init__(self, name: str, kind: str, threshold: float | None = None) -> None:
        super().__init__(name)
        self.kind, self.threshold = kind, threshold

    def build(self, mode: TargetMode, width: int, device: torch.device) -> None:
        specs.metric_task(self.name, None, mode.task, self.threshold)
        self.cut = specs.binary_threshold(mode.from_logits, self.threshold)
        super().build(mode, width, device)

    def reset(self) -> None:
        size = () if self.built_mode.task == "binary" else (self.width,)
        self.tp, self.fp, self.fn = (
            torch.zeros(size, dtype=torch.float64, device=self.device) for _ in range(3)
        )

    def update(
        self, y_pred: torch.Tensor, y: torch.Tensor, sample_weight: torch.Tensor | None = None
    ) -> None:
        pred, true = _labels(y_pred, y, self.built_mode, self.cut)
        if self.built_mode.task != "binary":
            pred, true = _one_hot(pred, self.width), _one_hot(true, self.width)
        if sample_weight is None:
            self.tp += (pred & true).sum(0)
            self.fp += (pred & ~true).sum(0)
            self.fn += (~pred & true).sum(0)
            return
        w = _spread(sample_weight, true.shape[0])
        w = w if true.dim() == 1 else w[:, None]
        self.tp += (w * (pred & true)).sum(0)
        self.fp += (w * (pred & ~true)).sum(0)
        self.fn += (w * (~pred & true)).sum(0)

    def result(self) -> torch.Tensor:
        if self.kind == "f1":
            hits, denom = 2.0 * self.tp, 2.0 * self.tp + self.fp + self.fn
        else:
            hits, denom = self.tp, self.tp + (self.fp if self.kind == "precision" else self.fn)
        ratio = _ratio(hits, denom)
        if ratio.dim() == 0:
            return ratio
        seen = denom > 0  # macro average over the classes that occurred
        return (ratio * seen).sum() / seen.sum().clamp_min(1)


class R2Score(StateMetric):
    """Coefficient of determination over the epoch, averaged over output columns (Keras's
    "uniform_average"). Sums of y and y^2 are taken about the epoch's first target row: exact
    for a constant column, and no cancellation for targets with a large mean. Over
    processes, each one's sums move to the shift of the first process that saw rows.
    """

    state_names = ("sums", "count", "shift")

    def reset(self) -> None:
        self.sums = torch.zeros(3, self.width, dtype=torch.float64, device=self.device)
        self.count: int | torch.Tensor = 0
        self.shift: torch.Tensor | None = None

    def local_state(self) -> list[torch.Tensor]:
        shift = (
            self.shift
            if self.shift is not None
            else torch.zeros(1, self.width, dtype=torch.float64, device=self.device)
        )
        return [
            self.sums,
            torch.as_tensor(self.count, dtype=torch.float64, device=self.device),
            shift,
        ]

    def merge(self, states: list[list[torch.Tensor]]) -> dict[str, torch.Tensor]:
        counts = torch.stack([s[1] for s in states])
        shifts = torch.stack([s[2] for s in states])
        shift = shifts[(counts != 0).int().argmax()]  # the first process with rows (no read)
        sums = torch.zeros_like(states[0][0])
        for own, count, own_shift in states:
            d = (own_shift - shift).reshape(-1)  # sums about ``shift``: y - shift = (y - s) + d
            sums += torch.stack(
                [own[0] + count * d, own[1] + 2 * d * own[0] + count * d * d, own[2]]
            )
        return {"sums": sums, "count": counts.sum(), "shift": shift}

    def update(
        self, y_pred: torch.Tensor, y: torch.Tensor, sample_weight: torch.Tensor | None = None
    ) -> None:
        pred = y_pred.reshape(-1, self.width).double()
        true = y.reshape(pred.shape).double()
        if self.shift is None:  # nothing summed yet: the first row is the shift
            self.shift = true[:1].clone() if true.shape[0] else None
        if self.shift is None:
            return
        centred = true - self.shift
        terms = torch.stack([centred, centred * centred, (true - pred) ** 2])
        if sample_weight is None:
            self.sums += terms.sum(1)
            self.count += true.shape[0]
        else:
            w = _spread(sample_weight, true.shape[0]).reshape(1, -1, 1)
            self.sums += (w * terms).sum(1)
            self.count = self.count + w.sum()

    def result(self) -> torch.Tensor:
        total, squares, residual = self.sums
        spread = squares - total * _ratio(total, self.count)
        score = torch.where(spread > 0, 1.0 - residual / spread, (residual == 0).double()).mean()
        if isinstance(self.count, int):
            return score if self.count else torch.zeros_like(score)
        return torch.where(self.count != 0, score, 0.0)


class BatchMean(StateMetric):
    """A user callable ``fn(y_pred, y)``, averaged over samples (a per-sample result is
    averaged over the batch first, as on TensorFlow)."""

    state_names = ("total", "count")

    def __init__(self, name: str, fn: Callable) -> None:
        super().__init__(name)
        self.fn = fn

    def reset(self) -> None:
        self.total = torch.zeros((), dtype=torch.float64, device=self.device)
        self.count: int | torch.Tensor = 0

    def update(
        self, y_pred: torch.Tensor, y: torch.Tensor, sample_weight: torch.Tensor | None = None
    ) -> None:
        if not y_pred.shape[0]:  # an empty share of a batch (DDP): a mean of nothing is NaN
            return
        value = torch.as_tensor(self.fn(y_pred, y), device=self.device).detach()
        if value.dim():
            value = value.double().mean()
        if sample_weight is None:
            n = y_pred.shape[0]
            self.total += value * n
            self.count += n
        else:  # the batch value counts for the batch's total weight
            weight = sample_weight.double().sum()
            self.total += value * weight
            self.count = self.count + weight

    def result(self) -> torch.Tensor:
        return _ratio(self.total, self.count)


class NativeMetric(StateMetric):
    """A torchmetrics.Metric, used as it is (imported by the user, never by fitkit)."""

    def __init__(self, metric: Any) -> None:
        super().__init__(getattr(metric, "name", None) or type(metric).__name__.lower())
        self.metric = metric

    def build(self, mode: TargetMode, width: int, device: torch.device) -> None:
        self.metric.to(device)
        super().build(mode, width, device)

    def reset(self) -> None:
        self.metric.reset()

    def update(
        self, y_pred: torch.Tensor, y: torch.Tensor, sample_weight: torch.Tensor | None = None
    ) -> None:
        if sample_weight is not None:
            raise FitkitValueError(
                f"Metric {self.name!r} is a torchmetrics metric, which takes no sample weights. "
                f"Drop sample_weight/class_weight, or use a fitkit metric (a name such as "
                f"'accuracy', or fitkit.metrics.*), which weights each sample."
            )
        self.metric.update(y_pred, y)

    def result(self) -> torch.Tensor:
        return torch.as_tensor(self.metric.compute(), dtype=torch.float64)


def from_keras(identifier: Any) -> Any:
    """A Keras metric identifier as the portable metric it means (a setting with no portable
    equivalent is refused)."""
    return portable_metric(identifier)


def is_native(obj: Any) -> bool:
    """A torchmetrics.Metric (recognised by its methods: fitkit never imports torchmetrics)."""
    return all(hasattr(obj, name) for name in ("update", "compute", "reset"))


NATIVE_HINT = "a torchmetrics.Metric, or a dict {name: fn(y_pred, y)}"


class LogTracker:
    """Sample-weighted sums of the values a step returns (the loss, custom logs)."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.count = 0

    def reset(self) -> None:
        self.sums = {}
        self.count = 0

    def update(self, logs: dict, n: int) -> None:
        for key, value in logs.items():
            value = value.detach() if isinstance(value, torch.Tensor) else torch.as_tensor(value)
            if key in self.sums:
                self.sums[key].add_(value, alpha=n)  # float64 sum, float32 value: no cast op
            else:
                self.sums[key] = value.double() * n
        self.count += n

    def results(self) -> dict[str, torch.Tensor]:
        return {k: v / max(self.count, 1) for k, v in self.sums.items()}
