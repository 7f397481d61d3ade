"""Checks a loaded training state (``checkpoint.load_state``'s arrays + JSON meta) against the
model before anything is restored, so that an edited or damaged header is one clear error and
never a half-restored model.

Owns the backend-free parts (history, the fit's position, callbacks' and schedulers' states,
the host RNGs, arrays no field claims) and the helpers each backend's ``state.check_state``
uses for its own parts (network, optimizer, running logs, metric states, its RNGs).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from numbers import Integral, Real
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import FitkitValueError

if TYPE_CHECKING:
    from .adapter import Adapter

MISSING = object()
_FIX = (
    "the file was edited or damaged, or not written by this fitkit. Nothing was restored; "
    "load an unedited checkpoint, or save a new one with model.save_checkpoint"
)


# ---------------------------------------------------------------------- fields
def bad(where: str, got: Any, wanted: str) -> FitkitValueError:
    """The error for header field ``meta<where>``: what it is, what it should be."""
    shown = "missing" if got is MISSING else f"{_short(got)}"
    return FitkitValueError(f"its header field meta{where} is {shown}, expected {wanted}: {_FIX}.")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def is_int(v: Any) -> bool:
    return isinstance(v, Integral) and not isinstance(v, bool)


def is_count(v: Any) -> bool:
    return is_int(v) and v >= 0


def is_number(v: Any) -> bool:
    return isinstance(v, Real) and not isinstance(v, bool)


def is_shape(v: Any) -> bool:
    return isinstance(v, list) and all(is_count(n) for n in v)


def is_names(v: Any) -> bool:
    """A list of distinct strings."""
    return isinstance(v, list) and all(isinstance(n, str) for n in v) and len(set(v)) == len(v)


def field(
    container: Any,
    key: Any,
    where: str,
    check: Callable[[Any], bool] | None = None,
    wanted: str = "present",
) -> Any:
    """``container[key]`` once it exists and passes ``check``; else ``bad``."""
    if isinstance(container, dict):
        value = container.get(key, MISSING)
    elif isinstance(container, list) and is_int(key) and 0 <= key < len(container):
        value = container[key]
    else:
        value = MISSING
    if value is MISSING or (check is not None and not check(value)):
        raise bad(f"{where}[{key!r}]", value, wanted)
    return value


def like(
    saved: Any, current: Any, where: str, same_lengths: bool = True, exact_ints: bool = False
) -> None:
    """``saved`` has ``current``'s structure: the same keys, list lengths (unless
    ``same_lengths`` is False) and kinds of values (numbers, bools, strings; None stands for
    a number, a bool or None), so the code that loads it reads what it expects. With
    ``exact_ints`` an int must stay an int (a counter), else any number may replace one."""
    if current is None:
        ok = saved is None or isinstance(saved, (bool, Real))
        wanted = "a number, a bool or null"
    elif isinstance(current, (bool, np.bool_)):
        ok, wanted = isinstance(saved, bool), "a bool"
    elif exact_ints and isinstance(current, Integral):
        ok, wanted = is_int(saved), "a whole number"
    elif isinstance(current, Real):
        ok, wanted = saved is None or is_number(saved), "a number"
    elif isinstance(current, str):
        ok, wanted = isinstance(saved, str), "a string"
    elif isinstance(current, (list, tuple)):
        ok = isinstance(saved, list) and (not same_lengths or len(saved) == len(current))
        wanted = f"a list of {len(current)}" if same_lengths else "a list"
    elif isinstance(current, dict):
        ok = isinstance(saved, dict) and sorted(saved) == sorted(str(k) for k in current)
        wanted = f"a dict with keys {sorted(str(k) for k in current)}"
    else:
        return  # another kind (a tensor): the loader's own to take
    if not ok:
        raise bad(where, saved, wanted)
    if isinstance(current, (list, tuple)) and same_lengths:
        for i, (s, c) in enumerate(zip(saved, current, strict=True)):  # lengths checked above
            like(s, c, f"{where}[{i}]", same_lengths, exact_ints)
    elif isinstance(current, dict):
        for k, c in current.items():
            like(saved[str(k)], c, f"{where}[{str(k)!r}]", same_lengths, exact_ints)


def array(
    arrays: dict,
    key: str,
    claimed: set,
    shape: tuple | None = None,
    dtype: Any = None,
    kinds: str = "biuf",
) -> np.ndarray:
    """The saved array ``key`` with this shape and dtype (when given), claimed."""
    value = arrays.get(key)
    if value is None:
        raise FitkitValueError(f"its array {key!r}, which its header lists, is missing: {_FIX}.")
    if (
        (shape is not None and tuple(value.shape) != tuple(shape))
        or value.dtype.kind not in kinds
        or (dtype is not None and value.dtype != np.dtype(dtype))
    ):
        wanted = (np.dtype(dtype).name if dtype is not None else "numbers") + (
            f" {list(shape)}" if shape is not None else ""
        )
        raise FitkitValueError(
            f"its array {key!r} is {value.dtype.name} {list(value.shape)}; "
            f"this model needs {wanted}: {_FIX}."
        )
    claimed.add(key)
    return value


def unclaimed(arrays: dict, claimed: set, skip: tuple[str, ...] = ()) -> None:
    """Every array is one some field of the header describes (a removed field leaves its
    arrays behind, and a restore would then skip state it needs)."""
    left = sorted(k for k in arrays if k not in claimed and not k.startswith(skip))
    if left:
        raise FitkitValueError(f"its arrays {left[:5]} belong to no field of its header: {_FIX}.")


# ---------------------------------------------------------------------- shared parts
def check_metric_names(saved: list, names: list[str]) -> list[str]:
    """The saved metric states belong to this model's metrics (once built, at a fit's first
    batch; before that ``names`` is empty and anything goes); returns ``names``."""
    if names and [e["name"] for e in saved] != names:
        raise FitkitValueError(
            f"it holds the states of metrics {[e['name'] for e in saved]}; "
            f"this model's are {names}. Compile with the same metrics to "
            f"resume. Nothing was restored."
        )
    return names


def check_scheduler(adapter: Adapter, meta: dict) -> None:
    """The saved lr schedule state is this model's kind of schedule, shaped as its own."""
    saved = field(meta, "scheduler", "", lambda v: isinstance(v, dict), "a dict")
    current = adapter.scheduler.state_dict()
    for key in ("kind", "class", "every"):
        if saved.get(key) != current.get(key):
            theirs = saved.get("class") or saved.get("kind") or "none"
            ours = current.get("class") or current.get("kind") or "none"
            raise FitkitValueError(
                f"its lr_schedule state ({theirs!r}, every={saved.get('every')!r}) does not "
                f"match this model's ({ours!r}, every={current.get('every')!r}); compile with "
                f"the lr_schedule the state was saved with. Nothing was restored"
            )
    like(saved, current, "['scheduler']")


def check_host_rngs(arrays: dict, claimed: set, prefix: str = "") -> None:
    """python's and numpy's generator states, tried on fresh generators (no global change)."""
    names = ("python", "python_meta", "python_gauss", "numpy", "numpy_meta", "numpy_gauss")
    got = {n: array(arrays, f"{prefix}rng/{n}", claimed, kinds="iuf") for n in names}
    try:
        version, no_gauss = (int(v) for v in got["python_meta"])
        gauss = None if no_gauss == -1 else float(got["python_gauss"][0])
        random.Random().setstate((version, tuple(int(v) for v in got["python"]), gauss))
        pos, has_gauss = (int(v) for v in got["numpy_meta"])
        np.random.RandomState().set_state(
            ("MT19937", got["numpy"], pos, has_gauss, float(got["numpy_gauss"][0]))
        )
    except (ValueError, TypeError, IndexError, OverflowError) as err:
        raise FitkitValueError(
            f"its random generator states ({prefix}rng/...) are not valid ({err}): {_FIX}."
        ) from None


def check_history(meta: dict) -> None:
    history = field(meta, "history", "", lambda v: isinstance(v, dict), "a dict")
    epochs = field(
        history,
        "epoch",
        "['history']",
        lambda v: isinstance(v, list) and all(is_int(e) for e in v),
        "a list of ints",
    )
    field(history, "history", "['history']", lambda v: isinstance(v, dict), "a dict")
    for key in history["history"]:
        field(
            history["history"],
            key,
            "['history']['history']",
            lambda v: (
                isinstance(v, list)
                and len(v) == len(epochs)
                and all(x is None or is_number(x) for x in v)
            ),
            f"a list of {len(epochs)} numbers",
        )
    field(
        history,
        "stop_reason",
        "['history']",
        lambda v: v is None or isinstance(v, str),
        "a string or null",
    )


def check_fit(
    meta: dict, arrays: dict, rngs: Callable[[dict, set, str], None], callbacks: Any = None
) -> None:
    """The fit's position (None outside a fit), the saved callbacks' states (against
    ``callbacks``, a running fit's CallbackList, when given) and a mid-epoch file's RNGs as
    that epoch began (``rngs``: the backend's check of a set of RNG arrays)."""
    fit = field(meta, "fit", "", lambda v: v is None or isinstance(v, dict), "a dict or null")
    claimed: set = set()
    if fit is not None:
        for key in ("epoch", "step", "global_step"):
            field(fit, key, "['fit']", is_count, "a whole number >= 0")
        field(
            fit,
            "epochs",
            "['fit']",
            lambda v: is_count(v) and v >= fit["epoch"],
            f"a whole number >= its epoch ({fit['epoch']})",
        )
        data = field(fit, "data", "['fit']", lambda v: isinstance(v, dict), "a dict")
        for key in ("batch_size", "steps"):
            field(
                data,
                key,
                "['fit']['data']",
                lambda v: v is None or is_count(v),
                "a whole number or null",
            )
        # steps_per_epoch: the open pass's steps before this epoch (0 for a fresh pass)
        field(fit, "pass_step", "['fit']", is_count, "a whole number >= 0")
        check_callbacks(fit, callbacks)
        if fit["step"] or fit.get("pass_step"):  # mid-pass: the RNGs as the pass began
            rngs(arrays, claimed, "epoch_rng/")
    # what a data source draws from besides the RNGs (a loader's own generator, a tf.data
    # pass number): each source checks its own when it is given them back
    claimed.update(k for k in arrays if k.startswith(("source/", "epoch_rng/source/")))
    unclaimed({k: v for k, v in arrays.items() if k.startswith("epoch_rng/")}, claimed)


def check_callbacks(fit: dict, callbacks: Any = None) -> None:
    """Each saved callback state is ``{"class", "state"}``; against a CallbackList, the same
    classes in the same order, each state shaped as the callback's own."""
    saved = field(fit, "callbacks", "['fit']", lambda v: isinstance(v, list), "a list")
    for i, entry in enumerate(saved):
        where = f"['fit']['callbacks'][{i}]"
        field(entry, "class", where, lambda v: isinstance(v, str), "a class name")
        field(entry, "state", where, lambda v: isinstance(v, dict), "a dict")
    if callbacks is None:
        return
    from .callbacks.base import match_states  # the pairs the callback list will restore

    pairs, _ = match_states(callbacks.callbacks, saved, "the checkpoint")
    index = {id(state): i for i, state in enumerate(s["state"] for s in saved)}
    for cb, state in pairs:
        like(
            state,
            cb.state_dict(),
            f"['fit']['callbacks'][{index[id(state)]}]['state']",
            same_lengths=False,
            exact_ints=True,
        )
