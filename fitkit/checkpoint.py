"""The backend-free training-state file (``save_state`` / ``load_state`` /
``describe_state``) and the load policy both weights modules share (``refuse_mismatch``).

Owns the checkpoint format: a file of the wrong kind is named before any reader chokes on
it. Byte-level safety (atomic writes, regular files, bounded zip reads) is safefiles.py's;
what goes into a weights file is the adapters' weights modules' job; what goes into a
training state (which arrays, which meta) is the adapters' ``get_state()`` / ``set_state()``'s.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import warnings
import zipfile
import zlib
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import numpy as np
from numpy.lib import format as npformat

from .errors import FitkitTypeError, FitkitValueError
from .safefiles import atomic_write, readable_kind, sniff, unbounded_member


def refuse_mismatch(
    path: str, report: dict, matched: int, has_own: bool, strict: bool, described: str
) -> bool:
    """The load policy, before anything changes: refuse a partial match when ``strict``, and
    a file that matches nothing at all; returns whether entries will be skipped.

    ``report`` holds "missing", "unexpected" and "mismatched" names; ``described`` says them.
    """
    skipped = any(report.values())
    if strict and skipped:
        raise FitkitValueError(
            f"The weights in {path!r} come from another architecture; nothing was loaded. "
            f"{described}. Pass strict=False to load the {matched} entries that match (same "
            f"name and shape)."
        )
    if not matched and has_own:
        raise FitkitValueError(
            f"Nothing in {path!r} matches this network (same name and shape); nothing was "
            f"loaded. {described}."
        )
    return skipped


def load_report(path: str, report: dict, matched: int, described: str) -> dict:
    """What ``load_weights`` returns, with a warning naming what a partial load skipped."""
    if any(report.values()):
        # stacklevel: this, the weights module, the adapter, Model.load_weights, the caller
        warnings.warn(
            f"load_weights({path!r}, strict=False) loaded {matched} entries and "
            f"skipped: {described}.",
            stacklevel=5,
        )
    return {
        "missing": report["missing"],
        "unexpected": report["unexpected"],
        "mismatched": [m[0] for m in report["mismatched"]],
    }


# ---------------------------------------------------------------------- training-state files
# format 2: meta["fit"] is always present and torch optimizers name their class; format-1
# files load with those filled in
FORMAT, VERSION = "fitkit-checkpoint", 2
HEADER = "fitkit.json"  # the zip member that holds the JSON header
_KINDS = "biufc"  # bool, signed and unsigned ints, floats, complex: never objects
_DAMAGE = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    OSError,
    EOFError,
    ValueError,
    KeyError,
    IndexError,
    TypeError,
    struct.error,
    zlib.error,
    NotImplementedError,
    RuntimeError,
    OverflowError,
    MemoryError,
)  # what a damaged zip / .npy / JSON header raises
_SAVED_BY = (
    "Checkpoints are saved by model.save_checkpoint (or the BackupAndRestore callback) "
    "and loaded with model.load_checkpoint."
)


def save_state(path: str, arrays: dict[str, np.ndarray], meta: dict) -> None:
    """Write a whole training state to one file at ``path``, atomically.

    Layout: the file is a zip archive, uncompressed, that is also a valid numpy ``.npz``
    (``np.load(path)`` opens it). It holds

    - ``fitkit.json``: a UTF-8 JSON header, ``{"format": "fitkit-checkpoint", "version": 1,
      "arrays": {key: {"dtype": "float32", "shape": [3, 4]}, ...}, "meta": meta}``; the
      arrays are listed in the order they were given, and load back in that order;
    - one ``.npy`` member per array, named ``quote(key, safe="") + ".npy"`` (URL-encoded, so
      a key such as ``"net/linear.weight"``, ``"optimizer/state/0/exp_avg"`` or
      ``"rng/numpy"`` is stored flat as ``net%2Flinear.weight.npy``: no folders, no ``..``).

    ``arrays``: {non-empty str key: numpy array (or numpy scalar)} of dtype bool, int8-64,
    uint8-64, float16/32/64 or complex64/128; any shape, 0-d and empty included; values come
    back bit-identical, in native byte order. Objects, strings and structured dtypes are
    refused (a checkpoint never holds pickles). bfloat16 (and other ml_dtypes) is the
    caller's to convert: store ``a.view(np.uint16)`` and record the dtype in ``meta``
    (e.g. ``meta["dtypes"][key] = "bfloat16"``), then view it back after loading.

    ``meta``: a dict that JSON can hold: str keys, str / int / float (NaN and infinities
    included) / bool / None / lists / dicts; numpy scalars are stored as Python numbers and
    tuples come back as lists. It is the caller's free space: epoch, step, optimizer
    hyper-parameters, backend, RNG descriptions.

    Safety: the file is written to ``.<name>.<8 hex>.tmp`` in the same folder, flushed,
    fsynced and renamed over ``path``, so a crash, a full disk or a killed process leaves the
    previous file whole. A killed process may leave such a temp file behind: it is never
    read, and safe to delete. Loading never unpickles (see ``load_state``).
    """
    arrays = _checked_arrays(path, arrays)
    if not isinstance(meta, dict):
        raise FitkitTypeError(
            f"Cannot save the checkpoint {path!r}: meta must be a dict, got {type(meta).__name__}."
        )
    _check_meta(path, meta, "meta")
    header = {
        "format": FORMAT,
        "version": VERSION,
        "meta": meta,
        "arrays": {k: {"dtype": a.dtype.name, "shape": list(a.shape)} for k, a in arrays.items()},
    }
    # numpy scalars are JSON's only fallback (_check_meta let nothing else by)
    blob = json.dumps(header, ensure_ascii=False, default=lambda v: v.item()).encode("utf-8")

    def write(tmp: str) -> None:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
            archive.writestr(HEADER, blob)
            for key, value in arrays.items():
                with archive.open(_member(key), "w", force_zip64=True) as f:
                    npformat.write_array(f, value, allow_pickle=False)

    atomic_write(path, write, example="checkpoint.fitkit", what="the checkpoint")


def load_state(path: str) -> tuple[dict[str, np.ndarray], dict]:
    """``(arrays, meta)`` exactly as ``save_state`` was given them (see its layout).

    Never unpickles. Everything is checked before any array is built: the file exists and
    is a fitkit checkpoint of a known version, its members are exactly those its header
    lists, and each member's dtype (numbers only) and shape match the header; the array
    data's CRC is checked as it is read. Anything else is a FitkitValueError naming the file
    and what to do: a missing or empty file, a damaged or truncated one, a torch.save /
    pickle / Keras / safetensors file (weights: ``model.load_weights``), a crafted archive
    holding Python objects. Temp files a killed save left behind are ignored.
    """
    with _open_state(path) as (archive, header, infos):
        try:
            arrays = {}
            for key, info in zip(header["arrays"], infos, strict=True):  # checked: the same members
                with archive.open(info) as f:
                    arrays[key] = npformat.read_array(f, allow_pickle=False)
        except _DAMAGE as err:
            raise _damaged(path, err) from None
    return arrays, header["meta"]


def describe_state(path: str) -> dict:
    """A checkpoint's header, reading each array's .npy header but not its data: ``{"format",
    "version", "meta", "arrays": {key: {"dtype", "shape"}}}``. The same checks and refusals
    as ``load_state``, but the array data is fully checked (CRC) only by ``load_state``."""
    with _open_state(path) as (_, header, _):
        return header


def is_state_file(path: str) -> bool:
    """Whether ``path`` looks like a fitkit checkpoint (a zip with fitkit's header member):
    for a weights loader to point at ``model.load_checkpoint``. Never raises."""
    try:
        if not os.path.isfile(path) or sniff(path) != "zip":
            return False
        with zipfile.ZipFile(path) as archive:
            return HEADER in archive.namelist()
    except _DAMAGE:
        return False


# ---------------------------------------------------------------------- state: helpers
def _member(key: str) -> str:
    return quote(key, safe="") + ".npy"


def _checked_arrays(path: str, arrays: Any) -> dict[str, np.ndarray]:
    if not isinstance(arrays, dict):
        raise FitkitTypeError(
            f"Cannot save the checkpoint {path!r}: arrays must be a dict "
            f"{{name: numpy array}}, got {type(arrays).__name__}."
        )
    out = {}
    for key, value in arrays.items():
        where = f"Cannot save the checkpoint {path!r}: arrays[{key!r}]"
        if not isinstance(key, str) or not key:
            raise FitkitTypeError(
                f"Cannot save the checkpoint {path!r}: array names must be "
                f"non-empty strings; got {key!r}."
            )
        if isinstance(value, np.generic):
            value = np.asarray(value)
        if not isinstance(value, np.ndarray):
            raise FitkitTypeError(
                f"{where} is a {type(value).__name__}, not a numpy array. "
                f"Convert it first (a tensor: .numpy() on the CPU)."
            )
        dtype = value.dtype
        if dtype.kind not in _KINDS or dtype.fields is not None or dtype.subdtype is not None:
            hint = (
                " Store a.view(np.uint16) and record the dtype in meta."
                if "bfloat16" in str(dtype)
                else " A checkpoint holds numbers only, never objects."
            )
            raise FitkitTypeError(
                f"{where} has dtype {dtype}: give bool, int, uint, float16/"
                f"32/64 or complex arrays.{hint}"
            )
        out[key] = value if dtype.isnative else value.astype(dtype.newbyteorder("="))
    return out


def _check_meta(path: str, value: Any, where: str) -> None:
    """Refuse what JSON would change silently (non-str keys) or cannot hold, by its place."""
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise FitkitTypeError(
                    f"Cannot save the checkpoint {path!r}: {where} has the "
                    f"key {k!r}; meta keys must be strings (JSON)."
                )
            _check_meta(path, v, f"{where}[{k!r}]")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_meta(path, v, f"{where}[{i}]")
    elif not isinstance(value, (str, int, float, bool, type(None), np.bool_, np.number)):
        raise FitkitTypeError(
            f"Cannot save the checkpoint {path!r}: {where} is a {type(value).__name__}; meta "
            f"holds JSON values only (str, numbers, bool, None, lists, dicts). Put arrays in "
            f"arrays, and describe other objects with plain values."
        )


def _damaged(path: str, err: BaseException) -> FitkitValueError:
    cause = str(err).strip().split("\n")[0] or type(err).__name__
    return FitkitValueError(
        f"The checkpoint file {path!r} is truncated or corrupt ({cause[:200]}): its save did "
        f"not finish, or it was damaged since; nothing was loaded. Load an earlier checkpoint, "
        f"or save a new one with model.save_checkpoint."
    )


def _foreign(path: str, kind: str | None, names: list[str] | None = None) -> FitkitValueError:
    weights = "If it holds weights, load them with model.load_weights(path)."
    if kind == "empty":
        return FitkitValueError(
            f"The checkpoint file {path!r} is empty (0 bytes): its save "
            f"never finished. Load an earlier checkpoint, or save again."
        )
    if kind == "pickle":
        return FitkitValueError(
            f"Refused to load {path!r} as a checkpoint: it is a pickle file (what pickle.dump "
            f"or torch.save writes), and unpickling can run arbitrary code; fitkit checkpoints "
            f"never hold pickles. {weights} {_SAVED_BY}"
        )
    if kind == "hdf5":
        cause = "it is an HDF5 file (a Keras '.weights.h5')"
    elif kind == "safetensors":
        cause = "it is a safetensors weights file"
    elif kind == "header":
        cause = f"its {HEADER!r} is not a fitkit checkpoint header"
    elif names is not None and any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
        cause = "it is a torch.save file (a zip of pickled data), never unpickled here"
    elif names is not None and "model.weights.h5" in names:
        cause = "it is a whole-model '.keras' archive; open it with keras.saving.load_model(path)"
    elif names is not None:
        cause = f"it is a zip archive without fitkit's {HEADER!r} header"
    else:
        cause = "it is another format, or damaged at its start"
    return FitkitValueError(f"{path!r} is not a fitkit checkpoint: {cause}. {weights} {_SAVED_BY}")


@contextlib.contextmanager
def _open_state(path: str) -> Iterator[tuple[zipfile.ZipFile, dict, list]]:
    """The open zip of a checkpoint, its header and its array members' ZipInfos, all checked
    (no array data read); a FitkitValueError for any other file."""
    kind = readable_kind(path, "checkpoint", "model.save_checkpoint")
    if kind != "zip":
        raise _foreign(path, kind)
    try:
        archive = zipfile.ZipFile(path)
    except _DAMAGE as err:
        raise _damaged(path, err) from None
    with archive:
        try:
            header = _read_header(path, archive)
            infos = [
                _checked_member(path, archive, key, spec) for key, spec in header["arrays"].items()
            ]
        except FitkitValueError:
            raise
        except _DAMAGE as err:
            raise _damaged(path, err) from None
        yield archive, header, infos


def _read_header(path: str, archive: zipfile.ZipFile) -> dict:
    names = archive.namelist()
    if HEADER not in names:
        raise _foreign(path, "zip", names)
    unbounded = unbounded_member(path, archive)
    if unbounded:  # refused before a byte is inflated: memory stays bounded
        raise FitkitValueError(
            f"Refused to load {path!r}: {unbounded}. fitkit checkpoints store every member "
            f"uncompressed, within the file, so this one was not written by fitkit or was "
            f"altered; nothing was read. {_SAVED_BY}"
        )
    header = json.loads(archive.read(HEADER).decode("utf-8"))
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise _foreign(path, "header")
    version = header.get("version")
    if type(version) is not int or version not in (1, VERSION):
        newer = type(version) is int and version > VERSION
        raise FitkitValueError(
            f"{path!r} is a fitkit checkpoint of format version {version!r}, and this fitkit "
            f"reads version {VERSION}"
            + (
                ": it was saved by a newer fitkit. Upgrade fitkit "
                "(pip install -U fitkit) to load it."
                if newer
                else ". It is damaged or was not written by fitkit."
            )
        )
    specs, meta = header.get("arrays"), header.get("meta")
    if not (
        isinstance(specs, dict)
        and isinstance(meta, dict)
        and all(isinstance(s, dict) for s in specs.values())
    ):
        raise _damaged(path, ValueError(f"its {HEADER} lacks 'arrays' or 'meta'"))
    if version == 1:  # what format 1 left out: no fit (saved outside one), no optimizer class
        meta.setdefault("fit", None)
        if isinstance(meta["fit"], dict):
            meta["fit"].setdefault("pass_step", 0)
        optimizer = meta.get("optimizer")
        if isinstance(optimizer, dict) and "param_groups" in optimizer:
            optimizer.setdefault("class", None)
    wanted = [HEADER] + [_member(k) for k in specs]
    if sorted(names) != sorted(wanted):
        odd = sorted(set(names) ^ set(wanted)) or ["a member twice"]
        raise _damaged(path, ValueError(f"its members do not match its header: {odd[:5]}"))
    return header


def _checked_member(path: str, archive: zipfile.ZipFile, key: str, spec: dict) -> Any:
    """The member's ZipInfo once its .npy header says numbers of the listed dtype and shape
    and its size fits them; read through the header only (no array built, no pickle)."""
    info = archive.getinfo(_member(key))
    with archive.open(info) as f:
        version = npformat.read_magic(f)
        read = {(1, 0): npformat.read_array_header_1_0, (2, 0): npformat.read_array_header_2_0}.get(
            version
        )
        if read is None:
            raise ValueError(f"unsupported .npy version {version} for {key!r}")
        shape, _, dtype = read(f)
        start = f.tell()
    if dtype.hasobject:
        raise FitkitValueError(
            f"Refused to load {path!r}: its array {key!r} holds Python objects (a pickle), "
            f"which fitkit never saves and never unpickles, since that can run arbitrary code; "
            f"the file was crafted or altered. Nothing was loaded. {_SAVED_BY}"
        )
    if (
        dtype.kind not in _KINDS
        or dtype.fields is not None
        or dtype.name != spec.get("dtype")
        or list(shape) != spec.get("shape")
    ):
        raise ValueError(
            f"array {key!r} is {dtype} {list(shape)}, its header says "
            f"{spec.get('dtype')} {spec.get('shape')}"
        )
    if info.file_size - start != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize:
        raise ValueError(
            f"array {key!r} has {info.file_size - start} bytes of data, not "
            f"{list(shape)} x {dtype.itemsize}"
        )
    return info
