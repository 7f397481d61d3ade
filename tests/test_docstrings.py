"""Every public name has a docstring, and the API reference (docs/api.md, built from them by
mkdocstrings) shows an example for each class and function and for every Model member.

Public means: listed in ``__all__`` of fitkit or of a public submodule, and, on such a class,
every attribute whose name does not start with "_". A method that overrides a documented
base method inherits its docstring (``inspect.getdoc``)."""

from __future__ import annotations

import inspect

import pytest

import fitkit

MODULES = ("callbacks", "devices", "distribute", "metrics", "schedules", "script")


def _public_objects():
    """(qualified name, object) of every public class and function."""
    seen = []
    for name in fitkit.__all__:
        obj = getattr(fitkit, name)
        if not inspect.ismodule(obj):
            seen.append((f"fitkit.{name}", obj))
    for module_name in MODULES:
        module = getattr(fitkit, module_name)
        assert hasattr(module, "__all__"), f"fitkit.{module_name} has no __all__"
        for name in module.__all__:
            obj = getattr(module, name)
            if not inspect.ismodule(obj):
                seen.append((f"fitkit.{module_name}.{name}", obj))
    return seen


def _members(cls):
    """(name, attribute) of the class's own public attributes that are code or properties."""
    for name, value in vars(cls).items():
        if name.startswith("_"):
            continue
        if isinstance(value, (staticmethod, classmethod)):
            value = value.__func__
        if inspect.isfunction(value) or isinstance(value, property):
            yield name, getattr(cls, name) if not isinstance(value, property) else value


PUBLIC = _public_objects()


def test_submodules_export_what_they_define_not_what_they_import():
    for module_name in MODULES:
        module = getattr(fitkit, module_name)
        for name in module.__all__:
            obj = getattr(module, name)
            owner = getattr(obj, "__module__", "") or ""
            assert owner.startswith("fitkit"), f"fitkit.{module_name}.{name} is {owner}'s"


@pytest.mark.parametrize("name, obj", PUBLIC, ids=[n for n, _ in PUBLIC])
def test_each_public_class_and_function_has_a_docstring_with_an_example(name, obj):
    doc = inspect.getdoc(obj) or ""
    assert doc, f"{name} has no docstring"
    if isinstance(obj, type) and issubclass(obj, BaseException):
        return  # errors: the example lives on fitkit.FitkitError's docstring
    assert ">>>" in doc, f"{name}'s docstring has no example (a '>>>' line)"


def test_every_method_of_a_public_class_is_documented():
    undocumented = [
        f"{name}.{member}"
        for name, obj in PUBLIC
        if isinstance(obj, type)
        for member, value in _members(obj)
        if not inspect.getdoc(value)
    ]
    assert not undocumented, f"methods without a docstring: {undocumented}"


def test_every_model_member_has_an_example():
    members = [
        m
        for cls in fitkit.Model.__mro__
        if cls.__module__.startswith("fitkit")
        for m in _members(cls)
    ]  # with the class-style steps it inherits
    assert {"fit", "train_step", "shared_step", "net"} <= {name for name, _ in members}
    without = [member for member, value in members if ">>>" not in (inspect.getdoc(value) or "")]
    assert not without, f"fitkit.Model members without an example: {without}"


def test_the_errors_docstring_shows_how_to_catch_them():
    assert ">>>" in inspect.getdoc(fitkit.FitkitError)
