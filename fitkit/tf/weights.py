"""Keras weight files: save and load a keras.Model's weights, checked before anything changes.

Owns the '.weights.h5' format (Keras 3's HDF5 layout), atomic writes and the comparison of a
whole file against the network; the facade only passes the path through.
"""

from __future__ import annotations

import io
import os
import tempfile
import zipfile
from typing import Any

import keras

from ..checkpoint import is_state_file, load_report, refuse_mismatch
from ..errors import FitkitTypeError, FitkitValueError
from ..safefiles import atomic_write, bytes_to, readable_kind

_SHOW = 5  # names listed per kind in messages
_SKIP = ("optimizer/",)  # a natively compiled model's optimizer state is not its weights


def _keras_net(net: Any, what: str) -> None:
    if not isinstance(net, keras.Model):
        raise FitkitTypeError(
            f"{what} needs a keras.Model; this network is a "
            f"{type(net).__name__} (use tf.train.Checkpoint)."
        )
    if not net.built:
        raise FitkitValueError(
            f"{what} needs a built network (its variables must exist): call "
            f"it on a batch or net.build(input_shape) first."
        )


# ---------------------------------------------------------------------- save
def save_weights(net: Any, path: str) -> None:
    """A Keras model's weights as a '.weights.h5' file, atomically."""
    if not path.endswith(".weights.h5"):
        raise FitkitValueError(
            f"TensorFlow weights are saved as Keras '.weights.h5' files; "
            f"got {path!r}. Use a path ending in '.weights.h5'."
        )
    _keras_net(net, "save_weights")
    data = _h5_bytes(net)
    atomic_write(path, lambda tmp: bytes_to(tmp, data), example="model.weights.h5")


def _h5_bytes(net: Any) -> bytes:
    """The file Keras's ``net.save_weights`` writes, made in memory: HDF5 never writes to a
    disk, where a full one (or a file size limit) crashed the process inside h5py; the bytes
    are written by ``safefiles.bytes_to``, whose failure is a plain OSError."""
    try:
        from keras.src.saving import saving_lib

        buffer = io.BytesIO()
        store = saving_lib.H5IOStore(buffer, mode="w")
    except (ImportError, AttributeError, TypeError, ValueError):  # another Keras: its own way
        with tempfile.TemporaryDirectory(prefix="fitkit-weights-") as tmp:
            net.save_weights(os.path.join(tmp, "net.weights.h5"))
            with open(os.path.join(tmp, "net.weights.h5"), "rb") as f:
                return f.read()
    try:
        # what keras.saving.save_weights does with a path (arguments by position: their
        # names changed between Keras versions)
        saving_lib._save_state(net, store, None, "", set())
    finally:
        store.close()
    return buffer.getvalue()


# ---------------------------------------------------------------------- read
def _check_file(path: str) -> None:
    """Nothing, for an existing, readable HDF5 file; else a FitkitValueError naming the cause."""
    kind = readable_kind(path)
    if kind == "hdf5":
        return
    fix = "Save Keras weights with model.save_weights('<name>.weights.h5')."
    names = _zip_names(path) if kind == "zip" else None
    if kind == "empty":
        cause = "is empty (0 bytes): its save never finished"
    elif kind == "zip" and is_state_file(path):
        cause = (
            "is a fitkit checkpoint (a whole training state, model.save_checkpoint), not "
            "a weights file: load it with model.load_checkpoint(path)"
        )
        fix = ""
    elif kind == "safetensors":
        cause = (
            "is a safetensors file (torch weights?), not a Keras '.weights.h5' file; load "
            "it into a torch network (FITKIT_BACKEND=torch)"
        )
    elif kind == "zip" and names is None:
        cause = "is a damaged or truncated zip archive, not a Keras '.weights.h5' file"
    elif kind == "zip" and names is not None and "model.weights.h5" in names:
        cause = (
            "is a whole-model '.keras' archive, not a weights file; open it with "
            "keras.saving.load_model(path)"
        )
    elif kind in ("zip", "pickle"):
        cause = (
            "is a torch.save / pickle file, not a Keras '.weights.h5' file; load it into a "
            "torch network (FITKIT_BACKEND=torch)"
        )
    else:
        cause = "is not an HDF5 file: it is corrupt, truncated at the start, or another format"
    raise FitkitValueError(f"The weights file {path!r} {cause}. {fix}".rstrip())


def _zip_names(path: str) -> list[str] | None:
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return None


def _open(path: str) -> Any:
    """The file, open read-only in h5py (truncated or damaged HDF5 gives a FitkitValueError)."""
    import h5py  # comes with keras

    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise FitkitValueError(
            f"The weights file {path!r} is truncated or corrupt ({err}). "
            f"Save the weights again with model.save_weights."
        ) from err


def _entries(h5: Any) -> dict[str, tuple]:
    """{dataset path: (shape, owning layer's name)} of every variable Keras wrote."""
    import h5py

    found: dict[str, tuple] = {}

    def visit(name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Dataset) and not name.startswith(_SKIP):
            found[name] = (tuple(obj.shape), str(obj.parent.attrs.get("name", "")))

    h5.visititems(visit)
    return found


# ---------------------------------------------------------------------- compare, load
def _compare(ours: dict, theirs: dict) -> tuple[list, dict]:
    """(file paths to load, report of what is left out), matching on path and shape."""
    pairs = [k for k in ours if k in theirs and ours[k][0] == theirs[k][0]]
    report = {
        "missing": [k for k in ours if k not in theirs],
        "unexpected": [k for k in theirs if k not in ours],
        "mismatched": [
            (k, theirs[k][0], ours[k][0])
            for k in ours
            if k in theirs and ours[k][0] != theirs[k][0]
        ],
    }
    return pairs, report


def _describe(report: dict, ours: dict, theirs: dict) -> str:
    """One line: the first few names of each kind that did not load, with counts."""

    def few(items: list) -> str:
        more = f" and {len(items) - _SHOW} more" if len(items) > _SHOW else ""
        return f"({len(items)}) {items[:_SHOW]}{more}"

    def named(key: str, table: dict) -> str:
        return f"{key} (layer {table[key][1]})" if table[key][1] else key

    shapes = [f"{named(k, ours)}: file {f} vs net {n}" for k, f, n in report["mismatched"]]
    parts = [
        f"{title} {few(items)}"
        for title, items in (
            ("missing from the file", [named(k, ours) for k in report["missing"]]),
            ("unexpected (not in the network)", [named(k, theirs) for k in report["unexpected"]]),
            ("shape mismatches", shapes),
        )
        if items
    ]
    return "; ".join(parts)


def load_weights(net: Any, path: str, *, strict: bool = True) -> dict:
    """Load a file saved by ``save_weights`` into ``net``; returns what was skipped.

    All or nothing: Keras's own loader assigns layer by layer and stops at the first misfit,
    so the file is never handed to it. Instead the network saves itself (Keras's exact layout
    of its variables) to a temp file, every variable of the user's file is compared with it
    by path and shape, the matching values are copied into a copy of that temp file, and
    Keras loads the copy, which fits by construction; were it still to fail, the network is
    restored from its own saved weights.
    """
    _keras_net(net, "load_weights")
    _check_file(path)
    with tempfile.TemporaryDirectory(prefix="fitkit-weights-") as tmp:
        reference = os.path.join(tmp, "net.weights.h5")
        merged = os.path.join(tmp, "merged.weights.h5")
        own = _h5_bytes(net)
        try:
            for name in (reference, merged):
                with open(name, "wb") as f:
                    f.write(own)
        except OSError as err:
            raise FitkitValueError(
                f"Cannot load {path!r}: no room for the network's own "
                f"weights in a temporary folder ({err.strerror or err}); "
                f"nothing was loaded. Free some space in "
                f"{tempfile.gettempdir()!r}."
            ) from err
        with _open(reference) as ref:
            ours = _entries(ref)
        with _open(path) as src:
            theirs = _entries(src)
            if not theirs and ("layer_names" in src.attrs or "model_weights" in src):
                raise FitkitValueError(
                    f"{path!r} is a legacy Keras 2 (tf.keras) h5 file, not a Keras 3 "
                    f"'.weights.h5' file: load it with net.load_weights(path) in Keras, then "
                    f"re-save it with model.save_weights."
                )
            pairs, report = _compare(ours, theirs)
            described = _describe(report, ours, theirs)
            refuse_mismatch(path, report, len(pairs), bool(ours), strict, described)
            _copy_values(src, merged, pairs, path)
        _load_or_restore(net, merged, reference, path)
    return load_report(path, report, len(pairs), described)


def _copy_values(src: Any, merged: str, pairs: list, path: str) -> None:
    """The file's values of ``pairs`` written over the network's own in ``merged``."""
    import h5py

    try:
        with h5py.File(merged, "r+") as out:
            for key in pairs:
                out[key][...] = src[key][...]
    except (OSError, TypeError, ValueError) as err:
        raise FitkitValueError(
            f"The weights file {path!r} is corrupt: a variable could not be "
            f"read ({err}). Nothing was loaded; save the weights again."
        ) from err


def _load_or_restore(net: Any, merged: str, reference: str, path: str) -> None:
    try:
        net.load_weights(merged)
    except Exception as err:
        try:
            net.load_weights(reference)
        except Exception:  # noqa: BLE001 - whatever stops the restore, the report is the same
            raise FitkitValueError(
                f"Keras failed part-way through loading {path!r} ({err}), "
                f"and the previous weights could not be put back."
            ) from err
        raise FitkitValueError(
            f"Keras could not load {path!r} ({err}); the network keeps its previous weights."
        ) from err
