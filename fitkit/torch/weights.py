"""Torch weight files: save and load a network's state dict, checked before anything changes.

Owns file formats (.safetensors by suffix, else torch.save with weights_only loading) and
the comparison of a file against the network; the facade only passes the path through.
"""
from __future__ import annotations

import os

import torch

from ..errors import FitkitValueError


def save_weights(net: torch.nn.Module, path: str) -> None:
    """``net``'s state dict as .safetensors (by suffix) or a torch.save file."""
    state = net.state_dict()
    if path.endswith(".safetensors"):
        from safetensors.torch import save_file  # optional dependency, asked for by suffix

        save_file({k: v.contiguous() for k, v in state.items()}, path)
    else:
        torch.save(state, path)


def load_weights(net: torch.nn.Module, path: str, *, device: torch.device,
                 strict: bool = True) -> dict:
    """Load a file saved by ``save_weights`` into ``net``; returns what was skipped."""
    if not os.path.isfile(path):
        raise FitkitValueError(f"No weights file at {path!r}; check the path "
                               f"(save one with model.save_weights).")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        state = load_file(path, device=str(device))
    else:
        state = torch.load(path, map_location=device, weights_only=True)
    own = net.state_dict()
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
    net.load_state_dict(state)
    return {"missing": [], "unexpected": [], "mismatched": []}
