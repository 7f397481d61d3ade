"""Safe files at the byte level: atomic writes that end in a clear error on a full disk, the
checks every file passes before a reader opens it (a regular file, its format from its first
bytes), and bounded reads of zip archives (stored members that lie within the file).

What goes into a file is the callers' (checkpoint.py's training state, the adapters' weights
modules); this module only makes sure reading never hangs or balloons and writing never
leaves a half-written file.
"""

from __future__ import annotations

import contextlib
import os
import stat
import uuid
import zipfile
from collections.abc import Callable
from typing import Any, BinaryIO, cast

from .errors import FitkitValueError


def atomic_write(
    path: str,
    write: Callable[[str], Any],
    *,
    suffix: str = ".tmp",
    example: str = "weights.pt",
    what: str = "weights",
) -> None:
    """``write(tmp)`` to a temp file next to ``path``, then rename it over ``path``.

    A crash leaves the old file (or none), never a half-written one; missing folders are made.
    A write that fails on the disk (full, over a size limit: an ``OSError``, also when a
    writer wraps it, see ``stream_to`` / ``bytes_to``) is a FitkitValueError naming ``path``,
    with the previous file intact and the temp file removed. ``suffix`` ends the temp file's
    name (a writer may insist on one); ``example`` names a file for the message when ``path``
    is a folder; ``what`` names the file in messages. A killed process may leave its temp
    file (``.<name>.<8 hex><suffix>``) behind: it is never read, and safe to delete.
    """
    if os.path.isdir(path):
        raise FitkitValueError(
            f"Cannot save {what} to {path!r}: it is a folder. Give a file "
            f"path, e.g. {os.path.join(path, example)!r}."
        )
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise FitkitValueError(
            f"Cannot save {what} to {path!r}: {folder!r} is a file, not a "
            f"folder. Choose another path."
        )
    base = os.path.basename(path)
    tmp = os.path.join(folder, f".{base}.{uuid.uuid4().hex[:8]}{suffix}")
    try:
        os.makedirs(folder, exist_ok=True)
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    except OSError as err:
        raise FitkitValueError(
            f"Cannot save {what} to {path!r}: {err.strerror or err} "
            f"({folder!r}). Choose a writable folder."
        ) from err
    try:
        write(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)  # the bytes are on disk before the name points at them
        finally:
            os.close(fd)
        os.replace(tmp, path)
        _sync_folder(folder)
    except OSError as err:
        hint = (
            " Free some space (or raise the file size limit) and save again."
            if err.errno in (28, 27, 122)
            else ""
        )  # ENOSPC, EFBIG, EDQUOT
        raise FitkitValueError(
            f"Could not write {what} to {path!r}: {err.strerror or err}. "
            f"Any previous file there is unchanged.{hint}"
        ) from err
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def stream_to(tmp: str, dump: Callable[[BinaryIO], Any]) -> None:
    """``dump(f)`` into ``tmp`` through Python's file I/O, so a failing disk raises the
    ``OSError`` itself, even where the serializer wraps it in an error of its own (torch.save
    says only ``unexpected pos`` or ``basic_ios::clear``)."""
    with open(tmp, "wb") as raw:
        recorder = _Recorder(raw)
        try:
            dump(cast(BinaryIO, recorder))  # a file to the serializer: the rest is __getattr__'s
        except Exception:
            if recorder.error is not None:
                raise recorder.error from None
            raise


def bytes_to(tmp: str, data: bytes) -> None:
    """Write ``data`` (a file serialized in memory) into ``tmp`` with ``os.write``: a full
    disk or a file size limit is a plain ``OSError`` (ENOSPC / EFBIG), never a crash inside a
    library that does its own I/O (HDF5)."""
    fd = os.open(tmp, os.O_WRONLY | os.O_TRUNC)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


class _Recorder:
    """A binary file that remembers the first OSError its writes raised."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return self.raw.write(data)
        except OSError as err:
            self.error = self.error or err
            raise

    def __getattr__(self, name: str) -> Any:  # tell, seek, flush, fileno, ...
        return getattr(self.raw, name)


def _sync_folder(folder: str) -> None:
    """The rename itself on disk (POSIX); a no-op where folders cannot be opened (Windows)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# ---------------------------------------------------------------------- before reading
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


def readable_kind(
    path: str, what: str = "weights", saver: str = "model.save_weights"
) -> str | None:
    """The sniffed format of an existing, readable regular ``what`` file; else a
    FitkitValueError naming the cause (missing, a folder, not a regular file, unreadable).

    Links are followed first; a FIFO, socket or device is refused before it is opened (an
    open would wait forever for a writer, a read forever for data)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise FitkitValueError(
            f"No {what} file at {path!r}; check the path (save one with {saver})."
        ) from None
    except OSError as err:
        raise FitkitValueError(
            f"Cannot read the {what} file {path!r}: {err.strerror or err}."
        ) from err
    if stat.S_ISDIR(mode):
        raise FitkitValueError(f"{path!r} is a folder, not a {what} file; give the file's path.")
    if not stat.S_ISREG(mode):
        kind = (
            "a FIFO (named pipe)"
            if stat.S_ISFIFO(mode)
            else "a socket"
            if stat.S_ISSOCK(mode)
            else "a device"
            if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            else "not a regular file"
        )
        link = f" (it links to {os.path.realpath(path)!r})" if os.path.islink(path) else ""
        raise FitkitValueError(
            f"{path!r} is {kind}{link}, not a regular {what} file; it was not opened (reading "
            f"it could wait forever). Give the path of a file saved by {saver}."
        )
    try:
        return sniff(path)
    except OSError as err:
        raise FitkitValueError(
            f"Cannot read the {what} file {path!r}: {err.strerror or err}."
        ) from err


def unbounded_member(path: str, archive: zipfile.ZipFile) -> str | None:
    """Why a zip archive could make a reader use more memory than the file's size, or None.

    Every member must be stored (never compressed: a few MB of deflated zeros inflate to
    gigabytes), its stored and declared sizes equal, and its data inside the file."""
    size = os.path.getsize(path)
    for info in archive.infolist():
        if info.compress_type != zipfile.ZIP_STORED:
            return f"its member {info.filename!r} is compressed"
        if info.compress_size != info.file_size or info.header_offset + info.compress_size > size:
            return (
                f"its member {info.filename!r} declares {info.file_size} bytes, more than "
                f"the file holds"
            )
    return None
