"""One config-driven run: ``fitkit.run(config, command)`` and the ``fitkit fit / validate /
predict / export`` commands behind it.

Owns the order of a run (parse, check every spec, check run_dir, then backend, seed, network,
compile, data, callbacks, the command) and what run_dir holds. Parsing is parser.py's, the
specs are specs.py's, the data's splits are splits.py's; training is fitkit.Model's.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import pathlib
import shutil
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import FitkitError, FitkitValueError

if TYPE_CHECKING:
    from .parser import Sources

COMMANDS = ("fit", "validate", "predict", "export")
CONFIG_FILE = "config.yaml"
RUN_DIR_FIELD = "${run_dir}"  # in a spec's strings: the run's folder
BACKUP_DIR = "backup"
# each logger's state (its tracker run) after fit: export logs its artifact to that run
TRACKERS_FILE = "trackers.json"
LAST_CKPT = os.path.join("checkpoints", "last.ckpt")
_EXPORT_NAMES = {
    "onnx": "model.onnx",
    "torch": "model.pt2",
    "torchscript": "model.pt",
    "tf_saved_model": "saved_model",
    "litert": "model.tflite",
    "tflite": "model.tflite",
}

ConfigSource = str | os.PathLike | Mapping[str, Any]


def run(
    config: ConfigSource | Sequence[ConfigSource],
    command: str = "fit",
    *,
    overrides: Sequence[str] = (),
    ckpt_path: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> Any:
    """Run ``command`` ("fit", "validate", "predict" or "export") as ``fitkit <command>
    --config ...`` does. ``config``: a YAML / JSON file, a dict, or a list of them (merged in
    order, the last wins); ``overrides``: dotted options such as ``["--fit.epochs", "3"]``.

    Returns fit's History, validate's dict of logs, predict's outputs or export's path.

    >>> history = fitkit.run("run.yaml", overrides=["--fit.epochs", "2"])  # doctest: +SKIP
    >>> logs = fitkit.run("runs/run/config.yaml", "validate")  # doctest: +SKIP
    """
    if command not in COMMANDS:
        raise FitkitValueError(f"fitkit.run: unknown command {command!r}; one of {COMMANDS}.")
    configs = [config] if isinstance(config, (str, os.PathLike, Mapping)) else list(config)
    argv: list[str] = []
    names: dict[str, str] = {}
    for item in configs:
        if isinstance(item, Mapping):
            try:
                text = json.dumps(item)
            except TypeError as err:
                raise FitkitValueError(
                    f"fitkit.run: a config dict holds plain data only (as a YAML file would): "
                    f"{err}. Fix: name objects by {{class_path, init_args}}."
                ) from None
            names[text] = "the config dict given to fitkit.run"
            argv += ["--config", text]
        else:
            argv += ["--config", os.fspath(item)]
    argv += list(overrides)
    if ckpt_path is not None:
        argv += ["--ckpt_path", os.fspath(ckpt_path)]
    if overwrite:
        argv += ["--overwrite", "true"]
    return _run(command, argv, names)[0]


def main(command: str, argv: Sequence[str]) -> int:
    """``fitkit <command> [options]``: the exit code (errors print as one line)."""
    try:
        result, run_dir = _run(command, list(argv), {})
    except SystemExit as done:  # --help, --print_config
        return done.code if isinstance(done.code, int) else 0
    except FitkitError as err:
        text = str(err)
        text = text.removeprefix(f"fitkit {command}: ")  # said once
        print(f"fitkit {command}: error: {text}", file=sys.stderr)
        return 2
    from .. import distribute

    if not distribute.is_main_process():
        return 0  # under fitkit launch, one process reports
    if command == "fit":
        epochs = len(result.epoch)
        print(f"trained {epochs} epoch(s) in {run_dir}: {CONFIG_FILE}, {LAST_CKPT}, history.csv")
    elif command == "validate":
        print(json.dumps(result))
    elif command == "predict":
        print(f"predictions in {run_dir}: {_shapes(result)}")
    elif command == "export":
        print(f"exported {result}")
    return 0


def _shapes(outputs: Any) -> Any:
    if isinstance(outputs, Mapping):
        return {str(k): _shapes(v) for k, v in outputs.items()}
    if isinstance(outputs, (tuple, list)):
        return [_shapes(v) for v in outputs]
    return tuple(getattr(outputs, "shape", ()))


def _run(command: str, argv: list[str], names: dict[str, str]) -> tuple[Any, pathlib.Path]:
    """What ``command`` returns, and the run_dir it used."""
    from . import parser, specs

    resolved, sources = parser.parse(command, argv, names)
    ckpt_path, overwrite = (resolved.pop(k) for k in parser.LOCAL_KEYS)
    if resolved["run_dir"] is None:
        files = [f for f in sources.files if os.path.isfile(f)]
        resolved["run_dir"] = os.path.join("runs", pathlib.Path(files[-1]).stem if files else "run")
    run_dir = pathlib.Path(resolved["run_dir"])
    # the specs are built with ${run_dir} filled in; config.yaml keeps it as written
    filled = _fill_run_dir(
        {k: resolved[k] for k in parser.SPEC_SECTIONS + parser.SPEC_LISTS}, run_dir
    )
    built = {name: specs.load(filled[name], name, sources, name) for name in parser.SPEC_SECTIONS}
    object_specs = {
        section: [
            specs.load(value, f"{section}[{i}]", sources, "callback")
            for i, value in enumerate(filled[section])
        ]
        for section in parser.SPEC_LISTS
    }
    object_specs["compile"] = [
        specs.load(value, path, sources, "object")
        for path, value in specs.nested(resolved["compile"], "compile").items()
    ]
    strategy = resolved["strategy"]
    if strategy is not None and strategy not in parser.STRATEGIES:
        near = parser.nearest(strategy, parser.STRATEGIES)
        raise FitkitValueError(
            f"{sources.origin('strategy')}: key 'strategy' has a wrong value: {strategy!r}."
            + (f" Did you mean {near!r}?" if near else "")
            + f" Fix: one of {', '.join(parser.STRATEGIES)}, or leave it out."
        )
    try:
        resolved["backend"] = _backend(resolved["backend"])
    except FitkitValueError as err:
        raise FitkitValueError(f"{sources.origin('backend')}: key 'backend': {err}") from None
    if command == "fit":
        if ckpt_path is not None:
            raise FitkitValueError(
                "--ckpt_path is for validate, predict and export. Fix: leave it out; fit "
                f"resumes by itself from {run_dir / BACKUP_DIR} after a crash."
            )
        _check_run_dir(run_dir, resolved, overwrite)
    else:
        ckpt_path = ckpt_path or str(run_dir / LAST_CKPT)
        if not os.path.isfile(ckpt_path):
            raise FitkitValueError(
                f"fitkit {command}: no checkpoint at {ckpt_path}. Fix: run fitkit fit with this "
                f"config first, or give --ckpt_path."
            )
    with _backend_env(resolved["backend"]), _strategy(command, strategy, sources):
        work = _work(command, resolved, built, object_specs, run_dir, ckpt_path, sources)
        return work, run_dir


def _fill_run_dir(tree: Any, run_dir: pathlib.Path) -> Any:
    """``tree`` with ``${run_dir}`` in its strings replaced by ``run_dir``: a callback's file
    (a ModelCheckpoint's, a tracker's store) follows --run_dir."""
    if isinstance(tree, str):
        return tree.replace(RUN_DIR_FIELD, os.fspath(run_dir))
    if isinstance(tree, Mapping):
        return {key: _fill_run_dir(value, run_dir) for key, value in tree.items()}
    if isinstance(tree, list):
        return [_fill_run_dir(value, run_dir) for value in tree]
    return tree


def _backend(name: str | None) -> str:
    from ..backend import backend, normalize

    return normalize(name) if name else backend()


@contextlib.contextmanager
def _backend_env(name: str) -> Iterator[None]:
    from ..backend import ENV_VAR

    before = os.environ.get(ENV_VAR)
    os.environ[ENV_VAR] = name
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(ENV_VAR, None)
        else:
            os.environ[ENV_VAR] = before


@contextlib.contextmanager
def _strategy(command: str, name: str | None, sources: Sources) -> Iterator[None]:
    """The strategy the network is built, compiled and run in: ``name``, else the one the
    launcher's environment asks for (torchrun's variables, TF_CONFIG), else none. Export
    traces one process's network: it takes none."""
    from .. import distribute

    chosen = name or distribute.environment_name() or None
    if command == "export" or chosen is None or chosen == "none":
        yield
        return
    entered = distribute.strategy(chosen)
    try:
        entered.__enter__()
    except FitkitError as err:  # refused before any work: say which key, and how to launch
        if name and err.args and isinstance(err.args[0], str):
            err.args = (
                f"{sources.origin('strategy')}: key 'strategy': {err.args[0]} A config run "
                f"starts as: fitkit launch -n N -m fitkit.cli {command} --config ...",
                *err.args[1:],
            )
        raise
    with contextlib.ExitStack() as stack:
        stack.push(entered)
        yield


def _write_text(path: pathlib.Path, text: str) -> None:
    """Write ``text`` whole or not at all: other ranks may be reading ``path`` meanwhile."""
    part = path.with_name(path.name + ".part")
    part.write_text(text, encoding="utf-8")
    os.replace(part, path)


def _leaves(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted key path -> value (list items by index: 'callbacks.0.init_args.patience'); an
    empty dict or list is no leaf, so that a key filled in shows as itself, not its parent."""
    items: Iterable[tuple[Any, Any]]
    if isinstance(tree, Mapping):
        items = tree.items()
    elif isinstance(tree, list):
        items = enumerate(tree)
    else:
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in items:
        out.update(_leaves(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def dump(resolved: Mapping[str, Any]) -> str:
    from .parser import yaml_module

    yaml = yaml_module()
    return yaml.safe_dump(dict(resolved), sort_keys=False)


def _check_run_dir(run_dir: pathlib.Path, resolved: dict[str, Any], overwrite: bool) -> None:
    """Refuse a run_dir whose config.yaml differs from ``resolved`` (unless ``overwrite``)."""
    from .parser import yaml_module

    yaml = yaml_module()
    saved = run_dir / CONFIG_FILE
    if not saved.is_file():
        return
    with open(saved, encoding="utf-8") as handle:
        before = _leaves(yaml.safe_load(handle))
    now = _leaves(yaml.safe_load(dump(resolved)))
    differ = sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k))
    if not differ:
        return  # the same run: reproduce it, or resume it from its backup
    if not overwrite:
        shown = "; ".join(f"{k}: {before.get(k)!r} -> {now.get(k)!r}" for k in differ[:8])
        raise FitkitValueError(
            f"{saved} holds another config ({shown}). Fix: give a new run_dir, or --overwrite "
            f"to start this run over there."
        )
    from .. import distribute

    if distribute.is_main_process():
        shutil.rmtree(run_dir / BACKUP_DIR, ignore_errors=True)  # another run's position


def _work(
    command: str,
    resolved: dict[str, Any],
    built: dict[str, Any],
    object_specs: dict[str, list[Any]],  # callbacks, loggers, compile
    run_dir: pathlib.Path,
    ckpt_path: str | None,
    sources: Sources,
) -> Any:
    import fitkit

    from . import specs, splits

    fitkit.set_seed(resolved["seed"])
    model: Any = fitkit.Model(built["model"].build())
    in_compile = {spec.key: spec for spec in object_specs["compile"]}
    try:
        model.compile(**specs.with_objects(resolved["compile"], "compile", in_compile))
    except FitkitError as err:  # compile's own refusal (an optimizer name...): whose key
        if err.args and isinstance(err.args[0], str):
            err.args = (f"{sources.origin('compile')}: compile: {err.args[0]}", *err.args[1:])
        raise
    data = splits.read(built["data"].build(), "data")
    if command == "fit":
        callbacks = [spec.build() for spec in object_specs["callbacks"]]
        loggers = [spec.build() for spec in object_specs["loggers"]]
        return _fit(model, resolved, data, callbacks, loggers, run_dir)
    assert ckpt_path is not None
    model.load_checkpoint(ckpt_path)
    if command == "validate":
        _, split = splits.pick(data, "validate")
        args, kwargs = splits.as_arguments(split)
        return model.validate(*args, **kwargs, **resolved["validate"])
    if command == "predict":
        _, split = splits.pick(data, "predict")
        args, _ = splits.as_arguments(split)
        outputs = model.predict(args[0], **resolved["predict"])
        _save_predictions(outputs, run_dir)
        return outputs
    return _export(model, resolved["export"], data, run_dir, object_specs["loggers"])


def _fit(
    model: Any,
    resolved: dict[str, Any],
    data: Mapping[str, Any],
    callbacks: list[Any],
    loggers: list[Any],
    run_dir: pathlib.Path,
) -> Any:
    from .. import distribute
    from ..callbacks import BackupAndRestore
    from . import splits

    _, train = splits.pick(data, "fit")
    args, kwargs = splits.as_arguments(train)
    if "val" in data:
        kwargs["validation_data"] = data["val"]
    config_file = run_dir / CONFIG_FILE
    if distribute.is_main_process():
        run_dir.mkdir(parents=True, exist_ok=True)
        _write_text(config_file, dump(resolved))
    for logger in loggers:
        if callable(getattr(logger, "log_params", None)):
            logger.log_params(json.loads(json.dumps(resolved)))
        if callable(getattr(logger, "log_artifact", None)):
            logger.log_artifact(str(config_file))
    backup = BackupAndRestore(str(run_dir / BACKUP_DIR))
    history = model.fit(
        *args, **kwargs, callbacks=[*callbacks, *loggers, backup], **resolved["fit"]
    )
    model.save_checkpoint(str(run_dir / LAST_CKPT))
    if distribute.is_main_process():
        history.df.to_csv(run_dir / "history.csv", index=False)
        states = [_state_of(logger) for logger in loggers]
        _write_text(run_dir / TRACKERS_FILE, json.dumps(states, default=str))
    return history


def _state_of(logger: Any) -> dict[str, Any]:
    state = logger.state_dict() if callable(getattr(logger, "state_dict", None)) else {}
    return {"class": type(logger).__name__, "state": state}


def _loggers_of_the_fit(logger_specs: list[Any], run_dir: pathlib.Path) -> list[Any]:
    """The config's loggers, each given back the state it ended fit with (a tracker: its
    run), so that what they log after fit goes to the fit's runs."""
    loggers = [spec.build() for spec in logger_specs]
    try:
        saved = json.loads((run_dir / TRACKERS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        saved = []  # a run_dir from before trackers.json: new runs
    for logger, entry in zip(loggers, saved, strict=False):  # a config may add loggers
        if entry.get("class") == type(logger).__name__ and entry.get("state"):
            logger.load_state_dict(entry["state"])
    return loggers


def _save_predictions(outputs: Any, run_dir: pathlib.Path) -> None:
    import numpy as np

    from .. import distribute

    if not distribute.is_main_process():
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    if isinstance(outputs, Mapping):
        np.savez(run_dir / "predictions.npz", **{str(k): v for k, v in outputs.items()})
    elif isinstance(outputs, (tuple, list)):
        np.savez(run_dir / "predictions.npz", *outputs)
    else:
        np.save(run_dir / "predictions.npy", outputs)


def _export(
    model: Any,
    section: Mapping[str, Any],
    data: Mapping[str, Any],
    run_dir: pathlib.Path,
    logger_specs: list[Any],
) -> str:
    from .. import distribute
    from ..export import EXAMPLE_ROWS
    from . import splits

    fmt = str(section["format"])
    path = _fill_run_dir(section["path"], run_dir) or str(
        run_dir / "export" / _EXPORT_NAMES.get(fmt.lower(), "model")
    )
    options = dict(section["options"])
    if "example" not in options and "input_signature" not in options:
        name = next((n for n in ("predict", "test", "val") if n in data), "train")
        options["example"] = splits.first_inputs(data[name], EXAMPLE_ROWS)
    if not distribute.is_main_process():
        return path  # one process writes the artifact
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    written = model.export(path, format=fmt, **options)
    # an artifact may come in several files (ONNX's external weights: model.onnx.data)
    parts = [written, *sorted(glob.glob(glob.escape(written) + ".*"))]
    for logger in _loggers_of_the_fit(logger_specs, run_dir):
        if callable(getattr(logger, "log_artifact", None)):
            for part in parts:
                logger.log_artifact(part)
    return written
