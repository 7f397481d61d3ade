"""Safe files: atomic writes and recognising a file's format from its first bytes.

Owns what every saved file shares, whatever the backend: a crash never leaves a half-written
file, and a file of the wrong kind is named before any reader chokes on it. What goes into a
file (weights, training state) is the adapters' weights modules' job.
"""
from __future__ import annotations

import os
import uuid
import warnings
from typing import Any, Callable

from .errors import FitkitValueError


def atomic_write(path: str, write: Callable[[str], Any], *, suffix: str = ".tmp",
                 example: str = "weights.pt") -> None:
    """``write(tmp)`` to a temp file next to ``path``, then rename it over ``path``.

    A crash leaves the old file (or none), never a half-written one; missing folders are made.
    ``suffix`` ends the temp file's name (a writer may insist on one); ``example`` names a
    file for the message when ``path`` is a folder.
    """
    if os.path.isdir(path):
        raise FitkitValueError(f"Cannot save weights to {path!r}: it is a folder. Give a file "
                               f"path, e.g. {os.path.join(path, example)!r}.")
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise FitkitValueError(f"Cannot save weights to {path!r}: {folder!r} is a file, not a "
                               f"folder. Choose another path.")
    base = os.path.basename(path)
    tmp = os.path.join(folder, f".{base}.{uuid.uuid4().hex[:8]}{suffix}")
    try:
        os.makedirs(folder, exist_ok=True)
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    except OSError as err:
        raise FitkitValueError(f"Cannot save weights to {path!r}: {err.strerror or err} "
                               f"({folder!r}). Choose a writable folder.") from err
    try:
        write(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)  # the bytes are on disk before the name points at them
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as err:
        raise FitkitValueError(f"Could not write weights to {path!r}: {err.strerror or err}. "
                               f"Any previous file there is unchanged.") from err
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def sniff(path: str) -> str | None:
    """The file's format from its first bytes: 'hdf5', 'safetensors', 'zip', 'pickle', 'empty'."""
    with open(path, "rb") as f:
        head = f.read(9)
    if not head:
        return "empty"
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return "hdf5"
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") >= 2:
        return "safetensors"
    if head[:1] == b"\x80":
        return "pickle"
    return None


def readable_kind(path: str) -> str | None:
    """The sniffed format of an existing, readable weights file; else a FitkitValueError
    naming the cause (missing, a folder, unreadable)."""
    if not os.path.exists(path):
        raise FitkitValueError(f"No weights file at {path!r}; check the path "
                               f"(save one with model.save_weights).")
    if os.path.isdir(path):
        raise FitkitValueError(f"{path!r} is a folder, not a weights file; give the file's path.")
    try:
        kind = sniff(path)
    except OSError as err:
        raise FitkitValueError(f"Cannot read the weights file {path!r}: "
                               f"{err.strerror or err}.") from err
    return kind


def refuse_mismatch(path: str, report: dict, matched: int, has_own: bool, strict: bool,
                    described: str) -> bool:
    """The load policy, before anything changes: refuse a partial match when ``strict``, and
    a file that matches nothing at all; returns whether entries will be skipped.

    ``report`` holds "missing", "unexpected" and "mismatched" names; ``described`` says them.
    """
    skipped = any(report.values())
    if strict and skipped:
        raise FitkitValueError(
            f"The weights in {path!r} come from another architecture; nothing was loaded. "
            f"{described}. Pass strict=False to load the {matched} entries that match (same "
            f"name and shape).")
    if not matched and has_own:
        raise FitkitValueError(
            f"Nothing in {path!r} matches this network (same name and shape); nothing was "
            f"loaded. {described}.")
    return skipped


def load_report(path: str, report: dict, matched: int, described: str) -> dict:
    """What ``load_weights`` returns, with a warning naming what a partial load skipped."""
    if any(report.values()):
        # stacklevel: this, the weights module, the adapter, Model.load_weights, the caller
        warnings.warn(f"load_weights({path!r}, strict=False) loaded {matched} entries and "
                      f"skipped: {described}.", stacklevel=5)
    return {"missing": report["missing"], "unexpected": report["unexpected"],
            "mismatched": [m[0] for m in report["mismatched"]]}
