"""Config-driven runs (fitkit.run, fitkit fit/validate/predict/export --config): a YAML run
equals the same fit by hand, run_dir reproduces and resumes, errors come before any work.

The configs name this module's functions and callbacks (tests/ is on sys.path under pytest).
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import sys
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest
import yaml

import fitkit
from fitkit import cli
from fitkit.config import parser, runner, splits


# ---------------------------------------------------------------- what the configs name
def tiny_net(backend: str = "torch", n_in: int = 4, n_out: int = 1):
    if backend == "torch":
        import torch

        return torch.nn.Sequential(
            torch.nn.Linear(n_in, 8), torch.nn.ReLU(), torch.nn.Linear(8, n_out)
        )
    import keras

    return keras.Sequential(
        [keras.Input((n_in,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(n_out)]
    )


def tiny_data(n: int = 48):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 4)).astype("float32")
    y = (x @ np.array([[1.0], [-2.0], [0.5], [1.5]], dtype="float32")).astype("float32")
    return {"train": (x, y), "val": (x[:16], y[:16]), "predict": x[:8]}


class CrashOnce(fitkit.callbacks.Callback):
    """Raises at the end of ``epoch`` the first time (the marker file remembers)."""

    def __init__(self, marker: str, epoch: int = 1) -> None:
        super().__init__()
        self.marker, self.epoch = marker, epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch and not os.path.exists(self.marker):
            pathlib.Path(self.marker).touch()
            raise RuntimeError("simulated crash")


class FakeLogger(fitkit.callbacks.Callback):
    """A tracker's interface, recorded: log_params before fit, log_artifact for files."""

    calls: ClassVar[list] = []
    artifact_runs: ClassVar[list] = []  # the run each log_artifact went to

    def __init__(self, project: str = "p") -> None:
        super().__init__()
        self.project = project
        self.run = ""  # a tracker's run: opened by fit, kept in its state

    def on_train_begin(self, logs=None):
        self.run = self.run or f"run-{id(self)}"

    def state_dict(self):
        return {"run": self.run}

    def load_state_dict(self, state):
        self.run = state["run"]

    def log_params(self, params):
        FakeLogger.calls.append(("params", params))

    def log_artifact(self, path):
        FakeLogger.artifact_runs.append(self.run)
        FakeLogger.calls.append(("artifact", os.path.basename(path), os.path.exists(path)))

    def on_epoch_end(self, epoch, logs=None):
        FakeLogger.calls.append(("epoch", epoch))


class RankMark(fitkit.callbacks.Callback):
    """Leaves ``rank<r>-of-<n>`` in ``folder`` at train begin: which processes trained."""

    def __init__(self, folder: str) -> None:
        super().__init__()
        self.folder = folder

    def on_train_begin(self, logs=None):
        name = f"rank{fitkit.distribute.rank()}-of-{fitkit.distribute.world_size()}"
        pathlib.Path(self.folder, name).touch()


def config(backend: str, run_dir, **sections) -> dict:
    base = {
        "backend": backend,
        "run_dir": str(run_dir),
        "model": {"class_path": "test_config:tiny_net", "init_args": {"backend": backend}},
        "data": {"class_path": "test_config.tiny_data"},
        "compile": {"optimizer": "sgd", "loss": "mse", "metrics": ["mae"]},
        "fit": {"epochs": 3, "batch_size": 16, "verbose": 0},
    }
    base.update(sections)
    return base


def write(path: pathlib.Path, tree: dict) -> str:
    path.write_text(yaml.safe_dump(tree), encoding="utf-8")
    return str(path)


# ---------------------------------------------------------------- runs
def test_a_yaml_run_equals_the_same_fit_by_hand_and_its_run_dir_reproduces_it(kit, tmp_path):
    run_dir = tmp_path / "run"
    history = fitkit.run(write(tmp_path / "run.yaml", config(kit.name, run_dir)))

    fitkit.set_seed(0)
    model = fitkit.Model(tiny_net(kit.name))
    model.compile("sgd", "mse", metrics=["mae"])
    data = tiny_data()
    by_hand = model.fit(
        *data["train"], validation_data=data["val"], epochs=3, batch_size=16, verbose=0
    )
    assert history.history == by_hand.history

    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["seed"] == 0 and saved["backend"] == kit.name and saved["fit"]["epochs"] == 3
    assert saved["fit"]["shuffle"] is True  # defaults filled in from fit's signature
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert not list((run_dir / "backup").glob("*"))  # a finished fit leaves no backup
    again = fitkit.run(run_dir / "config.yaml")
    assert again.history == history.history


def test_a_crashed_run_resumes_from_its_run_dir_and_ends_as_an_unbroken_one(kit, tmp_path):
    crash = {"class_path": "test_config.CrashOnce", "init_args": {"marker": str(tmp_path / "m")}}
    unbroken = fitkit.run(config(kit.name, tmp_path / "a"))
    cfg = config(kit.name, tmp_path / "b", callbacks=[crash])
    with pytest.raises(Exception, match="simulated crash"):
        fitkit.run(cfg)
    assert (tmp_path / "b" / "backup").is_dir() and not (tmp_path / "b" / "checkpoints").exists()
    resumed = fitkit.run(tmp_path / "b" / "config.yaml")
    assert resumed.history == unbroken.history
    outputs = [fitkit.run(tmp_path / d / "config.yaml", "predict") for d in ("a", "b")]
    np.testing.assert_array_equal(*outputs)


def test_a_launched_config_run_trains_in_ddp_and_equals_one_process(torch_kit, tmp_path):
    from conftest import cli_env, fitkit_cli

    marks = tmp_path / "marks"
    marks.mkdir()
    mark = {"class_path": "test_config.RankMark", "init_args": {"folder": str(marks)}}
    cfg = config("torch", tmp_path / "ddp", callbacks=[mark], strategy="ddp")
    path = write(tmp_path / "ddp.yaml", cfg)
    tests = str(pathlib.Path(__file__).parent)
    env = cli_env(PYTHONPATH=os.pathsep.join([tests, *sys.path]))
    done = fitkit_cli("launch", "-n", "2", "-m", "fitkit.cli", "fit", "--config", path, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(os.listdir(marks)) == ["rank0-of-2", "rank1-of-2"]
    one = fitkit.run(config("torch", tmp_path / "one", callbacks=[], strategy="none"))
    launched = pd.read_csv(tmp_path / "ddp" / "history.csv")
    np.testing.assert_allclose(launched["loss"], one.history["loss"], rtol=1e-5)
    written = sorted(p.name for p in (tmp_path / "ddp").iterdir() if p.name != "backup")
    assert written == ["checkpoints", "config.yaml", "history.csv", "trackers.json"]
    assert not list((tmp_path / "ddp").glob("*.part"))


def test_validate_predict_export_and_loggers_on_a_trained_run_dir(torch_kit, tmp_path, capsys):
    FakeLogger.calls.clear()
    run_dir = tmp_path / "run"
    path = write(
        tmp_path / "run.yaml",
        config("torch", run_dir, loggers=[{"class_path": "test_config.FakeLogger"}]),
    )
    history = fitkit.run(path)
    kinds = [call[0] for call in FakeLogger.calls]
    assert kinds[:2] == ["params", "artifact"] and kinds[2:] == ["epoch"] * 3
    params = FakeLogger.calls[0][1]
    assert params["fit"]["epochs"] == 3 and params["model"]["init_args"] == {"backend": "torch"}
    assert FakeLogger.calls[1] == ("artifact", "config.yaml", True)

    logs = fitkit.run(path, "validate")
    assert logs["loss"] == pytest.approx(history.history["val_loss"][-1], rel=1e-6)
    assert cli.main(["predict", "--config", path]) == 0
    assert capsys.readouterr().out.endswith(f"predictions in {run_dir}: (8, 1)\n")
    predictions = fitkit.run(path, "predict")
    assert predictions.shape == (8, 1)
    np.testing.assert_array_equal(np.load(run_dir / "predictions.npy"), predictions)

    FakeLogger.calls.clear()
    FakeLogger.artifact_runs.clear()
    fit_run = json.loads((run_dir / "trackers.json").read_text())[0]["state"]["run"]
    assert cli.main(["export", "--config", path, "--export.format", "onnx"]) == 0
    exported = run_dir / "export" / "model.onnx"
    # the weights ONNX keeps beside the graph too: the logged artifact loads
    assert FakeLogger.calls == [
        ("artifact", "model.onnx", True),
        ("artifact", "model.onnx.data", True),
    ]
    assert FakeLogger.artifact_runs == [fit_run] * 2  # the fit's run, not a new one
    loaded = fitkit.load_exported(str(exported)).predict(tiny_data()["predict"])
    np.testing.assert_allclose(loaded, predictions, rtol=1e-4, atol=1e-5)


def test_run_dir_in_a_callbacks_path_follows_the_run_dir_override(torch_kit, tmp_path, capsys):
    best = {
        "class_path": "fitkit.callbacks.ModelCheckpoint",
        "init_args": {"filepath": "${run_dir}/best.pt", "save_best_only": True},
    }
    path = write(tmp_path / "run.yaml", config("torch", tmp_path / "a", callbacks=[best]))
    fitkit.run(path)
    assert cli.main(["fit", "--config", path, "--run_dir", str(tmp_path / "b")]) == 0
    said = f"trained 3 epoch(s) in {tmp_path / 'b'}: config.yaml, checkpoints/last.ckpt, history"
    assert said in capsys.readouterr().out  # the CLI says where the run is
    assert (tmp_path / "a" / "best.pt").is_file() and (tmp_path / "b" / "best.pt").is_file()
    saved = yaml.safe_load((tmp_path / "b" / "config.yaml").read_text())
    assert saved["callbacks"][0]["init_args"]["filepath"] == "${run_dir}/best.pt"  # as written
    assert not (tmp_path / "${run_dir}").exists()
    exported = fitkit.run(path, "export", overrides=["--export.path", "${run_dir}/net.onnx"])
    assert exported == str(tmp_path / "a" / "net.onnx")


def test_keras_class_name_forms_give_the_model_and_the_callbacks(tf_kit, tmp_path):
    import keras

    serialized = keras.saving.serialize_keras_object(tiny_net("tensorflow"))
    cfg = config(
        "tensorflow",
        tmp_path / "run",
        model=json.loads(json.dumps(serialized)),  # as a Keras user's JSON file holds it
        callbacks=[
            {
                "class_name": "EarlyStopping",
                "config": {"monitor": "loss", "patience": 0, "min_delta": 0.01},
            }
        ],
    )
    cfg["compile"]["optimizer"] = {"class_name": "SGD", "config": {"learning_rate": 0.0}}
    history = fitkit.run(cfg)
    # a zero rate leaves the loss flat: patience 0 stops after the second epoch
    assert len(history.epoch) == 2
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["model"][
        "class_name"
    ] == ("Sequential")


def test_a_run_dir_holding_another_config_is_refused_unless_overwritten(torch_kit, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "backup").mkdir()
    (run_dir / "backup" / "backup.fitkit").write_text("another run's position")
    cfg = config("torch", run_dir)
    resolved, _ = parser.parse("fit", ["--config", json.dumps(cfg)])
    for key in parser.LOCAL_KEYS:
        resolved.pop(key)
    other = yaml.safe_load(runner.dump(resolved))
    other["fit"]["epochs"] = 7
    (run_dir / "config.yaml").write_text(yaml.safe_dump(other))
    with pytest.raises(fitkit.FitkitError, match=r"fit\.epochs: 7 -> 3.*new run_dir.*--overwrite"):
        fitkit.run(cfg)
    # a key filled in, one list item changed: each named alone, not its whole dict or list
    stop = {"class_path": "fitkit.callbacks.EarlyStopping", "init_args": {"patience": 2}}
    other = {**yaml.safe_load(runner.dump(resolved)), "callbacks": [stop]}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(other))
    changed = {**cfg, "callbacks": [{**stop, "init_args": {"patience": 5}}]}
    changed["data"] = {**cfg["data"], "init_args": {"n": 48}}
    with pytest.raises(fitkit.FitkitError) as refused:
        fitkit.run(changed)
    assert "(callbacks.0.init_args.patience: 2 -> 5; data.init_args.n: None -> 48)" in str(
        refused.value
    )
    assert not (run_dir / "checkpoints").exists()
    fitkit.run(cfg, overwrite=True)
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["fit"]["epochs"] == 3
    assert not (run_dir / "backup" / "backup.fitkit").exists()


# ---------------------------------------------------------------- parsing, no framework work
def test_print_config_fills_defaults_merges_files_and_applies_overrides(tmp_path, capsys):
    first = write(tmp_path / "a.yaml", config("torch", tmp_path / "run"))
    second = write(tmp_path / "b.json", {"fit": {"epochs": 5}, "compile": {"lr": 0.5}})
    argv = ["fit", "--config", first, "--config", second, "--compile.lr", "1e-4", "--print_config"]
    assert cli.main(argv) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["fit"]["epochs"] == 5  # the later file wins
    assert printed["compile"]["lr"] == 1e-4  # the command line wins over both
    assert printed["fit"]["batch_size"] == 16 and printed["fit"]["validation_freq"] == 1
    assert printed["compile"]["gradient_accumulation_steps"] == 1 and printed["seed"] == 0
    again = write(tmp_path / "printed.yaml", printed)  # what it prints is a config itself
    assert cli.main(["fit", "--config", again, "--print_config"]) == 0
    assert yaml.safe_load(capsys.readouterr().out) == printed
    assert not (tmp_path / "run").exists()


def test_an_override_of_one_list_item_goes_to_that_item(tmp_path):
    stop = {"class_path": "fitkit.callbacks.EarlyStopping", "init_args": {"patience": 2}}
    log = {"class_path": "test_config.FakeLogger", "init_args": {"project": "a"}}
    path = write(tmp_path / "a.yaml", config("torch", tmp_path / "run", callbacks=[stop, log]))
    argv = ["--config", path, "--callbacks.0.init_args.patience", "5"]
    resolved, _ = parser.parse("fit", [*argv, "--callbacks.1.init_args.project=b"])
    assert resolved["callbacks"] == [
        {**stop, "init_args": {"patience": 5}},  # jsonargparse alone put it in the last item
        {**log, "init_args": {"project": "b"}},
    ]
    # an error in item 0 is the file's, though the command line changed item 1
    typo = {**stop, "init_args": {"patiense": 2}}
    typo_path = write(tmp_path / "t.yaml", config("torch", tmp_path / "run", callbacks=[typo, log]))
    with pytest.raises(
        fitkit.FitkitError, match=r"^\S*t\.yaml: callbacks\[0\]\.init_args\.patiense"
    ):
        runner._run("fit", ["--config", typo_path, "--callbacks.1.init_args.project=b"], {})
    with pytest.raises(
        fitkit.FitkitError, match=r"--callbacks\.2\.init_args\.x: callbacks holds 2"
    ):
        parser.parse("fit", ["--config", path, "--callbacks.2.init_args.x", "1"])


def test_fit_help_lists_the_sections_with_their_defaults(capsys):
    assert cli.main(["fit", "--help"]) == 0
    text = capsys.readouterr().out
    for piece in (
        "--config",
        "--fit.epochs",
        "(type: int, default: 1)",
        "--compile.lr",
        "--model.class_path",
        "--data.init_args",
        "--print_config",
        "docs/config.md",
    ):
        assert piece in text
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert "fit                 fit from a config file" in capsys.readouterr().out
    keys = parser.valid_keys(parser.build_parser("fit"))
    assert set(parser._HELP) <= set(keys)  # no help for a key the signatures no longer have


@pytest.mark.parametrize(
    ("change", "where", "expected"),
    [
        ({"fit": {"epoch": 3}}, "file", r"unknown key 'fit\.epoch'\. Did you mean 'fit\.epochs'\?"),
        (
            {"fitt": {"epochs": 3}},
            "file",
            r"unknown key 'fitt\.epochs'\. Did you mean 'fit\.epochs'",
        ),
        ({"fit": {"epochs": "three"}}, "file", r"key 'fit\.epochs' has a wrong value.*three"),
        (
            {"model": {"class_path": "test_config.tiny_nett"}},
            "file",
            r"model\.class_path 'test_config\.tiny_nett'.*no 'tiny_nett'\. Did you mean 'tiny_net'",
        ),
        (
            {"model": {"class_path": "no_such_module:net"}},
            "file",
            r"model\.class_path 'no_such_module:net' does not import.*Fix:",
        ),
        (
            {"model": {"class_path": "test_config:tiny_net", "init_args": {"n_outt": 2}}},
            "file",
            r"model\.init_args\.n_outt: tiny_net takes no argument 'n_outt'\. Did you mean 'n_out'",
        ),
        (
            {"model": {"class_path": "test_config:tiny_net", "init_args": {"n_in": "four"}}},
            "file",
            r"model\.init_args\.n_in: Expected a <class 'int'>\. Got value: four",
        ),
        (
            {"callbacks": [{"class_name": "EarlyStoping", "config": {}}]},
            "file",
            r"callbacks\[0\]\.class_name 'EarlyStoping'.*Did you mean 'EarlyStopping'",
        ),
        (
            {"callbacks": [{"class_name": "EarlyStopping", "config": {"patiense": 1}}]},
            "file",
            r"callbacks\[0\]\.config\.patiense:.*Did you mean 'patience'",
        ),
        (["--fit.epoch", "3"], "the command line", r"unknown key 'fit\.epoch'.*'fit\.epochs'"),
        ({"data": {"class_path": None}}, "file", r"data is missing\. Fix: write \{class_path"),
        (
            {"callbacks": [{"class_path": "fitkit.callbacks.EarlyStopping", "init_args": [1]}]},
            "file",
            r"callbacks\[0\]\.init_args is a list\. Fix: give the arguments by name",
        ),
    ],
)
def test_config_errors_name_the_file_the_key_and_the_fix_before_any_work(
    tmp_path, change, where, expected
):
    cfg = config("torch", tmp_path / "run")
    overrides: list[str] = []
    if isinstance(change, list):
        overrides = change
    else:
        for section, value in change.items():
            if isinstance(value, dict) and isinstance(cfg.get(section), dict):
                cfg[section] = {**cfg[section], **value}
            else:
                cfg[section] = value
    path = write(tmp_path / "bad.yaml", cfg)
    with pytest.raises(fitkit.FitkitError, match=expected) as caught:
        fitkit.run(path, overrides=overrides)
    assert str(caught.value).startswith(path if where == "file" else where)
    assert not (tmp_path / "run").exists()  # refused before any work


def test_the_cli_prints_one_error_line_and_exits_2(tmp_path, capsys):
    path = write(tmp_path / "bad.yaml", {"fit": {"epoch": 3}})
    assert cli.main(["fit", "--config", path]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"fitkit fit: error: {path}: unknown key 'fit.epoch'")


def test_a_bare_command_says_to_give_a_config(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["fit"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fitkit fit: error: no --config given and no model on the command line")
    assert "--config run.yaml" in err
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_validate_without_a_checkpoint_says_to_fit_first(tmp_path, capsys):
    with pytest.raises(fitkit.FitkitError, match=r"no checkpoint at .*last\.ckpt.*fitkit fit"):
        fitkit.run(config("torch", tmp_path / "run"), "validate")
    with pytest.raises(fitkit.FitkitError, match=r"--ckpt_path is for validate.*resumes"):
        fitkit.run(config("torch", tmp_path / "run"), ckpt_path=tmp_path / "x.ckpt")
    with pytest.raises(fitkit.FitkitError, match=r"^the command line: key 'backend'.*'tf'"):
        fitkit.run(config("torch", tmp_path / "run"), overrides=["--backend", "jax"])
    assert not (tmp_path / "run").exists()
    path = write(tmp_path / "run.yaml", config("torch", tmp_path / "run"))
    assert cli.main(["validate", "--config", path]) == 2
    assert capsys.readouterr().err.startswith("fitkit validate: error: no checkpoint at ")


def test_a_strategy_is_checked_by_name_and_says_how_to_launch_a_config(torch_kit, tmp_path):
    cfg = config("torch", tmp_path / "run")
    with pytest.raises(fitkit.FitkitError, match=r"key 'strategy'.*'dpp'\. Did you mean 'ddp'"):
        fitkit.run(cfg, overrides=["--strategy", "dpp"])
    with pytest.raises(
        fitkit.FitkitError, match=r"key 'strategy'.*fitkit launch -n N -m fitkit\.cli fit"
    ):
        fitkit.run(cfg, overrides=["--strategy", "ddp"])  # no launcher here
    assert not (tmp_path / "run").exists()


def test_an_error_of_compile_names_the_file_and_the_section(torch_kit, tmp_path):
    cfg = config("torch", tmp_path / "run")
    path = write(tmp_path / "run.yaml", {**cfg, "compile": {"optimizer": "adamm", "loss": "mse"}})
    with pytest.raises(
        fitkit.FitkitError, match=r"^\S*run\.yaml: compile: Unknown optimizer 'adamm'"
    ):
        fitkit.run(path)
    assert not (tmp_path / "run").exists()


def test_a_missing_jsonargparse_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "jsonargparse", None)
    with pytest.raises(fitkit.FitkitError, match=r'pip install "fitkit\[config\]"'):
        fitkit.run(config("torch", tmp_path / "run"))


def test_import_fitkit_imports_neither_jsonargparse_nor_yaml():
    import subprocess

    code = "import fitkit, sys; print([m for m in ('jsonargparse', 'yaml') if m in sys.modules])"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"


# ---------------------------------------------------------------- the data rule
def test_the_data_rule_reads_dicts_pairs_arrays_and_loaders_and_refuses_the_rest():
    x, y = np.zeros((4, 2)), np.zeros((4, 1))
    assert list(splits.read({"train": (x, y), "test": (x, y)}, "data")) == ["train", "test"]
    pair = splits.read(((x, y), (x, y)), "data")
    assert list(pair) == ["train", "val"]
    assert splits.read((x, y), "data")["train"] == (x, y)
    loader = iter([(x, y)])
    assert splits.read(loader, "data") == {"train": loader}
    assert splits.pick({"test": (x, y)}, "validate") == ("test", (x, y))
    with pytest.raises(fitkit.FitkitError, match="neither \\(train, val\\) nor \\(x, y\\)"):
        splits.read(((x, x), y), "data")
    with pytest.raises(fitkit.FitkitError, match=r"'predict'.*Fix: return a dict"):
        splits.pick({"train": (x, y)}, "predict")
    with pytest.raises(fitkit.FitkitError, match="returned a int"):
        splits.read(3, "data")


# ---------------------------------------------------------------- the example config
ROOT = pathlib.Path(__file__).resolve().parent.parent
EXAMPLE = "examples/config/text.yaml"
SMALL = ["--data.init_args.n_train", "200", "--fit.epochs", "1", "--fit.verbose", "0"]


def test_the_example_config_trains_the_text_classifier_from_the_command_line(tmp_path):
    import subprocess

    from conftest import cli_env

    run_dir = tmp_path / "text"
    argv = ["fit", "--config", EXAMPLE, *SMALL, "--run_dir", str(run_dir)]
    done = subprocess.run(
        [sys.executable, "-m", "fitkit.cli", *argv],
        cwd=ROOT,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["backend"] == "torch" and saved["data"]["init_args"] == {"n_train": 200}
    history = (run_dir / "history.csv").read_text().splitlines()
    assert (
        history[0].startswith("epoch,loss,accuracy,top_2_accuracy,val_loss") and len(history) == 2
    )
    assert (run_dir / "best.ckpt").is_file()  # the example's ModelCheckpoint, in run_dir


def test_the_example_config_trains_on_tensorflow_by_its_backend_key(tf_kit, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # class paths import from the current folder, not on sys.path
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(ROOT))])
    run_dir = tmp_path / "text_tf"
    overrides = [*SMALL, "--backend", "tensorflow", "--run_dir", str(run_dir)]
    history = fitkit.run(EXAMPLE, overrides=overrides)
    assert set(history.history) >= {"loss", "accuracy", "top_2_accuracy", "val_loss"}
    logs = fitkit.run(EXAMPLE, "validate", overrides=overrides)
    assert logs["loss"] == pytest.approx(history.history["val_loss"][-1], rel=1e-5)


# ---------------------------------------------------------------- docs/config.md's snippets
# test_docs.py runs the pages it lists; this page's blocks say "tests/test_config.py runs it"
# (first: shared setup; on torch / on torch and tensorflow), and run here.
_DOC_BLOCK = re.compile(
    r"^<!-- not run: tests/test_config\.py runs it (?P<how>first|on torch and tensorflow|on torch)"
    r" -->\n```python\n(?P<code>.*?)\n```",
    re.DOTALL | re.MULTILINE,
)


def _doc_cases() -> list[tuple[str, int, str]]:
    text = (ROOT / "docs" / "config.md").read_text(encoding="utf-8")
    cases = []
    for match in _DOC_BLOCK.finditer(text):
        line = text.count("\n", 0, match.start("code")) + 1
        backends = {"first": ("setup",), "on torch": ("torch",)}.get(
            match["how"], ("torch", "tensorflow")
        )
        cases += [(backend, line, match["code"]) for backend in backends]
    return cases


DOC_CASES = _doc_cases()


def test_docs_config_has_a_setup_block_and_runnable_blocks():
    assert [c[0] for c in DOC_CASES].count("setup") == 1 and len(DOC_CASES) >= 4


@pytest.mark.parametrize(
    ("backend", "line", "code"),
    [c for c in DOC_CASES if c[0] != "setup"],
    ids=[f"config.md:{c[1]}-{c[0]}" for c in DOC_CASES if c[0] != "setup"],
)
def test_docs_config_snippet_runs(backend, line, code, monkeypatch, tmp_path):
    monkeypatch.setenv("FITKIT_BACKEND", backend)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the snippet's folder joins it
    (setup,) = [c for c in DOC_CASES if c[0] == "setup"]
    namespace: dict = {"__name__": "__docs__"}
    exec(compile("\n" * (setup[1] - 1) + setup[2], "docs/config.md", "exec"), namespace)
    sys.modules.pop("parts", None)  # this snippet's own parts.py
    exec(compile("\n" * (line - 1) + code, "docs/config.md", "exec"), namespace)
