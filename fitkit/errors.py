"""The exceptions fitkit users see.

Owns the error types only; each module raises them with a message that names what was
wrong and how to fix it. Subclasses also derive from the matching builtin so that
``except ValueError`` keeps working.
"""

from __future__ import annotations


class FitkitError(Exception):
    """Base class of every error fitkit raises on purpose; each also derives from the
    matching builtin (FitkitValueError is a ValueError, ...), so either ``except`` works.

    >>> try:  # doctest: +ELLIPSIS
    ...     model.compile("adam", "no_such_loss")
    ... except fitkit.FitkitError as err:       # here a FitkitValueError
    ...     print(err)                           # names the valid losses
    Unknown loss 'no_such_loss'. Valid loss names are: 'mse', 'mae', ...
    """


class FitkitValueError(FitkitError, ValueError):
    """An argument has the right type but a wrong value (bad name, bad shape, bad range)."""


class FitkitTypeError(FitkitError, TypeError):
    """An argument has a type fitkit cannot use."""


class NotCompiledError(FitkitError, RuntimeError):
    """A training or evaluation call came before ``Model.compile``."""


class BackendError(FitkitError, ImportError):
    """The requested backend is unknown, not installed, or does not match the network."""


class StepFailedError(FitkitError, RuntimeError):
    """A step failed in the middle of a run; the message names where, the cause is chained.

    The history keeps the epochs that finished and the model stays usable.
    """


class FitkitAttributeError(FitkitError, AttributeError):
    """An attribute that code written for another version uses does not exist here; the
    message names the one to use (``hasattr`` still answers False)."""
