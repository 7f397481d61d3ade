"""Portable string specs: the names every backend accepts, and what each one means.

Owns the vocabulary (optimizer, loss and metric names, how a loss name says whether
predictions are logits or probabilities, the base of fitkit.metrics objects and how metrics
read targets). Adapters map these names to native objects.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .errors import FitkitTypeError, FitkitValueError

# Optimizers that torch.optim and keras.optimizers both ship, with Keras's defaults on both.
OPTIMIZERS = (
    "sgd",
    "adam",
    "adamw",
    "rmsprop",
    "adagrad",
    "nadam",
    "adamax",
    "adadelta",
    "adafactor",
)


@dataclass(frozen=True)
class LossSpec:
    """What a portable loss name means for targets and for the ``accuracy`` metric."""

    name: str
    task: str | None  # "regression" | "binary" | "sparse" | "categorical" | "class" | None
    from_logits: bool
    strict: bool = True  # refuse shape pairs the loss would broadcast (False: it squeezes itself)


LOSSES = {
    "mse": LossSpec("mse", "regression", False),
    "mae": LossSpec("mae", "regression", False),
    "huber": LossSpec("huber", "regression", False),
    "cross_entropy": LossSpec("cross_entropy", "sparse", True),
    "bce_with_logits": LossSpec("bce_with_logits", "binary", True),
    "bce": LossSpec("bce", "binary", False),
    "binary_crossentropy": LossSpec("bce", "binary", False),
    "categorical_crossentropy": LossSpec("categorical_crossentropy", "categorical", False),
    "sparse_categorical_crossentropy": LossSpec("sparse_categorical_crossentropy", "sparse", False),
    "kl_divergence": LossSpec("kl_divergence", "categorical", False),
    "poisson": LossSpec("poisson", "regression", False),
    "log_cosh": LossSpec("log_cosh", "regression", False),
    "hinge": LossSpec("hinge", "binary", True),  # scores, labels in {-1, 1} or {0, 1}
    "categorical_hinge": LossSpec("categorical_hinge", "categorical", True),
}
LOSS_ALIASES = {
    "mean_squared_error": "mse",
    "mean_absolute_error": "mae",
    "huber_loss": "huber",
    "kld": "kl_divergence",
    "kullback_leibler_divergence": "kl_divergence",
    "logcosh": "log_cosh",
}

METRICS = (
    "accuracy",
    "binary_accuracy",
    "sparse_categorical_accuracy",
    "categorical_accuracy",
    "mae",
    "mse",
    "rmse",
    "auc",
    "precision",
    "recall",
    "f1_score",
    "r2_score",
    "top_k_accuracy",
    "sparse_top_k_categorical_accuracy",
    "top_k_categorical_accuracy",
)
METRIC_ALIASES = {
    "acc": "accuracy",
    "mean_absolute_error": "mae",
    "mean_squared_error": "mse",
    "root_mean_squared_error": "rmse",
    "f1": "f1_score",
    "r2": "r2_score",
}


AUC_BINS = 1000  # score histogram bins of the "auc" metric

# Portable metric name -> (class in each adapter's mirrored metrics module, its arguments).
METRIC_CLASSES: dict[str, tuple[str, dict[str, Any]]] = {
    "accuracy": ("Accuracy", {"name": "accuracy"}),
    "binary_accuracy": ("Accuracy", {"name": "binary_accuracy", "task": "binary"}),
    "sparse_categorical_accuracy": (
        "Accuracy",
        {"name": "sparse_categorical_accuracy", "task": "sparse"},
    ),
    "categorical_accuracy": ("Accuracy", {"name": "categorical_accuracy", "task": "categorical"}),
    "top_k_accuracy": ("TopKAccuracy", {"name": "top_k_accuracy", "k": 5}),  # labels as given
    "sparse_top_k_categorical_accuracy": (
        "TopKAccuracy",
        {"name": "sparse_top_k_categorical_accuracy", "k": 5, "task": "sparse"},
    ),
    "top_k_categorical_accuracy": (
        "TopKAccuracy",
        {"name": "top_k_categorical_accuracy", "k": 5, "task": "categorical"},
    ),
    "mae": ("ErrorMean", {"name": "mae", "kind": "mae"}),
    "mse": ("ErrorMean", {"name": "mse", "kind": "mse"}),
    "rmse": ("ErrorMean", {"name": "rmse", "kind": "rmse"}),
    "auc": ("AUC", {"name": "auc"}),
    "precision": ("PrecisionRecall", {"name": "precision", "kind": "precision"}),
    "recall": ("PrecisionRecall", {"name": "recall", "kind": "recall"}),
    "f1_score": ("PrecisionRecall", {"name": "f1_score", "kind": "f1"}),
    "r2_score": ("R2Score", {"name": "r2_score"}),
}


class MetricSpec:
    """A portable metric with arguments (``fitkit.metrics.TopKAccuracy(k=3)``…).

    Subclasses live in fitkit/metrics.py; each names the class of the adapters' mirrored
    metrics modules it builds (``backend_class``) and the keyword arguments it passes.
    """

    backend_class = ""

    def __init__(self, name: str | None, **kwargs: Any) -> None:
        if name is not None and (not isinstance(name, str) or not name):
            raise FitkitTypeError(f"A metric's name must be a non-empty string; got {name!r}.")
        self.name = name or self.default_name(**kwargs)
        self.kwargs = kwargs

    def default_name(self, **kwargs: Any) -> str:
        raise NotImplementedError

    def build(self, module: Any) -> Any:
        """The metric object of an adapter's metrics module."""
        return getattr(module, self.backend_class)(name=self.name, **self.kwargs)

    def __repr__(self) -> str:
        args = [f"{k}={v!r}" for k, v in self.kwargs.items() if v is not None]
        return f"{type(self).__name__}({', '.join([*args, f'name={self.name!r}'])})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.name == self.name and other.kwargs == self.kwargs

    def __hash__(self) -> int:
        return hash((type(self), self.name, tuple(sorted(self.kwargs.items()))))


_LABEL_FORMS = {"sparse": "integer class labels", "categorical": "one-hot rows"}


def metric_task(
    metric: str, task: str | None, target_task: str, threshold: float | None = None
) -> str:
    """How a classification metric reads predictions: its own task, else the targets'.

    Refuses a metric made for the other label form (one-hot vs integer labels) and a
    threshold on class outputs (they are read by argmax), instead of a wrong number.
    """
    if task in _LABEL_FORMS and target_task in _LABEL_FORMS and task != target_task:
        raise FitkitValueError(
            f"Metric {metric!r} reads {_LABEL_FORMS[task]}, but these targets are "
            f"{_LABEL_FORMS[target_task]}. Use the metric's other form (e.g. "
            f"'sparse_categorical_accuracy' for integer labels), or 'accuracy', which follows "
            f"the targets."
        )
    task = task or target_task
    if threshold is not None and task != "binary":
        raise FitkitValueError(
            f"Metric {metric!r}: threshold={threshold} applies to binary outputs; this output "
            f"has several classes and is read by argmax. Drop the threshold."
        )
    return task


def binary_threshold(from_logits: bool, threshold: float | None) -> float:
    """The cut a binary prediction is compared with (``prediction > cut``).

    ``threshold`` is a probability; None means 0.5. For logit outputs the same probability
    becomes its logit (0.5 -> 0.0), so a threshold means the same for both kinds of output.
    """
    if threshold is None:
        return 0.0 if from_logits else 0.5
    return math.log(threshold / (1.0 - threshold)) if from_logits else float(threshold)


def _unknown(kind: str, value: str, valid: Iterable[str]) -> FitkitValueError:
    names = ", ".join(repr(v) for v in valid)
    return FitkitValueError(
        f"Unknown {kind} {value!r}. Valid {kind} names are: {names}; "
        f"or pass a native {kind} object or a callable."
    )


def optimizer_name(name: str) -> str:
    """Normalise an optimizer string or raise a FitkitError listing the valid names."""
    key = name.lower()
    if key not in OPTIMIZERS:
        raise _unknown("optimizer", name, OPTIMIZERS)
    return key


def loss_spec(name: str) -> LossSpec:
    """Look up a portable loss name (``"mse"``, ``"cross_entropy"``…)."""
    key = LOSS_ALIASES.get(name.lower(), name.lower())
    if key not in LOSSES:
        raise _unknown("loss", name, [*LOSSES, *LOSS_ALIASES])
    return LOSSES[key]


def metric_name(name: str) -> str:
    """Normalise a metric string or raise a FitkitError listing the valid names."""
    key = METRIC_ALIASES.get(name.lower(), name.lower())
    if key not in METRICS:
        raise _unknown("metric", name, [*METRICS, *METRIC_ALIASES])
    return key


class Entry:
    """One metric of compile's ``metrics`` / ``weighted_metrics`` where both are given:
    whether it reads sample and class weights (only ``weighted_metrics`` do, as in Keras),
    and the log name a ``{name: metric}`` dict gave it."""

    def __init__(self, item: Any, *, weighted: bool, name: str | None = None) -> None:
        self.item, self.weighted, self.name = item, weighted, name

    def __repr__(self) -> str:
        return f"Entry({self.item!r}, weighted={self.weighted}, name={self.name!r})"


def build_metrics(metric_specs: Any, module: Any) -> list:
    """compile's ``metrics`` as metric objects of an adapter's metrics module.

    ``module`` is ``fitkit.torch.metrics`` or ``fitkit.tf.metrics``: mirrored class names,
    plus ``is_native(obj)`` and ``NATIVE_HINT`` for native metric objects.
    """
    if isinstance(metric_specs, dict):  # {name: metric}: each logged under its key
        built = []
        for name, item in metric_specs.items():
            built.append(_build_metric(item, module))
            built[-1].name = name
    else:
        built = [_build_metric(item, module) for item in metric_specs]
    plain = {m.name for m in built if not m.weighted}
    for metric in built:  # Keras's rule: a weighted twin of a plain metric is weighted_<name>
        if metric.weighted and metric.name in plain:
            metric.name = f"weighted_{metric.name}"
    _check_unique([m.name for m in built])
    return built


def _build_metric(item: Any, module: Any) -> Any:
    if isinstance(item, Entry):
        metric = _build_metric(item.item, module)
        metric.weighted = item.weighted
        if item.name is not None:
            metric.name = item.name
        return metric
    metric = _build_unweighted(item, module)
    metric.weighted = False
    return metric


def _build_unweighted(item: Any, module: Any) -> Any:
    from .identifiers import KerasIdentifier  # it builds on this module's names

    if isinstance(item, KerasIdentifier):  # a Keras class name or serialized dict
        return _build_unweighted(module.from_keras(item), module)
    if isinstance(item, str):
        cls, kwargs = METRIC_CLASSES[metric_name(item)]
        return getattr(module, cls)(**kwargs)
    if isinstance(item, MetricSpec):
        return item.build(module)
    if module.is_native(item):
        return module.NativeMetric(item)
    if callable(item):
        return module.BatchMean(getattr(item, "__name__", "metric"), item)
    raise FitkitTypeError(
        f"Unsupported metric {item!r}: use a name ({', '.join(METRICS)}), a "
        f"fitkit.metrics object (fitkit.metrics.TopKAccuracy(k=3)…), "
        f"{module.NATIVE_HINT}."
    )


def _check_unique(names: list) -> None:
    """Two metrics of one output must not share a name: one would hide the other's value."""
    seen = set()
    for name in names:
        if name in seen:
            raise FitkitValueError(
                f"Two metrics are named {name!r} (one would overwrite the other in the logs). "
                f"Give one a name, e.g. fitkit.metrics.Accuracy(threshold=0.3, name='acc_30')."
            )
        seen.add(name)
