"""MLflowLogger: a fit mirrored into an MLflow run, through MLflow's client (never its global
active run), on a database store (``sqlite:///runs/mlflow.db``), a file store or a server.

Owns the MLflow calls and MLflow's limits; when to call them is trackers/base.py's.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pathlib
import time
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

from ...errors import FitkitError
from .base import Tracker, require

# MLflow's INFO lines when it creates or upgrades a database store, printed among the epochs
_STORE_SETUP_LOGGERS = ("mlflow.store.db.utils", "alembic.runtime.migration")


@contextlib.contextmanager
def _quiet_store_setup() -> Iterator[None]:
    """Only warnings and errors from MLflow's store setup (its progress notes are noise in a
    fit's output)."""
    loggers = [logging.getLogger(name) for name in _STORE_SETUP_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(max(logger.getEffectiveLevel(), logging.WARNING))
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


_DATABASES = ("sqlite", "postgresql", "mysql", "mssql")
_MAX_VALUE = 6000  # MLflow refuses a param value longer than this
_PARAMS_PER_CALL, _METRICS_PER_CALL = 100, 1000  # log_batch's limits


class MLflowLogger(Tracker):
    """Log a fit to MLflow: parameters, metrics per epoch (and every N steps), the best
    checkpoint and any file you add.

    >>> tracker = fitkit.callbacks.MLflowLogger("sqlite:///runs/mlflow.db", experiment_name="demo")
    >>> tracker.log_params({"fit": {"epochs": 5}})  # e.g. a config; fit's own params otherwise

    then ``model.fit(x, y, epochs=5, callbacks=[tracker])``, and see the run with
    ``mlflow ui --backend-store-uri sqlite:///runs/mlflow.db``.

    ``tracking_uri``: a database (``sqlite:///path.db``, ``postgresql://...``), a server
    (``http://...``) or a file store folder; None: MLflow's own choice (``MLFLOW_TRACKING_URI``,
    else its default). The run goes to ``experiment_name`` (created if missing, its artifacts
    in ``artifact_location``: by default beside a SQLite file, in ``mlartifacts/``). ``run_id``
    continues an existing run; else a new one named ``run_name`` is started with ``tags``.
    Epoch metrics use the history's keys with step = epoch (0-based); ``log_every_n_steps=N``
    adds ``batch_<key>`` (the epoch's running means) every N training steps, step = steps
    counted across epochs. ``log_checkpoints``: at the end, the file a ModelCheckpoint of the
    fit wrote last (its best, with ``save_best_only``) goes under ``checkpoints/``. Needs
    ``pip install "fitkit[mlflow]"``.
    """

    def __init__(
        self,
        tracking_uri: str | os.PathLike | None = None,
        experiment_name: str = "fitkit",
        run_name: str | None = None,
        run_id: str | None = None,
        tags: Mapping[str, Any] | None = None,
        artifact_location: str | None = None,
        log_every_n_steps: int | None = None,
        log_checkpoints: bool = True,
    ) -> None:
        super().__init__(log_every_n_steps, log_checkpoints)
        uri = os.fspath(tracking_uri) if tracking_uri is not None else None
        if uri is not None and uri.split(":", 1)[0].split("+", 1)[0] in _DATABASES:
            require("sqlalchemy", "mlflow", f"MLflowLogger({uri!r})")  # a database store's
            require("alembic", "mlflow", f"MLflowLogger({uri!r})")
        require("mlflow", "mlflow", "MLflowLogger")
        self.tracking_uri = uri
        self.experiment_name = str(experiment_name)
        self.run_name = run_name
        self.run_id = run_id
        self.tags = {str(k): str(v) for k, v in (tags or {}).items()}
        self.artifact_location = artifact_location
        self._client: Any = None
        self._experiment_id: str | None = None
        self._warned_long = False
        self._held: dict[str, str] | None = None  # the open run's params, read when needed

    @property
    def state_key(self) -> str:
        return self._key(tracking_uri=self.tracking_uri, experiment_name=self.experiment_name)

    def _where(self) -> str:
        return f" on {self.tracking_uri or 'MLflow default store'!r}"

    def _default_artifacts(self, uri: str) -> str | None:
        """A SQLite store keeps its artifacts beside its file (MLflow's default: the cwd)."""
        if self.artifact_location is not None or not uri.startswith("sqlite:///"):
            return self.artifact_location
        db = uri[len("sqlite:///") :]
        if db in ("", ":memory:"):
            return None
        return pathlib.Path(os.path.dirname(os.path.abspath(db)), "mlartifacts").as_uri()

    def _backend_connect(self) -> None:
        if self._client is not None:
            return
        tracking = require("mlflow.tracking", "mlflow", "MLflowLogger")
        uri = self.tracking_uri or require("mlflow", "mlflow", "MLflowLogger").get_tracking_uri()
        try:
            with _quiet_store_setup():
                client = tracking.MlflowClient(tracking_uri=uri)
                found = client.get_experiment_by_name(self.experiment_name)
                self._experiment_id = (
                    found.experiment_id
                    if found is not None
                    else client.create_experiment(
                        self.experiment_name, artifact_location=self._default_artifacts(uri)
                    )
                )
        except Exception as err:  # any failure of MLflow's store, said before training
            raise FitkitError(
                f"MLflowLogger cannot use the tracking store {uri!r}: {type(err).__name__}: {err}"
            ) from err
        self._client = client

    def _backend_open(self, run_id: str | None) -> str:
        self._backend_connect()
        client = self._client
        self._held = None if run_id is not None else {}
        if run_id is None:
            run = client.create_run(self._experiment_id, run_name=self.run_name, tags=self.tags)
            return str(run.info.run_id)
        run = client.get_run(run_id)  # an unknown id fails here, naming it
        if run.info.status != "RUNNING":
            client.update_run(run_id, status="RUNNING")
        return run_id

    def _backend_logged(self) -> tuple[int, int]:
        metrics = self._client.get_run(self.run_id).data.metrics  # latest value of each key
        last = []
        for steps in (False, True):  # an epoch key, then a batch_ key: one history each
            key = next((k for k in sorted(metrics) if k.startswith("batch_") == steps), None)
            history = self._client.get_metric_history(self.run_id, key) if key else []
            last.append(max((m.step for m in history), default=-1))
        return last[0], last[1]

    def _backend_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        if self._held is None:  # what the run holds: MLflow refuses to change a param
            self._held = dict(self._client.get_run(self.run_id).data.params)
        items = []
        for key, value in params.items():
            text = self._cut(key, str(value))
            if self._held.get(key, text) != text:
                warnings.warn(
                    f"MLflowLogger: run {self.run_id} already holds param {key!r} = "
                    f"{self._held[key]!r}, and MLflow never changes a param: {text!r} is not "
                    f"logged (log it under another name, or start a new run).",
                    stacklevel=4,
                )
                continue
            items.append(Param(key, text))
            self._held[key] = text
        for i in range(0, len(items), _PARAMS_PER_CALL):
            self._client.log_batch(self.run_id, params=items[i : i + _PARAMS_PER_CALL])

    def _cut(self, key: str, text: str) -> str:
        if len(text) <= _MAX_VALUE:
            return text
        if not self._warned_long:
            warnings.warn(
                f"MLflowLogger: param {key!r} is {len(text)} characters long; MLflow keeps "
                f"{_MAX_VALUE}, so it is cut (log the whole as an artifact).",
                stacklevel=5,
            )
            self._warned_long = True
        return text[: _MAX_VALUE - 3] + "..."

    def _backend_metrics(self, metrics: dict[str, float], step: int, epoch: int | None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(key, value, now, step) for key, value in metrics.items()]
        for i in range(0, len(items), _METRICS_PER_CALL):
            self._client.log_batch(self.run_id, metrics=items[i : i + _METRICS_PER_CALL])

    def _backend_file(self, path: str, folder: str | None) -> None:
        if os.path.isdir(path):
            inside = os.path.basename(os.path.normpath(path))
            where = f"{folder}/{inside}" if folder else inside
            self._client.log_artifacts(self.run_id, path, artifact_path=where)
        else:
            self._client.log_artifact(self.run_id, path, artifact_path=folder)

    def _end_note(self, reason: str | None) -> None:
        # Always set: a resumed run that completes replaces the stop of the run it continues.
        self._client.set_tag(self.run_id, "fitkit.stop_reason", reason or "completed")

    def _backend_close(self, status: str) -> None:
        self._client.set_terminated(self.run_id, status=status)
