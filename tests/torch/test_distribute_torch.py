"""torch strategies: DDP over 2 CPU processes trains exactly as one process does (weights,
history, predictions), each process's share of each batch, metric states combined over
processes, a crashing process ends the launch, and errors that name the fix."""

from __future__ import annotations

import gc
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_classes, make_regression

import fitkit
from fitkit import specs
from fitkit.targets import TargetMode
from fitkit.torch import data
from fitkit.torch import devices as tdevices
from fitkit.torch import distribute as tdist
from fitkit.torch import metrics as tmetrics

SCRIPT = Path(__file__).parents[1] / "scripts" / "ddp_train.py"
CPU = torch.device("cpu")


def _script():
    spec = importlib.util.spec_from_file_location("ddp_train", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------------- names and errors
def test_none_changes_nothing(torch_kit):
    x, y = make_regression(n=64)
    with fitkit.distribute.strategy("none") as s:
        assert (s.name, s.rank, s.world_size, s.replicas) == ("none", 0, 1, 1)
        assert fitkit.distribute.active() is s and fitkit.distribute.is_main_process()
        model = fitkit.Model(torch_kit.mlp(4, 1))
        model.compile("sgd", "mse")
        model.fit(x, y, epochs=1, verbose=0)
    assert fitkit.distribute.active() is None
    assert model.runtime.adapter._ddp is None and model.runtime.adapter._forward is model.net
    assert model.runtime.adapter._update is None  # the plain default step


def test_mirrored_without_two_gpus_warns_and_trains_on_one_device(torch_kit, monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.warns(UserWarning, match="at least two CUDA GPUs.*strategy\\('none'\\)"):
        with fitkit.distribute.strategy("mirrored") as s:
            assert s.name == "none" and s.world_size == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="DataParallel on CPU passes through")
def test_mirrored_wraps_the_net_in_data_parallel_and_recommends_ddp(torch_kit, monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    x, y = make_regression(n=64)
    with pytest.warns(UserWarning, match="DataParallel over 2 GPUs.*strategy\\('ddp'\\)"):
        with fitkit.distribute.strategy("mirrored") as s:
            s.device = CPU  # no GPU here: DataParallel then calls the net itself
            model = fitkit.Model(torch_kit.mlp(4, 1))
            model.compile("sgd", "mse")
            model.fit(x, y, epochs=1, verbose=0)
            assert model.predict(x).shape == (64, 1)
    assert (s.name, s.replicas, s.world_size) == ("mirrored", 2, 1)
    assert isinstance(model.runtime.adapter._forward, torch.nn.DataParallel)
    assert model.net is model.runtime.adapter._forward.module and "module." not in "".join(
        model.net.state_dict()
    )


@pytest.mark.parametrize("name", ["central_storage", "multi_worker"])
def test_tensorflow_strategies_are_refused_naming_ddp(torch_kit, name):
    with pytest.raises(fitkit.FitkitValueError, match=r"TensorFlow strategy.*strategy\('ddp'\)"):
        with fitkit.distribute.strategy(name):
            pass
    assert fitkit.distribute.active() is None


def test_ddp_without_a_launcher_names_the_commands(torch_kit, monkeypatch):
    for key in (*tdist._ENV, "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(
        fitkit.FitkitError,
        match=r"fitkit launch -n N script.py.*torchrun --nproc-per-node N script.py",
    ):
        with fitkit.distribute.strategy("ddp"):
            pass


def test_auto_picks_mirrored_only_with_several_gpus(torch_kit, monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "TORCHELASTIC_RUN_ID", "TF_CONFIG"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert tdist.default_name() == "mirrored"
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert tdist.default_name() == "none"
    with fitkit.distribute.strategy("auto") as s:
        assert s.name == "none"


# ---------------------------------------------------------------------- DDP in one process


@pytest.fixture
def one_process_ddp(monkeypatch):
    """torchrun's variables for a world of one (gloo; rank 0's store listens on port 0, the
    system's pick: no port is picked here, freed, and raced for)."""
    for key, value in {
        "RANK": "0",
        "WORLD_SIZE": "1",
        "LOCAL_RANK": "0",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": "0",
    }.items():
        monkeypatch.setenv(key, value)


def test_ddp_of_one_process_trains_as_no_strategy(torch_kit, one_process_ddp, tmp_path):
    script = _script()
    reference = script.run("accumulation")
    with fitkit.distribute.strategy("ddp") as s:
        assert (s.name, s.rank, s.world_size) == ("ddp", 0, 1)
        assert s.device.type == tdist.default_device().type  # gloo on CPU, nccl on CUDA
        ours = script.run("accumulation")
        model = fitkit.Model(torch.nn.Linear(5, 3))
        model.compile("sgd", "cross_entropy")
        model.save_weights(str(tmp_path / "w.pt"))
    for a, b in zip(reference["weights"], ours["weights"], strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)
    assert ours["keys"] == reference["keys"]  # the user's module: no "module." prefix
    assert list(torch.load(tmp_path / "w.pt")) == ["weight", "bias"]
    # Keras's pattern: a model built in the block trains after it, on the kept group
    assert torch.distributed.is_initialized()
    model.fit(*make_classes(n=16, d=5), epochs=1, verbose=0)
    del model
    gc.collect()  # the last model built in the block is released: the group goes with it
    assert not torch.distributed.is_initialized()


# ---------------------------------------------------------------------- shares of batches
class FakeComm:
    """One process of a world of two, without a process group (broadcast: every fake
    process draws the same order when seeded alike)."""

    def __init__(self, rank: int, world_size: int = 2) -> None:
        self.rank, self.world_size, self.seeds = rank, world_size, iter(range(10, 99))

    def broadcast(self, tensor):
        return tensor

    def draw_seed(self):
        return next(self.seeds)

    def loader(self, source, batch_size, shuffle):
        return tdist.distributed_loader(source, batch_size, shuffle, self)


def _passes(make, world=2):
    """Each process's batches of one pass (seeded alike)."""
    out = []
    for rank in range(world):
        torch.manual_seed(0)
        out.append(list(make(FakeComm(rank, world)).batches()))
    return [[b for b, _ in batches] for batches in out]


def _union(shares, part=0):
    return torch.cat([share[part] for share in shares])


@pytest.mark.parametrize("shuffle", [False, True])
def test_array_shares_make_up_each_global_batch(shuffle):
    x, y = make_classes(n=97, d=4)
    make = lambda comm: data.ShardedTensorSource(  # noqa: E731
        x, y, batch_size=32, shuffle=shuffle, device=CPU, float_dtype=torch.float32, comm=comm
    )
    ranks = _passes(make)
    assert [len(b) for b in ranks] == [4, 4]
    torch.manual_seed(0)
    order = torch.randperm(97) if shuffle else torch.arange(97)
    for k, shares in enumerate(zip(*ranks, strict=True)):
        rows = order[k * 32 : (k + 1) * 32]
        torch.testing.assert_close(_union(shares), torch.from_numpy(x)[rows])
        torch.testing.assert_close(_union(shares, 1), torch.from_numpy(y)[rows])
        assert {s.total for s in shares} == {len(rows)}
    assert [len(s[0]) for s in ranks[0]] == [16, 16, 16, 1]
    assert [len(s[0]) for s in ranks[1]] == [16, 16, 16, 0]  # an empty share
    if not shuffle:
        assert ranks[1][0].positions == range(16, 32)
    peeked = make(FakeComm(1)).peek()  # the whole first batch, on every process
    assert len(peeked[0]) == 32 and not isinstance(peeked, data.Share)


def test_a_global_batch_that_does_not_divide_splits_unevenly():
    x, y = make_classes(n=40, d=4)
    make = lambda comm: data.ShardedTensorSource(  # noqa: E731
        x, y, batch_size=33, shuffle=False, device=CPU, float_dtype=torch.float32, comm=comm
    )
    ranks = _passes(make)
    assert [[len(s[0]) for s in r] for r in ranks] == [[17, 4], [16, 3]]
    torch.testing.assert_close(_union([r[0] for r in ranks]), torch.from_numpy(x[:33]))


def test_a_loader_batch_that_does_not_divide_is_refused():
    x, y = make_classes(n=40, d=4)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y)), batch_size=33
    )
    with pytest.raises(
        fitkit.FitkitValueError,
        match="the DataLoader's batch_size=33 does not divide by the 2 processes",
    ):
        data.batch_source(
            loader,
            batch_size=32,
            shuffle=False,
            device=CPU,
            float_dtype=torch.float32,
            comm=FakeComm(0),
        )


@pytest.mark.parametrize("drop_last", [False, True])
def test_loader_shares_drop_the_sampler_padding(drop_last):
    x, y = make_classes(n=97, d=4)
    dataset = torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
    loader = torch.utils.data.DataLoader(dataset, batch_size=32, drop_last=drop_last)
    make = lambda comm: data.batch_source(  # noqa: E731
        loader, batch_size=1, shuffle=False, device=CPU, float_dtype=torch.float32, comm=comm
    )
    ranks = _passes(make)
    assert [len(b) for b in ranks] == ([3, 3] if drop_last else [4, 4])
    assert make(FakeComm(0)).steps == len(ranks[0])
    for k, shares in enumerate(
        zip(*ranks, strict=True)
    ):  # DistributedSampler interleaves the processes
        where = torch.tensor([i for s in shares for i in s.positions], dtype=torch.long)
        rows = where.sort().values
        assert rows.tolist() == list(range(k * 32, min(97, (k + 1) * 32)))
        got = _union(shares)[where.argsort()]
        torch.testing.assert_close(got, torch.from_numpy(x)[rows])
    if not drop_last:  # 97 rows: rank 1's last batch held only the sampler's repeated row
        assert [len(s[0]) for s in ranks[1]] == [16, 16, 16, 0]


def test_a_shuffled_loader_reshuffles_each_pass_alike_on_every_process():
    _x, y = make_classes(n=64, d=4)
    dataset = torch.utils.data.TensorDataset(torch.arange(64), torch.from_numpy(y))
    loader = torch.utils.data.DataLoader(dataset, batch_size=16, shuffle=True)
    sources = [
        data.batch_source(
            loader,
            batch_size=1,
            shuffle=False,
            device=CPU,
            float_dtype=torch.float32,
            comm=FakeComm(r),
        )
        for r in (0, 1)
    ]
    orders = []
    for _ in range(2):  # two passes (epochs)
        ranks = [[batch for batch, _ in source.batches()] for source in sources]
        orders.append(torch.cat([_union(shares) for shares in zip(*ranks, strict=True)]).tolist())
    assert sorted(orders[0]) == list(range(64)) == sorted(orders[1])
    assert orders[0] != orders[1]


def test_other_iterables_keep_each_process_block_of_every_batch():
    x, y = make_classes(n=50, d=4)
    batches = [(x[i : i + 20], y[i : i + 20]) for i in range(0, 50, 20)]
    make = lambda comm: data.batch_source(  # noqa: E731
        batches, batch_size=1, shuffle=False, device=CPU, float_dtype=torch.float32, comm=comm
    )
    ranks = _passes(make)
    for k, shares in enumerate(zip(*ranks, strict=True)):
        torch.testing.assert_close(_union(shares), torch.from_numpy(x[k * 20 : (k + 1) * 20]))
    assert [s.positions for s in ranks[1]] == [range(10, 20), range(30, 40), range(45, 50)]


# ---------------------------------------------------------------------- metric states merged
@pytest.mark.parametrize(
    "names,task,width",
    [
        (["accuracy", "top_k_accuracy", "f1_score", "precision", "auc"], "sparse", 3),
        (["mae", "rmse", "r2_score"], "regression", 2),
    ],
)
def test_metric_states_merged_over_processes_equal_one_process(names, task, width):
    rng = np.random.default_rng(0)
    y_pred = torch.from_numpy(rng.standard_normal((90, width)))
    y = (
        torch.from_numpy(rng.integers(0, 3, 90))
        if task == "sparse"
        else y_pred + torch.from_numpy(rng.standard_normal((90, width))) + 1000.0
    )
    y_pred = y_pred.float() if task == "sparse" else y_pred + 1000.0  # r2's shifts differ
    weights = torch.from_numpy(rng.uniform(0.5, 2.0, 90))

    def built(rows):
        metrics = specs.build_metrics(names, tmetrics)
        for m in metrics:
            m.build(TargetMode(task, True), width, CPU)
            if rows.stop > rows.start:
                m.update(y_pred[rows], y[rows], weights[rows] if "r2_score" in names else None)
        return metrics

    whole, parts = (
        built(slice(0, 90)),
        [built(slice(0, 50)), built(slice(50, 90)), built(slice(90, 90))],
    )  # a process that saw no rows
    for i, metric in enumerate(whole):
        mine = parts[0][i]
        merged = mine.merge([p[i].local_state() for p in parts])
        for key, value in merged.items():
            setattr(mine, key, value)
        torch.testing.assert_close(
            mine.result().double(), metric.result().double(), rtol=1e-9, atol=1e-9
        )


# ---------------------------------------------------------------------- 2 processes (gloo)
def _launch(*args, timeout=120):
    """The script on 2 CPU processes (gloo) with ``fitkit launch`` (torch's launcher where
    fitkit.launch is missing), on a free port."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "CUDA_VISIBLE_DEVICES": "",
        "FITKIT_BACKEND": "torch",
    }
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    launcher = (
        ["fitkit.cli", "launch", "-n", "2"]
        if importlib.util.find_spec("fitkit.launch")
        else ["torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    )
    return subprocess.run(
        [sys.executable, "-m", *launcher, str(SCRIPT), *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    done = _launch(out, *_script().CASES)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def _saved(path):
    saved = np.load(path)
    meta = json.loads(str(saved["meta"]))
    weights = [saved[f"w{i}"] for i in range(sum(k.startswith("w") for k in saved.files))]
    return weights, meta, {k: saved[k] for k in saved.files if k.startswith("predict")}


@pytest.mark.slow
@pytest.mark.parametrize(
    "case",
    [
        "arrays",
        "shuffle",
        "loader",
        "accumulation",
        "empty_share",
        "custom_step",
        "regression",
        "on_batch",
        "callbacks",
    ],
)
def test_ddp_on_two_processes_trains_as_one_process(ddp_runs, case, monkeypatch):
    monkeypatch.setenv("FITKIT_BACKEND", "torch")
    monkeypatch.setattr(tdevices, "default_device", lambda: CPU)  # as the processes (CPU)
    torch.set_num_threads(1)
    reference = _script().run(case)
    for rank in (0, 1):
        weights, meta, predictions = _saved(ddp_runs / f"{case}.rank{rank}.npz")
        for a, b in zip(weights, reference["weights"], strict=True):
            np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
        assert meta["keys"] == reference["keys"]
        assert meta["history"].keys() == reference["history"].keys()
        for key, values in reference["history"].items():
            np.testing.assert_allclose(
                meta["history"][key], values, rtol=1e-6, atol=1e-6, err_msg=key
            )
        for key, value in reference.get("validate", {}).items():
            assert meta["validate"][key] == pytest.approx(value, rel=1e-6, abs=1e-6)
        for key, value in predictions.items():  # every process has all, in order
            np.testing.assert_allclose(value, reference[key], atol=1e-5, rtol=0)
        if "local_rows" in meta:  # each process trained on its half of the rows
            n = 97 if case in ("accumulation", "empty_share") else 100
            assert meta["local_rows"] == (n + 1 - rank) // 2


@pytest.mark.slow
def test_callbacks_stop_alike_on_every_process_and_only_rank_0_writes(ddp_runs):
    for rank in (0, 1):  # both stopped at epoch 2 (their histories equal one process's)
        assert len(_saved(ddp_runs / f"callbacks.rank{rank}.npz")[1]["history"]["loss"]) == 2
    assert sorted(os.listdir(ddp_runs / "r0")) == ["log.csv", "w1.pt", "w2.pt"]
    assert len((ddp_runs / "r0" / "log.csv").read_text().splitlines()) == 3  # header + 2
    assert not (ddp_runs / "r1").exists()


@pytest.mark.slow
def test_ddp_fit_after_the_strategy_block_trains_as_one_process(tmp_path, monkeypatch):
    done = _launch(tmp_path, "--after-scope", timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    monkeypatch.setenv("FITKIT_BACKEND", "torch")
    monkeypatch.setattr(tdevices, "default_device", lambda: CPU)
    torch.set_num_threads(1)
    reference = _script().run("arrays")
    for rank in (0, 1):
        weights, meta, predictions = _saved(tmp_path / f"after_scope.rank{rank}.npz")
        for a, b in zip(weights, reference["weights"], strict=True):
            np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
        np.testing.assert_allclose(meta["history"]["loss"], reference["history"]["loss"], rtol=1e-6)
        np.testing.assert_allclose(predictions["predict"], reference["predict"], atol=1e-5)


@pytest.mark.slow
def test_a_crashing_process_ends_the_launch(tmp_path):
    done = _launch(tmp_path, "--crash", timeout=60)
    assert done.returncode != 0
    assert "rank 1 fails at step 2" in done.stderr
