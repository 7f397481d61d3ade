"""fitkit/deprecation.py: one warning class, the same wording for every retired name, and a
release past the removal date refuses to keep warning. pytest turns FitkitDeprecationWarning
into an error (pyproject.toml), so these tests catch it explicitly."""

from __future__ import annotations

import pytest

from fitkit.deprecation import FitkitDeprecationWarning, deprecated, warn_deprecated


def test_a_deprecated_name_warns_naming_its_replacement_and_the_schedule():
    def lr_column():  # where the old name is used: the warning points at its caller
        warn_deprecated(
            "history['lr']", use="history['learning_rate']", since="0.1.0", removed_in="9.0.0"
        )

    with pytest.warns(FitkitDeprecationWarning) as seen:
        lr_column()
    (warning,) = seen
    assert str(warning.message) == (
        "history['lr'] is deprecated since fitkit 0.1.0 and will be removed in 9.0.0; "
        "use history['learning_rate'] instead."
    )
    assert warning.filename == __file__  # the user's line, not fitkit's


def test_a_name_past_its_removal_release_is_an_error_for_the_release_not_a_warning():
    with pytest.raises(RuntimeError, match=r"was due for removal in 0\.0\.1; remove it"):
        warn_deprecated("old()", use="new()", since="0.0.0", removed_in="0.0.1")


def test_a_deprecated_function_still_works_warns_at_each_call_and_says_so_in_its_doc():
    @deprecated(use="Model.validate", since="0.1.0", removed_in="9.0.0")
    def evaluate(x):
        """Validate."""
        return x + 1

    for _ in range(2):
        with pytest.warns(FitkitDeprecationWarning, match=r"evaluate\(\) is deprecated"):
            assert evaluate(1) == 2
    assert evaluate.__doc__.startswith("Deprecated since 0.1.0 (removed in 9.0.0): use ")
    assert evaluate.__name__ == "evaluate"


def test_fitkits_own_deprecations_fail_a_test_that_does_not_expect_them():
    with pytest.raises(FitkitDeprecationWarning):
        warn_deprecated("old()", use="new()", since="0.1.0", removed_in="9.0.0")
