"""The PyTorch adapter: optimizer/loss/metric building, steps, logs, weights, summary.

Owns everything torch-specific behind the Adapter protocol (fitkit/adapter.py). Data
sources live in data.py, metric formulas in metrics.py, losses in losses.py, what a
strategy (DDP, DataParallel) changes in distribute.py: decided once, at creation or compile.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch

from .. import distribute as strategies
from .. import hf, specs, targets
from ..adapter import WEIGHTS_FINITE, BatchSource, SummaryInfo
from ..controls import TrainingControls
from ..optimizer_sets import OptimizerSet, SchedulerSet, after_each, scheduler_set
from ..outputs import CompiledOutputs, call_loss, shared_loss
from ..sources import unpack
from . import controls as step_controls
from . import (
    data,
    devices,
    finite,
    losses,
    metrics,
    optimizers,
    readout,
    schedules,
    state,
    summary,
    weights,
)


def set_seed(seed: int) -> None:
    torch.manual_seed(seed)


def call_net(net: torch.nn.Module, x: Any) -> Any:
    """Call a network: a dict becomes keyword arguments, a tuple positional ones."""
    if isinstance(x, dict):
        return net(**x)
    if isinstance(x, (tuple, list)):
        return net(*x)
    return net(x)


class Adapter:
    """Torch implementation of fitkit's Adapter protocol."""

    name = "torch"

    def __init__(self, net: torch.nn.Module, *, device: Any = None) -> None:
        params = list(net.parameters())
        strategy = strategies.active()
        if device is not None:
            self.device = devices.resolve_device(device)  # refused here if it does not exist
        elif getattr(strategy, "places_net", False):
            self.device = strategy.device  # this process's device (DDP: cuda:LOCAL_RANK)
        elif params and params[0].device.type != "cpu":
            self.device = params[0].device  # the user placed it already
        else:
            self.device = devices.default_device()
        self.net = net.to(self.device)
        floats = [p.dtype for p in params if p.is_floating_point()]
        self.float_dtype = floats[0] if floats else torch.get_default_dtype()
        self.optimizer: Any = None
        self.optimizers: list = []  # every optimizer: [optimizer], or configure_optimizers' several
        self.loss_fn: Any = None  # compile's loss, as given
        self.outputs: CompiledOutputs | None = None
        self._autocast: Any = contextlib.nullcontext()
        self.controls = TrainingControls()
        self._update: step_controls.Update | None = None  # None: the plain default step
        self.scheduler: Any = schedules.Scheduler()  # compile's lr_schedule (a no-op)
        self.example_inputs: Any = None  # a batch of inputs fitkit has seen (for summary)
        self._trackers = {"train": metrics.LogTracker(), "test": metrics.LogTracker()}
        self._forward = self._eval_forward = self.net  # what the steps call (a strategy's
        # wrapper: DDP for training, DataParallel for both)
        self._strategy: Any = None
        self._ddp: Any = None  # distribute.Replicas under "ddp": shares, logs, predictions
        self._attach(strategy)

    def _attach(self, strategy: Any) -> None:
        """Train under the strategy active when this adapter is created or compiled (once)."""
        if self._strategy is not None or getattr(strategy, "backend", None) != "torch":
            return
        if strategy.places_net and self.device != strategy.device:
            self.device = strategy.device
            self.net.to(self.device)
        self._strategy = strategy
        self._ddp = strategy.attach(self)

    # ------------------------------------------------------------------ compile
    def compile(
        self,
        optimizer: Any,
        loss: Any,
        metric_specs: Any,
        lr: float | None,
        precision: str = "32",
        *,
        loss_weights: Any = None,
        output: Any = None,
        run_eagerly: bool = False,
        controls: Any = None,
    ) -> None:
        self._attach(strategies.active())
        several = isinstance(optimizer, OptimizerSet)  # a GAN's, from configure_optimizers
        built = (
            optimizers.build_several(optimizer, self.net, self._strategy)
            if several
            else [optimizers.build_optimizer(optimizer, lr, self.net)]
        )  # checked before changes
        self.controls = controls = controls or TrainingControls(precision=precision)
        self.optimizers, self.optimizer = built, built[0]
        self._base_lrs = optimizers.rates(self.optimizer)  # groups' ratios
        self._autocast = step_controls.precision_context(self.device, precision)
        self._update = (
            step_controls.Update(self, controls, self._ddp)
            if step_controls.needs_update(controls) or self._ddp is not None
            else None
        )
        self.loss_fn = loss
        self.outputs = CompiledOutputs(
            loss,
            loss_weights,
            metric_specs,
            output,
            build_loss=losses.build_loss,
            build_metrics=lambda specs_: specs.build_metrics(specs_, metrics),
            is_tensor=lambda v: isinstance(v, torch.Tensor),
            default_names=lambda n: [f"output_{i + 1}" for i in range(n)],
        )
        self.build_scheduler(
            controls.lr_schedule, controls.lr_schedule_every, controls.lr_schedule_monitor
        )
        if several:  # each optimizer's own scheduler
            self.scheduler = scheduler_set(optimizer, built, schedules.build_scheduler)
        if self._ddp is not None:
            self._ddp.compiled(self)

    def build_scheduler(self, spec: Any, every: str, monitor: str) -> None:
        """compile's lr_schedule (a do-nothing one when None: a recompile also drops an
        earlier schedule from the optimizer)."""
        self.scheduler = schedules.build_scheduler(
            spec, self.optimizer, every=every, monitor=monitor
        )
        if self._update is None and self.scheduler.every == "batch":  # stepped after each update
            self._update = step_controls.Update(self, self.controls)

    def finish_epoch(self) -> None:
        """Apply a pending partial window of gradient accumulation (the fit loop calls it
        at each epoch end, before validation)."""
        if self._update is not None:
            self._update.finish()

    @property
    def accumulation(self) -> step_controls.Update | None:
        """The pending accumulation window and fp16 loss scale, for checkpoints; or None."""
        return self._update if self._update is not None and self._update.stateful else None

    def get_state(self) -> tuple[dict, dict]:
        """(numpy arrays, JSON meta) of weights, optimizer, running logs and RNGs."""
        return state.get_state(self)

    def set_state(self, arrays: dict, meta: dict) -> None:
        """Restore what ``get_state`` returned (all shapes checked before any change)."""
        state.set_state(self, arrays, meta)

    def check_state(self, arrays: dict, meta: dict) -> None:
        """Refuse a state ``set_state`` would not restore exactly; nothing changes."""
        state.check_state(self, arrays, meta)

    @property
    def metrics(self) -> list:
        return self.outputs.metrics if self.outputs is not None else []

    def autocast(self) -> Any:
        """The compiled precision's context (bf16 / fp16 autocast, or a no-op) for custom
        steps."""
        return self._autocast

    def get_learning_rate(self) -> float:
        """Param group 0's rate (the only one, unless the optimizer has several groups)."""
        return optimizers.rates(self.optimizer)[0]

    def set_learning_rate(self, value: float) -> None:
        """Group 0's rate becomes ``value``; every other group is scaled by the same factor."""
        optimizers.set_rates(
            self.optimizer,
            optimizers.scaled_rates(
                optimizers.rates(self.optimizer), value, self._base_lrs, "model.learning_rate"
            ),
        )

    def learning_rates(self) -> dict[str, float]:
        """The history's learning-rate columns: ``lr``, or one per param group (or optimizer)."""
        if len(self.optimizers) > 1:
            return optimizers.several_rates(self.optimizers)
        return optimizers.group_rates(self.optimizer)

    # ------------------------------------------------------------------ data
    def array_source(
        self,
        x: Any,
        y: Any,
        *,
        batch_size: int,
        shuffle: bool,
        sample_weight: Any = None,
        class_weight: dict | None = None,
    ) -> data.TensorSource:
        kind: type[data.TensorSource] = data.TensorSource
        extra: dict[str, Any] = {}
        if self._ddp is not None:  # each process's share of every global batch
            self._ddp.check_open()
            kind, extra = data.ShardedTensorSource, {"comm": self._ddp}
        source = kind(
            x,
            y,
            batch_size=batch_size,
            shuffle=shuffle,
            device=self.device,
            float_dtype=self.float_dtype,
            sample_weight=sample_weight,
            **extra,
        )
        if class_weight:
            weights = data.class_weight_fn(
                class_weight, source.device if source.resident else torch.device("cpu")
            )(source.y)
            source.w = weights if source.w is None else source.w * weights
        return source

    def batch_source(
        self, source: Any, *, batch_size: int, shuffle: bool, class_weight: dict | None = None
    ) -> BatchSource:
        weigh = data.class_weight_fn(class_weight, self.device) if class_weight else None
        if self._ddp is not None:
            self._ddp.check_open()
        return data.batch_source(
            source,
            batch_size=batch_size,
            shuffle=shuffle,
            device=self.device,
            float_dtype=self.float_dtype,
            weigh=weigh,
            comm=self._ddp,
        )

    def integers_to_float(self, x: Any) -> Any:
        return data.integers_to_float(x, self.float_dtype)

    def is_tensor(self, value: Any) -> bool:
        return isinstance(value, torch.Tensor)

    def label_range(self, labels: torch.Tensor) -> list:
        return readout.label_range(labels)

    def first_nonfinite(self, tensor: torch.Tensor) -> tuple[int, float] | None:
        return readout.first_nonfinite(tensor)

    def value_range(self, value: torch.Tensor) -> list:
        return readout.value_range(value)

    def probability_stats(self, value: torch.Tensor) -> list:
        return readout.probability_stats(value)

    def build_metric_states(self, head: Any, mode: targets.TargetMode, width: int) -> None:
        for metric in head.metrics:
            metric.build(mode, width, self.device)
        head.built = True

    # ------------------------------------------------------------------ steps
    @property
    def _compiled(self) -> CompiledOutputs:
        """The compiled outputs (every step comes after compile)."""
        if self.outputs is None:
            raise RuntimeError("the model is used before compile()")
        return self.outputs

    def compute_loss(self, x: Any, y: Any, y_pred: Any, sample_weight: Any = None) -> Any:
        return self._compiled.loss(y, y_pred, sample_weight)

    def update_metrics(self, y: Any, y_pred: Any, sample_weight: Any = None) -> None:
        self._compiled.update_metrics(
            y, y_pred, sample_weight, self.update_head, self.build_metric_states
        )

    def update_head(self, head: Any, y: Any, y_pred: torch.Tensor, sample_weight: Any) -> None:
        """Update one output's metric states (torch's argument order); bf16 / fp16
        predictions (autocast's) are read in float32, so states never add up in half."""
        y_pred = y_pred.detach()  # metric states never join the autograd graph
        if y_pred.dtype in (torch.float16, torch.bfloat16):
            y_pred = y_pred.float()
        for metric in head.metrics:  # weights reach weighted_metrics only, as in Keras
            metric.update(y_pred, y, sample_weight if metric.weighted else None)

    def train_step(self, batch: tuple, compute_loss: Callable) -> dict:
        x, y, w = unpack(batch)
        with self._autocast:
            y_pred = call_net(self._forward, x)
            loss = call_loss(compute_loss, x, y, y_pred, w)
        # metrics before the update (they read y_pred, which the update leaves as it is): under
        # jit_compile they join the forward's graph instead of a second one after the update
        if self.metrics:
            self.update_metrics(y, y_pred, w)
        if self._update is None:  # the default: no control on
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        else:  # accumulation, clipping, fp16 scaling, a batch scheduler (controls.py)
            self._update.run(loss, data.rows(x))
        return {"loss": loss}

    def test_step(self, batch: tuple, compute_loss: Callable) -> dict:
        x, y, w = unpack(batch)
        with self._autocast:
            y_pred = call_net(self._eval_forward, x)
            loss = call_loss(compute_loss, x, y, y_pred, w)
        if self.metrics:
            self.update_metrics(y, y_pred, w)
        return {"loss": loss}

    def shared_train_step(self, batch: tuple, shared_step: Callable) -> dict:
        """A class style's one step for both modes: its "loss" drives the update."""
        with self._autocast:
            logs = shared_step(batch)
        loss = shared_loss(logs)
        if self._update is None:
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        else:
            self._update.run(loss, data.rows(unpack(batch)[0]))
        return {k: v.detach() if isinstance(v, torch.Tensor) else v for k, v in logs.items()}

    def shared_test_step(self, batch: tuple, shared_step: Callable) -> dict:
        with self._autocast:
            return dict(shared_step(batch))

    def call(self, x: Any) -> Any:
        """The network in its current mode (``self(x)`` in a class-style step)."""
        return call_net(self._forward if self.net.training else self._eval_forward, x)

    def predict_step(self, batch: tuple) -> Any:
        with self._autocast:
            return call_net(self._eval_forward, batch[0])

    def make_function(self, step: Callable, mode: str) -> Callable:
        """Wrap a step so its returned logs accumulate on the device (no host sync);
        under jit_compile the step is torch.compile'd."""
        if (
            mode == "train"
            and isinstance(self.scheduler, SchedulerSet)
            and self.scheduler.per_batch
        ):  # several optimizers' "step" schedulers
            step = after_each(step, self.scheduler.after_update)
        if self.controls.jit_compile:  # the train step's compile time is timed on the CPU
            step = step_controls.compile_step(step, self.device if mode == "train" else None)
        if mode == "predict":  # an output object's predictions, not its loss or cache
            step = hf.predicting(step, self.net)
        if self._ddp is not None:
            return self._ddp.make_function(step, mode, self._trackers.get(mode), self.outputs)
        if mode == "predict":

            def run_predict(batch: tuple) -> Any:
                with torch.no_grad():
                    return step(batch)

            return run_predict
        tracker = self._trackers[mode]
        outputs = self._compiled

        def run(batch: tuple) -> None:
            logs = step(batch)
            if outputs.parts:  # each output's loss, from compute_loss in this step
                logs = {**logs, **outputs.take_parts()}
            tracker.update(logs, data.rows(batch[0]))

        if mode == "train":
            return run

        def run_test(batch: tuple) -> None:
            with torch.no_grad():
                run(batch)

        return run_test

    def run_batch(self, function: Callable, batch: Any, mode: str, reset: bool) -> dict:
        """A batch-style call: reset the logs (optionally), run one step, read the logs."""
        if reset:
            self.reset_logs(mode)
        function(batch)
        return self.read_logs(mode)  # host sync: the caller asked for values

    def runs_own_step(self, mode: str) -> bool:
        """A torch module has no step of its own for fitkit to run."""
        return False

    def set_training(self, training: bool | None) -> None:
        if training is not None:
            self.net.train(training)

    def training_mode(self) -> bool:
        """The network's train/eval mode, to restore after a call that switches it."""
        return self.net.training

    # ------------------------------------------------------------------ logs
    def reset_logs(self, mode: str) -> None:
        self._trackers[mode].reset()
        for metric in self.metrics:
            if metric.mode is not None:
                metric.reset()

    def read_logs(self, mode: str, weights: bool = False) -> dict[str, float]:
        """Every log in one host read; under DDP over every process (a collective: each
        process reads at the same points). ``weights``: with WEIGHTS_FINITE, same read."""
        if self._ddp is not None:
            values = self._ddp.log_values(self._trackers[mode], self.metrics)
        else:
            values = dict(self._trackers[mode].results())
            for metric in self.metrics:
                if metric.mode is not None:
                    values[metric.name] = metric.result()
        if weights:
            values[WEIGHTS_FINITE] = finite.flag(self.net, self.device)
        return readout.read_values(values)

    def outputs_to_numpy(self, outputs: list) -> Any:
        """Predictions as numpy; under DDP every process's, in order, on every process."""
        if self._ddp is not None:
            outputs = [self._ddp.gather(outputs)]
        return readout.outputs_to_numpy(outputs, fp16=self.controls.precision == "fp16")

    # ------------------------------------------------------------------ weights, summary
    def save_weights(self, path: str) -> None:
        weights.save_weights(self.net, path)

    def load_weights(self, path: str, strict: bool = True) -> dict:
        return weights.load_weights(self.net, path, device=self.device, strict=strict)

    def summary(self, input_shape: Any, input_data: Any) -> SummaryInfo:
        return summary.summary_info(self, input_shape, input_data)

    def infer(self, x: Any) -> Any:
        """One forward pass in inference mode (eval, no grad); the train/eval mode is kept."""
        was_training = self.net.training
        self.net.eval()
        try:
            with torch.no_grad():
                y_pred = call_net(self.net, x)
            if self.device.type == "cuda":  # host sync: a first-batch check, once per fit;
                torch.cuda.synchronize(self.device)  # a kernel's assert surfaces here
            return y_pred
        finally:
            self.net.train(was_training)
