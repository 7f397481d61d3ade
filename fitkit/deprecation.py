"""Deprecations: one warning class and one helper, so every renamed or retired public name
warns the same way, for the same span of releases (the policy is in docs/design.md).

Owns the wording and the schedule check only; the names being retired stay where they live.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

from ._version import __version__

F = TypeVar("F", bound=Callable[..., Any])


class FitkitDeprecationWarning(DeprecationWarning):
    """A public fitkit name that still works but will be removed (shown by default)."""


def _release(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".")[:3] if part.isdigit())


def warn_deprecated(
    old: str, *, use: str, since: str, removed_in: str, stacklevel: int = 2
) -> None:
    """Warn that ``old`` is deprecated in favour of ``use``; called where the old name is used.

    >>> warn_deprecated("history['lr']", use="history['learning_rate']", since="0.1.0",
    ...                 removed_in="0.3.0")  # doctest: +SKIP
    """
    if _release(removed_in) <= _release(__version__):
        # the schedule says it is gone: the release must remove the name, not keep warning
        raise RuntimeError(f"{old} was due for removal in {removed_in}; remove it")
    warnings.warn(
        f"{old} is deprecated since fitkit {since} and will be removed in {removed_in}; "
        f"use {use} instead.",
        FitkitDeprecationWarning,
        stacklevel=stacklevel + 1,
    )


def deprecated(*, use: str, since: str, removed_in: str) -> Callable[[F], F]:
    """Mark a function or method as deprecated: every call warns, naming its replacement.

    >>> @deprecated(use="Model.validate", since="0.1.0", removed_in="0.3.0")
    ... def old_validate(x): return x
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as seen:
    ...     warnings.simplefilter("always")
    ...     old_validate(1)
    1
    >>> seen[0].category.__name__
    'FitkitDeprecationWarning'
    """

    def mark(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            warn_deprecated(f"{fn.__qualname__}()", use=use, since=since, removed_in=removed_in)
            return fn(*args, **kwargs)

        wrapper.__doc__ = f"Deprecated since {since} (removed in {removed_in}): use {use}.\n\n" + (
            fn.__doc__ or ""
        )
        return wrapper  # type: ignore[return-value]

    return mark
