"""Progress beats between the ranks of a launch and ``fitkit launch``, which stops a launch when
a rank stops making progress (a hung rank). Both sides of the file format live here.

Each rank started by ``fitkit launch`` (FITKIT_HEARTBEAT_DIR set) keeps a few int64 slots in a
memory-mapped file that its step loops update at each step (memory stores, no system call);
the launcher reads them and times how long each rank's progress stood still. When and where a
step loop beats is steps.py's; starting and stopping processes is launch.py's.
"""

from __future__ import annotations

import mmap
import os
import struct
import time
from collections.abc import Callable

ENV = "FITKIT_HEARTBEAT_DIR"
KINDS = {"train": 1, "test": 2, "predict": 3}  # 0: outside a step loop
WAITING, BEGIN, RUNNING, END = 1, 2, 3, 4  # phases of a step: its batch, hooks, the step
_PHASES = {
    WAITING: "waiting for its batch",
    BEGIN: "in its batch-begin hooks",
    RUNNING: "running it",
    END: "in its batch-end hooks or log point",
}
_NAMES = {v: k for k, v in KINDS.items()}
# slots: seq (bumped by every write), kind, phase, step, kinds with a finished step (bits), pid
_FORMAT = "=6q"  # native order, as the memoryview writes them
_SIZE = struct.calcsize(_FORMAT)


class _Beats:
    """This process's slots (opened on the first step loop under ``fitkit launch``)."""

    def __init__(self, path: str) -> None:
        with open(path, "w+b") as file:  # created by this rank: the launcher only reads it
            file.write(b"\0" * _SIZE)
            file.flush()
            self.map = mmap.mmap(file.fileno(), _SIZE)
        self.slots = memoryview(self.map).cast("q")
        self.slots[5] = os.getpid()

    def write(self, kind: int, phase: int, step: int) -> None:
        slots = self.slots
        slots[1], slots[2], slots[3] = kind, phase, step
        if phase == END and kind:
            slots[4] |= 1 << kind  # this kind's first step (its compilation) is behind
        slots[0] += 1  # last: a reader that sees it move sees progress


_OPENED: list = []  # [_Beats] once opened, [None] when not under fitkit launch


def _beats() -> _Beats | None:
    if not _OPENED:
        folder = os.environ.get(ENV)
        beats = None
        if folder and os.path.isdir(folder):
            from . import distribute

            try:
                beats = _Beats(os.path.join(folder, f"rank{distribute.rank()}.beat"))
            except (OSError, ValueError):  # no beats: the launch is then not watched
                beats = None
        _OPENED.append(beats)
    return _OPENED[0]


def beater(kind: str) -> Callable[[int, int], None] | None:
    """``beat(phase, step)`` for a step loop of ``kind``, or None outside ``fitkit launch``."""
    beats = _beats()
    if beats is None:
        return None
    code = KINDS[kind]
    return lambda phase, step: beats.write(code, phase, step)


def left_loop() -> None:
    """A step loop ended (or stopped): the rank is outside any step, so not timed."""
    beats = _OPENED[0] if _OPENED else None
    if beats is not None:
        beats.write(0, 0, 0)


# ---------------------------------------------------------------------- the launcher's side
def _started(pid: int) -> str | None:
    """When process ``pid`` started (Linux), to tell it from a later one given its pid."""
    try:
        with open(f"/proc/{pid}/stat") as file:
            return file.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def read(path: str) -> tuple[int, ...] | None:
    """A rank's slots (None while its file is not there or not whole)."""
    try:
        with open(path, "rb") as file:
            raw = file.read(_SIZE)
    except OSError:
        return None
    return struct.unpack(_FORMAT, raw) if len(raw) == _SIZE else None


def describe(slots: tuple[int, ...]) -> str:
    _, kind, phase, step, _, _ = slots
    if not kind:
        return "outside any step loop"
    return f"{_NAMES.get(kind, '?')} step {step + 1}, {_PHASES.get(phase, '?')}"


class Watcher:
    """Reads every rank's slots in ``folder``; ``check()`` names the ranks when one inside a
    step loop has made no progress for ``timeout`` seconds (from its second step of a kind:
    the first compiles)."""

    def __init__(self, folder: str, timeout: float) -> None:
        self.folder, self.timeout = folder, timeout
        self.seen: dict[int, tuple[tuple[int, ...], float]] = {}  # rank -> (slots, since)
        self.started: dict[int, str] = {}  # pid -> its start time, seen while it ran

    def poll(self, now: float | None = None) -> None:
        """Read every rank's slots (a rank's progress moved when its counter did)."""
        now = time.monotonic() if now is None else now
        try:
            names = os.listdir(self.folder)
        except OSError:
            return
        for name in names:
            if name.startswith("rank") and name.endswith(".beat"):
                slots = read(os.path.join(self.folder, name))
                rank = int(name[4:-5]) if name[4:-5].isdigit() else None
                if slots is None or rank is None:
                    continue
                old = self.seen.get(rank)
                if old is None or old[0][0] != slots[0]:
                    self.seen[rank] = (slots, now)
                pid = slots[5]
                if pid > 0 and pid not in self.started:
                    start = _started(pid)
                    if start is not None:
                        self.started[pid] = start

    def kill(self, sig: int) -> None:
        """Send ``sig`` to every rank still running, with its process group (its loader
        workers) when it leads one; only processes seen running (Linux's /proc)."""
        self.poll()
        for pid, start in self.started.items():
            if _started(pid) != start:  # gone, or a later process that got its pid
                continue
            try:
                if os.getpgid(pid) == pid:
                    os.killpg(pid, sig)
                else:
                    os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass

    def check(self, now: float | None = None) -> str | None:
        """None, or a message naming the rank(s) that stopped making progress."""
        now = time.monotonic() if now is None else now
        self.poll(now)
        stuck = [
            r
            for r, (s, since) in self.seen.items()
            if s[1] and s[4] & (1 << s[1]) and now - since > self.timeout
        ]
        if not stuck:
            return None
        least = min(s[0] for s, _ in self.seen.values())  # lockstep ranks: the one behind
        behind = sorted(r for r, (s, _) in self.seen.items() if s[0] == least)
        others = sorted(r for r in self.seen if r not in behind)
        parts = [
            f"rank {r} made no progress for {now - self.seen[r][1]:.0f} s (last at "
            f"{describe(self.seen[r][0])})"
            for r in behind
        ]
        parts += [f"rank {r} waits at {describe(self.seen[r][0])}" for r in others]
        return "; ".join(parts)
