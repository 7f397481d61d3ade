"""Multi-output structure: which loss, weight and metrics go with which network output.

Owns matching compile's ``loss`` / ``loss_weights`` / ``metrics`` / ``output`` to what the
network returns (a tensor, a tuple or a dict), the log names, and picking each output's
prediction and target. Building native losses and metrics is the adapter's job; tensors
pass through here untouched (only dict keys and tuple positions are read).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import hf, specs, targets
from .errors import FitkitTypeError, FitkitValueError
from .identifiers import KerasIdentifier


@dataclass
class Head:
    """One network output that has a loss and/or metrics."""

    name: str  # as the user names it: a dict key, or "output_<i>" by position
    key: Any  # where its prediction lives: None (the whole output), key or index
    position: int  # its index among the outputs (for tuple targets)
    loss: Callable | None  # (y_true, y_pred, sample_weight) -> scalar, backend tensors
    spec: Any  # specs.LossSpec (None without a loss)
    portable: bool  # a string loss: aligns (N,) and (N, 1) as Keras does
    weight: float | None
    metrics: list = field(default_factory=list)
    prefix: str = ""  # log prefix: "" for a single output, else "<name>_"
    built: bool = False  # metric states built (mode and width known)
    tail: tuple | None = None  # output shape past the batch dim, once the network has run
    mode: Any = None  # targets.TargetMode its metric states were built for
    attr: bool = False  # key names an attribute (a dataclass output), not an item
    whole: bool | None = False  # the loss takes the whole output object (None: its first
    # call decides: a callable written on ``outputs.logits`` or on the logits tensor)


def is_structure(value: Any) -> bool:
    return isinstance(value, (dict, tuple, list)) or isinstance(value, Mapping)


def _items(pred: Any) -> list[tuple[Any, Any]]:
    """(key, value) pairs of a tuple / dict / output-object output, in output order; a
    model's own scalar ``loss`` is not an output."""
    if isinstance(pred, Mapping) or hf.is_output_object(pred):
        return [(k, v) for k, v in hf.members(pred) if not hf.is_model_loss(k, v)]
    return list(enumerate(pred))


class CompiledOutputs:
    """compile's output-related arguments, matched to the outputs on the first batch.

    ``build_loss(spec) -> (fn, LossSpec)`` and ``build_metrics(list) -> [metric]`` come from
    the adapter, ``is_tensor`` tells a tensor from a structure, ``default_names(n)`` names
    positional outputs (Keras's output names). The per-step methods (``loss``,
    ``update_metrics``) run inside compiled steps: they only index dicts and tuples.
    """

    def __init__(
        self,
        loss: Any,
        loss_weights: Any,
        metrics: Any,
        output: Any,
        *,
        build_loss: Callable,
        build_metrics: Callable,
        is_tensor: Callable,
        default_names: Callable[[int], list[str]],
    ) -> None:
        if output is not None and isinstance(loss, (Mapping, list, tuple)):
            raise FitkitValueError(
                f"compile(output={output!r}) trains on one output, so loss must be a single "
                f"loss, not a {type(loss).__name__}."
            )
        if loss_weights is not None and not isinstance(
            loss_weights, (Mapping, list, tuple, int, float)
        ):
            raise FitkitTypeError(
                "loss_weights must be a dict {output: weight}, a list in "
                f"output order, or a number; got {type(loss_weights).__name__}."
            )
        self.loss_arg, self.weights_arg, self.metric_specs, self.output = (
            loss,
            loss_weights,
            metrics,
            output,
        )
        self.build_loss, self.build_metrics, self.default_names = (
            build_loss,
            build_metrics,
            default_names,
        )
        self.is_tensor = is_tensor
        # a misspelt name (or a Keras setting with no twin) fails at compile, not at a batch
        _check_names(loss, metrics, build_loss, build_metrics)
        self.heads: list[Head] | None = None  # known once the network's outputs are seen
        self.parts: dict = {}  # each output's loss from the last loss() call
        self.metrics: list = []  # every metric object, in log order
        # The per-step hot path, set by ensure(): heads with a loss / with metrics, and the
        # plain case (one whole-tensor output, unweighted) that needs no picking at all.
        self._loss_heads: list[Head] = []
        self._metric_heads: list[Head] = []
        self._plain: Head | None = None

    def log_names(self) -> list[str]:
        """The keys of a logs dict: loss, each output's loss (several losses), metrics."""
        names = ["loss"]
        with_loss = [h for h in self.heads or [] if h.loss is not None]
        if len(with_loss) > 1:
            names += [f"{h.prefix}loss" for h in with_loss]
        return names + [m.name for m in self.metrics]

    def ensure(self, y_pred: Any) -> list[Head]:
        if self.heads is None:
            heads = self.resolve(y_pred)
            self.n_targets = sum(1 for h in heads if h.loss is not None or h.metrics)
            self._loss_heads = [h for h in heads if h.loss is not None]
            self._metric_heads = [h for h in heads if h.metrics]
            self.metrics = [m for h in heads for m in h.metrics]
            only = heads[0]
            self._plain = (
                only if len(heads) == 1 and only.key is None and only.weight is None else None
            )
            self.heads = heads
        return self.heads

    # ------------------------------------------------------------------ per step
    def loss(self, y: Any, y_pred: Any, sample_weight: Any) -> Any:
        """The weighted total; each output's unweighted loss is kept in ``parts`` for the logs."""
        if self.heads is None:
            self.ensure(y_pred)
        plain = self._plain
        if plain is not None and plain.loss is not None:
            return plain.loss(y, y_pred, sample_weight)
        heads = self._loss_heads
        if not heads:
            own = hf.own_loss(y_pred) if self.loss_arg is None else None
            if own is None:
                raise FitkitValueError(
                    "No loss was compiled: pass loss=... to compile, return an output with a "
                    "`loss` (as Hugging Face models do, given labels), or override "
                    "train_step/test_step to train without one."
                )
            return own  # the network's own loss (compile(loss=None))
        total, self.parts = None, {}
        for head in heads:
            loss_fn = head.loss
            assert loss_fn is not None  # _loss_heads holds the heads with a loss
            y_t = target(head, y, self.n_targets)
            if head.whole is None:
                value, head.whole = hf.first_loss(
                    loss_fn, y_t, y_pred, prediction(head, y_pred), sample_weight, head.key
                )
            else:
                value = loss_fn(
                    y_t, y_pred if head.whole else prediction(head, y_pred), sample_weight
                )
            if len(heads) > 1:
                self.parts[f"{head.prefix}loss"] = value
            weighted = value if head.weight is None else value * head.weight
            total = weighted if total is None else total + weighted
        return total

    def take_parts(self) -> dict:
        parts, self.parts = self.parts, {}
        return parts

    def update_metrics(
        self,
        y: Any,
        y_pred: Any,
        sample_weight: Any,
        update: Callable[[Head, Any, Any, Any], None],
        build: Callable[[Head, Any, int], None],
    ) -> None:
        """Call ``update(head, y_true, y_pred, sample_weight)`` for each output with metrics;
        ``build(head, mode, width)`` first where a custom step's first batch finds no states."""
        if self.heads is None:
            self.ensure(y_pred)
        plain = self._plain
        if plain is not None and plain.built:  # the usual case, once per step
            update(plain, y, y_pred, sample_weight)
            return
        if plain is not None:
            pairs = [(plain, y, y_pred)]
        else:
            pairs = [
                (h, target(h, y, self.n_targets), prediction(h, y_pred)) for h in self._metric_heads
            ]
        for head, y_t, y_p in pairs:
            if not head.built:  # decided from static shapes alone: no checks, no host sync
                build(
                    head,
                    *targets.mode_from_shapes(
                        head.spec, tuple(y_p.shape), tuple(y_t.shape), head.portable
                    ),
                )
            update(head, y_t, y_p, sample_weight)

    # ------------------------------------------------------------------ resolution
    def resolve(self, pred: Any) -> list[Head]:
        """Heads for predictions ``pred`` (one batch's outputs, any structure)."""
        is_tensor = self.is_tensor
        if self.output is not None:
            head = self._single(self._pick_named(pred, is_tensor))
            head.attr = not isinstance(pred, Mapping) and hf.is_output_object(pred)
            return [head]
        if is_tensor(pred):
            return [self._single(None)]
        items = _items(pred)
        if hf.is_output_object(pred):  # caches, hidden-state tuples: never a loss's output
            items = [(k, v) for k, v in items if is_tensor(v)]
            names = [k for k, _ in items]
            if not is_structure(self.loss_arg) and ("logits" in names or len(names) == 1):
                return [self._object_head(pred, "logits" if "logits" in names else names[0])]
        if len(items) == 1 and not is_structure(self.loss_arg):  # e.g. HuggingFace {"logits": …}
            return [self._single(items[0][0])]
        by_name = isinstance(pred, Mapping) or hf.is_output_object(pred)
        names = [str(k) for k, _ in items] if by_name else self.default_names(len(items))
        losses = self._per_output(self.loss_arg, names, "loss")
        weights = self._per_output(self.weights_arg, names, "loss_weights")
        metrics = self._metrics_per_output(names)
        heads = []
        for i, ((key, value), name) in enumerate(zip(items, names, strict=True)):
            loss, weight = losses[i], weights[i]
            if (loss is not None or metrics[i]) and not is_tensor(value):
                raise FitkitValueError(
                    f"Output {name!r} of the network is a {type(value).__name__}, not a tensor; "
                    f"give it no loss (loss={{...}} without {name!r}) or pick the output to "
                    f"train with compile(output=...)."
                )
            heads.append(self._head(name, key, i, loss, weight, metrics[i], f"{name}_"))
            heads[-1].attr = by_name and not isinstance(pred, Mapping)  # a dataclass's field
        if all(h.loss is None for h in heads) and self.loss_arg is not None:
            raise FitkitValueError(f"loss={self.loss_arg!r} matches none of the outputs {names}.")
        return heads

    def _object_head(self, pred: Any, key: str) -> Head:
        """The head of a model-output object: its ``logits`` (or its one tensor). A callable
        loss that is not a known torch / Keras one may take the whole object instead."""
        head = self._single(key)
        head.attr = not isinstance(pred, Mapping)
        loss = _one_loss(self.loss_arg)
        if (
            head.loss is not None
            and callable(loss)
            and not isinstance(loss, (str, KerasIdentifier))
            and head.spec.task is None
        ):
            head.whole = None
        return head

    def _pick_named(self, pred: Any, is_tensor: Callable[[Any], bool]) -> Any:
        key = self.output
        try:
            value = hf.member(pred, key)
        except (KeyError, IndexError, TypeError, AttributeError):
            have = (
                [k for k, _ in _items(pred)]
                if isinstance(pred, Mapping) or hf.is_output_object(pred)
                else (f"positions 0..{len(pred) - 1}" if is_structure(pred) else "one tensor")
            )
            raise FitkitValueError(
                f"compile(output={key!r}): the network's outputs have no "
                f"{key!r}; it returns {have}."
            ) from None
        if not is_tensor(value):
            raise FitkitValueError(
                f"compile(output={key!r}) names a {type(value).__name__}, not a tensor."
            )
        return key

    def _single(self, key: Any) -> Head:
        loss = _one_loss(self.loss_arg)
        weight = self.weights_arg
        if isinstance(weight, Mapping):
            weight = next(iter(weight.values()), None)
        elif isinstance(weight, (list, tuple)):
            weight = weight[0] if weight else None
        metrics = self.metric_specs
        if isinstance(metrics, Mapping) and list(metrics) == [key]:  # {"logits": [...]}
            metrics = metrics[key]
        elif isinstance(metrics, Mapping) and not _one_metric_each(metrics):
            raise FitkitValueError(
                f"metrics is a dict by output name {list(metrics)}, but the network has one "
                f"output; pass a list of metrics, or a dict {{name: metric}} with one metric "
                f"(a name, an object or a function) per key."
            )
        return self._head("" if key is None else str(key), key, 0, loss, weight, metrics, "")

    def _head(
        self,
        name: str,
        key: Any,
        position: int,
        loss: Any,
        weight: float | None,
        metrics: Any,
        prefix: str,
    ) -> Head:
        fn, spec = self.build_loss(loss) if loss is not None else (None, None)
        built = self.build_metrics(_as_list(metrics)) if metrics else []
        for metric in built:
            metric.name = f"{prefix}{metric.name}"
        return Head(
            name,
            key,
            position,
            fn,
            spec,
            isinstance(loss, str),
            None if weight is None else float(weight),
            built,
            prefix,
        )

    def _per_output(self, value: Any, names: list[str], what: str) -> list:
        if isinstance(value, Mapping):
            unknown = [k for k in value if k not in names]
            if unknown:
                raise FitkitValueError(
                    f"{what} names {unknown}, which are not outputs of the "
                    f"network; its outputs are {names}."
                )
            return [value.get(n) for n in names]
        if isinstance(value, (list, tuple)):
            if len(value) != len(names):
                raise FitkitValueError(
                    f"{what} has {len(value)} entries but the network has "
                    f"{len(names)} outputs {names}; give one per output "
                    f"(None for none) or a dict by output name."
                )
            return list(value)
        return [value] * len(names)

    def _metrics_per_output(self, names: list[str]) -> list:
        metrics = self.metric_specs
        if not metrics:
            return [[] for _ in names]
        if isinstance(metrics, Mapping) and (
            set(metrics) <= set(names) or not _named_functions(metrics)
        ):
            return self._per_output({k: _as_list(v) for k, v in metrics.items()}, names, "metrics")
        if (
            isinstance(metrics, (list, tuple))
            and metrics
            and all(isinstance(m, (list, tuple)) for m in metrics)
        ):
            return self._per_output(list(metrics), names, "metrics")
        return [metrics] * len(names)  # one list (or {name: fn}) for every output


def _one_loss(loss: Any) -> Any:
    """compile's loss for a one-output network: a list or dict of one is that one."""
    if isinstance(loss, (list, tuple)) and len(loss) == 1:
        loss = loss[0]
    if isinstance(loss, Mapping):
        if len(loss) != 1:
            raise FitkitValueError(
                f"The network has one output but loss is a dict with keys {list(loss)}; "
                f"pass one loss."
            )
        loss = next(iter(loss.values()))
    return loss


def _named_functions(metrics: Mapping) -> bool:
    """True for ``{name: fn}`` custom metrics (rather than metrics by output name)."""
    return all(
        callable(v) and not hasattr(v, "update") and not hasattr(v, "update_state")
        for v in metrics.values()
    )  # metric objects are callable too: not functions


def _one_metric_each(metrics: Mapping) -> bool:
    """For a one-output network: ``{name: metric}`` (each key names one metric) rather than
    lists of metrics by output name."""
    return all(
        v is not None and not isinstance(v, (list, tuple, Mapping)) for v in metrics.values()
    )


def _check_names(loss: Any, metrics: Any, build_loss: Callable, build_metrics: Callable) -> None:
    losses = (
        loss.values()
        if isinstance(loss, Mapping)
        else loss
        if isinstance(loss, (list, tuple))
        else [loss]
    )
    for item in losses:
        if isinstance(item, str):
            specs.loss_spec(item)
        elif isinstance(item, KerasIdentifier):  # built once now: a refusal comes at compile
            build_loss(item)
    groups = metrics.values() if isinstance(metrics, Mapping) else [metrics]
    for group in groups:
        for item in group if isinstance(group, (list, tuple)) else [group]:
            for name in item if isinstance(item, (list, tuple)) else [item]:
                name = name.item if isinstance(name, specs.Entry) else name
                if isinstance(name, str):
                    specs.metric_name(name)
                elif isinstance(name, KerasIdentifier):
                    build_metrics([name])


def with_weighted(metrics: Any, weighted: Any) -> Any:
    """compile's ``metrics`` and ``weighted_metrics`` as one structure of ``specs.Entry``s:
    one list for one output (``{name: metric}`` dicts become named entries), or dicts by
    output name merged key by key."""
    if not weighted:
        return metrics
    by_output = [isinstance(m, Mapping) and not _one_metric_each(m) for m in (metrics, weighted)]
    if any(by_output):
        if not (by_output[1] and (by_output[0] or not metrics)):
            raise FitkitValueError(
                "compile(metrics=..., weighted_metrics=...) must have the same structure: "
                "lists (or {name: metric} dicts) for one output, or two dicts by output name."
            )
        metrics = metrics or {}
        return {
            k: [*_entries(metrics.get(k), False), *_entries(weighted.get(k), True)]
            for k in [*metrics, *[k for k in weighted if k not in metrics]]
        }
    return [*_entries(metrics, False), *_entries(weighted, True)]


def _entries(metrics: Any, weighted: bool) -> list:
    if not metrics:
        return []
    if isinstance(metrics, Mapping):
        return [specs.Entry(m, weighted=weighted, name=k) for k, m in metrics.items()]
    return [specs.Entry(m, weighted=weighted) for m in _as_list(metrics)]


def _as_list(metrics: Any) -> Any:
    """One metric spec as a list; lists and {name: fn} dicts stay as they are."""
    return metrics if isinstance(metrics, (list, tuple, Mapping)) else [metrics]


# ---------------------------------------------------------------------- per step
def call_loss(compute_loss: Callable, x: Any, y: Any, y_pred: Any, sample_weight: Any) -> Any:
    """Call a (maybe overridden) ``compute_loss``; an override without ``sample_weight``
    keeps working as long as no weights are given."""
    if sample_weight is None:
        return compute_loss(x, y, y_pred)
    return compute_loss(x, y, y_pred, sample_weight)


def prediction(head: Head, y_pred: Any) -> Any:
    if head.key is None:
        return y_pred
    return getattr(y_pred, head.key) if head.attr else y_pred[head.key]


def target(head: Head, y: Any, n_heads: int) -> Any:
    """The head's target: y itself for one output, else y[name] (dict) or y[position].

    ``n_heads``: how many outputs take a target (have a loss or metrics).
    """
    if not is_structure(y):
        if n_heads > 1:
            raise FitkitValueError(
                f"The network has several outputs with a loss; y must be a dict by output name "
                f"or a tuple in output order, not one {type(y).__name__}."
            )
        return y
    if isinstance(y, Mapping):
        if head.name in y:
            return y[head.name]
        if n_heads == 1 and len(y) == 1:
            return next(iter(y.values()))
        raise FitkitValueError(f"y has no target for output {head.name!r}; its keys are {list(y)}.")
    if n_heads == 1 and len(y) == 1:
        return y[0]
    if head.position >= len(y):
        raise FitkitValueError(
            f"y has {len(y)} targets but output {head.name!r} is number "
            f"{head.position + 1}; give one target per output."
        )
    return y[head.position]


def shared_loss(logs: Any) -> Any:
    """The "loss" a class style's ``shared_step`` returned, or a clear error."""
    if not isinstance(logs, dict) or "loss" not in logs:
        got = list(logs) if isinstance(logs, dict) else type(logs).__name__
        raise FitkitValueError(
            f"shared_step must return a dict with a 'loss' entry (the "
            f"value to minimise) and any other logs; got {got}."
        )
    return logs["loss"]
