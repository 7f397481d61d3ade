"""Keras identifiers in compile: class names ("SparseCategoricalCrossentropy") and serialized
dicts ({"class_name": "Adam", "config": {...}}), as ``keras.optimizers.get`` & co. take them.

Owns recognising them (``parse_compile``) and their portable meaning (``torch_optimizer``,
``portable_loss``, ``portable_metric``). TensorFlow hands them to Keras's own ``get``
(fitkit/tf/optimizers.py, losses.py, metrics.py); torch builds the portable equivalent, and
refuses a setting that has none rather than drop it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .errors import FitkitValueError
from .specs import METRIC_CLASSES, MetricSpec

_KEYS = {"module", "class_name", "config", "registered_name"}

_OPTIMIZERS = {
    "SGD": "sgd",
    "Adam": "adam",
    "AdamW": "adamw",
    "RMSprop": "rmsprop",
    "Adagrad": "adagrad",
    "Nadam": "nadam",
    "Adamax": "adamax",
    "Adadelta": "adadelta",
    "Adafactor": "adafactor",
}
# Keras loss class -> portable name for from_logits False / True (None: no portable twin)
_LOSSES = {
    "MeanSquaredError": ("mse", None),
    "MeanAbsoluteError": ("mae", None),
    "Huber": ("huber", None),
    "LogCosh": ("log_cosh", None),
    "Poisson": ("poisson", None),
    "KLDivergence": ("kl_divergence", None),
    "Hinge": ("hinge", None),
    "CategoricalHinge": ("categorical_hinge", None),
    "BinaryCrossentropy": ("bce", "bce_with_logits"),
    "SparseCategoricalCrossentropy": ("sparse_categorical_crossentropy", "cross_entropy"),
    "CategoricalCrossentropy": ("categorical_crossentropy", None),
}
_METRICS = {
    "BinaryAccuracy": "binary_accuracy",
    "CategoricalAccuracy": "categorical_accuracy",
    "SparseCategoricalAccuracy": "sparse_categorical_accuracy",
    "MeanAbsoluteError": "mae",
    "MeanSquaredError": "mse",
    "RootMeanSquaredError": "rmse",
    "AUC": "auc",
    "Precision": "precision",
    "Recall": "recall",
    "R2Score": "r2_score",
    "TopKCategoricalAccuracy": "top_k_categorical_accuracy",
    "SparseTopKCategoricalAccuracy": "sparse_top_k_categorical_accuracy",
}
_CLASSES: dict[str, Mapping[str, object]] = {
    "optimizer": _OPTIMIZERS,
    "loss": _LOSSES,
    "metric": _METRICS,
}
_Portable = TypeVar("_Portable")

# Keras settings whose default values mean "off": any other value has to be honoured.
_OFF = {
    "name": None,
    "dtype": None,
    "reduction": "sum_over_batch_size",
    "clipnorm": None,
    "clipvalue": None,
    "global_clipnorm": None,
    "use_ema": False,
    "ema_momentum": 0.99,
    "ema_overwrite_frequency": None,
    "loss_scale_factor": None,
    "gradient_accumulation_steps": None,
    "weight_decay": None,
    "from_logits": False,
    "axis": -1,
    "ignore_class": None,
    "label_smoothing": 0.0,
    "delta": 1.0,
    "threshold": 0.5,
    "k": 5,
    "num_thresholds": 200,
    "curve": "ROC",
    "summation_method": "interpolation",
    "multi_label": False,
    "num_labels": None,
    "thresholds": None,
    "top_k": None,
    "class_id": None,
    "label_weights": None,
    "class_aggregation": "uniform_average",
    "num_regressors": 0,
}
# Keras optimizer setting -> torch keyword, for the optimizers that have it
_TORCH_KEYS = {
    "learning_rate": "lr",
    "epsilon": "eps",
    "momentum": "momentum",
    "nesterov": "nesterov",
    "amsgrad": "amsgrad",
    "centered": "centered",
    "initial_accumulator_value": "initial_accumulator_value",
}


@dataclass(frozen=True)
class KerasIdentifier:
    """A Keras class name or serialized dict that compile was given, for one ``kind``."""

    kind: str  # "optimizer" | "loss" | "metric"
    class_name: str
    config: dict = field(default_factory=dict, hash=False, compare=False)

    def as_keras(self) -> dict:
        """The identifier as Keras's ``get`` functions take it."""
        return {"class_name": self.class_name, "config": dict(self.config)}

    def settings(self) -> dict:
        """The config's values that differ from Keras's "off" defaults."""
        return {
            k: v
            for k, v in self.config.items()
            if not (k in _OFF and v == _OFF[k]) and not (k == "dtype" and _float32(v))
        }


def _float32(dtype: Any) -> bool:
    """Keras writes a metric's dtype as "float32" or as a serialized float32 policy."""
    return (
        dtype is None
        or dtype == "float32"
        or (isinstance(dtype, dict) and (dtype.get("config") or {}).get("name") == "float32")
    )


def parse(kind: str, value: Any) -> Any:
    """``value`` as a KerasIdentifier when it is one (of ``kind``); otherwise unchanged."""
    if isinstance(value, dict) and "class_name" in value and set(value) <= _KEYS:
        config = value.get("config") or {}
        if not isinstance(config, dict):
            raise FitkitValueError(
                f"The {kind} {value!r}: 'config' must be a dict of the class's arguments."
            )
        return KerasIdentifier(kind, str(value["class_name"]), dict(config))
    if isinstance(value, str) and value in _CLASSES[kind]:
        return KerasIdentifier(kind, value)
    return value


def parse_compile(optimizer: Any, loss: Any, metrics: Any) -> tuple[Any, Any, Any]:
    """compile's arguments with every Keras identifier in them recognised (also inside
    per-output dicts and lists)."""
    return parse("optimizer", optimizer), _each("loss", loss), _each("metric", metrics)


def _each(kind: str, value: Any) -> Any:
    parsed = parse(kind, value)
    if parsed is not value:
        return parsed
    if isinstance(value, dict):
        return {k: _each(kind, v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_each(kind, v) for v in value)
    return value


def _refuse(ident: KerasIdentifier, keys: list[str], hint: str) -> FitkitValueError:
    return FitkitValueError(
        f"The {ident.kind} {ident.class_name!r} sets {', '.join(map(repr, keys))}, which "
        f"fitkit has no portable equivalent for on torch: {hint}"
    )


def _known(ident: KerasIdentifier, table: Mapping[str, _Portable]) -> _Portable:
    """``table`` is the ``_CLASSES`` entry of ``ident.kind``."""
    if ident.class_name not in table:
        raise FitkitValueError(
            f"Unknown Keras {ident.kind} class {ident.class_name!r}. On torch fitkit maps "
            f"{', '.join(table)}; pass a native torch object for anything else."
        )
    return table[ident.class_name]


def torch_optimizer(ident: KerasIdentifier) -> tuple[str, dict]:
    """The portable optimizer name and torch keywords for a Keras optimizer identifier."""
    name = _known(ident, _OPTIMIZERS)
    settings = ident.settings()
    kwargs: dict[str, Any] = {}  # torch keywords, values as the Keras config gives them
    left: list[str] = []
    lr = settings.pop("learning_rate", None)
    if lr is not None:
        if not isinstance(lr, (int, float)):
            raise _refuse(
                ident,
                ["learning_rate"],
                "give a number here and the schedule as compile(lr_schedule=...).",
            )
        kwargs["lr"] = float(lr)
    if "beta_1" in settings or "beta_2" in settings:
        kwargs["betas"] = (settings.pop("beta_1", 0.9), settings.pop("beta_2", 0.999))
    if "rho" in settings:
        kwargs["alpha" if name == "rmsprop" else "rho"] = settings.pop("rho")
    if "weight_decay" in settings:
        if name not in ("adam", "adamw"):  # Keras decays decoupled; torch's others add L2
            left.append("weight_decay")
        else:
            name, kwargs["weight_decay"] = "adamw", settings.pop("weight_decay")
    for key, value in settings.items():
        if key in _TORCH_KEYS and name != "adafactor":
            kwargs[_TORCH_KEYS[key]] = value
        elif key not in ("name",):
            left.append(key)
    if left:
        raise _refuse(
            ident,
            left,
            "clipping is compile(clipnorm=..., clipvalue=..., "
            "global_clipnorm=...); for the rest pass a torch.optim optimizer.",
        )
    return name, kwargs


def portable_loss(ident: KerasIdentifier) -> str:
    """The portable loss name for a Keras loss identifier."""
    probs, logits = _known(ident, _LOSSES)
    settings = ident.settings()
    from_logits = bool(settings.pop("from_logits", False))
    settings.pop("name", None)
    name = logits if from_logits else probs
    if name is None:
        raise _refuse(
            ident,
            ["from_logits"],
            f"use {probs!r} on probabilities, or a torch "
            f"loss (e.g. torch.nn.CrossEntropyLoss takes logits and soft targets).",
        )
    if settings:
        raise _refuse(ident, list(settings), "pass a torch loss object configured so.")
    return name


def portable_metric(ident: KerasIdentifier) -> MetricSpec:
    """The portable metric for a Keras metric identifier, logged under Keras's name for it
    (its ``name`` setting, else the portable name)."""
    portable = _known(ident, _METRICS)
    settings = ident.settings()
    name = settings.pop("name", None)
    extra: dict[str, float] = {}
    if "k" in settings and "top_k" in portable:
        extra["k"] = int(settings.pop("k"))
    if "threshold" in settings and portable == "binary_accuracy":
        extra["threshold"] = float(settings.pop("threshold"))
    if settings:
        raise _refuse(
            ident,
            list(settings),
            "use a fitkit.metrics object or a torchmetrics metric configured so.",
        )
    return PortableMetric(portable, name, **extra)


class PortableMetric(MetricSpec):
    """A portable metric name with Keras's settings and log name."""

    def __init__(self, portable: str, name: str | None = None, **kwargs: Any) -> None:
        self.portable = portable
        super().__init__(name, **kwargs)

    def default_name(self, **kwargs: Any) -> str:
        return self.portable

    def build(self, module: Any) -> Any:
        cls, kwargs = METRIC_CLASSES[self.portable]
        return getattr(module, cls)(**{**kwargs, **self.kwargs, "name": self.name})
