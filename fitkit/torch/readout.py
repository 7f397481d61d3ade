"""Torch values read back on the host: the first-batch checks' statistics, the logs in one
read, and predictions as numpy; twin: fitkit/tf/readout.py.

Owns how each read is made in one host sync; when to read (log points, checks) is the
facade's, and which logs exist is the adapter's (its trackers and metrics; DDP's values
over every process come from fitkit/torch/distribute.py).
"""

from __future__ import annotations

from typing import Any

import torch


def label_range(labels: torch.Tensor) -> list:
    """(min, max, a non-whole label or NaN) of the labels: one host read."""
    low, high = torch.aminmax(labels)
    if labels.is_floating_point():
        fractional = labels[labels != labels.round()].reshape(-1)[:1]
        odd = fractional[0] if fractional.numel() else low.new_tensor(float("nan"))
    else:
        odd = low.new_tensor(0).double().fill_(float("nan"))
    return torch.stack([low.double(), high.double(), odd.double()]).tolist()  # host sync


def first_nonfinite(tensor: torch.Tensor) -> tuple[int, float] | None:
    """(row, value) of the first NaN / inf in a float tensor, or None: one host read."""
    if not tensor.is_floating_point() or not tensor.numel():
        return None
    finite = torch.isfinite(tensor).reshape(len(tensor), -1)
    bad_rows = ~finite.all(1)
    any_bad, row = torch.stack([bad_rows.any().long(), bad_rows.long().argmax()]).tolist()
    if not any_bad:  # host sync: above, once per in-memory tensor
        return None
    return row, float(tensor[row].reshape(-1)[~finite[row]][0])


def value_range(value: torch.Tensor) -> list:
    return torch.stack(list(torch.aminmax(value.float()))).tolist()  # host sync: a check


def probability_stats(value: torch.Tensor) -> list:
    value = value.float()
    stats = torch.stack([*torch.aminmax(value), *torch.aminmax(value.sum(-1))])
    return stats.tolist()  # host sync: a check, once


def read_values(values: dict[str, torch.Tensor]) -> dict[str, float]:
    """Every log as a float, in one host read."""
    if not values:
        return {}
    stacked = torch.stack([v.to(torch.float64).reshape(()) for v in values.values()])
    return dict(zip(values, stacked.tolist(), strict=True))  # host sync: one read for all logs


def outputs_to_numpy(outputs: list, fp16: bool = False) -> Any:
    """Per-batch predictions as one numpy array (or a dict / tuple of them); ``fp16``: the
    float16 outputs are autocast's, returned as float32 like the weights."""
    first = outputs[0]
    if isinstance(first, torch.Tensor):
        merged = (
            torch.cat(outputs) if len({o.shape[1:] for o in outputs}) == 1 else _cat_padded(outputs)
        )
        if merged.dtype == torch.bfloat16 or (merged.dtype == torch.float16 and fp16):
            merged = merged.float()  # numpy has no bfloat16; fp16 is
        return merged.cpu().numpy()  # host sync: predictions leave the device
    if isinstance(first, dict):
        return {k: outputs_to_numpy([o[k] for o in outputs], fp16) for k in first}
    return type(first)(outputs_to_numpy([o[i] for o in outputs], fp16) for i in range(len(first)))


def _cat_padded(outputs: list) -> torch.Tensor:
    """Batches of different lengths (token logits of padded batches) in one array, each
    padded to the longest with -100, as Hugging Face's Trainer pads its predictions."""
    if len({o.dim() for o in outputs}) > 1:
        return torch.cat(outputs)  # torch's error names the ranks
    tail = [max(o.shape[d] for o in outputs) for d in range(1, outputs[0].dim())]
    merged = outputs[0].new_full((sum(len(o) for o in outputs), *tail), -100)
    start = 0
    for o in outputs:
        merged[(slice(start, start + len(o)), *(slice(0, n) for n in o.shape[1:]))] = o
        start += len(o)
    return merged
