"""Torch optimizers behind the portable names, with Keras's default hyper-parameters.

Owns the name -> torch.optim mapping, the checks on native optimizers and factories (which
parameters they hold), and reading / setting the rates of several param groups with their
ratios kept; the TensorFlow twin is fitkit/tf/optimizers.py. Schedulers are schedules.py's.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

from .. import specs
from ..errors import FitkitTypeError, FitkitValueError
from ..history import lr_columns
from ..identifiers import KerasIdentifier, torch_optimizer

# Portable optimizer names: Keras's default hyper-parameters, so a name means the same on
# both backends, with torch's fast multi-tensor / fused kernels where they exist.
_OPTIMIZERS: dict[str, tuple[type[torch.optim.Optimizer], dict[str, Any]]] = {
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
    "adafactor": (
        torch.optim.Adafactor,
        {"lr": 1e-3, "beta2_decay": -0.8, "eps": (1e-15, 1e-3), "d": 1.0},
    ),
}
_FUSED_ON = {"cpu", "cuda", "mps", "xpu"}
# the devices where torch has a fused kernel for an optimizer (Adagrad's is CPU-only)
_FUSED = {"sgd": _FUSED_ON, "adam": _FUSED_ON, "adamw": _FUSED_ON, "adagrad": {"cpu"}}


def build_optimizer(
    optimizer: Any, lr: float | None, net: torch.nn.Module
) -> torch.optim.Optimizer:
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
        fast: dict[str, Any] = {"fused": True} if fused else {"foreach": True}
        return cls(params, **kwargs, **fast)
    if isinstance(optimizer, torch.optim.Optimizer):
        opt = optimizer
    elif callable(optimizer):
        opt = optimizer(params)
        if not isinstance(opt, torch.optim.Optimizer):
            raise FitkitTypeError(
                f"The optimizer factory returned {type(opt).__name__}, not a torch.optim.Optimizer."
            )
    else:
        raise FitkitTypeError(
            f"optimizer must be a name ({', '.join(specs.OPTIMIZERS)}), a torch.optim "
            f"optimizer, or a callable params -> optimizer; got {type(optimizer).__name__}."
        )
    check_params(opt, net)
    if lr is not None:  # as model.learning_rate = lr: group 0 gets lr, the others their ratio
        set_rates(opt, scaled_rates(rates(opt), float(lr), rates(opt), "compile(lr=...)"))
    return opt


def check_params(opt: torch.optim.Optimizer, net: torch.nn.Module) -> None:
    """Refuse an optimizer that holds none of the network's trainable parameters (built on
    another network, or before the network was copied): it would train nothing. Warn when
    it holds only some; frozen parameters (requires_grad=False) are not missed."""
    trainable = {id(p) for p in net.parameters() if p.requires_grad}
    held = {id(p) for group in opt.param_groups for p in group["params"]}
    if not trainable or trainable <= held:
        return
    missing = len(trainable - held)
    if missing == len(trainable):
        raise FitkitValueError(
            f"The optimizer ({type(opt).__name__}) holds none of the network's "
            f"{len(trainable)} trainable parameters (it was built on other ones: another "
            f"network, or this one before it was copied), so fit would train nothing. Build it "
            f"on this network's parameters, e.g. compile(optimizer=lambda params: "
            f"torch.optim.{type(opt).__name__}(params, lr=...)), or pass a name ('adam')."
        )
    warnings.warn(
        f"The optimizer ({type(opt).__name__}) holds {len(trainable) - missing} of the "
        f"network's {len(trainable)} trainable parameters; {missing} will not train. Freeze "
        f"them (requires_grad=False) if that is meant, or add them to a param group.",
        UserWarning,
        stacklevel=5,
    )


def build_several(
    given: Any, net: torch.nn.Module, strategy: Any = None
) -> list[torch.optim.Optimizer]:
    """Several torch optimizers (an ``optimizer_sets.OptimizerSet``), checked together: each
    a torch.optim.Optimizer, and between them the network's trainable parameters. Not under
    a strategy (DDP, DataParallel), yet."""
    if getattr(strategy, "name", "none") != "none":
        raise FitkitValueError(
            f"Several optimizers under the {strategy.name!r} strategy are "
            f"not supported yet; train with one."
        )
    given = list(given.optimizers)
    for i, opt in enumerate(given):
        if not isinstance(opt, torch.optim.Optimizer):
            raise FitkitTypeError(
                f"configure_optimizers() returned several optimizers; item "
                f"{i} is a {type(opt).__name__}, not a torch.optim optimizer."
            )
    trainable = {id(p) for p in net.parameters() if p.requires_grad}
    held = {id(p) for opt in given for group in opt.param_groups for p in group["params"]}
    if trainable and not trainable & held:
        raise FitkitValueError(
            f"The {len(given)} optimizers from configure_optimizers() hold none of the "
            f"network's {len(trainable)} trainable parameters (they were built on other ones); "
            f"build them on self.net's parameters, e.g. self.net.generator.parameters()."
        )
    if not trainable <= held:
        warnings.warn(
            f"The {len(given)} optimizers from configure_optimizers() hold "
            f"{len(trainable & held)} of the network's {len(trainable)} trainable parameters; "
            f"{len(trainable - held)} will not train. Freeze them (requires_grad=False) if "
            f"that is meant.",
            UserWarning,
            stacklevel=5,
        )
    return given


def several_rates(opts: list[torch.optim.Optimizer]) -> dict[str, float]:
    """The history's learning-rate columns of several optimizers: ``learning_rate-opt<i>``
    (one per param group of each: history.lr_columns)."""
    return {
        key: rate
        for i, opt in enumerate(opts)
        for key, rate in zip(
            lr_columns([g.get("name") for g in opt.param_groups], optimizer=i),
            rates(opt),
            strict=True,
        )
    }


def rates(opt: torch.optim.Optimizer) -> list[float]:
    """Every param group's learning rate, in group order."""
    return [float(group["lr"]) for group in opt.param_groups]  # host sync: a tensor lr, rarely


def group_rates(opt: torch.optim.Optimizer) -> dict[str, float]:
    """The history's learning-rate columns: one per param group (history.lr_columns)."""
    return dict(zip(lr_columns([g.get("name") for g in opt.param_groups]), rates(opt), strict=True))


def scaled_rates(current: list[float], value: float, base: list[float], what: str) -> list[float]:
    """The groups' rates with group 0's set to ``value`` and every other scaled by the same
    factor, so the ratios between groups stay. A group 0 at 0 takes the ratios of ``base``
    (the rates at compile); refused when those cannot say either."""
    for ref in (current, base):
        if ref[0] != 0:
            factor = value / ref[0]
            return [value] + [r * factor for r in ref[1:]]
    if all(r == base[0] for r in base):
        return [value] * len(current)
    raise FitkitValueError(
        f"{what} sets param group 0's learning rate to {value}, and the other groups keep their "
        f"ratio to it; group 0's rate is 0 ({current}), so that ratio is unknown. Set each "
        f"group's rate yourself: model.optimizer.param_groups[i]['lr'] = ..."
    )


def set_rates(opt: torch.optim.Optimizer, values: list[float]) -> None:
    """Set each param group's rate (a tensor lr, as capturable optimizers keep, stays one)."""
    for group, value in zip(opt.param_groups, values, strict=True):
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(value)
        else:
            group["lr"] = value
