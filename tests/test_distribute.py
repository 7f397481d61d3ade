"""The backend-free side of distribution: process facts from the environment, the auto choice,
the global batch's check, and files written by the main process only."""

from __future__ import annotations

import json

import pytest

import fitkit
from fitkit import distribute
from fitkit.callbacks import CSVLogger, EarlyStopping


class FakeStrategy(distribute.Strategy):
    name, replicas = "mirrored", 4


@pytest.fixture
def clean_env(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "TF_CONFIG", "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def test_one_process_is_rank_0_of_1(clean_env):
    assert (distribute.rank(), distribute.world_size(), distribute.is_main_process()) == (
        0,
        1,
        True,
    )
    assert distribute.environment_name() == ""
    distribute.barrier()  # a no-op


def test_torchrun_variables_mean_ddp(clean_env):
    clean_env.setenv("RANK", "1")
    clean_env.setenv("WORLD_SIZE", "2")
    assert distribute.environment_name() == "ddp"
    assert (distribute.rank(), distribute.world_size(), distribute.is_main_process()) == (
        1,
        2,
        False,
    )


def test_tf_config_means_multi_worker(clean_env):
    clean_env.setenv(
        "TF_CONFIG",
        json.dumps(
            {
                "cluster": {"worker": ["localhost:1111", "localhost:2222", "localhost:3333"]},
                "task": {"type": "worker", "index": 2},
            }
        ),
    )
    assert distribute.environment_name() == "multi_worker"
    assert (distribute.rank(), distribute.world_size()) == (2, 3)


def test_an_unknown_strategy_name_lists_the_names():
    with pytest.raises(fitkit.FitkitValueError, match="mirrored, central_storage"):
        with distribute.strategy("horovod"):
            pass


def test_batch_size_must_divide_across_replicas(kit, clean_env):
    clean_env.setattr(distribute, "_ACTIVE", [FakeStrategy()])
    model = fitkit.Model(kit.mlp(4, 1))
    model.compile("sgd", "mse")
    import numpy as np

    x, y = np.zeros((16, 4), "float32"), np.zeros((16, 1), "float32")
    with pytest.raises(
        fitkit.FitkitValueError,
        match=r"batch_size=10 is the global batch.*4 "
        r"replicas.*e\.g\. 8",
    ):
        model.fit(x, y, batch_size=10, verbose=0)


def test_file_writing_callbacks_write_on_the_main_process_only(kit, clean_env, tmp_path):
    """Every rank runs the hooks (reading logs is a collective under DDP); rank 1 writes
    nothing."""
    import numpy as np

    clean_env.setenv("RANK", "1")
    clean_env.setenv("WORLD_SIZE", "2")
    model = fitkit.Model(kit.mlp(4, 1))
    model.compile("sgd", "mse")
    x, y = np.zeros((16, 4), "float32"), np.zeros((16, 1), "float32")
    stop, log = EarlyStopping("loss", patience=5), CSVLogger(str(tmp_path / "log.csv"))
    model.fit(x, y, epochs=2, verbose=0, callbacks=[stop, log])
    assert stop.wait == 0 or stop.best is not None  # the hooks ran
    assert not (tmp_path / "log.csv").exists()
    model.save_checkpoint(tmp_path / "state.fitkit")
    assert not (tmp_path / "state.fitkit").exists()
