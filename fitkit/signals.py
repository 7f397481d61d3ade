"""SIGTERM during fit (what schedulers and preemptible machines send): fit stops at the next
step boundary as on Ctrl-C, BackupAndRestore writes a backup there, on_train_end runs, and the
process then ends by SIGTERM as it would have without fitkit.

Owns the handler (installed in the main thread, only while fit runs) and the boundary check;
what a stop records is fitting.py's, what a backup holds callbacks/backup.py's.
"""

from __future__ import annotations

import _thread
import os
import signal
import struct
import sys
import threading
import traceback
from typing import TYPE_CHECKING, Any

from .errors import FitkitValueError

if TYPE_CHECKING:
    from .model import Model

TIMEOUT_ENV = "FITKIT_SIGTERM_TIMEOUT"
TIMEOUT_S = 20.0  # how long fit may take to reach a step boundary after SIGTERM


class Terminated(KeyboardInterrupt):
    """SIGTERM stopped fit (a KeyboardInterrupt, so code that handles Ctrl-C handles it too).

    It leaves fit only where a SIGTERM handler of your own, installed before fit, lets the
    process live on: with the default handler the process ends as fit returns.
    ``at_boundary``: fit stopped between two steps (a backup there resumes exactly).
    """

    def __init__(self, at_boundary: bool) -> None:
        super().__init__("SIGTERM" + ("" if at_boundary else " (no step boundary reached)"))
        self.at_boundary = at_boundary


def sigterm_timeout() -> float:
    """Seconds fit may take to reach a step boundary after SIGTERM (FITKIT_SIGTERM_TIMEOUT;
    0: stop at once, as Ctrl-C does)."""
    raw = os.environ.get(TIMEOUT_ENV)
    if raw is None or not raw.strip():
        return TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0:  # NaN too
        raise FitkitValueError(
            f"{TIMEOUT_ENV}={raw!r}: give a number of seconds >= 0 (how "
            f"long fit may take to reach a step boundary after SIGTERM; "
            f"0 stops at once), or unset it for {TIMEOUT_S:g}."
        )
    return value


class StopOnSigterm:
    """``with StopOnSigterm(model): run the fit`` (see the module's docstring).

    Nothing is installed outside the main thread, nor where SIGTERM is ignored; the previous
    handler (one installed outside Python too) is back when the block ends, and a SIGTERM that
    came during it is then delivered to it (the default one ends the process).
    """

    def __init__(self, model: Model) -> None:
        self.model = model
        self.timeout = sigterm_timeout()
        self.pending = False  # a SIGTERM came
        self.expired = False  # and no step boundary came within the timeout
        self.stopping = False  # a step boundary came: the backup is being written
        self.lock = threading.Lock()
        self.previous: Any = None
        self.native: Any = None  # the OS-level handler, when it is not Python's
        self.installed = False
        self.timer: threading.Timer | None = None
        self.thread = threading.get_ident()

    def __enter__(self) -> StopOnSigterm:
        if threading.current_thread() is not threading.main_thread():
            return self
        previous = signal.getsignal(signal.SIGTERM)
        if previous is signal.SIG_IGN or previous is None:  # ignored, or unknown to Python
            return self
        self.previous = previous
        # a handler installed outside Python while Python says SIG_DFL (TensorFlow's
        # MultiWorkerMirroredStrategy installs one that only records the signal): kept whole,
        # and put back after fit unless a SIGTERM came, which then ends the process
        self.native = _native_handler() if previous is signal.SIG_DFL else None
        signal.signal(signal.SIGTERM, self._handle)
        self.installed = True
        _ACTIVE.append(self)
        return self

    def __exit__(self, kind: Any, err: BaseException | None, tb: Any) -> None:
        if not self.installed:
            return
        _ACTIVE.remove(self)
        self._cancel_timer()
        self._restore()
        if self.pending:
            if err is not None and not isinstance(err, Terminated):
                traceback.print_exception(err, file=sys.stderr)  # the signal ends the process
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except (OSError, ValueError, AttributeError):
                    pass
            signal.raise_signal(signal.SIGTERM)  # to the previous handler: by default, the end

    def _handle(self, signum: int, frame: Any) -> None:
        if self.pending or self.timeout == 0:  # a second SIGTERM, or no time to wait: now
            why = (
                f"no step boundary within {self.timeout:g} s of SIGTERM ({TIMEOUT_ENV})"
                if self.expired
                else "a second SIGTERM"
                if self.pending
                else f"{TIMEOUT_ENV}=0"
            )
            self.pending = True
            self._cancel_timer()
            self._restore()  # a further SIGTERM ends the process at once
            print(
                f"\nfit: {why}: stopping now, not at a step boundary (no backup at the signal).",
                file=sys.stderr,
                flush=True,
            )
            raise Terminated(at_boundary=False)
        self.pending = True
        if self.timeout != float("inf"):  # inf: wait for the boundary however long it takes
            self.timer = threading.Timer(self.timeout, self._expire)
            self.timer.daemon = True
            self.timer.start()

    def _expire(self) -> None:  # the timer's thread: the main thread must raise
        with self.lock:
            if self.stopping:  # the boundary came first
                return
            self.expired = True
        if hasattr(signal, "pthread_kill"):  # a real signal: it interrupts a sleep too
            main = threading.main_thread().ident
            assert main is not None  # the main thread has started: it runs this fit
            signal.pthread_kill(main, signal.SIGTERM)
        else:
            _thread.interrupt_main(signal.SIGTERM)  # runs _handle again, in the main thread

    def _cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _restore(self) -> None:
        """The previous handler back (after a SIGTERM, not one from outside Python: the
        process is to end)."""
        if self.installed and signal.getsignal(signal.SIGTERM) == self._handle:
            signal.signal(signal.SIGTERM, self.previous)
            if self.native is not None and not self.pending:
                _sigaction(self.native)

    def stop_here(self) -> None:
        """At a step boundary after SIGTERM: every BackupAndRestore writes its backup, then
        Terminated unwinds the fit (which runs on_train_end)."""
        from .callbacks.backup import BackupAndRestore

        with self.lock:
            self.stopping = True
        self._cancel_timer()
        self._restore()  # from here a second SIGTERM ends the process at once
        callbacks = self.model.runtime.callbacks
        for cb in callbacks.callbacks if callbacks is not None else []:
            if isinstance(cb, BackupAndRestore):
                cb.backup("SIGTERM")
        raise Terminated(at_boundary=True)


_ACTIVE: list[StopOnSigterm] = []


def _sigaction(new: Any = None) -> Any:
    """The OS's SIGTERM action as opaque bytes (None where ctypes cannot read it); with
    ``new``, installs those bytes."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        buffer = ctypes.create_string_buffer(512)  # larger than any struct sigaction
        if new is not None:
            buffer.raw = new
        if (
            libc.sigaction(
                signal.SIGTERM,
                buffer if new is not None else None,
                None if new is not None else buffer,
            )
            != 0
        ):
            return None
        return buffer.raw
    except (OSError, AttributeError, TypeError, ValueError):  # no libc sigaction (Windows)
        return None


def _native_handler() -> Any:
    """The OS's SIGTERM action when its handler is neither SIG_DFL nor SIG_IGN (one installed
    outside Python, while Python's own record says SIG_DFL), else None."""
    raw = _sigaction()
    if raw is None:
        return None
    size = struct.calcsize("P")
    handler = int.from_bytes(raw[:size], sys.byteorder)  # the first field: the handler
    return raw if handler not in (0, 1) else None


def at_boundary() -> None:
    """Called by fit between two training steps and between epochs: after a SIGTERM, stop
    here (cheap otherwise: no system call, no device read)."""
    watch = _ACTIVE[-1] if _ACTIVE else None
    if watch is not None and watch.pending and watch.thread == threading.get_ident():
        watch.stop_here()
