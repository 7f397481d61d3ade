"""The PyTorch adapter: optimizer/loss/metric building, steps, logs, weights, summary.

Owns everything torch-specific behind the Adapter protocol (fitkit/adapter.py). Data
sources live in data.py, metric formulas in metrics.py, losses in losses.py.
"""
from __future__ import annotations

import contextlib
import os
from typing import Any, Callable

import torch

from .. import specs, targets
from ..errors import FitkitValueError
from . import data, devices, losses, metrics, optimizers, summary

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
        self.example_inputs: Any = None  # a batch of inputs fitkit has seen (for summary)
        self._trackers = {"train": metrics.LogTracker(), "test": metrics.LogTracker()}

    # ------------------------------------------------------------------ compile
    def compile(self, optimizer: Any, loss: Any, metric_specs: Any, lr: float | None,
                precision: str = "32") -> None:
        self.optimizer = optimizers.build_optimizer(optimizer, lr, self.net)
        # One reusable context: autocast for bf16, a no-op for full precision.
        self._autocast = (torch.autocast(self.device.type, dtype=torch.bfloat16)
                          if precision == "bf16" else contextlib.nullcontext())
        self.loss_fn, self.loss_spec = losses.build_loss(loss)
        self.metrics = specs.build_metrics(metric_specs, metrics)

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
        self.example_inputs = x
        y_pred = self.infer(x)
        return tuple(y_pred.shape[1:]) if isinstance(y_pred, torch.Tensor) else ()

    def label_range(self, labels: torch.Tensor) -> list:
        return torch.stack(list(torch.aminmax(labels))).tolist()  # host sync: once per check

    def build_states(self, mode: targets.TargetMode, width: int) -> None:
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
        return summary.summary_info(self, input_shape, input_data)

    def infer(self, x: Any) -> Any:
        """One forward pass in inference mode (eval, no grad); the train/eval mode is kept."""
        was_training = self.net.training
        self.net.eval()
        try:
            with torch.no_grad():
                return call_net(self.net, x)
        finally:
            self.net.train(was_training)
