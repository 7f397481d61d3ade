"""Hugging Face's conventions, read without importing transformers: label keys in dict
batches, model-output objects (``ModelOutput``, dataclasses) and the loss a model computes.

Owns which keys of a dict batch are the targets (``fitkit.Model(label_names=...)``) and which
of them the network is also given, an output object's members, the model's own ``loss`` and
what ``predict`` keeps of an output. Matching compile's losses and metrics to the members is
outputs.py's; iterating the batches sources.py's.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .errors import FitkitTypeError, FitkitValueError

DEFAULT_LABEL_NAMES = ("labels",)  # as the HF Trainer's default for its models


def check_label_names(label_names: Sequence[str] | str | None) -> tuple[str, ...]:
    """``label_names`` as a tuple of keys (None: ``("labels",)``; ``[]``: no key is a label)."""
    if label_names is None:
        return DEFAULT_LABEL_NAMES
    if isinstance(label_names, str):
        label_names = [label_names]
    if (
        not isinstance(label_names, (list, tuple))
        or not all(isinstance(n, str) for n in label_names)
        or len(set(label_names)) != len(label_names)
    ):
        raise FitkitTypeError(
            f"label_names must be a list of distinct key names (e.g. ['labels'], or "
            f"['start_positions', 'end_positions']); got {label_names!r}."
        )
    return tuple(label_names)


class LabelKeys:
    """How a dict batch becomes ``(x, y)``: the ``names`` are the targets (one tensor, or a
    tuple in ``names`` order); every other key is a keyword input, and so are the ``fed``
    names (with no compiled loss the model computes its loss from them, as HF's do)."""

    def __init__(self, names: tuple[str, ...], fed: tuple[str, ...] = ()) -> None:
        self.names, self.fed = names, fed
        self._drop = frozenset(names) - frozenset(fed)

    def split(self, x: Any) -> tuple[Any, Any]:
        """``(inputs, targets)`` of a batch's x; targets None when x holds no label key."""
        if not isinstance(x, Mapping):
            return x, None
        if type(x) is not dict:  # a tokenizer's BatchEncoding (a UserDict): keyword inputs
            x = dict(x)
        present = [n for n in self.names if n in x]
        if not present:
            return x, None
        if len(present) < len(self.names):
            missing = [n for n in self.names if n not in x]
            raise FitkitValueError(
                f"A batch holds the label keys {present} but not {missing} (label_names="
                f"{list(self.names)}); give every batch all of them, or set "
                f"fitkit.Model(net, label_names=[...]) to the keys the batches hold."
            )
        y = x[present[0]] if len(present) == 1 else tuple(x[n] for n in self.names)
        if self._drop:
            x = {k: v for k, v in x.items() if k not in self._drop}
        return x, y


def label_keys(adapter: Any) -> LabelKeys:
    """The split for a data argument, decided when its source is made: with a compiled loss
    the network is not given the labels (an HF model would compute a second loss, and
    change its config on the way); with ``compile(loss=None)`` it is, where its forward
    takes them, so that its output's ``loss`` trains it."""
    names = getattr(adapter, "label_names", DEFAULT_LABEL_NAMES)
    outputs = adapter.outputs
    own = outputs is not None and outputs.loss_arg is None
    fed = tuple(n for n in names if own and accepts(adapter.net, n))
    return LabelKeys(names, fed)


def accepts(net: Any, key: str) -> bool:
    """True when the network's forward (``call`` for Keras) takes a keyword ``key``."""
    fn = getattr(net, "forward", None) or getattr(net, "call", None)
    if fn is None:
        return False
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    param = params.get(key)
    if param is not None:
        return param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY)
    return any(p.kind is p.VAR_KEYWORD for p in params.values())


# ---------------------------------------------------------------------- output objects
def is_output_object(value: Any) -> bool:
    """A model-output object: transformers' ``ModelOutput`` (an OrderedDict), or any
    dataclass instance a network returns."""
    return any(
        c.__name__ == "ModelOutput" and c.__module__.startswith("transformers")
        for c in type(value).__mro__
    ) or (dataclasses.is_dataclass(value) and not isinstance(value, type))


def members(value: Any) -> list[tuple[Any, Any]]:
    """(name, value) of a mapping or an output object, None members left out."""
    if isinstance(value, Mapping):
        return [(k, v) for k, v in value.items() if v is not None]
    return [
        (f.name, getattr(value, f.name))
        for f in dataclasses.fields(value)
        if getattr(value, f.name) is not None
    ]


def member(value: Any, key: Any) -> Any:
    """``value[key]``, or the attribute of a dataclass output."""
    if isinstance(value, (Mapping, list, tuple)):
        return value[key]
    if is_output_object(value) and isinstance(key, str):
        return getattr(value, key)
    raise TypeError(f"{type(value).__name__} has no members")


def _scalar(value: Any) -> bool:
    shape = getattr(value, "shape", None)
    return shape is not None and len(shape) == 0


def is_model_loss(key: Any, value: Any) -> bool:
    """The ``loss`` member a model computed itself (a scalar): never an output to predict."""
    return key == "loss" and (value is None or _scalar(value))


def own_loss(y_pred: Any) -> Any:
    """The ``loss`` member of the network's output (per step: a dict look-up), or None."""
    if isinstance(y_pred, Mapping):
        return y_pred.get("loss")
    return getattr(y_pred, "loss", None) if is_output_object(y_pred) else None


def first_loss(
    loss: Callable, y: Any, y_pred: Any, tensor: Any, sample_weight: Any, key: Any
) -> tuple[Any, bool]:
    """(value, whole): a callable loss's first call on a model-output object decides what it
    takes from then on: the whole object (a loss written on ``outputs.logits``), else its
    ``key`` tensor. A loss written for tensors fails on the object (it has no tensor ops),
    one written for the object fails on a tensor (no ``.logits``): they cannot be confused."""
    try:
        return loss(y, y_pred, sample_weight), True
    except Exception as on_object:  # noqa: BLE001 - tried on the tensor next, both reported
        try:
            return loss(y, tensor, sample_weight), False
        except Exception as on_tensor:
            raise FitkitValueError(
                f"The loss fails on the network's {type(y_pred).__name__} output "
                f"({type(on_object).__name__}: {on_object}) and on its {key!r} tensor "
                f"({type(on_tensor).__name__}: {on_tensor}). Write it as loss(outputs, y) "
                f"reading outputs.{key}, or as loss(y_pred, y) on the tensor."
            ) from on_tensor


def check_own_loss(y_pred: Any, labels: LabelKeys, x: Any) -> None:
    """compile(loss=None): the network's output (for the inputs ``x``) must carry its own
    scalar ``loss``."""
    loss = own_loss(y_pred)
    if loss is not None and _scalar(loss):
        return
    what = type(y_pred).__name__
    if loss is not None:
        raise FitkitValueError(
            f"compile(loss=None) trains on the network's own loss, but the `loss` of its "
            f"{what} output has shape {tuple(loss.shape)}; it must be one number (reduce it "
            f"in the network), or pass compile(loss=...)."
        )
    hint, names = "", list(labels.names)
    if names and not labels.fed:
        hint = f" Its forward takes none of the label keys (label_names={names})."
    elif names and not (isinstance(x, Mapping) and any(n in x for n in names)):
        hint = f" The batches hold none of the label keys (label_names={names})."
    raise FitkitValueError(
        f"compile needs a loss, e.g. loss='mse' or loss='cross_entropy': with loss=None "
        f"fitkit trains on the `loss` the network's output carries (a Hugging Face model "
        f"computes one when given its labels), but this network returns a {what} with no "
        f"`loss`.{hint} Pass compile(loss=...), or override train_step to train without one."
    )


def predicted(y_pred: Any, ignore: Sequence[str] = ()) -> Any:
    """What ``predict`` keeps of one batch's output.

    A mapping or output object loses its model loss and other scalars (they have no row
    per sample); an output object also loses ``ignore`` (the model config's
    ``keys_to_ignore_at_inference``) and members that are not tensors (caches), and the one
    member left (the logits, usually) is returned alone, as HF's Trainer returns it.
    """
    is_object = is_output_object(y_pred)
    if not is_object and not isinstance(y_pred, Mapping):
        return y_pred
    items = members(y_pred)
    kept = [
        (k, v)
        for k, v in items
        if k != "loss" and not _scalar(v) and (not is_object or (k not in ignore and _tensors(v)))
    ]
    if not is_object and len(kept) == len(items) and len(items) == len(y_pred):
        return y_pred  # a plain dict of outputs: as it is
    if not kept:
        raise FitkitValueError(
            f"The network's {type(y_pred).__name__} output holds no predictions, only "
            f"{[k for k, _ in items]}; override predict_step to say what to return."
        )
    return kept[0][1] if is_object and len(kept) == 1 else dict(kept)


def _tensors(value: Any) -> bool:
    """A tensor, or a tuple of them (hidden states): something with rows to concatenate."""
    if isinstance(value, (tuple, list)):
        return bool(value) and all(_tensors(v) for v in value)
    return hasattr(value, "shape") and hasattr(value, "dtype")


def predicting(step: Callable[[Any], Any], net: Any) -> Callable[[Any], Any]:
    """``step`` returning what ``predicted`` keeps, per batch (a cache is let go at once)."""
    ignore = tuple(getattr(getattr(net, "config", None), "keys_to_ignore_at_inference", None) or ())

    def predict(batch: Any) -> Any:
        return predicted(step(batch), ignore)

    return predict
