"""What fitkit's machinery keeps for one Model: its adapter, compiled step functions, the
running (or last) fit and a checkpoint waiting for the next one.

Owns that record (``Runtime``, reached as ``model.runtime``) and the few questions asked of
it; the public methods that fill it are model.py's, what runs with it fitting.py's and
training.py's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import NotCompiledError

if TYPE_CHECKING:
    from .adapter import Adapter
    from .callbacks import CallbackList
    from .custom_steps import CustomSteps
    from .resume import FitState, LoadedCheckpoint

MODES = ("train", "test", "predict")


@dataclass
class Runtime:
    """A Model's internals, typed: what fitting, training, checks and callbacks read."""

    adapter: Adapter
    steps: CustomSteps  # the Model whose <mode>_step methods the compiled functions run
    overridden: frozenset[str] = field(init=False)  # modes whose <mode>_step is overridden
    shared: bool = field(init=False)  # a subclass overrides shared_step (read every step)
    compiled: bool = False
    steps_per_execution: int | str = "auto"  # compile's; "auto": training.steps_per_call
    functions: dict[str, Callable[[Any], Any]] = field(default_factory=dict)  # by mode,
    # built once per compile (a tf.function on TensorFlow); cleared when states are rebuilt
    checked_kinds: set[tuple[str, tuple]] = field(default_factory=set)  # (mode, batch_kind)
    # whose first batch passed the forward-pass check since compile (checks.py)
    fit: FitState | None = None  # the running (or last) fit's position
    callbacks: CallbackList | None = None  # that fit's callbacks, for its checkpoints
    pending: LoadedCheckpoint | None = None  # load_checkpoint outside a fit: the next fit's
    last_on_batch: str | None = None  # "train" / "test": the last batch-style call
    summary_inputs: tuple[Any, Any] | None = None  # summary's (input_shape, input_data), the
    # inputs export traces with when no batch was seen

    def __post_init__(self) -> None:
        from .custom_steps import CustomSteps  # the base class: what is not overridden

        kind = type(self.steps)
        self.overridden = frozenset(
            m for m in MODES if getattr(kind, f"{m}_step") is not getattr(CustomSteps, f"{m}_step")
        )
        self.shared = kind.shared_step is not CustomSteps.shared_step

    def function(self, mode: str) -> Callable[[Any], Any]:
        """The compiled ``<mode>_step`` of the model, built on first use after compile."""
        if mode not in self.functions:
            self.functions[mode] = self.adapter.make_function(
                getattr(self.steps, f"{mode}_step"), mode
            )
        return self.functions[mode]

    def require_compiled(self, what: str) -> None:
        if not self.compiled:
            raise NotCompiledError(
                f"{what} needs a compiled model: call model.compile(optimizer=..., loss=...) first."
            )

    def custom(self, mode: str) -> bool:
        """True when a subclass overrides ``<mode>_step`` (or ``shared_step``, for train and
        test), or the network brings its own step: it uses the data its own way."""
        return (
            mode in self.overridden
            or (mode != "predict" and self.shared)
            or self.adapter.runs_own_step(mode)
        )

    def open_fit(self) -> FitState | None:
        """The fit's state while it has not completed (it runs, or an error stopped it)."""
        return self.fit if self.fit is not None and not self.fit.completed else None
