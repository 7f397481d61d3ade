"""Portable string specs: the names every backend accepts, and what each one means.

Owns the vocabulary (optimizer, loss and metric names, and how a loss name says whether
predictions are logits or probabilities). Adapters map these names to native objects.
"""
from __future__ import annotations

from dataclasses import dataclass

from .errors import FitkitTypeError, FitkitValueError

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop", "adagrad", "nadam")


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
    "sparse_categorical_crossentropy": LossSpec(
        "sparse_categorical_crossentropy", "sparse", False
    ),
    "kl_divergence": LossSpec("kl_divergence", "categorical", False),
    "poisson": LossSpec("poisson", "regression", False),
    "log_cosh": LossSpec("log_cosh", "regression", False),
    "hinge": LossSpec("hinge", "binary", True),  # scores, labels in {-1, 1} or {0, 1}
    "categorical_hinge": LossSpec("categorical_hinge", "categorical", True),
}
LOSS_ALIASES = {"mean_squared_error": "mse", "mean_absolute_error": "mae", "huber_loss": "huber",
                "kld": "kl_divergence", "kullback_leibler_divergence": "kl_divergence",
                "logcosh": "log_cosh"}

METRICS = (
    "accuracy", "binary_accuracy", "sparse_categorical_accuracy", "categorical_accuracy",
    "mae", "mse", "rmse", "auc", "precision", "recall", "top_k_accuracy",
)
METRIC_ALIASES = {"acc": "accuracy", "mean_absolute_error": "mae", "mean_squared_error": "mse"}


# Portable metric name -> (class in each adapter's mirrored metrics module, its arguments).
METRIC_CLASSES = {
    "accuracy": ("Accuracy", {"name": "accuracy"}),
    "binary_accuracy": ("Accuracy", {"name": "binary_accuracy", "task": "binary"}),
    "sparse_categorical_accuracy": ("Accuracy", {"name": "sparse_categorical_accuracy",
                                                 "task": "sparse"}),
    "categorical_accuracy": ("Accuracy", {"name": "categorical_accuracy", "task": "categorical"}),
    "top_k_accuracy": ("TopKAccuracy", {"name": "top_k_accuracy", "k": 5}),
    "mae": ("ErrorMean", {"name": "mae", "kind": "mae"}),
    "mse": ("ErrorMean", {"name": "mse", "kind": "mse"}),
    "rmse": ("ErrorMean", {"name": "rmse", "kind": "rmse"}),
    "auc": ("AUC", {"name": "auc"}),
    "precision": ("PrecisionRecall", {"name": "precision", "kind": "precision"}),
    "recall": ("PrecisionRecall", {"name": "recall", "kind": "recall"}),
}


def _unknown(kind: str, value: str, valid) -> FitkitValueError:
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


def build_metrics(metric_specs, module) -> list:
    """compile's ``metrics`` as metric objects of an adapter's metrics module.

    ``module`` is ``fitkit.torch.metrics`` or ``fitkit.tf.metrics``: mirrored class names,
    plus ``is_native(obj)`` and ``NATIVE_HINT`` for native metric objects.
    """
    if isinstance(metric_specs, dict):
        return [module.BatchMean(name, fn) for name, fn in metric_specs.items()]
    built = []
    for item in metric_specs:
        if isinstance(item, str):
            cls, kwargs = METRIC_CLASSES[metric_name(item)]
            built.append(getattr(module, cls)(**kwargs))
        elif module.is_native(item):
            built.append(module.NativeMetric(item))
        elif callable(item):
            built.append(module.BatchMean(getattr(item, "__name__", "metric"), item))
        else:
            raise FitkitTypeError(f"Unsupported metric {item!r}: use a name "
                                  f"({', '.join(METRICS)}), {module.NATIVE_HINT}.")
    return built
