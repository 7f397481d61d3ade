"""Torch summary rows: each leaf module's output shape (forward hooks) and parameter count.

Owns the measurement; the facade prints the table (display.summary_table) the same way
for both backends.
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from ..adapter import SummaryInfo
from ..display import shape_text
from ..arrays import map_shapes, map_structure
from ..errors import FitkitValueError
from . import data


def summary_info(adapter: Any, input_shape: Any, input_data: Any) -> SummaryInfo:
    """The summary of ``adapter.net`` run on ``input_data`` or zeros of ``input_shape``."""
    if input_data is None and input_shape is None:
        raise FitkitValueError("summary needs input_shape=(features...) without the batch "
                               "dimension, or input_data=<a batch>.")
    if input_data is not None:
        example = map_structure(
            lambda v: data.to_tensor(v, adapter.device, adapter.float_dtype), input_data)
    else:
        example = map_shapes(input_shape, lambda shape: torch.zeros(
            (2, *shape), device=adapter.device, dtype=adapter.float_dtype))
    return summarize(adapter.net, example, adapter.infer)


def summarize(net: torch.nn.Module, example: Any, call: Callable[[Any], Any]) -> SummaryInfo:
    """Run ``example`` once through ``net`` (``call`` runs it in inference mode) and record every leaf module."""
    seen: dict[str, Any] = {}
    handles = []
    for name, module in net.named_modules():
        if next(module.children(), None) is None and name:
            def hook(mod, inputs, output, name=name):
                seen.setdefault(name, output)
            handles.append(module.register_forward_hook(hook))
    try:
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
