"""What a config's ``model``, ``data``, ``callbacks`` and ``loggers`` name: ``{class_path,
init_args}`` (a class, or ``module:function``), or Keras's ``{class_name, config}``.

Owns importing the path and binding init_args to its signature right after parsing, before any
training, with errors naming the file, the key path and the fix; building the objects later.
Which spec serves which part of a run is runner.py's.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import os
import re
import sys
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import FitkitTypeError, FitkitValueError
from .parser import KERAS_EXTRA, Sources, nearest

_FORMS = (
    "{class_path: package.module.Class, init_args: {...}}, "
    "{class_path: 'package.module:function', init_args: {...}} or Keras's "
    "{class_name: Name, config: {...}}"
)


@dataclasses.dataclass(frozen=True)
class Spec:
    """One checked spec: ``build()`` calls ``target(**init_args)`` (or deserializes a Keras
    model config)."""

    key: str  # key path in the config, e.g. "model" or "callbacks[1]"
    origin: str  # the file (or command line) that set it
    target: Callable[..., Any] | None
    init_args: dict[str, Any]
    keras_config: dict[str, Any] | None = None  # a Keras {class_name, config} model

    def build(self) -> Any:
        if self.keras_config is not None:
            import keras

            return keras.saving.deserialize_keras_object(self.keras_config)
        assert self.target is not None
        return self.target(**self.init_args)


def _import(module_name: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        top = module_name.split(".")[0]
        here = os.getcwd()
        found = os.path.exists(os.path.join(here, top + ".py")) or os.path.isdir(
            os.path.join(here, top)
        )
        missing = err.name or ""
        if not module_name.startswith(missing) or here in sys.path or not found:
            raise
        # the current folder, as `python -m` would search it (a namespace package such as
        # `examples`, found elsewhere first, takes in this folder's part too)
        sys.path.append(here)
        importlib.invalidate_caches()
        return importlib.import_module(module_name)


def import_path(path: str, key: str, origin: str) -> Callable[..., Any]:
    """The class or function ``path`` names (``a.b.C`` or ``a.b:f``), or an error that names
    ``origin`` and ``key``."""
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise FitkitValueError(
            f"{origin}: {key} {path!r} names no module. Fix: write package.module.Class or "
            f"'package.module:function'."
        )
    try:
        obj: Any = _import(module_name)
    except ImportError as err:
        raise FitkitValueError(
            f"{origin}: {key} {path!r} does not import: {type(err).__name__}: {err}. Fix: check "
            f"the spelling, install the package, or put the module's folder on PYTHONPATH "
            f"(the current folder is searched too)."
        ) from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = [n for n in dir(obj) if not n.startswith("_")]
            near = nearest(part, names)
            hint = f" Did you mean {near!r}?" if near else ""
            raise FitkitValueError(
                f"{origin}: {key} {path!r}: {getattr(obj, '__name__', obj)!s} has no "
                f"{part!r}.{hint} Fix: name a class or function it defines."
            )
        obj = getattr(obj, part)
    if not callable(obj):
        raise FitkitTypeError(
            f"{origin}: {key} {path!r} is a {type(obj).__name__}, not a class or function. "
            f"Fix: name what builds the object."
        )
    return obj


def check_init_args(
    target: Callable[..., Any],
    init_args: Mapping[str, Any],
    key: str,
    origin: str,
    field: str = "init_args",
) -> None:
    """``init_args`` bind to ``target``'s signature: no unknown name, no required one missing."""
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        return  # a builtin without a signature: its own call reports
    params = signature.parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    named = [
        name
        for name, p in params.items()
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    ]
    what = getattr(target, "__qualname__", repr(target))
    if not takes_any:
        for name in init_args:
            if name not in named:
                near = nearest(name, named)
                hint = f" Did you mean {near!r}?" if near else ""
                raise FitkitValueError(
                    f"{origin}: {key}.{field}.{name}: {what} takes no argument {name!r}."
                    f"{hint} Fix: rename or remove it; it takes: {', '.join(named) or 'nothing'}."
                )
    missing = [
        name
        for name in named
        if params[name].default is inspect.Parameter.empty and name not in init_args
    ]
    if missing:
        raise FitkitValueError(
            f"{origin}: {key}.{field}: {what} needs {', '.join(map(repr, missing))}. Fix: add "
            f"{', '.join(f'{key}.{field}.{m}' for m in missing)}."
        )


def check_types(
    target: Callable[..., Any],
    init_args: Mapping[str, Any],
    key: str,
    origin: str,
    field: str = "init_args",
) -> None:
    """Each value of ``init_args`` against ``target``'s annotation, by jsonargparse (which
    reads the signature as it reads compile's and fit's). A signature it cannot read is left
    to the call itself."""
    import argparse
    import re

    from jsonargparse import ArgumentParser

    checker = ArgumentParser(exit_on_error=False)
    try:
        if inspect.isclass(target):
            checker.add_class_arguments(target, fail_untyped=False, sub_configs=False)
        else:
            checker.add_function_arguments(target, fail_untyped=False)
        checker.parse_object(dict(init_args))
    except argparse.ArgumentError as err:
        found = re.search(r'Parser key "([\w.]+)":\s*(.*)', str(err), re.DOTALL)
        if found and found[1] in init_args:  # a value of the wrong type, not a reading gap
            what = getattr(target, "__qualname__", repr(target))
            raise FitkitTypeError(
                f"{origin}: {key}.{field}.{found[1]}: {' '.join(found[2].split())} ({what}'s "
                f"annotation). Fix: give a value of that type."
            ) from None
    except Exception:  # noqa: BLE001  (an annotation jsonargparse cannot read: the call checks)
        return


def _callback_class(name: str, key: str, origin: str) -> Callable[..., Any]:
    from .. import callbacks

    if name in callbacks.__all__:
        return getattr(callbacks, name)
    near = nearest(name, callbacks.__all__)
    hint = f" Did you mean {near!r}?" if near else ""
    raise FitkitValueError(
        f"{origin}: {key}.class_name {name!r} is no fitkit callback.{hint} Fix: one of "
        f"{', '.join(callbacks.__all__)}, or give class_path for another class (a Keras "
        f"callback runs too: class_path: keras.callbacks.{name})."
    )


def load(value: Any, key: str, sources: Sources, kind: str) -> Spec:
    """``value`` (from the parsed config at ``key``) as a checked Spec; ``kind`` is "model",
    "data" or "callback" (Keras's form means a model config or a callback name)."""
    # callbacks[1] is key path callbacks.1: an override of another item is not its origin
    origin = sources.origin(re.sub(r"\[(\d+)\]", r".\1", key))
    if isinstance(value, str):
        value = {"class_path": value}
    if not isinstance(value, Mapping):
        raise FitkitTypeError(f"{origin}: {key} is a {type(value).__name__}. Fix: write {_FORMS}.")
    given = {k: v for k, v in value.items() if v not in (None, {})}
    valid = ("class_path", "init_args", "class_name", "config", "module", *KERAS_EXTRA)
    for name in value:
        if name not in valid:
            near = nearest(str(name), valid)
            hint = f" Did you mean '{key}.{near}'?" if near else ""
            raise FitkitValueError(
                f"{origin}: unknown key '{key}.{name}'.{hint} Fix: write {_FORMS}."
            )
    if "class_path" in given and ("class_name" in given or "config" in given):
        raise FitkitValueError(
            f"{origin}: {key} mixes class_path with Keras's class_name / config. Fix: keep one "
            f"form: {_FORMS}."
        )
    for field in ("init_args", "config"):
        if field in given and not isinstance(given[field], Mapping):
            raise FitkitTypeError(
                f"{origin}: {key}.{field} is a {type(given[field]).__name__}. Fix: give the "
                f"arguments by name, as a mapping."
            )
    if "class_path" in given:
        if not isinstance(given["class_path"], str):
            raise FitkitTypeError(f"{origin}: {key}.class_path must be a string. Fix: {_FORMS}.")
        init_args = dict(given.get("init_args") or {})
        target = import_path(given["class_path"], f"{key}.class_path", origin)
        check_init_args(target, init_args, key, origin)
        check_types(target, init_args, key, origin)
        return Spec(key, origin, target, init_args)
    if "class_name" in given and kind == "callback":
        target = _callback_class(str(given["class_name"]), key, origin)
        init_args = dict(given.get("config") or {})
        check_init_args(target, init_args, key, origin, field="config")
        check_types(target, init_args, key, origin, field="config")
        return Spec(key, origin, target, init_args)
    if "class_name" in given and kind == "model":
        keras_config = {k: v for k, v in given.items() if k != "init_args"}
        keras_config.setdefault("module", "keras")  # where Keras's own models live
        return Spec(key, origin, None, {}, keras_config=keras_config)
    if "class_name" in given:
        raise FitkitValueError(
            f"{origin}: {key} takes class_path + init_args (Keras's class_name form names "
            f"models and callbacks only). Fix: {key}.class_path: 'package.module:function'."
        )
    if origin == "the defaults" and not sources.files:  # `fitkit fit` with no config at all
        raise FitkitValueError(
            f"no --config given and no {key} on the command line. Fix: fitkit <command> "
            f"--config run.yaml (docs/config.md), or --{key} as {_FORMS}."
        )
    if origin == "the defaults":  # nothing set it: name the files that lack it
        origin = ", ".join(sources.files)
    raise FitkitValueError(f"{origin}: {key} is missing. Fix: write {_FORMS}.")


def nested(tree: Any, key: str) -> dict[str, Any]:
    """The ``{class_path, init_args}`` dicts inside ``tree`` (compile's metrics, loss,
    lr_schedule...), by key path; Keras's ``{class_name, config}`` dicts stay for compile."""
    found: dict[str, Any] = {}
    if isinstance(tree, Mapping) and "class_path" in tree:
        found[key] = tree
    elif isinstance(tree, Mapping):
        for name, value in tree.items():
            found.update(nested(value, f"{key}.{name}"))
    elif isinstance(tree, list):
        for i, value in enumerate(tree):
            found.update(nested(value, f"{key}[{i}]"))
    return found


def with_objects(tree: Any, key: str, specs: Mapping[str, Spec]) -> Any:
    """``tree`` with each spec of ``nested`` replaced by the object it builds."""
    if key in specs:
        return specs[key].build()
    if isinstance(tree, Mapping):
        return {name: with_objects(value, f"{key}.{name}", specs) for name, value in tree.items()}
    if isinstance(tree, list):
        return [with_objects(value, f"{key}[{i}]", specs) for i, value in enumerate(tree)]
    return tree
