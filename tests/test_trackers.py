"""MLflowLogger and WandbLogger against the real libraries: MLflow on a SQLite store (and a file
store) read back with its client; W&B offline, read back from the run's transaction log.

Trackers are backend-free callbacks, so one backend (torch, the cheaper import) trains here.
Nothing reaches a network: W&B runs offline, MLflow's stores are under tmp_path.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import struct
import subprocess
import sys
import time
import types

import numpy as np
import pytest

import fitkit
from fitkit.callbacks import (
    BackupAndRestore,
    LambdaCallback,
    MLflowLogger,
    ModelCheckpoint,
    WandbLogger,
)
from fitkit.callbacks.trackers import Tracker, flatten
from fitkit.errors import FitkitError, FitkitValueError, StepFailedError

# The libraries are imported by the tests that use them: collecting this file (and the fast
# tier's tests, which need none) stays cheap.

CONFIG = {
    "model": {"hidden": 8},
    "compile": {"optimizer": "sgd", "lr": 0.05, "metrics": ["mae"]},
    "fit": {"epochs": 3, "batch_size": 16, "callbacks": [{"monitor": "val_loss"}], "empty": {}},
}


def _env(mp: pytest.MonkeyPatch, root: str) -> None:
    """Quiet, offline W&B that writes under ``root`` only (its cache, data and config too)."""
    for var in ("WANDB_MODE", "WANDB_DIR", "MLFLOW_TRACKING_URI", "RANK", "WORLD_SIZE"):
        mp.delenv(var, raising=False)
    mp.setenv("FITKIT_BACKEND", "torch")
    mp.setenv("WANDB_SILENT", "true")
    mp.setenv("WANDB_CONSOLE", "off")
    for var, sub in (("WANDB_CACHE_DIR", "c"), ("WANDB_DATA_DIR", "d"), ("WANDB_CONFIG_DIR", "f")):
        mp.setenv(var, os.path.join(root, "wandb-home", sub))


@pytest.fixture(autouse=True)
def _quiet_offline(monkeypatch, tmp_path):
    _env(monkeypatch, str(tmp_path))


def _data():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 4)).astype("float32")
    return x, (x @ rng.standard_normal((4, 1))).astype("float32")


def _model():
    torch = pytest.importorskip("torch")
    fitkit.set_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    model = fitkit.Model(net)
    model.compile("sgd", "mse", lr=0.05)
    return model


def _fit(model, callbacks, epochs=3):
    # 48 training rows, batch 16: 3 steps an epoch
    return model.fit(
        *_data(),
        epochs=epochs,
        batch_size=16,
        validation_split=0.25,
        verbose=0,
        callbacks=callbacks,
    )


def _wandb_settings():
    return pytest.importorskip("wandb").Settings(console="off", x_disable_stats=True, silent=True)


# ---------------------------------------------------------------------- MLflow
@pytest.fixture(scope="module")
def mlflow_store(tmp_path_factory):
    """One SQLite store for the module (creating its tables costs ~2 s)."""
    pytest.importorskip("mlflow")
    root = tmp_path_factory.mktemp("mlflow")
    return f"sqlite:///{root}/mlflow.db", root


@pytest.fixture(scope="module")
def mlflow_run(mlflow_store):
    """A fit logged to the SQLite store, with a config and files given before and after it."""
    uri, root = mlflow_store
    with pytest.MonkeyPatch.context() as mp:
        _env(mp, str(root))
        (root / "config.yaml").write_text("fit:\n  epochs: 3\n")
        (root / "export").mkdir()
        (root / "export" / "model.onnx").write_bytes(b"onnx")
        tracker = MLflowLogger(uri, experiment_name="tests", run_name="first", log_every_n_steps=2)
        tracker.log_params(CONFIG)  # before fit: they wait for the run
        tracker.log_artifact(str(root / "config.yaml"))
        best = ModelCheckpoint(str(root / "ckpt" / "w-{epoch}.pt"), save_best_only=True)
        model = _model()
        history = _fit(model, [tracker, best])
        tracker.log_artifact(str(root / "export"))  # after it ended: the same run, reopened
    client = _client(uri)
    return tracker, history, client


def _client(uri):
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri)


def _artifacts(client, run_id, path=None) -> list[str]:
    found = []
    for item in client.list_artifacts(run_id, path):
        found += _artifacts(client, run_id, item.path) if item.is_dir else [item.path]
    return found


def _metric(client, run_id, key) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in client.get_metric_history(run_id, key)]


def test_mlflow_run_holds_the_config_the_history_and_the_files(mlflow_run):
    tracker, history, client = mlflow_run
    run = client.get_run(tracker.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "first"
    assert run.data.params == {k: str(v) for k, v in flatten(CONFIG).items()}
    assert run.data.params["compile.metrics.0"] == "mae" and run.data.params["fit.empty"] == "{}"
    assert set(history.history) == {"loss", "val_loss", "learning_rate"}
    for key, values in history.history.items():
        assert _metric(client, tracker.run_id, key) == list(enumerate(values)), key
    # every 2 steps over 9 (3 an epoch): the running means, the step counted across epochs
    steps = _metric(client, tracker.run_id, "batch_loss")
    assert [s for s, _ in steps] == [2, 4, 6, 8]
    assert steps[2][1] == pytest.approx(history.history["loss"][1])  # step 6 ends epoch 2
    best_epoch = int(np.argmin(history.history["val_loss"])) + 1
    assert sorted(_artifacts(client, tracker.run_id)) == [
        f"checkpoints/w-{best_epoch}.pt",
        "config.yaml",
        "export/model.onnx",
    ]
    assert run.data.tags["fitkit.stop_reason"] == "completed"
    assert tracker.state_dict()["run_id"] == tracker.run_id


def test_mlflow_plain_fit_records_its_params_and_a_failed_run(mlflow_store, tmp_path):
    """No log_params: fit's arguments, the optimizer and the backend. An error mid-fit ends
    the run FAILED, with the epochs done."""
    uri, _ = mlflow_store
    tracker = MLflowLogger(uri, experiment_name="tests", tags={"team": "a"})

    def fail(epoch, logs):
        if epoch == 2:
            raise RuntimeError("boom")

    with pytest.raises(StepFailedError, match="boom"):
        _fit(_model(), [tracker, LambdaCallback(on_epoch_begin=fail)])
    client = _client(uri)
    run = client.get_run(tracker.run_id)
    assert run.info.status == "FAILED" and run.data.tags["team"] == "a"
    reason = run.data.tags["fitkit.stop_reason"]
    assert "StepFailedError" in reason and "RuntimeError: boom" in reason
    assert run.data.params == {
        "backend": "torch",
        "fit.epochs": "3",
        "fit.batch_size": "16",
        "fit.initial_epoch": "0",
        "fit.steps_per_epoch": "3",
        "compile.optimizer": "SGD",
        "compile.learning_rate": "0.05",
    }
    assert [s for s, _ in _metric(client, tracker.run_id, "loss")] == [0, 1]
    (tmp_path / "notes.txt").write_text("diverged")
    tracker.log_artifact(str(tmp_path / "notes.txt"))  # after the run ended: reopened, and
    assert client.get_run(tracker.run_id).info.status == "FAILED"  # it ends as it had
    assert _artifacts(client, tracker.run_id) == ["notes.txt"]


def test_mlflow_params_mlflow_cannot_hold_and_a_second_fit(mlflow_store):
    """A value past MLflow's 6000 characters is cut; a param the run holds with another value
    is not logged (MLflow never changes one), with a warning; a second fit of the tracker
    continues its run, fit's own params kept from the first."""
    uri, _ = mlflow_store
    tracker = MLflowLogger(uri, experiment_name="tests")
    tracker.log_params({"note": "x" * 7000, "a": 1})
    model = _model()
    with pytest.warns(UserWarning, match="'note' is 7000 characters long"):
        _fit(model, [tracker], epochs=1)
    with pytest.warns(UserWarning, match=r"already holds param 'a' = '1'.*'2' is not logged"):
        tracker.log_params({"a": 2, "b": 3})
    first = tracker.run_id
    _fit(model, [tracker], epochs=2)
    assert tracker.run_id == first
    run = _client(uri).get_run(first)
    assert run.data.params == {"note": "x" * 5997 + "...", "a": "1", "b": "3"}
    assert [s for s, _ in _metric(_client(uri), first, "loss")] == [0, 0, 1]


def test_mlflow_resumed_fit_continues_the_same_run(mlflow_store, tmp_path):
    """Killed at epoch 3 and run again with a new logger (as a new process would): the backup
    gives it the run id, and the run holds each epoch and step once, equal to the history,
    though the last backup (every 2 steps) was made before epoch 2 and steps 5-6 were logged."""
    uri, _ = mlflow_store

    def run(crash):
        model = _model()

        def kill(epoch, logs):
            if crash and epoch == 2:
                raise KeyboardInterrupt

        tracker = MLflowLogger(uri, experiment_name="tests", log_every_n_steps=1)
        backup = BackupAndRestore(str(tmp_path / "backup"), save_freq=2, verbose=0)
        try:
            return _fit(model, [LambdaCallback(on_epoch_begin=kill), tracker, backup]), tracker
        except KeyboardInterrupt:
            return None, tracker

    _, first = run(crash=True)
    client = _client(uri)
    assert client.get_run(first.run_id).info.status == "KILLED"
    history, second = run(crash=False)
    assert second.run_id == first.run_id
    assert client.get_run(first.run_id).info.status == "FINISHED"
    for key, values in history.history.items():
        assert _metric(client, first.run_id, key) == list(enumerate(values)), key
    assert [s for s, _ in _metric(client, first.run_id, "batch_loss")] == list(range(1, 10))


def test_a_fit_resumed_after_a_kill_logs_the_best_checkpoint_the_killed_fit_wrote(
    mlflow_store, tmp_path, monkeypatch
):
    """The best checkpoint (epoch 0's: the largest loss, with mode max) was written before the
    kill, so the resumed fit never rewrites it: it is logged at the resumed fit's end all the
    same. (A kill runs no on_train_end: the killed fit logs nothing at its end.)"""
    from fitkit.callbacks.trackers import base

    uri, _ = mlflow_store
    best = tmp_path / "best.pt"

    def run(kill: bool):
        model = _model()
        tracker = MLflowLogger(uri, experiment_name="killed")
        if kill:
            tracker.on_train_end = lambda logs=None: None  # SIGKILL: the process just ends

        def stop(epoch, logs):
            if kill and epoch == 2:
                raise RuntimeError("killed")

        callbacks = [
            LambdaCallback(on_epoch_begin=stop),
            tracker,
            ModelCheckpoint(str(best), monitor="loss", mode="max", save_best_only=True),
            BackupAndRestore(str(tmp_path / "backup"), verbose=0),
        ]
        with pytest.raises(RuntimeError) if kill else contextlib.nullcontext():
            _fit(model, callbacks)
        return tracker

    first = run(kill=True)
    written = os.path.getmtime(best)
    # the resumed process starts well after the checkpoint was written (a restart, a queue)
    later = time.time() + 100
    monkeypatch.setattr(base, "time", types.SimpleNamespace(time=lambda: later))
    second = run(kill=False)
    assert second.run_id == first.run_id and os.path.getmtime(best) == written
    assert _artifacts(_client(uri), first.run_id) == ["checkpoints/best.pt"]


def test_a_new_sqlite_store_is_made_without_mlflow_chatter(tmp_path, capfd):
    """MLflow's INFO notes on creating a store's tables would land among the epoch lines."""
    pytest.importorskip("mlflow")
    tracker = MLflowLogger(f"sqlite:///{tmp_path}/new.db", experiment_name="quiet")
    _fit(_model(), [tracker], epochs=1)
    out, err = capfd.readouterr()
    assert "INFO" not in out + err and "database tables" not in out + err
    assert (tmp_path / "new.db").is_file() and tracker.run_id is not None


def test_a_failing_store_warns_and_training_goes_on(mlflow_store, monkeypatch):
    uri, _ = mlflow_store
    tracker = MLflowLogger(uri, experiment_name="tests")
    calls = []

    def broken(*args, **kwargs):
        calls.append(kwargs)
        raise OSError("disk gone")

    def break_store(epoch, logs):
        if epoch == 1:
            monkeypatch.setattr(tracker._client, "log_batch", broken)

    with pytest.warns(UserWarning, match=r"MLflowLogger: logging epoch metrics failed.*disk gone"):
        history = _fit(_model(), [LambdaCallback(on_epoch_begin=break_store), tracker])
    assert len(history) == 3 and len(calls) == 1  # tried once, then left alone
    monkeypatch.undo()
    client = _client(uri)
    assert [s for s, _ in _metric(client, tracker.run_id, "loss")] == [0]
    assert client.get_run(tracker.run_id).info.status == "FAILED"


def test_mlflow_file_store(tmp_path, monkeypatch):
    """MLflow 3 refuses a file store unless MLFLOW_ALLOW_FILE_STORE is set: said before
    training; with it set, the run is there."""
    pytest.importorskip("mlflow")
    store = str(tmp_path / "mlruns")
    model = _model()
    torch = pytest.importorskip("torch")
    before = [p.detach().clone() for p in model.net.parameters()]
    with pytest.raises(
        FitkitError, match=r"MLflowLogger cannot use the tracking store.*FILE_STORE"
    ):
        _fit(model, [MLflowLogger(store)])
    assert all(torch.equal(a, b) for a, b in zip(before, model.net.parameters(), strict=True))
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    tracker = MLflowLogger(store)
    history = _fit(model, [tracker], epochs=1)
    client = _client(store)
    assert _metric(client, tracker.run_id, "loss") == [(0, history.history["loss"][0])]
    assert os.path.isdir(os.path.join(store, client.get_run(tracker.run_id).info.experiment_id))


# ---------------------------------------------------------------------- W&B
def _records(path: str):
    """The records of a W&B transaction log (``run-<id>.wandb``): after a 7-byte header
    (':W&B', magic, version), LevelDB's log format (32 KiB blocks of chunks, each a 7-byte
    header of crc32, length and type: full, first, middle, last), each record a protobuf
    ``Record``. wandb ships no Python reader for it since its core moved to Go."""
    from wandb.proto import wandb_internal_pb2

    data = open(path, "rb").read()
    assert data[:4] == b":W&B"
    pos, block, parts = 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind == 0:
            continue
        parts = chunk if kind in (1, 2) else parts + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(parts)
            yield record


def _finished(path: str, within: float = 20.0) -> list:
    """The records of a run's log once its exit record is there: wandb's core process writes
    the file after ``run.finish()`` returns."""
    deadline = time.monotonic() + within
    while True:
        records = list(_records(path))
        if any(r.WhichOneof("record_type") == "exit" for r in records):
            return records
        assert time.monotonic() < deadline, f"{path}: no exit record after {within} s"
        time.sleep(0.05)


def _wandb_runs(save_dir) -> list[dict]:
    """Each offline run folder of ``save_dir``, oldest first: its id, config, history rows,
    files and exit code."""
    runs = []
    for folder in glob.glob(os.path.join(save_dir, "wandb", "offline-run-*")):
        run = {"config": {}, "rows": [], "exit": None, "folder": folder}
        (log,) = glob.glob(os.path.join(folder, "run-*.wandb"))
        for record in _finished(log):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                run["id"] = record.run.run_id
                run["start"] = record.run.start_time.ToNanoseconds()  # (folder names: seconds)
                run["config"].update(
                    {
                        i.key or "/".join(i.nested_key): json.loads(i.value_json)
                        for i in record.run.config.update
                    }
                )
            elif kind == "config":
                run["config"].update(
                    {
                        i.key or "/".join(i.nested_key): json.loads(i.value_json)
                        for i in record.config.update
                    }
                )
            elif kind == "history":
                # (wandb-core writes each key in nested_key, older versions in key)
                row = {
                    i.key or "/".join(i.nested_key): json.loads(i.value_json)
                    for i in record.history.item
                }
                row = {k: v for k, v in row.items() if not k.startswith("_")}
                run["rows"].append({**row, "_step": record.history.step.num})
            elif kind == "exit":
                run["exit"] = record.exit.exit_code
        run["config"].pop("_wandb", None)
        run["files"] = sorted(
            os.path.relpath(p, os.path.join(folder, "files"))
            for p in glob.glob(os.path.join(folder, "files", "**", "*"), recursive=True)
            if os.path.isfile(p) and not p.endswith("requirements.txt")
        )
        runs.append(run)
    return sorted(runs, key=lambda run: run["start"])


def test_wandb_offline_run_and_its_resume_read_back(tmp_path):
    """Config, epoch rows equal to the history, files, exit codes; a fit killed at epoch 2
    and resumed from its backup continues the same run id, its rows numbered on."""
    save_dir = tmp_path / "wb"
    (tmp_path / "config.yaml").write_text("fit:\n  epochs: 3\n")

    def run(crash):
        model = _model()

        def kill(epoch, logs):
            if crash and epoch == 1:
                raise KeyboardInterrupt

        tracker = WandbLogger(
            project="tests", save_dir=str(save_dir), log_every_n_steps=3, settings=_wandb_settings()
        )
        tracker.log_params(CONFIG)
        tracker.log_artifact(str(tmp_path / "config.yaml"))
        cbs = [
            LambdaCallback(on_epoch_begin=kill),
            tracker,
            ModelCheckpoint(str(tmp_path / "w-{epoch}.pt")),
            BackupAndRestore(str(tmp_path / "backup"), verbose=0),
        ]
        try:
            return _fit(model, cbs), tracker
        except KeyboardInterrupt:
            return None, tracker

    _, first = run(crash=True)
    history, second = run(crash=False)
    assert second.run_id == first.run_id and second.mode == "offline"
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "model.onnx").write_bytes(b"onnx")
    second.log_artifact(str(tmp_path / "export"))  # after the run ended: reopened, closed
    killed, resumed, reopened = _wandb_runs(save_dir)
    assert killed["id"] == resumed["id"] == reopened["id"] == first.run_id
    assert (killed["exit"], resumed["exit"], reopened["exit"]) == (255, 0, 0)
    assert reopened["files"] == ["export/model.onnx"] and reopened["rows"] == []
    assert killed["config"] == resumed["config"] == flatten(CONFIG)
    epochs = [r for r in killed["rows"] + resumed["rows"] if "epoch" in r]
    assert [r["epoch"] for r in epochs] == [0, 1, 2]
    for key, values in history.history.items():
        assert [r[key] for r in epochs] == pytest.approx(values, rel=1e-12, abs=0), key
    steps = [r for r in killed["rows"] + resumed["rows"] if "global_step" in r]
    assert [r["global_step"] for r in steps] == [3, 6, 9]  # every 3 steps, over the restore
    all_rows = killed["rows"] + resumed["rows"]
    assert [r["_step"] for r in all_rows] == list(range(len(all_rows)))  # numbered on
    assert killed["files"] == ["checkpoints/w-1.pt", "config.yaml"]  # a killed run's last too
    assert resumed["files"] == ["checkpoints/w-3.pt", "config.yaml"]  # the last one written


# ---------------------------------------------------------------------- both
def test_a_process_of_rank_other_than_0_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")  # no WORLD_SIZE: not a distributed fit, rank 1 all the same
    assert not fitkit.distribute.is_main_process()
    (tmp_path / "config.yaml").write_text("a: 1\n")
    trackers = [
        MLflowLogger(f"sqlite:///{tmp_path}/mlflow.db", log_every_n_steps=1),
        WandbLogger(save_dir=str(tmp_path / "wb"), log_every_n_steps=1, settings=_wandb_settings()),
    ]
    for tracker in trackers:
        tracker.log_params(CONFIG)
        tracker.log_artifact(str(tmp_path / "config.yaml"))
        # a file rank 0 writes need not exist here: no error stops this rank's training
        tracker.log_artifact(str(tmp_path / "rank_0_only.yaml"))
    history = _fit(_model(), trackers)
    assert len(history) == 3
    assert os.listdir(tmp_path) == ["config.yaml"]  # no store, no run folder, no wandb cache
    assert [t.run_id for t in trackers] == [None, None]
    assert [t.state_dict()["run_id"] for t in trackers] == ["", ""]


@pytest.mark.parametrize(
    ("blocked", "make", "extra"),
    [
        ("mlflow", lambda: MLflowLogger(), "mlflow"),
        ("sqlalchemy", lambda: MLflowLogger("sqlite:///x.db"), "mlflow"),
        ("wandb", lambda: WandbLogger(), "wandb"),
    ],
)
def test_a_missing_package_is_named_when_the_tracker_is_made(monkeypatch, blocked, make, extra):
    monkeypatch.setitem(sys.modules, blocked, None)
    with pytest.raises(FitkitError, match=rf'needs the {blocked} package.*"fitkit\[{extra}\]"'):
        make()


def test_arguments_are_checked_when_the_tracker_is_made(tmp_path):
    with pytest.raises(FitkitValueError, match="log_every_n_steps"):
        MLflowLogger(log_every_n_steps=0)
    with pytest.raises(FitkitValueError, match="mode"):
        WandbLogger(mode="cloud")
    tracker = Tracker(log_every_n_steps=None, log_checkpoints=True)  # what both share
    with pytest.raises(FitkitValueError, match="takes a mapping"):
        tracker.log_params([("a", 1)])  # type: ignore[arg-type]
    with pytest.raises(FitkitValueError, match="does not exist"):
        tracker.log_artifact(str(tmp_path / "missing.yaml"))


def test_flatten_uses_dotted_keys_and_list_indices():
    assert flatten({"a": {"b": 1, "c": [4, {"d": None}]}, "e": [], "f": "x"}) == {
        "a.b": 1,
        "a.c.0": 4,
        "a.c.1.d": None,
        "e": [],
        "f": "x",
    }


def test_import_fitkit_imports_no_tracking_library():
    code = (
        "import sys, fitkit.callbacks; print([m for m in ('mlflow', 'wandb') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
