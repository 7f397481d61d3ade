"""Target checks: do the targets fit the predictions and the loss, and how metrics read them.

Owns the shape, rank and label-range rules decided once before training, from static shapes
and one read of the labels. The vocabulary of names lives in specs.py; tensors in the adapters.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .errors import FitkitValueError
from .specs import LossSpec


@dataclass(frozen=True)
class TargetMode:
    """How a classification metric reads predictions: decided once, from the loss and shapes.

    ``task`` is "binary" (threshold), "sparse" (argmax vs integer label), "categorical"
    (argmax vs argmax of one-hot) or "regression"; ``from_logits`` picks the threshold
    (0 for logits, 0.5 for probabilities).
    """

    task: str
    from_logits: bool


def infer_target_mode(
    task: str | None, from_logits: bool, pred_shape: tuple, target_shape: tuple
) -> TargetMode:
    """Decide how ``accuracy`` and friends read predictions, from static shapes only.

    ``task`` comes from the loss ("binary", "sparse", "categorical", "regression" or None
    for an unknown loss); class tasks pick sparse or one-hot from the target's rank.
    """
    width = pred_shape[-1] if len(pred_shape) > 1 else 1
    if task == "binary":
        return TargetMode("binary", from_logits)
    if width > 1 and len(target_shape) == len(pred_shape) - 1:
        return TargetMode("sparse", from_logits)
    if width > 1 and tuple(target_shape) == tuple(pred_shape):
        return TargetMode("categorical", from_logits)
    return TargetMode("binary", from_logits)


_SAME_SHAPE_TASKS = ("regression", "binary", "categorical")
# Binary cross-entropies, whose targets must lie in [0, 1] (portable and native names).
_ZERO_ONE_LOSSES = ("bce", "bce_with_logits", "BCELoss", "BCEWithLogitsLoss", "binary_crossentropy")


def resolve_task(task: str | None, pred_shape: tuple, target_shape: tuple) -> str | None:
    """A loss that takes either label form ("class", torch's CrossEntropyLoss) picks by rank."""
    if task == "class":
        return "sparse" if len(target_shape) == len(pred_shape) - 1 else "categorical"
    return task


def aligned_shape(task: str | None, pred_shape: tuple, target_shape: tuple) -> tuple:
    """The target shape after Keras's rank alignment: (N,) <-> (N, 1), (N, 1) labels -> (N,)."""
    p, t = tuple(pred_shape), tuple(target_shape)
    if task == "sparse":
        return t[:-1] if len(t) == len(p) and t[-1:] == (1,) and p[-1:] != (1,) else t
    if len(t) == len(p) - 1 and p[-1:] == (1,):
        return (*t, 1)
    if len(t) == len(p) + 1 and t[-1:] == (1,):
        return t[:-1]
    return t


def check_loss_shapes(
    task: str | None, pred_shape: tuple, target_shape: tuple, loss_label: str
) -> None:
    """Refuse prediction/target shapes a loss would silently broadcast or misread.

    ``task`` is the loss's task when fitkit knows it (portable names and common native
    losses); None skips the check (custom callables handle their own shapes).
    """
    pred_shape, target_shape = tuple(pred_shape), tuple(target_shape)
    task = resolve_task(task, pred_shape, target_shape)
    if task in _SAME_SHAPE_TASKS and pred_shape != target_shape:
        fix = ""
        if pred_shape[:1] == target_shape[:1] and pred_shape[1:] == (1,) and not target_shape[1:]:
            fix = " Reshape y to (N, 1) (y.reshape(-1, 1)) or squeeze the network's output."
        elif pred_shape[:1] == target_shape[:1] and target_shape[1:] == (1,) and not pred_shape[1:]:
            fix = " Flatten y to (N,) (y.ravel()) or give the network an (N, 1) output."
        raise FitkitValueError(
            f"Loss {loss_label!r}: predictions have shape {pred_shape} but targets have shape "
            f"{target_shape}; the loss would broadcast them into a wrong value.{fix}"
        )
    if task == "sparse" and target_shape == pred_shape and len(pred_shape) > 1:
        raise FitkitValueError(
            f"Loss {loss_label!r} takes integer class labels, but y has the network's output "
            f"shape {target_shape}: it looks one-hot. Pass y.argmax(-1) as labels; or keep "
            f"one-hot targets with a loss that takes them: for a logits network "
            f"torch.nn.CrossEntropyLoss() (it accepts class probabilities) or "
            f"keras.losses.CategoricalCrossentropy(from_logits=True), for probability outputs "
            f"'categorical_crossentropy'."
        )
    if task == "sparse":
        if len(target_shape) != len(pred_shape) - 1 or target_shape != pred_shape[:-1]:
            raise FitkitValueError(
                f"Loss {loss_label!r} takes integer class labels of shape {pred_shape[:-1]} for "
                f"predictions of shape {pred_shape}; got targets of shape {target_shape}. "
                f"Pass labels as a 1-D integer array (y.ravel()), or use "
                f"'categorical_crossentropy' for one-hot targets."
            )


def check_label_range(low: float, high: float, width: int, loss_label: str) -> None:
    """Integer labels must index the network's output: 0 <= label < width."""
    bad = high if high >= width else low if low < 0 else None
    if bad is not None:
        raise FitkitValueError(
            f"Loss {loss_label!r}: class label {int(bad)} is outside the network's output "
            f"width {width} (labels must be 0..{width - 1}). Widen the last layer to the "
            f"number of classes or re-encode the labels."
        )


def check_targets(
    loss: LossSpec,
    pred_shape: tuple,
    target_shape: tuple,
    label_range: Callable[[], Sequence[float]],
    *,
    aligns: bool = False,
) -> TargetMode:
    """All target checks for one batch; returns how metrics should read predictions.

    ``label_range`` reads (min, max, a non-whole value or NaN) of the labels (a host sync),
    only when the loss takes class labels or 0/1 targets. ``aligns``: the loss aligns (N,)
    and (N, 1) as Keras does (portable names), so only a real mismatch is refused.
    """
    pred_shape, target_shape = tuple(pred_shape), tuple(target_shape)
    task = resolve_task(loss.task, pred_shape, target_shape)
    if aligns:
        target_shape = aligned_shape(task, pred_shape, target_shape)
    if loss.strict:
        check_loss_shapes(task, pred_shape, target_shape, loss.name)
    if task == "sparse" and len(target_shape) == len(pred_shape) - 1:
        low, high, fraction = label_range()
        if fraction == fraction:  # not NaN: a label that is not a whole number
            raise FitkitValueError(
                f"Loss {loss.name!r} takes whole-number class labels, but y holds {fraction:g}. "
                f"Round or re-encode the labels; for soft targets use one-hot probabilities "
                f"with 'categorical_crossentropy' (or a regression loss)."
            )
        check_label_range(low, high, pred_shape[-1], loss.name)
    if task == "binary" and loss.name in _ZERO_ONE_LOSSES:
        low, high, _ = label_range()
        if low < 0.0 or high > 1.0:
            bad = low if low < 0.0 else high
            raise FitkitValueError(
                f"Loss {loss.name!r} takes targets in [0, 1] (0/1 labels or probabilities); y "
                f"holds {bad:g}. Map the labels to 0/1 (e.g. (y > 0).astype('float32')), or use "
                f"'hinge' for -1/1 labels."
            )
    return infer_target_mode(task, loss.from_logits, pred_shape, target_shape)


_PROBABILITY_TASKS = ("binary", "categorical", "sparse")


def width_of(pred_shape: tuple) -> int:
    return pred_shape[-1] if len(pred_shape) > 1 else 1


def mode_from_shapes(
    loss: LossSpec | None, pred_shape: tuple, target_shape: tuple, aligns: bool
) -> tuple[TargetMode, int]:
    """How metrics read one output, from shapes alone (custom steps: no checks, no sync)."""
    task = resolve_task(loss.task if loss else None, tuple(pred_shape), tuple(target_shape))
    if aligns:
        target_shape = aligned_shape(task, tuple(pred_shape), tuple(target_shape))
    return (
        infer_target_mode(
            task, loss.from_logits if loss else False, tuple(pred_shape), tuple(target_shape)
        ),
        width_of(tuple(pred_shape)),
    )


def check_output(
    loss: LossSpec | None,
    aligns: bool,
    pred_shape: tuple,
    target_shape: tuple,
    label_range: Callable[[], Sequence[float]],
    value_range: Callable[[], Sequence[float]],
    probability_stats: Callable[[], Sequence[float]] | None = None,
) -> tuple[TargetMode, int]:
    """Every check of one output's first batch; returns how its metrics read predictions.

    ``label_range`` reads the labels' (min, max, a non-whole value or NaN), as check_targets;
    ``value_range`` reads the predictions' (min, max), for losses that take probabilities;
    ``probability_stats`` reads it with the (min, max) of each row's sum, for class losses
    that take logits (each a host sync, once).
    """
    if loss is None:
        return mode_from_shapes(None, pred_shape, target_shape, aligns)
    mode = check_targets(loss, pred_shape, target_shape, label_range, aligns=aligns)
    if aligns and not loss.from_logits and loss.task in _PROBABILITY_TASKS:
        low, high = value_range()
        if low < 0.0 or high > 1.0:
            fix = {"binary": "'bce_with_logits'", "sparse": "'cross_entropy'"}.get(
                loss.task,
                "keras.losses.CategoricalCrossentropy(from_logits=True) or "
                "torch.nn.CrossEntropyLoss()",
            )
            raise FitkitValueError(
                f"Loss {loss.name!r} takes probabilities in [0, 1], but the network's outputs "
                f"range over [{low:.3g}, {high:.3g}]: they look like logits. Use {fix}, which "
                f"takes logits, or end the network with a sigmoid/softmax."
            )
    if (
        probability_stats is not None
        and loss.from_logits
        and loss.task in ("sparse", "class", "categorical")
        and len(pred_shape) > 1
        and (pred_shape[-1] or 0) > 1
    ):
        _warn_if_probabilities(loss, *probability_stats())
    return mode, width_of(tuple(pred_shape))


def _warn_if_probabilities(
    loss: LossSpec, low: float, high: float, least: float, most: float
) -> None:
    """Rows in [0, 1] that sum to 1 given to a loss that takes logits: a softmax was applied
    twice (the loss applies its own), which trains, but slowly and to other numbers."""
    if low >= 0.0 and high <= 1.0 and abs(least - 1.0) < 1e-3 and abs(most - 1.0) < 1e-3:
        warnings.warn(
            f"Loss {loss.name!r} takes logits, but the network's outputs are in [0, 1] and "
            f"each row sums to 1: they look like softmax probabilities, and the loss applies "
            f"a softmax of its own. Drop the network's last softmax, or use a loss that takes "
            f"probabilities ('sparse_categorical_crossentropy').",
            stacklevel=6,
        )
