"""The config's schema and its parsing, with jsonargparse: the sections, the defaults, types and
help of compile / fit / validate / predict read from ``fitkit.Model``'s own signatures, several
``--config`` files (the last wins), dotted overrides, ``--print_config``.

Owns turning jsonargparse's errors into FitkitErrors that name the file, the key path and the
fix (``Sources`` knows which file or command line set each key). What the specs name is
imported and checked by specs.py; the run itself is runner.py's.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from ..errors import FitkitError, FitkitTypeError, FitkitValueError

CONFIG_EXTRA = 'pip install "fitkit[config]"'
SPEC_SECTIONS = ("model", "data")
# fitkit.distribute.NAMES (not imported: parsing touches no framework module)
STRATEGIES = ("none", "auto", "mirrored", "central_storage", "multi_worker", "ddp")
SPEC_LISTS = ("callbacks", "loggers")
# options of one command line: accepted by the parser, never part of the saved config
LOCAL_KEYS = ("ckpt_path", "overwrite")
COMMAND_LINE = "the command line"
KERAS_EXTRA = ("registered_name", "build_config", "compile_config")
# fit's, validate's and predict's data arguments come from the data section, callbacks from
# the callbacks and loggers lists: they are no keys of those sections
_DATA_ARGS = {"x", "y", "validation_data", "sample_weight", "callbacks"}

_DESCRIPTION = {
    "fit": "Train the network a config describes; the resolved config, a backup for exact "
    "resume and the last checkpoint go into run_dir.",
    "validate": "Loss and metrics of run_dir's checkpoint (or --ckpt_path) on the val split "
    "(else test) of the config's data.",
    "predict": "Predictions of run_dir's checkpoint (or --ckpt_path) on the predict split "
    "(else test), saved as run_dir/predictions.npy (.npz for several outputs).",
    "export": "Export run_dir's checkpoint (or --ckpt_path) with model.export: "
    "--export.format, --export.path (default run_dir/export/).",
}
_SECTION_TITLES = {
    "compile": "compile (Model.compile's arguments; docs/usage.md)",
    "fit": "fit (Model.fit's arguments; the data comes from the data section)",
    "validate": "validate (Model.validate's arguments, for fitkit validate)",
    "predict": "predict (Model.predict's arguments, for fitkit predict)",
}
_HELP = {
    "compile.optimizer": "a name (adam, sgd...) or Keras's {class_name, config}",
    "compile.loss": "a name (mse, cross_entropy...), a {class_path, init_args} or Keras's dict",
    "compile.metrics": "names, or {class_path, init_args} of fitkit.metrics objects",
    "compile.weighted_metrics": "metrics that apply sample and class weights",
    "compile.loss_weights": "per-output loss weights (a list or a dict)",
    "compile.output": "train only this output (name or index)",
    "compile.lr": "learning rate (default: the optimizer's own)",
    "compile.lr_schedule": "cosine, a {class_path, init_args} schedule...",
    "compile.lr_schedule_every": "epoch or batch",
    "compile.lr_schedule_monitor": "what a plateau schedule watches",
    "compile.clipnorm": "clip each gradient's norm",
    "compile.clipvalue": "clip gradient values",
    "compile.global_clipnorm": "clip the global gradient norm",
    "compile.gradient_accumulation_steps": "update every N batches",
    "compile.precision": "32, bf16 or fp16",
    "compile.jit_compile": "torch.compile / XLA",
    "compile.steps_per_execution": "TensorFlow steps per compiled call",
    "compile.run_eagerly": "plain Python TensorFlow steps (debugging)",
    "fit.batch_size": "rows per batch for arrays (default 32; loaders batch themselves)",
    "fit.epochs": "epochs to train",
    "fit.verbose": "0 silent, 1 tables and bar, 2 one line per epoch",
    "fit.validation_split": "fraction of train held out when there is no val split",
    "fit.shuffle": "shuffle arrays every epoch",
    "fit.class_weight": "{class: weight}",
    "fit.initial_epoch": "epoch to start at",
    "fit.steps_per_epoch": "steps per epoch (streams)",
    "fit.validation_steps": "validation steps per epoch",
    "fit.validation_freq": "validate every N epochs (or at these epochs)",
    "fit.log_step_freq": "read and show logs every N steps",
    "fit.terminate_on_nan": "stop at a NaN or infinite loss or weight",
}
_EPILOG = (
    "Example: fitkit fit --config run.yaml --fit.epochs 3 --compile.lr 1e-4. Several --config "
    "files merge (the last wins); dotted options override them. --print_config prints the "
    "resolved config and exits. See docs/config.md."
)


def yaml_module() -> Any:
    """PyYAML (imported by name: its type stubs are a separate package)."""
    import importlib

    return importlib.import_module("yaml")


def require_jsonargparse() -> Any:
    """The jsonargparse module, or an error naming the extra that installs it."""
    try:
        import jsonargparse

        yaml_module()  # jsonargparse reads YAML with it
    except ImportError as err:
        raise FitkitError(
            f"Config-driven runs need jsonargparse and PyYAML ({err}). Install them with: "
            f"{CONFIG_EXTRA}"
        ) from None
    return jsonargparse


def build_parser(command: str) -> Any:
    """The jsonargparse parser of ``fitkit <command>``; every command reads the same schema,
    so one config file serves fit, validate, predict and export."""
    jsonargparse = require_jsonargparse()
    from ..model import Model

    parser = jsonargparse.ArgumentParser(
        prog=f"fitkit {command}",
        description=_DESCRIPTION[command],
        epilog=_EPILOG,
        exit_on_error=False,
        allow_abbrev=False,
    )
    parser.add_argument(
        "--config",
        action=jsonargparse.ActionConfigFile,
        help="a YAML or JSON config file; several merge in order, the last wins",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seeds python, numpy and the backend (default 0)"
    )
    parser.add_argument(
        "--backend",
        type=str | None,
        default=None,
        help="torch or tensorflow (default: FITKIT_BACKEND, else the first installed, torch "
        "first); the resolved config records the one used",
    )
    parser.add_argument(
        "--strategy",
        type=str | None,
        default=None,
        help=f"the fitkit.distribute.strategy the network is built, compiled and trained in: "
        f"{', '.join(STRATEGIES)} (default: the one fitkit launch / torchrun / TF_CONFIG asks "
        f"for, else none; auto also takes several GPUs)",
    )
    parser.add_argument(
        "--run_dir",
        type=str | None,
        default=None,
        help="folder of the run: config.yaml, backup/, checkpoints/last.ckpt, predictions "
        "(default runs/<name of the last config file>)",
    )
    _spec_group(parser, "model", "the network: a class, or a function that returns it")
    _spec_group(
        parser,
        "data",
        "what returns the data: arrays (x, y), (train, val), {train, val, test, predict}, "
        "a loader or a tf.data.Dataset",
    )
    parser.add_method_arguments(Model, "compile", "compile")
    parser.add_method_arguments(Model, "fit", "fit", skip=_DATA_ARGS)
    parser.add_argument(
        "--callbacks",
        type=list[dict[str, Any]],
        default=[],
        help="list of {class_path, init_args} (or Keras's {class_name, config}); "
        "--callbacks.N.init_args.KEY VALUE changes one key of item N",
    )
    parser.add_argument(
        "--loggers",
        type=list[dict[str, Any]],
        default=[],
        help="trackers, as callbacks; given the resolved config before fit; "
        "--loggers.N.init_args.KEY VALUE changes one key of item N",
    )
    parser.add_method_arguments(Model, "validate", "validate", skip={*_DATA_ARGS, "return_dict"})
    parser.add_method_arguments(Model, "predict", "predict", skip=_DATA_ARGS)
    _describe(parser)
    for name, title in _SECTION_TITLES.items():  # the docstrings' first lines read as prose
        parser.groups[name].title = title
    group = parser.add_argument_group("export (model.export's arguments, for fitkit export)")
    group.add_argument("--export.format", type=str, default="onnx", help="artifact format")
    group.add_argument(
        "--export.path", type=str | None, default=None, help="default run_dir/export/model.<ext>"
    )
    group.add_argument(
        "--export.options",
        type=dict[str, Any],
        default={},
        help="more model.export keywords (verify, atol, rtol...)",
    )
    parser.add_argument(
        "--ckpt_path",
        type=str | None,
        default=None,
        help="validate/predict/export: the checkpoint to load (default "
        "run_dir/checkpoints/last.ckpt); not saved in the config",
    )
    parser.add_argument(
        "--overwrite",
        type=bool,
        default=False,
        help="fit: start over in a run_dir whose config.yaml differs (its backup is removed); "
        "not saved in the config",
    )
    return parser


def _spec_group(parser: Any, name: str, description: str) -> None:
    group = parser.add_argument_group(f"{name} ({description})")
    group.add_argument(
        f"--{name}.class_path",
        type=str | None,
        default=None,
        help="package.module.Class or 'package.module:function'",
    )
    group.add_argument(
        f"--{name}.init_args", type=dict[str, Any], default={}, help="its keyword arguments"
    )
    if name != "model":
        return
    # Keras's form: what keras.saving.serialize_keras_object writes
    group.add_argument(
        "--model.class_name", type=str | None, default=None, help="Keras form: the class name"
    )
    group.add_argument(
        "--model.config", type=dict[str, Any] | None, default=None, help="Keras form: its config"
    )
    group.add_argument(
        "--model.module", type=str | None, default=None, help="Keras form (default keras)"
    )
    for key in KERAS_EXTRA:
        group.add_argument(
            f"--model.{key}", type=Any, default=None, help="Keras form, as Keras wrote it"
        )


def _describe(parser: Any) -> None:
    """Short help for the arguments read from the signatures (their docstrings are prose)."""
    for action in parser._actions:
        text = _HELP.get(action.dest)
        if text:
            action.help = f"{text} {action.help or ''}".strip()


# ------------------------------------------------------------------ where each key came from
def _flatten(tree: Any, prefix: str = "") -> Iterator[str]:
    if isinstance(tree, Mapping):
        for key, value in tree.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            yield path
            yield from _flatten(value, path)


class Sources:
    """The config files and command line of one parse, in order, with the key paths each
    sets: an error names the last one that set the key it is about."""

    def __init__(self, argv: Sequence[str], names: Mapping[str, str] | None = None) -> None:
        yaml = yaml_module()
        self.sets: list[tuple[str, set[str]]] = []
        names = names or {}
        tokens = list(argv)
        i = 0
        while i < len(tokens):
            token = tokens[i]
            if token == "--config" and i + 1 < len(tokens):
                value, i = tokens[i + 1], i + 2
            elif token.startswith("--config="):
                value, i = token.split("=", 1)[1], i + 1
            else:
                if token.startswith("--"):
                    key = token[2:].split("=", 1)[0]
                    self.sets.append((COMMAND_LINE, {key}))
                i += 1
                continue
            try:
                if os.path.isfile(value):
                    with open(value, encoding="utf-8") as handle:
                        tree = yaml.safe_load(handle)
                    name = value
                else:
                    tree, name = yaml.safe_load(value), names.get(value, "the --config string")
            except (OSError, yaml.YAMLError):
                tree, name = None, value  # jsonargparse reports it
            self.sets.append((name, set(_flatten(tree))))
        self.files = [name for name, _ in self.sets if name != COMMAND_LINE]

    def origin(self, key: str) -> str:
        """The file (or "the command line") that last set ``key`` or a key above or below it."""
        for name, keys in reversed(self.sets):
            if any(k == key or key.startswith(k + ".") or k.startswith(key + ".") for k in keys):
                return name
        return "the defaults"


# ------------------------------------------------------------------ jsonargparse's errors retold
def valid_keys(parser: Any) -> list[str]:
    skip = {"help", "config", "print_config", "print_shtab"}
    return [a.dest for a in parser._actions if a.dest not in skip and a.dest != "==SUPPRESS=="]


def nearest(name: str, choices: Sequence[str]) -> str | None:
    found = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return found[0] if found else None


def _unknown_key(key: str, parser: Any, sources: Sources) -> FitkitError:
    keys = valid_keys(parser)
    group, _, last = key.rpartition(".")
    siblings = [k for k in keys if k.rpartition(".")[0] == group]
    near = nearest(key, keys) or (
        f"{group}.{n}"
        if group and (n := nearest(last, [k.rpartition(".")[2] for k in siblings]))
        else None
    )
    hint = f" Did you mean '{near}'?" if near else ""
    if group and siblings:
        scope, listed = f"'{group}'", ", ".join(k.rpartition(".")[2] for k in siblings)
    else:
        scope, listed = "the top level", ", ".join(dict.fromkeys(k.split(".")[0] for k in keys))
    return FitkitValueError(
        f"{sources.origin(key)}: unknown key '{key}'.{hint} Fix: rename or remove it; the keys "
        f"of {scope} are: {listed}."
    )


def explain(err: Exception, parser: Any, sources: Sources) -> FitkitError:
    """jsonargparse's parse error as a FitkitError naming the file, the key path and the fix."""
    text = str(err).strip()
    found = re.search(r"Option '([\w.]+)' is not accepted", text)
    if found:
        return _unknown_key(found[1], parser, sources)
    found = re.search(r"Group '([\w.]+)' does not accept option '([\w.]+)'", text)
    if found:
        return _unknown_key(f"{found[1]}.{found[2]}", parser, sources)
    found = re.search(r"unrecognized arguments: --([\w.]+)", text)
    if found:
        return _unknown_key(found[1], parser, sources)
    found = re.search(r'Parser key "([\w.]+)":\s*(.*)', text, re.DOTALL)
    if found and found[1] == "config":
        return FitkitValueError(f"--config: {' '.join(found[2].split())}")
    if found:
        key, reason = found[1], " ".join(found[2].split())
        default = parser.get_defaults().get(key) if key in valid_keys(parser) else None
        return FitkitTypeError(
            f"{sources.origin(key)}: key '{key}' has a wrong value: {reason}. Fix: give a value "
            f"of the type its help shows (fitkit {parser.prog.split()[-1]} --help; "
            f"default {default!r})."
        )
    where = ", ".join(sources.files) or COMMAND_LINE
    return FitkitValueError(f"{where}: {text}")


# --callbacks.1.init_args.patience 5: one key of one item of a list section
_LIST_ITEM = re.compile(r"--(callbacks|loggers)\.(\d+)\.([\w.]+)(?:=(.*))?$", re.DOTALL)


def _value(text: str) -> Any:
    """A command-line value as jsonargparse reads one: JSON first (1e-4 is a number), then
    YAML (a bare word is a string)."""
    try:
        return json.loads(text)
    except ValueError:
        return yaml_module().safe_load(text)


def _fold_list_items(parser: Any, argv: list[str], sources: Sources) -> list[str]:
    """``argv`` with each ``--callbacks.N.key value`` / ``--loggers.N.key value`` applied to
    item N of the list the rest of ``argv`` resolves, given back as one ``--callbacks`` /
    ``--loggers`` option: jsonargparse would merge such a key into the list's last item."""
    edits: list[tuple[str, int, str, str]] = []
    rest: list[str] = []
    i = 0
    while i < len(argv):
        found = _LIST_ITEM.match(argv[i])
        if found and (found[4] is not None or i + 1 < len(argv)):
            value = found[4] if found[4] is not None else argv[i + 1]
            edits.append((found[1], int(found[2]), found[3], value))
            i += 1 if found[4] is not None else 2
        else:
            rest.append(argv[i])
            i += 1
    if not edits or any(t in ("-h", "--help") for t in rest):
        return argv
    base = [t for t in rest if not t.startswith("--print_config")]
    try:
        lists = parser.parse_args(base).as_dict()
    except argparse.ArgumentError as err:
        raise explain(err, parser, sources) from None
    for section, index, key, value in edits:
        items = lists[section]
        option = f"--{section}.{index}.{key}"
        if index >= len(items):
            raise FitkitValueError(
                f"{COMMAND_LINE}: {option}: {section} holds {len(items)} item(s), numbered from "
                f"0. Fix: give an index below {len(items)}, or the whole list as --{section} "
                f"'[...]'."
            )
        node = items[index]
        *parents, last = key.split(".")
        for part in parents:
            if node.get(part) is None:
                node[part] = {}
            node = node[part]
            if not isinstance(node, dict):
                raise FitkitValueError(
                    f"{COMMAND_LINE}: {option}: {section}[{index}].{part} is no mapping. Fix: "
                    f"name a key under a mapping such as init_args."
                )
        node[last] = _value(value)
    for section in dict.fromkeys(edit[0] for edit in edits):
        rest += [f"--{section}", json.dumps(lists[section], default=str)]
    return rest


def parse(
    command: str, argv: Sequence[str], names: Mapping[str, str] | None = None
) -> tuple[dict[str, Any], Sources]:
    """The resolved config of ``argv`` as a plain nested dict (defaults filled in), and where
    each key came from. ``--help`` and ``--print_config`` print and raise SystemExit(0)."""
    require_jsonargparse()
    parser = build_parser(command)
    sources = Sources(argv, names)
    argv = _fold_list_items(parser, list(argv), sources)
    try:
        namespace = parser.parse_args(argv)
    except argparse.ArgumentError as err:
        raise explain(err, parser, sources) from None
    resolved = namespace.as_dict()
    resolved.pop("config", None)
    resolved.pop("__path__", None)
    return resolved, sources
