"""A keras.Model's own steps under fitkit's fit: a network that overrides ``train_step``,
``test_step``, ``predict_step``, ``compute_loss`` or ``compute_metrics`` (the "customizing
what happens in fit" guides: GANs, VAEs, contrastive models) trains with its own code.

Owns ``OwnStepsAdapter``: fitkit's compile becomes the network's Keras compile (its
``self.optimizer``, ``self.compute_loss``, ``self.metrics``), the network's steps run in
fitkit's compiled loops, and the dict a step returns is logged as Keras logs it (the last
step's values, flattened; the metrics reset each epoch). Everything else is the TensorFlow
adapter's (adapter.py); what fitkit cannot do for such a step is refused at compile.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from ..controls import TrainingControls
from ..errors import FitkitValueError
from ..specs import MetricSpec
from .adapter import Adapter
from .losses import keras_loss
from .metrics import _state

_CUSTOMIZED = {
    "train": ("train_step", "test_step", "compute_loss", "compute_metrics"),
    "predict": ("predict_step",),
}


def own_steps(net: Any) -> frozenset:
    """The modes ("train", "test", "predict") whose step the network brings: a customized
    training or evaluation step runs both (Keras's evaluate shares the customization)."""
    if not isinstance(net, keras.Model):
        return frozenset()
    kind = type(net)
    overrides = {
        m
        for m, names in _CUSTOMIZED.items()
        if any(getattr(kind, n, None) is not getattr(keras.Model, n, None) for n in names)
    }
    return frozenset(
        ({"train", "test"} if "train" in overrides else set()) | (overrides & {"predict"})
    )


def keras_batch(batch: tuple) -> Any:
    """A fitkit batch as Keras's data adapters give it to a step: x alone, (x, y) or
    (x, y, sample_weight)."""
    x, y, w = (*batch, None, None)[:3]
    return x if y is None and w is None else (x, y) if w is None else (x, y, w)


def flat_logs(logs: Any) -> dict:
    """A step's returned dict flattened as Keras logs it (a nested dict's keys join the top)."""
    out: dict = {}
    for key, value in dict(logs).items():
        if isinstance(value, dict):
            out.update(flat_logs(value))
        else:
            out[key] = value
    return out


class LastLogs:
    """The values a network's own step returned last, in variables (Keras logs the last
    step's dict: its metrics are running values already). The LogTracker interface."""

    def __init__(self, net: Any) -> None:
        self.net = net
        self.sums: dict[str, tf.Variable] = {}
        self.returned: set[str] = set()
        self.count = _state()  # unused: kept for the training state's files

    def expect(self, keys: list[str]) -> None:
        pass

    def reset(self) -> None:
        """Keras's reset_metrics: every metric the network tracks (its compiled ones, its own
        trackers and its layers'), as Keras's fit does at each epoch and evaluation."""
        self.net.reset_metrics()

    def update(self, logs: dict, n: Any) -> None:
        for key, value in flat_logs(logs).items():
            if key not in self.sums:
                self.sums[key] = _state()
            self.returned.add(key)
            self.sums[key].assign(tf.cast(tf.reduce_mean(value), tf.float64))

    def results(self) -> dict[str, tf.Tensor]:
        return {k: v.read_value() for k, v in self.sums.items() if k in self.returned}


class OwnStepsAdapter(Adapter):
    """The TensorFlow adapter for a keras.Model with its own steps (``own_steps``)."""

    def __init__(self, net: Any, *, device: Any = None) -> None:
        super().__init__(net, device=device)
        self.own = own_steps(net)

    def runs_own_step(self, mode: str) -> bool:
        return mode in self.own

    def _build(
        self,
        optimizer: Any,
        loss: Any,
        metric_specs: Any,
        lr: float | None,
        loss_weights: Any,
        output: Any,
        controls: TrainingControls,
    ) -> None:
        check_controls(self.net, controls if "train" in self.own else None, self.replicas)
        own_compile = type(self.net).compile is not keras.Model.compile
        if "train" in self.own and own_compile:
            given = optimizer != "adam" or loss is not None or metric_specs or loss_weights
            if given or not self.net.compiled:
                raise FitkitValueError(
                    f"{type(self.net).__name__} has a compile method of its own: call it "
                    f"first (net.compile(...), with its optimizers and losses), then fitkit's "
                    f"model.compile() with no optimizer, loss or metrics "
                    f"({'those were passed' if given else 'the network is not compiled'})."
                )
            optimizer = self.net.optimizer
        own_metrics = [] if "train" in self.own else metric_specs
        super()._build(optimizer, loss, own_metrics, lr, loss_weights, output, controls)
        if "train" not in self.own:
            return
        if not own_compile:  # fitkit's compile is the network's compile
            self.net.compile(
                optimizer=self.optimizer,
                loss=keras_losses(loss),
                metrics=keras_metrics(metric_specs),
                loss_weights=loss_weights,
                run_eagerly=self.run_eagerly,
                jit_compile=False,
            )
        self.optimizer = self.net.optimizer  # Keras may have wrapped it (mixed_float16)
        self.build_scheduler(
            controls.lr_schedule, controls.lr_schedule_every, controls.lr_schedule_monitor
        )
        self._trackers = {"train": LastLogs(self.net), "test": LastLogs(self.net)}

    # ------------------------------------------------------------------ steps
    def train_step(self, batch: tuple, compute_loss: Any) -> dict:
        if "train" not in self.own:
            return super().train_step(batch, compute_loss)
        return self.net.train_step(keras_batch(batch))

    def test_step(self, batch: tuple, compute_loss: Any) -> dict:
        if "test" not in self.own:
            return super().test_step(batch, compute_loss)
        return self.net.test_step(keras_batch(batch))

    def predict_step(self, batch: tuple) -> Any:
        if "predict" not in self.own:
            return super().predict_step(batch)
        return self.net.predict_step(keras_batch(batch[:1]))

    def compute_loss(self, x: Any, y: Any, y_pred: Any, sample_weight: Any = None) -> Any:
        if "train" not in self.own:
            return super().compute_loss(x, y, y_pred, sample_weight)
        return self.net.compute_loss(x, y, y_pred, sample_weight)

    def get_state(self) -> tuple[dict, dict]:
        self._refuse_state()
        return super().get_state()

    def set_state(self, arrays: dict, meta: dict) -> None:
        self._refuse_state()
        super().set_state(arrays, meta)

    def _refuse_state(self) -> None:
        """A network's own step keeps state fitkit cannot know it will rebuild (its metric
        trackers, built by its first step; optimizers of its own): no half-saved state."""
        if "train" in self.own:
            raise FitkitValueError(
                f"save_checkpoint / load_checkpoint / BackupAndRestore cannot hold the whole "
                f"training state of {type(self.net).__name__}, whose own train_step keeps "
                f"state of its own (metric trackers, maybe optimizers). Save its weights "
                f"(model.save_weights), or train it with keras's fit and keras's "
                f"BackupAndRestore."
            )

    # ------------------------------------------------------------------ logs
    def reset_logs(self, mode: str) -> None:
        if mode not in self.own:
            super().reset_logs(mode)
            return
        self._trackers[mode].reset()  # eager: the network's metrics grow as it builds

    def run_batch(self, function: Any, batch: Any, mode: str, reset: bool) -> dict:
        if mode not in self.own:
            return super().run_batch(function, batch, mode, reset)
        if reset:
            self.reset_logs(mode)
        function(batch)
        return self.read_logs(mode)  # host sync: the caller asked for values


def check_controls(net: Any, controls: Any, replicas: Any) -> None:
    """What fitkit adds around its own step cannot reach a network's own: refused."""
    name = type(net).__name__
    if replicas is not None:
        raise FitkitValueError(
            f"{name} brings its own train/test step; fitkit does not run such a step under "
            f"a tf.distribute strategy. Train it with keras's own fit inside the strategy's "
            f"scope, or move the step into a fitkit.Model subclass."
        )
    if controls is None:  # only predict_step is its own: fitkit's training takes them
        return
    asked = [
        k
        for k, on in (
            ("clipnorm", controls.clipnorm is not None),
            ("clipvalue", controls.clipvalue is not None),
            ("global_clipnorm", controls.global_clipnorm is not None),
            ("gradient_accumulation_steps", controls.gradient_accumulation_steps > 1),
        )
        if on
    ]
    if asked:
        raise FitkitValueError(
            f"{name} brings its own train_step, which applies its gradients itself: "
            f"compile's {', '.join(asked)} cannot reach them. Set them on the Keras optimizer "
            f"instead, e.g. keras.optimizers.Adam(clipnorm=1.0, gradient_accumulation_steps=4)."
        )


def keras_losses(loss: Any) -> Any:
    """compile's loss (a name, a Keras loss, a callable; or a dict / list of them) as Keras's
    compile takes it, fitkit's names keeping their meaning ("cross_entropy": logits)."""
    if isinstance(loss, dict):
        return {k: keras_losses(v) for k, v in loss.items()}
    if isinstance(loss, (list, tuple)):
        return [keras_losses(v) for v in loss]
    return None if loss is None else keras_loss(loss)


def keras_metrics(metric_specs: Any) -> Any:
    """compile's metrics for Keras's compile: names as Keras reads them, Keras metrics and
    functions as they are; fitkit.metrics objects are refused (Keras cannot update them)."""
    values = metric_specs.values() if isinstance(metric_specs, dict) else metric_specs
    for value in values:
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(item, MetricSpec):
                raise FitkitValueError(
                    f"A keras.Model with its own train step updates its metrics with Keras "
                    f"(self.metrics); {type(item).__name__} is a fitkit metric. Pass a "
                    f"keras.metrics object or a name Keras knows (e.g. 'accuracy', 'mae')."
                )
    return metric_specs or None
