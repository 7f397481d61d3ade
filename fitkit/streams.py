"""Training epochs when fit has ``steps_per_epoch``: one pass over the data kept open across
epochs, as Keras's fit keeps one iterator (a repeat()ed dataset, a long loader or a generator
goes on where the last epoch stopped); a new pass opens only where the last one ended.

Owns that pass, its position (which backups save) and the end of an epoch that ran short;
each source's passes are its own (``batches``), one epoch's loop training.py's, the position's
file fitting.py's. Without steps_per_epoch every epoch is one whole pass (training.open_pass).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from itertools import chain
from typing import TYPE_CHECKING, Any

from .backend import backend_part

if TYPE_CHECKING:
    from .adapter import Adapter
    from .model import Model


class Stream:
    """One source's open pass, drawn from epoch after epoch.

    The fit's state holds where it is: ``pass_step`` (steps of the open pass done before
    the running epoch) and ``epoch_rng`` (the RNGs as it opened): a resumed fit opens it
    again with those RNGs and skips what was done. Chunks of several steps per compiled call
    are sized to the epoch's remaining steps, so that none runs into the next epoch.
    """

    def __init__(self, source: Any, group: int, state: Any, rngs: Any) -> None:
        self.source, self.group, self.state, self.rngs = source, group, state, rngs
        self.pairs: Iterator | None = None  # the open pass's (item, n_steps), or None
        self.want = group  # the size of the next chunk the source makes
        self.ended = False  # the pass ended in the running epoch: the next opens another
        self.warned = False

    def _size(self) -> int:
        return self.want

    def open(self, skip: int | None, *, start: int = 0, rng: dict | None = None) -> None:
        """A pass from step ``skip`` (None: the one the first-batch checks opened), with
        ``start`` of its steps before the running epoch; its order drawn with ``rng`` (a
        backup's) or the RNGs as they are now."""
        state, rngs = self.state, self.rngs
        group = self._size if self.group > 1 else 1
        state.pass_step = start
        if not rng:
            state.epoch_rng = rngs.rng_state()
            self.pairs = iter(self.source.batches(group, None, skip=skip))
            return
        now = rngs.rng_state()  # the order is drawn as the backed-up pass drew it
        rngs.set_rng_state(rng)
        state.epoch_rng, pairs = rng, iter(self.source.batches(group, None, skip=skip))
        first = next(pairs, None)
        rngs.set_rng_state(now)
        self.pairs = pairs if first is None else chain([first], pairs)

    def epoch(self, limit: int, done: int) -> Iterator[tuple[Any, Any]]:
        """This epoch's (item, n_steps) pairs from step ``done`` (a resumed epoch's) up to
        ``limit``; a pass that ends first ends the epoch there (``ended``)."""
        self.ended, reopened = False, False
        steps = self.source.steps
        while done < limit:
            self.want = min(self.group, limit - done)
            assert self.pairs is not None  # open() ran first (epoch_batches)
            pair = next(self.pairs, None)
            if pair is None:
                if done == 0 and not reopened and not self.source.one_shot:
                    reopened = True  # it ended exactly at the last epoch's end
                    self.open(0)
                    continue
                self.ended = True
                return
            yield pair
            n = pair[1]
            done += n if isinstance(n, int) else n()
            if steps is not None and self.state.pass_step + done >= steps:
                self.ended = True  # as Keras counts: the next epoch opens a new pass
                return


def epoch_batches(
    adapter: Adapter, state: Any, train: Any, group: int, limit: int
) -> Iterator[tuple[Any, Any]]:
    """The running epoch's batches from the fit's stream over ``train``: the pass the
    first-batch checks opened, the open one, a new one, or a restored backup's at its step."""
    stream = state.stream
    if stream is None or stream.source is not train:
        stream = state.stream = Stream(train, group, state, backend_part(adapter, "state"))
        if state.resume_step is None:  # the first epoch: its RNGs were recorded at fit start
            state.pass_step = 0
            stream.pairs = iter(train.batches(stream._size if group > 1 else 1, None))
    stream.want = max(1, min(group, limit - (state.resume_step or 0)))  # a chunk made now
    if state.resume_step is not None:  # a restored backup: its pass, at its step
        skip = state.pass_step + state.resume_step
        stream.open(skip, start=state.pass_step, rng=state.epoch_rng if skip else None)
    elif stream.pairs is None:  # the last pass ended: a new one, its order drawn now
        stream.open(0)
    return stream.epoch(limit, state.resume_step or 0)


def end_epoch(
    model: Model, state: Any, epoch: int, steps_done: int, limit: int | None, stopped: bool
) -> None:
    """After an epoch's steps (``steps_done`` of them, a resumed epoch's earlier ones too):
    the stream's position for the next epoch and for backups. An epoch that ran short
    warns; when the data cannot go on (a generator ran out), training stops."""
    stream = state.stream
    if stream is None or limit is None:
        return
    if stream.ended:
        stream.pairs, state.pass_step = None, 0
    else:
        state.pass_step += steps_done
    if steps_done >= limit or stopped:
        return
    if stream.source.one_shot:
        warnings.warn(
            f"The training data ran out after {steps_done} of "
            f"steps_per_epoch={limit} steps in epoch {epoch + 1}; training stops. "
            f"Provide at least steps_per_epoch * epochs batches.",
            stacklevel=6,
        )
        model.stop_training = True
    elif not stream.warned:
        stream.warned = True
        warnings.warn(
            f"The training data's pass ended after {steps_done} of steps_per_epoch={limit} "
            f"steps in epoch {epoch + 1}: that epoch ends there and the next one starts a new "
            f"pass over the data, as Keras does. For epochs of equal length pass a "
            f"steps_per_epoch that divides the data's batches, or repeat() the data.",
            stacklevel=6,
        )
