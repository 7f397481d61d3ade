"""Torch weight files: save and load a network's state dict, checked before anything changes.

Owns the file formats (.safetensors, else torch.save read back with weights_only), atomic
writes, tied tensors, wrapper prefixes (DDP's ``module.``, torch.compile's ``_orig_mod.``)
and the comparison of a whole file against the network; the facade only passes the path.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import struct
import zipfile
from typing import Any

import torch

from ..checkpoint import is_state_file, load_report, refuse_mismatch
from ..errors import FitkitValueError
from ..safefiles import atomic_write, readable_kind, stream_to, unbounded_member

_TIED = "fitkit.tied"  # safetensors metadata: {"alias": "name saved once"} for shared tensors
_SHOW = 5  # names listed per kind in messages
# What torch.load raises on a damaged or foreign file, by type (measured on torch 2.13 with
# truncated, flipped and random bytes): its zip reader a RuntimeError, its weights-only
# unpickler an UnpicklingError, EOFError, struct.error, ValueError (UnicodeDecodeError too) or,
# from a garbled stack or memo, IndexError / KeyError. Anything else is a bug: it propagates.
_UNREADABLE = (
    pickle.UnpicklingError,
    RuntimeError,
    EOFError,
    ValueError,
    LookupError,
    struct.error,
)


# ---------------------------------------------------------------------- save
def save_weights(net: torch.nn.Module, path: str) -> None:
    """``net``'s state dict as .safetensors (by suffix) or a torch.save file, atomically."""
    state = net.state_dict()
    if path.endswith(".safetensors"):
        save_file = _safetensors().torch.save_file  # optional dependency, asked for by suffix

        others = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
        if others:
            raise FitkitValueError(
                f"Cannot save {path!r} as .safetensors: it holds tensors only, and the state dict "
                f"has non-tensor entries {others[:_SHOW]}. Use a '.pt' path instead."
            )
        tensors, aliases = _untie(state)
        metadata = {_TIED: json.dumps(aliases)} if aliases else None

        def write(tmp: str) -> None:
            try:
                save_file(tensors, tmp, metadata=metadata)
            except _safetensors().SafetensorError as err:  # its I/O errors, as OSErrors
                raise _os_error(err) from err

        atomic_write(path, write)
    else:
        # through Python's file I/O: a full disk is an OSError (torch's own writer says
        # only "unexpected pos" / "basic_ios::clear")
        atomic_write(path, lambda tmp: stream_to(tmp, lambda f: torch.save(state, f)))


def _untie(state: dict) -> tuple[dict, dict]:
    """Each shared tensor once (safetensors refuses shared memory) and {alias: kept name}.

    Identical views of one storage (tied parameters) are saved once and re-tied on load;
    different views of one storage (rare) are saved as independent copies.
    """
    tensors: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    by_storage: dict[int, list[str]] = {}
    for name, t in state.items():
        if t.numel() == 0:
            tensors[name] = t.contiguous()
        else:
            by_storage.setdefault(t.untyped_storage().data_ptr(), []).append(name)
    for names in by_storage.values():
        views: dict[tuple, str] = {}
        for name in names:
            t = state[name]
            view = (t.storage_offset(), tuple(t.shape), t.stride(), t.dtype)
            if view in views:
                aliases[name] = views[view]
            else:
                views[view] = name
        for name in views.values():
            t = state[name]
            tensors[name] = (
                t.clone(memory_format=torch.contiguous_format) if len(views) > 1 else t.contiguous()
            )
    return tensors, aliases


# ---------------------------------------------------------------------- read
def _check_file(path: str) -> str | None:
    """The sniffed format of an existing, readable, non-empty file, else a FitkitValueError."""
    kind = readable_kind(path)
    if kind == "empty":
        raise FitkitValueError(
            f"The weights file {path!r} is empty (0 bytes): its save never "
            f"finished. Save the weights again."
        )
    if kind == "hdf5":
        raise FitkitValueError(
            f"{path!r} is an HDF5 file (a Keras '.weights.h5'?), not a torch weights file. "
            f"Load it into a Keras network (FITKIT_BACKEND=tensorflow), or save torch weights "
            f"as '.pt' / '.safetensors' with model.save_weights."
        )
    if kind == "zip" and is_state_file(path):
        raise FitkitValueError(
            f"{path!r} is a fitkit checkpoint (a whole training state, model.save_checkpoint), "
            f"not a weights file: load it with model.load_checkpoint(path)."
        )
    if kind == "zip":
        _check_zip(path)
    return kind


def _check_zip(path: str) -> None:
    """A torch.save zip whose members are stored within the file (torch never compresses):
    a crafted compressed member would inflate to any size in torch's reader."""
    try:
        with zipfile.ZipFile(path) as archive:
            unbounded = unbounded_member(path, archive)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return  # damaged: torch.load names it below
    if unbounded:
        raise FitkitValueError(
            f"Refused to load {path!r}: {unbounded}. torch.save never compresses its members, "
            f"so the file was altered or crafted; nothing was read. Save the weights again "
            f"with model.save_weights."
        )


def _read(path: str) -> dict:
    """The file's tensors by name, on the CPU; shared tensors of a .safetensors are re-tied."""
    kind = _check_file(path)
    if kind == "safetensors" or (kind is None and path.endswith(".safetensors")):
        return _read_safetensors(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except _UNREADABLE as err:  # torch's text advises weights_only=False: it is never shown
        text = str(err)
        if _refused_global(err) or (kind == "pickle" and isinstance(err, pickle.UnpicklingError)):
            raise FitkitValueError(
                f"Refused to load {path!r}: it holds pickled Python objects (e.g. a whole "
                f"nn.Module saved with torch.save(net)), not just tensors. Unpickling them can "
                f"run arbitrary code, so fitkit reads tensors only, for safety. Re-save just the "
                f"weights where the file was made: model.save_weights(path), or "
                f"torch.save(net.state_dict(), path)."
            ) from None
        cause = (
            "it ends too early"
            if isinstance(err, EOFError)
            else text.split(". ")[0]
            if isinstance(err, RuntimeError) and "weights_only" not in text
            else "its data is not a readable tensor file"
        )
        raise FitkitValueError(
            f"The weights file {path!r} is truncated or corrupt, or not a torch weights file "
            f"({cause}). Save the weights again with model.save_weights."
        ) from None
    if not isinstance(state, dict):
        raise FitkitValueError(
            f"{path!r} holds a {type(state).__name__}, not a state dict. "
            f"Save weights with model.save_weights or "
            f"torch.save(net.state_dict(), path)."
        )
    others = [
        k
        for k, v in state.items()
        if not isinstance(v, torch.Tensor) and not str(k).endswith("_extra_state")
    ]
    if others:
        raise FitkitValueError(
            f"{path!r} is not a state dict: entries {others[:_SHOW]} are not tensors (a training "
            f"checkpoint?). Take its state dict out, e.g. torch.save(ckpt['state_dict'], path), "
            f"or save with model.save_weights."
        )
    return state


def _os_error(err: Exception) -> OSError:
    """A SafetensorError from a failed write as the OSError it wraps. safetensors raises one
    type for every failure and gives the errno only in its text ("... os error 28"), so this
    one function reads it; tests/torch/test_torch_errors.py pins it on the pinned version."""
    code = re.search(r"os error (\d+)", str(err))
    return OSError(int(code[1]), os.strerror(int(code[1]))) if code else OSError(str(err))


def _refused_global(err: BaseException) -> bool:
    """Whether torch's weights-only unpickler refused a pickled Python object (an nn.Module,
    any class instance) rather than failed on damaged bytes. Both are the same
    UnpicklingError and only the text names the refused global, so this one test reads it;
    tests/torch/test_torch_errors.py pins it on the pinned torch."""
    return isinstance(err, pickle.UnpicklingError) and "Unsupported global" in str(err)


def _read_safetensors(path: str) -> dict:
    safetensors = _safetensors()
    try:
        with safetensors.safe_open(path, framework="pt", device="cpu") as f:
            state = {k: f.get_tensor(k) for k in f.keys()}
            aliases = json.loads((f.metadata() or {}).get(_TIED, "{}"))
    except (safetensors.SafetensorError, ValueError) as err:  # ValueError: the tie metadata
        raise FitkitValueError(
            f"The weights file {path!r} is truncated or corrupt, or not a safetensors file "
            f"({err}). Save the weights again with model.save_weights."
        ) from err
    for alias, kept in aliases.items():
        if kept in state:
            state[alias] = state[kept]
    return state


# ---------------------------------------------------------------------- compare, load
def _canonical(keys: list[str]) -> dict[str, str]:
    """{name without wrapper prefixes: name}: torch.compile's ``_orig_mod`` anywhere, and a
    ``module.`` (DataParallel / DDP) shared by every key. Names as they are if that collides."""
    names = {k: ".".join(p for p in k.split(".") if p != "_orig_mod") for k in keys}
    while names and all(v.startswith("module.") for v in names.values()):
        names = {k: v[len("module.") :] for k, v in names.items()}
    out = {v: k for k, v in names.items()}
    return out if len(out) == len(keys) else {k: k for k in keys}


def _ties(own: dict) -> list[list[str]]:
    """Groups of the network's entry names that are the very same tensor (tied weights)."""
    groups: dict[tuple, list[str]] = {}
    for k, v in own.items():
        if isinstance(v, torch.Tensor) and v.numel():
            key = (v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape), v.stride())
            groups.setdefault(key, []).append(k)
    return [g for g in groups.values() if len(g) > 1]


def _shape(value: Any) -> Any:
    return tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__


def _compare(own: dict, state: dict) -> tuple[dict, dict]:
    """({net name: file name} of the entries to load, report of the ones left out).

    Names match after wrapper prefixes are set aside; a tied tensor the file holds under
    only one of its names (safetensors' save_model) loads through that name.
    """
    ours, theirs = _canonical(list(own)), _canonical(list(state))
    pairs, mismatched, used = {}, [], set()
    for canon, name in ours.items():
        if canon in theirs:
            key = theirs[canon]
            used.add(key)
            if _shape(own[name]) == _shape(state[key]):
                pairs[name] = key
            else:
                mismatched.append((name, _shape(state[key]), _shape(own[name])))
    bad = {m[0] for m in mismatched}
    for group in _ties(own):
        found = [pairs[name] for name in group if name in pairs]
        for name in group:
            if found and name not in pairs and name not in bad:
                pairs[name] = found[0]
    report = {
        "missing": [k for k in own if k not in pairs and k not in bad],
        "unexpected": [k for k in state if k not in used],
        "mismatched": mismatched,
    }
    return pairs, report


def _describe(report: dict) -> str:
    """One line: the first few names of each kind that did not load, with counts."""

    def few(items: list) -> str:
        more = f" and {len(items) - _SHOW} more" if len(items) > _SHOW else ""
        return f"({len(items)}) {items[:_SHOW]}{more}"

    shapes = [f"{k}: file {f} vs net {n}" for k, f, n in report["mismatched"]]
    parts = [
        f"{title} {few(items)}"
        for title, items in (
            ("missing from the file", report["missing"]),
            ("unexpected (not in the network)", report["unexpected"]),
            ("shape mismatches", shapes),
        )
        if items
    ]
    return "; ".join(parts)


def load_weights(
    net: torch.nn.Module, path: str, *, device: Any = None, strict: bool = True
) -> dict:
    """Load a file saved by ``save_weights`` into ``net``; returns what was skipped.

    The whole file is read and compared with the network first; nothing changes unless it
    fits (``strict=True``) or unless something matches (``strict=False``). Tensors are read on
    the CPU and copied into the network's own parameters wherever they live (``device``), so
    the accelerator never holds two copies; ties between parameters stay ties.
    """
    state = _read(path)
    own = net.state_dict()
    pairs, report = _compare(own, state)
    described = _describe(report)
    skipped = refuse_mismatch(path, report, len(pairs), bool(own), strict, described)
    net.load_state_dict({name: state[key] for name, key in pairs.items()}, strict=not skipped)
    return load_report(path, report, len(pairs), described)


def _safetensors() -> Any:
    """The safetensors package (with its torch part), or a clear error saying how to install
    it: it is an optional extra."""
    try:
        import safetensors
        import safetensors.torch
    except ImportError as err:
        raise FitkitValueError(
            "'.safetensors' files need the safetensors package: "
            "pip install safetensors (or use a '.pt' path)."
        ) from err
    return safetensors
