"""Torch summary rows: each leaf module's output shape (forward hooks) and parameter count.

Owns the measurement; the facade prints the table (display.summary_table) the same way
for both backends.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from ..errors import FitkitValueError


@dataclass
class SummaryInfo:
    rows: list
    total: int
    trainable: int
    param_bytes: int


def shape_text(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return str([-1, *value.shape[1:]])
    if isinstance(value, (tuple, list)):
        return ", ".join(shape_text(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}: {shape_text(v)}" for k, v in value.items())
    return "?"


def example_input(input_shape: Any, device: torch.device, dtype: torch.dtype) -> Any:
    """Zeros of batch 2 for each shape: a tuple, or a list / dict of them for multi-input."""
    if isinstance(input_shape, dict):
        return {k: example_input(v, device, dtype) for k, v in input_shape.items()}
    if isinstance(input_shape, list) or (isinstance(input_shape, tuple) and input_shape
                                         and isinstance(input_shape[0], (tuple, list))):
        return tuple(example_input(s, device, dtype) for s in input_shape)
    return torch.zeros((2, *input_shape), device=device, dtype=dtype)


def summarize(net: torch.nn.Module, example: Any, call: Callable[[Any], Any]) -> SummaryInfo:
    """Run ``example`` once through ``net`` (eval, no grad) and record every leaf module."""
    seen: dict[str, Any] = {}
    handles = []
    for name, module in net.named_modules():
        if next(module.children(), None) is None and name:
            def hook(mod, inputs, output, name=name):
                seen.setdefault(name, output)
            handles.append(module.register_forward_hook(hook))
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            call(example)
    except Exception as err:
        raise FitkitValueError(
            f"summary could not run the network on the example input: {err}. "
            f"Pass input_shape without the batch dimension, e.g. (32,) or (1, 28, 28), "
            f"or pass input_data=<a real batch>."
        ) from err
    finally:
        for handle in handles:
            handle.remove()
        net.train(was_training)
    modules = dict(net.named_modules())
    rows = [(f"{name} ({type(modules[name]).__name__})", shape_text(out),
             sum(p.numel() for p in modules[name].parameters(recurse=False)))
            for name, out in seen.items()]
    params = list(net.parameters())
    return SummaryInfo(
        rows=rows,
        total=sum(p.numel() for p in params),
        trainable=sum(p.numel() for p in params if p.requires_grad),
        param_bytes=sum(p.numel() * p.element_size() for p in params),
    )
