"""Torch optimizers behind the portable names, with Keras's default hyper-parameters.

Owns the name -> torch.optim mapping and the checks on native optimizers and factories;
the TensorFlow twin is fitkit/tf/optimizers.py. Learning-rate reads live in the adapter.
"""
from __future__ import annotations

from typing import Any

import torch

from .. import specs
from ..errors import FitkitTypeError
from ..identifiers import KerasIdentifier, torch_optimizer

# Portable optimizer names: Keras's default hyper-parameters, so a name means the same on
# both backends, with torch's fast multi-tensor / fused kernels where they exist.
_OPTIMIZERS = {
    "sgd": (torch.optim.SGD, {"lr": 0.01}),
    "adam": (torch.optim.Adam, {"lr": 1e-3, "eps": 1e-7}),
    "adamw": (torch.optim.AdamW, {"lr": 1e-3, "eps": 1e-7, "weight_decay": 0.004}),
    "rmsprop": (torch.optim.RMSprop, {"lr": 1e-3, "alpha": 0.9, "eps": 1e-7}),
    "adagrad": (torch.optim.Adagrad, {"lr": 1e-3, "eps": 1e-7, "initial_accumulator_value": 0.1}),
    # Keras decays the momentum schedule by 0.96 ** step: torch's momentum_decay=1.
    "nadam": (torch.optim.NAdam, {"lr": 1e-3, "eps": 1e-7, "momentum_decay": 1.0}),
    "adamax": (torch.optim.Adamax, {"lr": 1e-3, "eps": 1e-7}),
    "adadelta": (torch.optim.Adadelta, {"lr": 1e-3, "rho": 0.95, "eps": 1e-7}),
    # Keras adds epsilon_1 = 1e-30 to g^2; torch clamps the estimate at eps1^2 (1e-30 too).
    # torch's Adafactor reads step counts and norms on the host each step (its own design).
    "adafactor": (torch.optim.Adafactor, {"lr": 1e-3, "beta2_decay": -0.8, "eps": (1e-15, 1e-3),
                                          "d": 1.0}),
}
_FUSED_ON = {"cpu", "cuda", "mps", "xpu"}
# the devices where torch has a fused kernel for an optimizer (Adagrad's is CPU-only)
_FUSED = {"sgd": _FUSED_ON, "adam": _FUSED_ON, "adamw": _FUSED_ON, "adagrad": {"cpu"}}


def build_optimizer(optimizer: Any, lr: float | None,
                    net: torch.nn.Module) -> torch.optim.Optimizer:
    """compile's ``optimizer`` (a name, a torch optimizer or a factory) for ``net``."""
    params = [p for p in net.parameters() if p.requires_grad]
    settings: dict = {}
    if isinstance(optimizer, KerasIdentifier):  # a Keras class name or dict: its torch twin
        optimizer, settings = torch_optimizer(optimizer)
    if isinstance(optimizer, str):
        name = specs.optimizer_name(optimizer)
        cls, kwargs = _OPTIMIZERS[name]
        kwargs = {**kwargs, **settings, **({"lr": lr} if lr is not None else {})}
        devices = {p.device.type for p in params}
        fused = bool(devices) and devices <= _FUSED.get(name, set())
        fast = {"fused": True} if fused else {"foreach": True}
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
