"""Torch metric states: accuracy and friends accumulated on the device, read at log points.

Owns the formulas; they mirror fitkit/tf/metrics.py line for line so a string metric
gives the same number on both backends. Choosing and naming metrics is the adapter's job.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F

from ..targets import TargetMode

AUC_BINS = 1000


class StateMetric:
    """A metric whose state lives on the device; ``result`` is a 0-d tensor (no sync)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.mode: TargetMode | None = None
        self.width = 1

    def build(self, mode: TargetMode, width: int, device: torch.device) -> None:
        self.mode, self.width, self.device = mode, width, device
        self.reset()

    def reset(self) -> None: ...
    def update(self, y_pred: torch.Tensor, y: torch.Tensor) -> None: ...
    def result(self) -> torch.Tensor: ...


def _labels(y_pred: torch.Tensor, y: torch.Tensor, mode: TargetMode):
    """Predicted and true labels, flattened, for the accuracy family."""
    if mode.task == "binary":
        threshold = 0.0 if mode.from_logits else 0.5
        return (y_pred > threshold).reshape(-1), (y > 0.5).reshape(-1)
    pred = y_pred.argmax(-1)
    true = y.argmax(-1) if mode.task == "categorical" else y
    if pred.dim() != 1 or true.dim() != 1:  # the common (N,) case needs no reshape op
        pred, true = pred.reshape(-1), true.reshape(-1)
    return pred, true if true.dtype == torch.int64 else true.long()


def _probabilities(y_pred: torch.Tensor, y: torch.Tensor, mode: TargetMode, width: int):
    """Scores in [0, 1] and 0/1 targets, flattened (one-vs-rest for class outputs)."""
    if mode.task == "binary":
        scores = torch.sigmoid(y_pred) if mode.from_logits else y_pred
        return scores.reshape(-1), y.reshape(-1).to(scores.dtype)
    scores = torch.softmax(y_pred, -1) if mode.from_logits else y_pred
    target = y if mode.task == "categorical" else F.one_hot(y.long().reshape(-1), width)
    return scores.reshape(-1), target.reshape(-1).to(scores.dtype)


class Accuracy(StateMetric):
    """Exact accuracy: correct predictions / samples over the epoch."""

    def __init__(self, name: str = "accuracy", task: str | None = None) -> None:
        super().__init__(name)
        self.task = task

    def build(self, mode: TargetMode, width: int, device: torch.device) -> None:
        super().build(TargetMode(self.task or mode.task, mode.from_logits), width, device)

    def reset(self) -> None:
        self.correct = torch.zeros((), dtype=torch.int64, device=self.device)
        self.count = 0

    def update(self, y_pred, y) -> None:
        pred, true = _labels(y_pred, y, self.mode)
        self.correct += (pred == true).sum()
        self.count += true.numel()

    def result(self):
        return self.correct.double() / max(self.count, 1)


class TopKAccuracy(Accuracy):
    def __init__(self, name: str = "top_k_accuracy", k: int = 5) -> None:
        super().__init__(name, task="sparse")
        self.k = k

    def update(self, y_pred, y) -> None:
        true = (y.argmax(-1) if self.mode.task == "categorical" else y).reshape(-1, 1).long()
        top = y_pred.reshape(true.shape[0], -1).topk(min(self.k, self.width), dim=-1).indices
        self.correct += (top == true).any(-1).sum()
        self.count += true.shape[0]


class ErrorMean(StateMetric):
    """mae / mse / rmse over every predicted value of the epoch."""

    def __init__(self, name: str, kind: str) -> None:
        super().__init__(name)
        self.kind = kind

    def reset(self) -> None:
        self.total = torch.zeros((), dtype=torch.float64, device=self.device)
        self.count = 0

    def update(self, y_pred, y) -> None:
        diff = y_pred - y.reshape(y_pred.shape).to(y_pred.dtype)
        err = diff.abs() if self.kind == "mae" else diff * diff
        self.total += err.sum()
        self.count += diff.numel()

    def result(self):
        mean = self.total / max(self.count, 1)
        return mean.sqrt() if self.kind == "rmse" else mean


class AUC(StateMetric):
    """ROC AUC from score histograms (1000 bins, ties in a bin count half)."""

    def reset(self) -> None:
        self.pos = torch.zeros(AUC_BINS, dtype=torch.float64, device=self.device)
        self.neg = torch.zeros(AUC_BINS, dtype=torch.float64, device=self.device)

    def update(self, y_pred, y) -> None:
        scores, target = _probabilities(y_pred, y, self.mode, self.width)
        bins = (scores.double() * AUC_BINS).long().clamp_(0, AUC_BINS - 1)
        target = target.double()
        self.pos.scatter_add_(0, bins, target)
        self.neg.scatter_add_(0, bins, 1.0 - target)

    def result(self):
        above = self.pos.flip(0).cumsum(0).flip(0) - self.pos  # positives in higher bins
        pairs = (self.neg * (above + 0.5 * self.pos)).sum()
        return pairs / (self.pos.sum() * self.neg.sum()).clamp_min(1.0)


class PrecisionRecall(StateMetric):
    """Binary precision / recall, or their macro average over classes for class outputs."""

    def __init__(self, name: str, kind: str) -> None:
        super().__init__(name)
        self.kind = kind

    def reset(self) -> None:
        size = () if self.mode.task == "binary" else (self.width,)
        self.tp, self.fp, self.fn = (torch.zeros(size, dtype=torch.float64, device=self.device)
                                     for _ in range(3))

    def update(self, y_pred, y) -> None:
        pred, true = _labels(y_pred, y, self.mode)
        if self.mode.task != "binary":
            pred, true = F.one_hot(pred, self.width).bool(), F.one_hot(true, self.width).bool()
        self.tp += (pred & true).sum(0)
        self.fp += (pred & ~true).sum(0)
        self.fn += (~pred & true).sum(0)

    def result(self):
        denom = self.tp + (self.fp if self.kind == "precision" else self.fn)
        ratio = self.tp / denom.clamp_min(1.0)
        if ratio.dim() == 0:
            return ratio
        seen = denom > 0  # macro average over the classes that occurred
        return (ratio * seen).sum() / seen.sum().clamp_min(1)


class BatchMean(StateMetric):
    """A user callable ``fn(y_pred, y) -> scalar``, averaged over samples."""

    def __init__(self, name: str, fn: Callable) -> None:
        super().__init__(name)
        self.fn = fn

    def reset(self) -> None:
        self.total = torch.zeros((), dtype=torch.float64, device=self.device)
        self.count = 0

    def update(self, y_pred, y) -> None:
        n = y_pred.shape[0]
        self.total += torch.as_tensor(self.fn(y_pred, y), device=self.device).detach() * n
        self.count += n

    def result(self):
        return self.total / max(self.count, 1)


class NativeMetric(StateMetric):
    """A torchmetrics.Metric, used as it is (imported by the user, never by fitkit)."""

    def __init__(self, metric: Any) -> None:
        super().__init__(getattr(metric, "name", None) or type(metric).__name__.lower())
        self.metric = metric

    def build(self, mode, width, device) -> None:
        self.metric.to(device)
        super().build(mode, width, device)

    def reset(self) -> None:
        self.metric.reset()

    def update(self, y_pred, y) -> None:
        self.metric.update(y_pred, y)

    def result(self):
        return torch.as_tensor(self.metric.compute(), dtype=torch.float64)


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
            value = torch.as_tensor(value).detach()
            if key in self.sums:
                self.sums[key].add_(value, alpha=n)  # float64 sum, float32 value: no cast op
            else:
                self.sums[key] = value.double() * n
        self.count += n

    def results(self) -> dict[str, torch.Tensor]:
        return {k: v / max(self.count, 1) for k, v in self.sums.items()}
