"""Training controls in a torch step: backward, gradient accumulation, fp16 loss scaling,
clipping, the optimizer step and a batch scheduler's call after it; also the precision
context and torch.compile; under DDP, each process's loss weighed by its rows. The checks of
the arguments are fitkit/controls.py's, the schedules fitkit/torch/schedules.py's, checkpoint
files fitkit/torch/state.py's, the process group fitkit/torch/distribute.py's.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ..controls import TrainingControls
from ..errors import FitkitError


def precision_context(device: torch.device, precision: str) -> Any:
    """One reusable context: autocast for bf16 / fp16, a no-op for full precision."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision == "fp16":
        return torch.autocast(device.type, dtype=torch.float16)
    return contextlib.nullcontext()


def needs_update(controls: TrainingControls) -> bool:
    """True when a step needs more than zero_grad, backward, step (the default path)."""
    return (
        controls.clips
        or controls.gradient_accumulation_steps > 1
        or controls.precision == "fp16"
        or controls.jit_compile
        or (controls.lr_schedule is not None and controls.lr_schedule_every == "batch")
    )


def compile_step(step: Callable, device: torch.device | None = None) -> Callable:
    """``step`` under torch.compile (jit_compile=True); a clear error where it cannot run.

    ``device`` (the train step's): on the CPU, the first call's compilation is timed and a
    warning gives that time and when compiling pays off there (``_CPU_JIT_ADVICE``).
    """
    if not torch._dynamo.is_dynamo_supported():
        raise FitkitError(
            "jit_compile=True needs torch.compile, which this Python / platform "
            "does not support; compile with jit_compile=False."
        )
    compiled = torch.compile(step)
    timing = [device is not None and device.type == "cpu"]  # until the first call

    def run(batch: Any) -> Any:
        try:
            if timing[0]:
                timing[0] = False
                start = time.perf_counter()
                out = compiled(batch)
                _warn_cpu_compile(time.perf_counter() - start)
                return out
            return compiled(batch)
        except torch._dynamo.exc.BackendCompilerFailed as err:
            raise FitkitError(
                f"jit_compile=True: torch.compile could not compile the step "
                f"({type(err).__name__}: {str(err)[:300]}). Compile with "
                f"jit_compile=False."
            ) from err

    return run


# Measured with benchmarks/jit_cpu.py (2-core CPU, torch 2.13, 1 thread, 2026-12-08).
_CPU_JIT_ADVICE = (
    "On the CPU, compiling pays off only where a step's compute outweighs the compiled "
    "graphs' per-call overhead and the run is long enough to recover the compilation: "
    "measured (benchmarks/jit_cpu.py, 2 cores), a small CNN's epochs ran 0.69x eager's "
    "after a 26 s compile, a 3-layer MLP's 1.1-1.4x eager's (slower) after 33 s. For small "
    "models or short runs compile with jit_compile=False (docs/performance.md, 'jit_compile')."
)


def _warn_cpu_compile(seconds: float) -> None:
    """The CPU's jit_compile warning, with this step's measured compile time."""
    warnings.warn(
        f"jit_compile=True on the CPU: torch.compile took {seconds:.1f} s to compile the "
        f"train step (its first call). {_CPU_JIT_ADVICE}",
        UserWarning,
        stacklevel=2,
    )


class Update:
    """What follows a train step's loss: backward, accumulation, scaling, clipping, step.

    Gradient accumulation gives exactly the update of one N-times larger batch: losses are
    means over a batch's rows, so each batch's loss is weighted by its rows (relative to the
    window's first batch, so gradients keep their usual size under fp16 scaling) and the
    window's sum is divided by its rows before clipping. ``finish`` applies a last partial
    window. Clipping follows Keras: ``clipnorm`` per gradient (g * c / max(|g|, c)),
    ``global_clipnorm`` all together (``clip_grad_norm_``), then ``clipvalue`` per element.
    fp16 uses ``torch.amp.GradScaler`` (CPU too); gradients are unscaled before clipping.
    The scaler reads its inf check on the host at each update unless the optimizer is fused
    (the portable "sgd", "adam", "adamw", "adagrad" are), a GradScaler design.
    Counters are Python ints and row counts come from shapes: no host sync.

    Under DDP (``comm``, every step of a fit goes through here) rows are counted over every
    process: a process's loss is weighed by ``rows * world_size`` against the window's first
    global batch, so DDP's average over processes is the global mean even for an uneven last
    batch; a window's non-final batches skip DDP's all-reduce (``syncs_next``), and a
    partial window at the epoch's end is averaged by hand (``finish``).
    """

    def __init__(self, adapter: Any, controls: TrainingControls, comm: Any = None) -> None:
        self.adapter = adapter  # its optimizer and scheduler are read at each update
        self.comm = comm  # DDP's (fitkit/torch/distribute.py), or None
        self.world = comm.world_size if comm is not None else 1
        self.steps = controls.gradient_accumulation_steps
        self.clipnorm, self.clipvalue = controls.clipnorm, controls.clipvalue
        self.global_clipnorm = controls.global_clipnorm
        self.clips = controls.clips
        self.scaler = (
            torch.amp.GradScaler(adapter.device.type) if controls.precision == "fp16" else None
        )
        # jit_compile: the update runs outside the compiled graph (backward still runs
        # AOTAutograd's compiled backward); forward, loss and metrics are compiled.
        self.run = torch.compiler.disable(self.step) if controls.jit_compile else self.step
        self.count = 0  # batches in the pending window
        self.rows = 0  # their rows
        self.first = 0  # the rows of the window's first batch (the loss weights' unit)

    @property
    def stateful(self) -> bool:
        """True when a checkpoint must save this (a pending window, a loss scale)."""
        return self.steps > 1 or self.scaler is not None

    def params(self) -> list[torch.Tensor]:
        return [
            p
            for g in self.adapter.optimizer.param_groups
            for p in g["params"]
            if p.grad is not None
        ]

    def syncs_next(self) -> bool:
        """True when the coming batch completes a window (DDP all-reduces its gradients)."""
        return self.count + 1 >= self.steps

    def step(self, loss: torch.Tensor, rows: int) -> None:
        """One batch's loss: backward into the window; the update at the window's end."""
        total = rows if self.comm is None else self.comm.total_rows(rows)
        if self.count == 0:
            self.adapter.optimizer.zero_grad(set_to_none=True)
            self.first = total
        weight = rows * self.world
        if weight != self.first:
            loss = loss * (weight / self.first)
        (loss if self.scaler is None else self.scaler.scale(loss)).backward()
        self.count += 1
        self.rows += total
        if self.count == self.steps:
            self.apply()

    def finish(self) -> None:
        """Apply a pending (partial) window; nothing when none is pending."""
        if self.count:
            if self.comm is not None:  # its batches skipped DDP's all-reduce
                self.comm.average([p.grad for p in self.params()])
            self.apply()

    def apply(self) -> None:
        optimizer, scaler = self.adapter.optimizer, self.scaler
        ratio = self.first / self.rows
        if ratio != 1.0 or self.clips:
            params = self.params()
            grads = [p.grad for p in params if p.grad is not None]  # params() has grads
            if ratio != 1.0 and grads:
                torch._foreach_mul_(grads, ratio)
            if self.clips and grads:
                if scaler is not None:
                    scaler.unscale_(optimizer)
                self.clip(params, grads)
        if scaler is None:
            optimizer.step()
        else:
            scaler.step(optimizer)  # host sync: a non-fused optimizer's inf check (GradScaler)
            scaler.update()
        self.count = self.rows = 0
        scheduler = self.adapter.scheduler
        if scheduler is not None and scheduler.every == "batch":
            scheduler.after_update()

    def clip(self, params: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
        if self.clipnorm is not None:  # Keras's clip_by_norm, per gradient
            scales = torch._foreach_maximum(torch._foreach_norm(grads), self.clipnorm)
            torch._foreach_reciprocal_(scales)
            torch._foreach_mul_(scales, self.clipnorm)
            torch._foreach_mul_(grads, scales)
        if self.global_clipnorm is not None:
            torch.nn.utils.clip_grad_norm_(params, self.global_clipnorm, foreach=True)
        if self.clipvalue is not None:
            torch.nn.utils.clip_grad_value_(params, self.clipvalue, foreach=True)

    # ------------------------------------------------------------------ checkpoints
    def state(self) -> dict[str, np.ndarray]:
        """The pending window (counters and gradients) and the loss scale, as numpy."""
        out = {
            "count": np.array(self.count),
            "rows": np.array(self.rows),
            "first": np.array(self.first),
        }
        if self.count:
            params = [p for g in self.adapter.optimizer.param_groups for p in g["params"]]
            for i, p in enumerate(params):
                if p.grad is not None:
                    out[f"grad/{i}"] = p.grad.detach().cpu().numpy().copy()  # host sync: save
        if self.scaler is not None:
            scaler = self.scaler.state_dict()  # host sync: a checkpoint
            out["scaler/scale"] = np.array(scaler["scale"])
            out["scaler/growth"] = np.array(scaler["_growth_tracker"])
        return out

    def load(self, saved: dict) -> None:
        self.count, self.rows = int(saved["count"]), int(saved["rows"])
        self.first = int(saved["first"])
        params = [p for g in self.adapter.optimizer.param_groups for p in g["params"]]
        for i, p in enumerate(params):
            key = f"grad/{i}"
            p.grad = (
                torch.as_tensor(saved[key]).to(device=p.device, dtype=p.dtype)
                if key in saved
                else None
            )
        if self.scaler is not None and "scaler/scale" in saved:
            state = self.scaler.state_dict()
            state.update(
                scale=float(saved["scaler/scale"]), _growth_tracker=int(saved["scaler/growth"])
            )
            self.scaler.load_state_dict(state)
