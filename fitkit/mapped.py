"""Memory-mapped arrays (np.memmap, np.load(mmap_mode=...)): reading rows without holding
the file in memory.

Owns recognising a map, reading a batch's rows from its file, and releasing the pages a
read left mapped. Which rows a batch takes is the adapters' data sources' job.
"""

from __future__ import annotations

import mmap
import os
import queue
import threading
from collections.abc import Iterator
from typing import Any


def _module(obj: Any) -> str:
    return type(obj).__module__ or ""


RELEASE_BYTES = 64 << 20  # memory-mapped bytes read between two releases of their pages


def is_memory_map(obj: Any) -> bool:
    """A numpy memmap (np.memmap, np.load(..., mmap_mode=...)): read by batches, not whole."""
    return type(obj).__name__ == "memmap" and _module(obj) == "numpy"


def _mapping(array: Any) -> Any:
    """The mmap.mmap behind a numpy memmap, or None."""
    handle = getattr(array, "_mmap", None)
    while handle is None and getattr(array, "base", None) is not None:
        array = array.base
        handle = array if isinstance(array, mmap.mmap) else getattr(array, "_mmap", None)
    return handle if isinstance(handle, mmap.mmap) and hasattr(handle, "madvise") else None


def release_pages(array: Any) -> None:
    """Drop a memory map's pages from this process (they stay in the OS page cache), so an
    epoch over a file larger than memory does not grow the resident set."""
    handle = _mapping(array)
    if handle is not None:
        handle.madvise(mmap.MADV_DONTNEED)


class MapReader:
    """Reads rows of memory maps without keeping the file mapped in: scattered rows come
    through ``os.preadv`` from the map's file (faults on a mapping map megabytes around
    each row), and pages that slices touch are released every RELEASE_BYTES."""

    def __init__(self) -> None:
        self.touched = 0
        self.files: dict[str, int] = {}  # file name -> open descriptor

    def rows(self, array: Any, start: int, stop: int, index: Any = None) -> Any:
        """``array[start:stop]``, or ``array[index]`` (sorted), as a numpy copy."""
        import numpy as np

        if index is not None:
            source = self._file_of(array)
            if source is not None:
                return self._read_rows(array, *source, index)
            part = array[index]
        else:
            part = np.array(array[start:stop])
        self.touched += part.nbytes
        if self.touched > RELEASE_BYTES:
            release_pages(array)
            self.touched = 0
        return part

    def _file_of(self, array: Any) -> tuple[int, int] | None:
        """(descriptor, byte offset) of a whole, C-ordered memmap's file, else None."""
        name = getattr(array, "filename", None)
        if not name or not isinstance(array.base, mmap.mmap) or not array.flags.c_contiguous:
            return None  # a view of a map: its offset is not the file's
        if name not in self.files:
            self.files[name] = os.open(name, os.O_RDONLY)
        return self.files[name], int(array.offset)

    @staticmethod
    def _read_rows(array: Any, fd: int, offset: int, index: Any) -> Any:
        import numpy as np

        out = np.empty((len(index), *array.shape[1:]), array.dtype)
        row = out.itemsize * (out.size // max(len(index), 1))
        view = out.reshape(-1).view(np.uint8).data  # a memoryview of out's bytes
        breaks = np.flatnonzero(np.diff(index) != 1) + 1  # runs of consecutive rows
        firsts = np.r_[0, breaks]
        # Plain ints: iterating numpy scalars would cost more than the reads themselves.
        for first, last, at in zip(
            firsts.tolist(),
            np.r_[breaks, len(index)].tolist(),
            (index[firsts] * row + offset).tolist(),
            strict=True,
        ):
            os.preadv(fd, [view[first * row : last * row]], at)
        return out

    def close(self) -> None:
        for fd in self.files.values():
            os.close(fd)
        self.files.clear()

    def __del__(self) -> None:
        self.close()


def read_ahead(batches: Iterator[Any], depth: int = 2) -> Iterator[Any]:
    """The items of ``batches``, produced by a reader thread ``depth`` items ahead: reading
    rows from a file (system calls, which release the GIL) overlaps the steps' compute.

    The thread stops when the consumer stops early; an error in it is raised here.
    """
    items: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def produce() -> None:
        try:
            for item in batches:
                while not stop.is_set():
                    try:
                        items.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            items.put((done, None))
        except BaseException as err:  # noqa: BLE001 - anything is handed on, raised in the consumer
            items.put((done, err))

    thread = threading.Thread(target=produce, name="fitkit-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item, err = items.get()
            if item is done:
                if err is not None:
                    raise err
                return
            yield item
    finally:
        stop.set()
