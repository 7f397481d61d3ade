"""Training state as arrays + JSON: what exact resume saves, backend-free parts.

Owns the position of a fit (``FitState``) and of a loaded checkpoint (``LoadedCheckpoint``),
the host RNGs (python, numpy), and the split of a whole training state into numpy arrays and
JSON that checkpoint.save_state writes. Each backend's state.py captures its own network,
optimizer, metric states and RNGs; fitting.py restores a checkpoint into a fit.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import FitkitValueError

if TYPE_CHECKING:
    from .adapter import Adapter


@dataclass
class FitState:
    """Where a fit is: what a backup records and a resumed fit starts from."""

    epochs: int = 0
    epoch: int = 0  # the epoch running (0-based)
    step: int = 0  # steps done in it
    global_step: int = 0  # steps done since the fit began (over all epochs)
    epoch_rng: dict = field(default_factory=dict)  # RNGs as this epoch's pass began
    pass_step: int = 0  # steps_per_epoch: steps of the open pass before this epoch
    stream: Any = None  # steps_per_epoch: streams.Stream, the pass across epochs
    warned_validation: bool = False  # finite.check_validation warns once a fit
    resume_step: int | None = None  # a resumed fit: steps of ``epoch`` already done
    interrupted: str | None = None  # where a Ctrl-C or an error stopped the fit
    completed: bool = False
    keys_checked: bool = True  # monitored keys checked against the logs
    loop: Any = None  # the running epoch's steps.StepLoop
    sources: dict = field(default_factory=dict)  # "train" / "val": the fit's batch sources


@dataclass
class LoadedCheckpoint:
    """A read and checked checkpoint that a fit continues from: the running one's (a
    BackupAndRestore backup) or, loaded by hand outside a fit, the next one's."""

    path: str
    arrays: dict[str, np.ndarray]
    meta: dict[str, Any]  # the header's JSON fields
    fit: dict[str, Any]  # meta["fit"]; saved outside a fit: the epoch after its history

    def put_position(self, state: FitState) -> None:
        """Move ``state`` to the saved position: a resumed epoch skips the steps done, and a
        mid-pass one draws its order again from the RNGs as its pass began."""
        fit = self.fit
        state.epoch, state.step, state.global_step = fit["epoch"], fit["step"], fit["global_step"]
        state.resume_step = fit["step"]
        state.pass_step = fit.get("pass_step", 0)
        mid_pass = fit["step"] or state.pass_step
        state.epoch_rng = unprefixed("epoch_rng", self.arrays) if mid_pass else {}


def host_rng_state() -> dict[str, np.ndarray]:
    """python's and numpy's global RNGs as arrays."""
    version, internal, gauss = random.getstate()
    _kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    return {
        "rng/python": np.asarray(internal, dtype=np.uint64),
        "rng/python_meta": np.asarray([version, -1 if gauss is None else 0], np.int64),
        "rng/python_gauss": np.asarray([0.0 if gauss is None else gauss], np.float64),
        "rng/numpy": np.asarray(keys, dtype=np.uint32),
        "rng/numpy_meta": np.asarray([pos, has_gauss], np.int64),
        "rng/numpy_gauss": np.asarray([cached], np.float64),
    }


def set_host_rng_state(arrays: dict[str, np.ndarray]) -> None:
    version, no_gauss = (int(v) for v in arrays["rng/python_meta"])
    gauss = None if no_gauss == -1 else float(arrays["rng/python_gauss"][0])
    random.setstate((version, tuple(np.asarray(arrays["rng/python"]).tolist()), gauss))
    pos, has_gauss = (int(v) for v in arrays["rng/numpy_meta"])
    np.random.set_state(
        ("MT19937", arrays["rng/numpy"], pos, has_gauss, float(arrays["rng/numpy_gauss"][0]))
    )


def same_rngs(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two RNG snapshots (arrays, CPU tensors, tuples) hold the same states."""
    return a.keys() == b.keys() and all(
        a[k] == b[k]
        if isinstance(a[k], tuple)
        else np.array_equal(np.asarray(a[k]), np.asarray(b[k]))
        for k in a
    )


def source_arrays(state: FitState, mid_epoch: bool) -> dict[str, np.ndarray]:
    """The data's own random states for a backup (a loader's generator, a tf.data pipeline's
    pass number): what each source's next pass draws from (``source/<name>/…``) and, in the
    middle of an epoch, what its running pass drew from (``epoch_rng/source/…``)."""
    out: dict[str, np.ndarray] = {}
    for name, source in state.sources.items():
        if source is not None:
            out.update(prefixed(f"source/{name}", as_arrays(source.rng_state())))
    train = state.sources.get("train")
    if mid_epoch and train is not None:
        out.update(prefixed("epoch_rng/source", as_arrays(train.pass_rng_state())))
    return out


def restore_sources(state: FitState, arrays: dict[str, np.ndarray]) -> None:
    """Give each source the random state a backup saved for its next pass."""
    for name, source in state.sources.items():
        saved = unprefixed(f"source/{name}", arrays)
        if source is not None and saved:
            source.set_rng_state(saved)


def as_arrays(states: dict[str, Any]) -> dict[str, np.ndarray]:
    """RNG states as numpy arrays for a file (a backend may keep them as CPU tensors)."""
    return {k: v if isinstance(v, np.ndarray) else np.array(v) for k, v in states.items()}


def prefixed(prefix: str, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {f"{prefix}/{k}": v for k, v in arrays.items()}


def unprefixed(prefix: str, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    cut = len(prefix) + 1
    return {k[cut:]: v for k, v in arrays.items() if k.startswith(prefix + "/")}


def check_same(what: str, saved: list, own: list, path_hint: str = "") -> None:
    """Saved entries (names and shapes) must match this model's, else nothing is restored."""
    if saved != own:
        missing = [s for s in own if s not in saved][:3]
        extra = [s for s in saved if s not in own][:3]
        raise FitkitValueError(
            f"The checkpoint's {what} do not match this model's{path_hint}: it lacks {missing} "
            f"and has {extra} (name, shape). Build and compile the same network as the run "
            f"that saved it; nothing was restored."
        )


def save_shared(
    adapter: Adapter, arrays: dict[str, np.ndarray], meta: dict, rngs: dict[str, np.ndarray]
) -> None:
    """The parts of a training state both backends save alike: the schedule's state, a
    pending accumulation window, the RNGs."""
    meta["scheduler"] = adapter.scheduler.state_dict()
    if adapter.accumulation is not None:
        arrays.update(prefixed("accumulation", adapter.accumulation.state()))
    arrays.update(rngs)


def load_shared(adapter: Adapter, arrays: dict[str, np.ndarray], meta: dict, set_rngs: Any) -> None:
    """Restore what ``save_shared`` saved (``set_rngs``: the backend's RNG setter)."""
    if meta.get("scheduler") is not None:
        adapter.scheduler.load_state_dict(meta["scheduler"])
    if adapter.accumulation is not None:
        adapter.accumulation.load(unprefixed("accumulation", arrays))
    set_rngs(arrays)
