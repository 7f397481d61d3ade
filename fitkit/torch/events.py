"""TensorBoard event files for the torch backend: ``EventWriter(log_dir)``, mirrored by
fitkit/tf/events.py. Owns writing scalars to one run's event file; which scalars, under
which names, is the TensorBoard callback's (fitkit/callbacks/events.py).
"""

from __future__ import annotations

import itertools
import os
import socket
import time

# The records and protocol buffers that torch's SummaryWriter writes, on a plain file: its
# writer (tensorboard.compat.tf's gfile) imports TensorFlow whenever it is installed, and a
# torch user never pays TensorFlow's import time.
from tensorboard.compat.proto.event_pb2 import Event
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.summary.writer.record_writer import RecordWriter

_SERIAL = itertools.count()  # two writers opened in the same second get different names


class EventWriter:
    """Scalars of one TensorBoard run (a folder); ``flush`` puts them on disk.

    >>> writer = EventWriter("logs/train"); writer.scalar("epoch_loss", 0.31, 0)
    """

    def __init__(self, log_dir: str) -> None:
        os.makedirs(log_dir, exist_ok=True)
        name = (
            f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}."
            f"{os.getpid()}.{next(_SERIAL)}"
        )
        self.path = os.path.join(log_dir, name)
        self._file = open(self.path, "wb")
        self._records = RecordWriter(self._file)
        self._write(Event(wall_time=time.time(), file_version="brain.Event:2"))

    def _write(self, event: Event) -> None:
        self._records.write(event.SerializeToString())

    def scalar(self, tag: str, value: float, step: int) -> None:
        summary = Summary(value=[Summary.Value(tag=tag, simple_value=float(value))])
        self._write(Event(wall_time=time.time(), step=int(step), summary=summary))

    def flush(self) -> None:
        if not self._file.closed:
            self._records.flush()

    def close(self) -> None:
        if not self._file.closed:
            self._records.close()
