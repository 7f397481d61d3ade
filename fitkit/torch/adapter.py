"""The PyTorch adapter: optimizer/loss/metric building, steps, logs, weights, summary.

Owns everything torch-specific behind the Adapter protocol (fitkit/adapter.py). Data
sources live in data.py, metric formulas in metrics.py, losses in losses.py.
"""
from __future__ import annotations

import contextlib
import os
from typing import Any, Callable

import torch

from .. import specs
from ..arrays import map_shapes, map_structure
from ..errors import FitkitTypeError, FitkitValueError
from . import data, devices, losses, metrics, summary

# Portable optimizer names: Keras's default hyper-parameters, so a name means the same on
# both backends, with torch's fast multi-tensor / fused kernels where they exist.
_OPTIMIZERS = {
    "sgd": (torch.optim.SGD, {"lr": 0.01}),
    "adam": (torch.optim.Adam, {"lr": 1e-3, "eps": 1e-7}),
    "adamw": (torch.optim.AdamW, {"lr": 1e-3, "eps": 1e-7, "weight_decay": 0.004}),
    "rmsprop": (torch.optim.RMSprop, {"lr": 1e-3, "alpha": 0.9, "eps": 1e-7}),
    "adagrad": (torch.optim.Adagrad, {"lr": 1e-3, "eps": 1e-7, "initial_accumulator_value": 0.1}),
    "nadam": (torch.optim.NAdam, {"lr": 1e-3, "eps": 1e-7}),
}
_FUSED = {"sgd", "adam", "adamw", "adagrad"}  # optimizers with a fused kernel in torch


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
        if device is not None:
            self.device = torch.device(device)
        elif params and params[0].device.type != "cpu":
            self.device = params[0].device  # the user placed it already
        else:
            self.device = devices.default_device()
        self.net = net.to(self.device)
        floats = [p.dtype for p in params if p.is_floating_point()]
        self.float_dtype = floats[0] if floats else torch.get_default_dtype()
        self.optimizer: Any = None
        self.loss_fn: Callable | None = None
        self.loss_spec: specs.LossSpec | None = None
        self.metrics: list[metrics.StateMetric] = []
        self._autocast: Any = contextlib.nullcontext()
        self._trackers = {"train": metrics.LogTracker(), "test": metrics.LogTracker()}

    # ------------------------------------------------------------------ compile
    def compile(self, optimizer: Any, loss: Any, metric_specs: Any, lr: float | None,
                precision: str = "32") -> None:
        self.optimizer = self._build_optimizer(optimizer, lr)
        # One reusable context: autocast for bf16, a no-op for full precision.
        self._autocast = (torch.autocast(self.device.type, dtype=torch.bfloat16)
                          if precision == "bf16" else contextlib.nullcontext())
        self.loss_fn, self.loss_spec = losses.build_loss(loss)
        self.metrics = specs.build_metrics(metric_specs, metrics)

    def _build_optimizer(self, optimizer: Any, lr: float | None) -> torch.optim.Optimizer:
        params = [p for p in self.net.parameters() if p.requires_grad]
        if isinstance(optimizer, str):
            name = specs.optimizer_name(optimizer)
            cls, kwargs = _OPTIMIZERS[name]
            kwargs = {**kwargs, **({"lr": lr} if lr is not None else {})}
            fast = {"fused": True} if name in _FUSED else {"foreach": True}
            return cls(params, **kwargs, **fast)
        if isinstance(optimizer, torch.optim.Optimizer):
            opt = optimizer
        elif callable(optimizer):
            opt = optimizer(params)
            if not isinstance(opt, torch.optim.Optimizer):
                raise FitkitTypeError(f"The optimizer factory returned {type(opt).__name__}, "
                                      f"not a torch.optim.Optimizer.")
        else:
            raise FitkitTypeError(
                f"optimizer must be a name ({', '.join(specs.OPTIMIZERS)}), a torch.optim "
                f"optimizer, or a callable params -> optimizer; got {type(optimizer).__name__}."
            )
        if lr is not None:
            for group in opt.param_groups:
                group["lr"] = lr
        return opt

    def get_learning_rate(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def set_learning_rate(self, value: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = value

    # ------------------------------------------------------------------ data
    def array_source(self, x: Any, y: Any, *, batch_size: int, shuffle: bool):
        return data.TensorSource(x, y, batch_size=batch_size, shuffle=shuffle,
                                 device=self.device, float_dtype=self.float_dtype)

    def batch_source(self, source: Any, *, batch_size: int, shuffle: bool):
        return data.batch_source(source, batch_size=batch_size, shuffle=shuffle,
                                 device=self.device, float_dtype=self.float_dtype)

    def output_tail(self, x: Any) -> tuple:
        """Run the network once (eval, no grad) and return its output shape past the batch dim."""
        was_training = self.net.training
        self.net.eval()
        try:
            with torch.no_grad():
                y_pred = call_net(self.net, x)
        finally:
            self.net.train(was_training)
        return tuple(y_pred.shape[1:]) if isinstance(y_pred, torch.Tensor) else ()

    def label_range(self, labels: torch.Tensor) -> list:
        return torch.stack(list(torch.aminmax(labels))).tolist()  # host sync: once per check

    def build_states(self, mode: specs.TargetMode, width: int) -> None:
        for metric in self.metrics:
            metric.build(mode, width, self.device)

    # ------------------------------------------------------------------ steps
    def compute_loss(self, x: Any, y: Any, y_pred: Any) -> torch.Tensor:
        return self.loss_fn(y_pred, y)

    def update_metrics(self, y: Any, y_pred: Any) -> None:
        y_pred = y_pred.detach()  # metric states never join the autograd graph
        for metric in self.metrics:
            metric.update(y_pred, y)

    def train_step(self, batch: tuple, compute_loss: Callable) -> dict:
        x, y = batch
        with self._autocast:
            y_pred = call_net(self.net, x)
            loss = compute_loss(x, y, y_pred)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if self.metrics:
            self.update_metrics(y, y_pred)
        return {"loss": loss}

    def test_step(self, batch: tuple, compute_loss: Callable) -> dict:
        x, y = batch
        with self._autocast:
            y_pred = call_net(self.net, x)
            loss = compute_loss(x, y, y_pred)
        if self.metrics:
            self.update_metrics(y, y_pred)
        return {"loss": loss}

    def predict_step(self, batch: tuple) -> Any:
        with self._autocast:
            return call_net(self.net, batch[0])

    def make_function(self, step: Callable, mode: str) -> Callable:
        """Wrap a step so its returned logs accumulate on the device (no host sync)."""
        if mode == "predict":
            def run_predict(batch: tuple) -> Any:
                with torch.no_grad():
                    return step(batch)
            return run_predict
        tracker = self._trackers[mode]
        if mode == "train":
            def run_train(batch: tuple) -> None:
                tracker.update(step(batch), data.rows(batch[0]))
            return run_train

        def run_test(batch: tuple) -> None:
            with torch.no_grad():
                tracker.update(step(batch), data.rows(batch[0]))
        return run_test

    def set_training(self, training: bool) -> None:
        self.net.train(training)

    # ------------------------------------------------------------------ logs
    def reset_logs(self, mode: str) -> None:
        self._trackers[mode].reset()
        for metric in self.metrics:
            if metric.mode is not None:
                metric.reset()

    def read_logs(self, mode: str) -> dict[str, float]:
        values = dict(self._trackers[mode].results())
        for metric in self.metrics:
            if metric.mode is not None:
                values[metric.name] = metric.result()
        if not values:
            return {}
        stacked = torch.stack([v.to(torch.float64).reshape(()) for v in values.values()])
        return dict(zip(values, stacked.tolist()))  # host sync: one read for all logs

    def outputs_to_numpy(self, outputs: list) -> Any:
        first = outputs[0]
        if isinstance(first, torch.Tensor):
            merged = torch.cat(outputs)
            if merged.dtype == torch.bfloat16:  # numpy has no bfloat16
                merged = merged.float()
            return merged.cpu().numpy()  # host sync: predictions leave the device
        if isinstance(first, dict):
            return {k: self.outputs_to_numpy([o[k] for o in outputs]) for k in first}
        return type(first)(self.outputs_to_numpy([o[i] for o in outputs])
                           for i in range(len(first)))

    # ------------------------------------------------------------------ weights, summary
    def save_weights(self, path: str) -> None:
        state = self.net.state_dict()
        if path.endswith(".safetensors"):
            from safetensors.torch import save_file  # optional dependency, asked for by suffix

            save_file({k: v.contiguous() for k, v in state.items()}, path)
        else:
            torch.save(state, path)

    def load_weights(self, path: str) -> None:
        if not os.path.isfile(path):
            raise FitkitValueError(f"No weights file at {path!r}; check the path "
                                   f"(save one with model.save_weights).")
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(path, device=str(self.device))
        else:
            state = torch.load(path, map_location=self.device, weights_only=True)
        own = self.net.state_dict()
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        mismatched = [f"{k}: file {tuple(state[k].shape)} vs net {tuple(own[k].shape)}"
                      for k in own if k in state and state[k].shape != own[k].shape]
        if missing or unexpected or mismatched:
            raise FitkitValueError(
                f"The weights in {path!r} come from another architecture. "
                f"Missing: {missing[:5]}; unexpected: {unexpected[:5]}; "
                f"shape mismatches: {mismatched[:5]}."
            )
        self.net.load_state_dict(state)

    def summary(self, input_shape: Any, input_data: Any):
        if input_data is None and input_shape is None:
            raise FitkitValueError("summary needs input_shape=(features...) without the batch "
                                   "dimension, or input_data=<a batch>.")
        if input_data is not None:
            example = map_structure(lambda v: data.to_tensor(v, self.device, self.float_dtype),
                                    input_data)
        else:
            example = map_shapes(input_shape, lambda shape: torch.zeros(
                (2, *shape), device=self.device, dtype=self.float_dtype))
        return summary.summarize(self.net, example, lambda x: call_net(self.net, x))
