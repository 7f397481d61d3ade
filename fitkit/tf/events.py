"""TensorBoard event files for the TensorFlow backend: ``EventWriter(log_dir)``, mirrored by
fitkit/torch/events.py.

Owns writing scalars to one run's event file with ``tf.summary`` (as Keras's TensorBoard
callback does); which scalars, under which names, is the TensorBoard callback's
(fitkit/callbacks/events.py).
"""

from __future__ import annotations

# tf.summary.scalar comes from this package (TensorFlow's own is a stub without it): a
# missing one fails here, at import, not as silently empty event files.
import tensorboard  # noqa: F401
import tensorflow as tf


class EventWriter:
    """Scalars of one TensorBoard run (a folder); ``flush`` puts them on disk.

    >>> writer = EventWriter("logs/train"); writer.scalar("epoch_loss", 0.31, 0)
    """

    def __init__(self, log_dir: str) -> None:
        self._writer = tf.summary.create_file_writer(log_dir)
        self._closed = False

    def scalar(self, tag: str, value: float, step: int) -> None:
        with self._writer.as_default():
            tf.summary.scalar(tag, float(value), step=int(step))

    def flush(self) -> None:
        if not self._closed:
            self._writer.flush()

    def close(self) -> None:
        if not self._closed:
            self._writer.close()
            self._closed = True
