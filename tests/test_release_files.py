"""What a release carries: licence, changelog, one version, type information, links that work
off GitHub (PyPI renders the README), and the deprecation helper's contract."""

from __future__ import annotations

import importlib.metadata
import inspect
import pathlib
import re
import tomllib
import warnings

import pytest

import fitkit
from fitkit.deprecation import FitkitDeprecationWarning, deprecated, warn_deprecated

ROOT = pathlib.Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_the_version_has_one_source_and_the_metadata_reads_it():
    project = PYPROJECT["project"]
    assert "version" not in project and "version" in project["dynamic"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {
        "attr": "fitkit._version.__version__"
    }
    assert importlib.metadata.version("fitkit") == fitkit.__version__
    assert len(re.findall(r"__version__ = ", (ROOT / "fitkit" / "_version.py").read_text())) == 1


def test_the_licence_file_is_the_declared_licence():
    assert PYPROJECT["project"]["license"] == "MIT"
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")


def test_the_changelog_keeps_an_unreleased_section_and_this_version():
    text = (ROOT / "CHANGELOG.md").read_text()
    assert "## [Unreleased]" in text
    assert f"## [{fitkit.__version__}]" in text


def test_the_package_ships_its_type_information():
    assert (ROOT / "fitkit" / "py.typed").exists()
    assert "py.typed" in PYPROJECT["tool"]["setuptools"]["package-data"]["fitkit"]


def test_the_python_floor_is_the_one_ci_runs():
    assert PYPROJECT["project"]["requires-python"] == ">=3.11"


def test_readme_links_work_outside_the_repository():
    relative = re.findall(r"\]\((?!https?://|#)([^)]+)\)", (ROOT / "README.md").read_text())
    assert relative == []


def _old() -> int:
    warn_deprecated("old()", use="new()", since="0.1.0", removed_in="9.0.0")
    return 1


def test_a_deprecation_warns_at_the_callers_line_naming_the_replacement():
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        line = inspect.currentframe().f_lineno + 1
        _old()
    assert [w.category for w in seen] == [FitkitDeprecationWarning]
    assert issubclass(FitkitDeprecationWarning, DeprecationWarning)
    message = str(seen[0].message)
    assert "old() is deprecated since fitkit 0.1.0" in message
    assert "removed in 9.0.0" in message and "use new() instead" in message
    assert seen[0].filename == __file__ and seen[0].lineno == line


def test_a_deprecated_function_still_works_and_says_so_in_its_docstring():
    @deprecated(use="fitkit.Model.validate", since="0.1.0", removed_in="9.0.0")
    def evaluate_old(x: int) -> int:
        """Old spelling."""
        return x + 1

    with pytest.warns(FitkitDeprecationWarning, match="evaluate_old"):
        assert evaluate_old(1) == 2
    assert evaluate_old.__doc__.startswith("Deprecated since 0.1.0 (removed in 9.0.0)")
    assert evaluate_old.__name__ == "evaluate_old"


def test_a_name_past_its_removal_release_fails_instead_of_warning():
    with pytest.raises(RuntimeError, match=r"due for removal in 0\.0\.1"):
        warn_deprecated("gone()", use="new()", since="0.0.0", removed_in="0.0.1")
