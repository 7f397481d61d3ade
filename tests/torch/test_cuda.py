"""The torch adapter's CUDA paths: training on the GPU equals the CPU (one seed, one shuffle),
every optimizer name, bf16/fp16 autocast, pinned DataLoaders and generators, files written on
the GPU load on the CPU, clear errors for kernel asserts and numpy metrics, memory settings,
DDP over nccl and an epoch with no host sync. Skipped without a GPU (CI has none); run them on a GPU
machine with ``python -m pytest tests/torch/test_cuda.py``. Setting FITKIT_TEST_GPU=cpu runs
them on the CPU, to check the tests themselves."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import make_classes  # noqa: E402

import fitkit  # noqa: E402

GPU = os.environ.get("FITKIT_TEST_GPU", "cuda")
pytestmark = pytest.mark.skipif(
    GPU == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA GPU"
)
ROOT = Path(__file__).parents[2]


def _run(args: list, timeout: float = 120, drop: tuple = ()) -> subprocess.CompletedProcess:
    """``python *args`` in a fresh process on this checkout, torch backend, without the
    environment variables in ``drop``."""
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(FITKIT_BACKEND="torch", PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, *map(str, args)], capture_output=True, text=True, env=env, timeout=timeout
    )


def _trained(torch_kit, device, x, y, epochs=3, shuffle=True, **compile_kwargs):
    fitkit.set_seed(0)
    net = torch_kit.mlp(x.shape[1], 3, hidden=32)
    model = fitkit.Model(net, device=device)
    model.compile(
        torch.optim.SGD(net.parameters(), lr=0.1),
        "cross_entropy",
        metrics=["accuracy"],
        **compile_kwargs,
    )
    history = model.fit(
        x,
        y,
        batch_size=32,
        epochs=epochs,
        verbose=0,
        shuffle=shuffle,
        validation_data=(x[:64], y[:64]),
    )
    return model, history.history


def test_fit_on_the_gpu_keeps_the_net_there_and_matches_the_cpu(torch_kit):
    x, y = make_classes(n=300, d=4, classes=3)
    cpu_model, cpu_history = _trained(torch_kit, "cpu", x, y)
    gpu_model, gpu_history = _trained(torch_kit, GPU, x, y)
    assert {p.device.type for p in gpu_model.net.parameters()} == {torch.device(GPU).type}
    for a, b in zip(cpu_model.get_weights(), gpu_model.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert cpu_history.keys() == gpu_history.keys()
    for key in cpu_history:
        np.testing.assert_allclose(
            cpu_history[key], gpu_history[key], rtol=1e-4, atol=1e-5, err_msg=key
        )
    predicted = gpu_model.predict(x, batch_size=64)
    assert isinstance(predicted, np.ndarray) and predicted.shape == (300, 3)
    np.testing.assert_allclose(predicted, cpu_model.predict(x, batch_size=64), atol=1e-4)
    logs = gpu_model.validate(x, y, batch_size=50)
    assert logs["accuracy"] == pytest.approx(cpu_model.validate(x, y, batch_size=50)["accuracy"])


@pytest.mark.skipif(GPU != "cuda", reason="the default device is the GPU only with one")
def test_a_model_without_a_device_trains_on_the_gpu(torch_kit):
    model = fitkit.Model(torch_kit.mlp(4, 1))
    model.compile("adam", "mse")
    x, y = make_classes(n=64, d=4, classes=2)
    model.fit(x, y.astype("float32")[:, None], epochs=1, verbose=0)
    assert next(model.net.parameters()).is_cuda
    assert fitkit.devices.device() == "cuda:0"


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_learns_and_keeps_float32_weights(torch_kit, precision):
    x, y = make_classes(n=600, d=8, classes=3)
    model, history = _trained(torch_kit, GPU, x, y, epochs=8, precision=precision)
    assert all(np.isfinite(history["loss"]))
    assert history["loss"][-1] < 0.7 * history["loss"][0]
    assert history["accuracy"][-1] > 0.8
    assert {p.dtype for p in model.net.parameters()} == {torch.float32}
    assert model.predict(x[:5]).dtype == np.float32


def test_a_pinned_multi_worker_dataloader_trains_as_the_arrays_do(torch_kit):
    x, y = make_classes(n=300, d=4, classes=3)
    _, from_arrays = _trained(torch_kit, GPU, x, y, shuffle=False)
    fitkit.set_seed(0)
    net = torch_kit.mlp(4, 3, hidden=32)
    model = fitkit.Model(net, device=GPU)
    model.compile(torch.optim.SGD(net.parameters(), lr=0.1), "cross_entropy", metrics=["accuracy"])
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y)),
        batch_size=32,
        num_workers=2,
        pin_memory=True,
    )
    history = model.fit(loader, epochs=3, verbose=0, validation_data=(x[:64], y[:64])).history
    for key in from_arrays:
        np.testing.assert_allclose(history[key], from_arrays[key], rtol=1e-5, err_msg=key)


def test_files_written_on_the_gpu_load_on_the_cpu(torch_kit, tmp_path):
    x, y = make_classes(n=200, d=4, classes=3)
    gpu_model, _ = _trained(torch_kit, GPU, x, y, epochs=1)
    gpu_model.save_checkpoint(str(tmp_path / "state.fitkit"))
    gpu_model.save_weights(str(tmp_path / "w.pt"))
    for load in ("load_checkpoint", "load_weights"):
        net = torch_kit.mlp(4, 3, hidden=32)
        cpu_model = fitkit.Model(net, device="cpu")
        cpu_model.compile(torch.optim.SGD(net.parameters(), lr=0.1), "cross_entropy")
        getattr(cpu_model, load)(
            str(tmp_path / ("state.fitkit" if load == "load_checkpoint" else "w.pt"))
        )
        assert next(net.parameters()).device.type == "cpu"
        for a, b in zip(gpu_model.get_weights(), cpu_model.get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)


@pytest.mark.skipif(GPU != "cuda", reason="GPU memory settings")
def test_memory_growth_and_limit_act_on_the_allocator(tmp_path):
    script = tmp_path / "memory.py"
    script.write_text(
        textwrap.dedent("""
        import json, os, sys
        import torch
        import fitkit
        out = {"growth": fitkit.devices.memory_growth(True),
               "conf": os.environ.get("PYTORCH_CUDA_ALLOC_CONF")}
        fitkit.devices.set_memory_limit(1024)
        kept = torch.empty(256 * 2 ** 20, dtype=torch.uint8, device="cuda")
        try:
            torch.empty(2048 * 2 ** 20, dtype=torch.uint8, device="cuda")
            out["over_limit"] = "allocated"
        except torch.OutOfMemoryError:
            out["over_limit"] = "out of memory"
        try:
            fitkit.devices.memory_growth(False)
            out["late"] = "accepted"
        except fitkit.FitkitError as error:
            out["late"] = str(error)
        del kept
        fitkit.devices.empty_cache()
        out["reserved_after_empty_cache"] = torch.cuda.memory_reserved()
        out["devices"] = fitkit.devices.list_devices()
        out["cuda_info"] = fitkit.devices.cuda_info()
        print(json.dumps(out))
    """)
    )
    done = _run([script], drop=("PYTORCH_CUDA_ALLOC_CONF",))
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["growth"] is True and out["conf"] == "expandable_segments:True"
    assert out["over_limit"] == "out of memory"
    assert "memory_growth(False)" in out["late"]
    assert out["reserved_after_empty_cache"] == 0
    gpus = [d for d in out["devices"] if d["type"] == "GPU"]
    assert gpus and gpus[0]["name"] == "cuda:0" and gpus[0]["memory_mb"] > 1000
    assert out["cuda_info"]["available"] and out["cuda_info"]["devices"] >= 1


@pytest.mark.skipif(GPU != "cuda", reason="nccl needs a GPU")
def test_ddp_over_nccl_on_one_gpu_trains_as_one_process(torch_kit, tmp_path, monkeypatch):
    script = ROOT / "tests" / "scripts" / "ddp_train.py"
    done = _run(
        ["-m", "fitkit.cli", "launch", "-n", "1", script, tmp_path, "arrays", "loader"],
        timeout=300,
        drop=("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"),
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    sys.path.insert(0, str(script.parent))
    try:
        import ddp_train
    finally:
        sys.path.remove(str(script.parent))
    for case in ("arrays", "loader"):
        reference = ddp_train.run(case)  # one process, no strategy, on the GPU too
        saved = np.load(tmp_path / f"{case}.rank0.npz")
        meta = json.loads(str(saved["meta"]))
        for i, expected in enumerate(reference["weights"]):
            np.testing.assert_allclose(saved[f"w{i}"], expected, atol=1e-5, err_msg=case)
        for key, values in reference["history"].items():
            np.testing.assert_allclose(
                meta["history"][key], values, rtol=1e-5, atol=1e-6, err_msg=f"{case}: {key}"
            )


@pytest.mark.skipif(GPU != "cuda", reason="CUDA sync debugging")
@pytest.mark.parametrize("precision", ["32", "bf16"])
def test_an_epoch_from_arrays_makes_no_host_sync(torch_kit, precision):
    """Between the first and the last step nothing waits for the GPU: torch raises on any
    synchronizing call while the sync debug mode is "error"."""
    x, y = make_classes(n=2048, d=8, classes=3)
    steps = 2048 // 64

    class SyncGuard(fitkit.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if batch == 1:  # the first step holds fitkit's one-time checks
                torch.cuda.set_sync_debug_mode("error")

        def on_train_batch_end(self, batch, logs=None):
            if batch == steps - 1:
                torch.cuda.set_sync_debug_mode("default")

    model = fitkit.Model(torch_kit.mlp(8, 3))
    model.compile("adam", "cross_entropy", metrics=["accuracy", "auc"], precision=precision)
    try:
        history = model.fit(x, y, batch_size=64, epochs=2, verbose=0, callbacks=[SyncGuard()])
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert history.history["accuracy"][-1] > 0.5


def test_jit_compile_on_the_gpu_matches_eager(torch_kit):
    x, y = make_classes(n=256, d=4, classes=3)
    _, eager = _trained(torch_kit, GPU, x, y, epochs=2)
    _, compiled = _trained(torch_kit, GPU, x, y, epochs=2, jit_compile=True)
    for key in eager:
        np.testing.assert_allclose(compiled[key], eager[key], rtol=1e-3, atol=1e-4, err_msg=key)


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw", "adagrad", "rmsprop", "nadam"])
def test_every_optimizer_name_trains_on_the_gpu(torch_kit, name):
    x, y = make_classes(n=256, d=4, classes=3)
    model = fitkit.Model(torch_kit.mlp(4, 3), device=GPU)
    model.compile(name, "cross_entropy", lr=0.01)
    history = model.fit(x, y, epochs=3, verbose=0).history
    assert history["loss"][-1] < history["loss"][0]


def test_a_generator_across_epochs_gives_each_batch_once(torch_kit):
    """steps_per_epoch with a generator: every batch is trained on, none read ahead and lost."""
    x, y = make_classes(n=64, d=4, classes=3)
    served = []

    def batches():
        for i in range(100):
            served.append(i)
            yield x[(i % 4) * 16 : (i % 4 + 1) * 16], y[(i % 4) * 16 : (i % 4 + 1) * 16]

    model = fitkit.Model(torch_kit.mlp(4, 3), device=GPU)
    model.compile("sgd", "cross_entropy")
    seen = []
    counter = fitkit.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: seen.append(batch)
    )
    model.fit(batches(), epochs=3, steps_per_epoch=4, verbose=0, callbacks=[counter])
    assert len(seen) == 12 and len(served) == 12


@pytest.mark.skipif(GPU != "cuda", reason="a CUDA kernel assert")
def test_an_embedding_id_past_its_size_on_the_gpu_names_the_cause(tmp_path):
    script = tmp_path / "ids.py"
    script.write_text(
        textwrap.dedent("""
        import numpy as np, torch, fitkit
        net = torch.nn.Sequential(torch.nn.Embedding(10, 3), torch.nn.Flatten(),
                                  torch.nn.Linear(6, 1))
        model = fitkit.Model(net)
        model.compile("sgd", "mse")
        try:
            model.fit(np.arange(32).reshape(16, 2) % 12, np.zeros((16, 1), "float32"),
                      verbose=0)
        except fitkit.FitkitError as error:
            print("ERROR:", error)
    """)
    )
    done = _run([script])
    assert "ERROR: The network failed on a first batch" in done.stdout, done.stderr[-2000:]
    assert "an index out of range" in done.stdout and "restart it" in done.stdout


def test_a_metric_that_calls_numpy_says_where_the_batch_is(torch_kit):
    def numpy_accuracy(y_pred, y_true):
        return float((y_pred.argmax(1).numpy() == y_true.numpy()).mean())

    x, y = make_classes(n=64, d=4, classes=3)
    model = fitkit.Model(torch_kit.mlp(4, 3), device=GPU)
    model.compile("sgd", "cross_entropy", metrics=[numpy_accuracy])
    if GPU == "cpu":
        assert model.fit(x, y, verbose=0).history["numpy_accuracy"]
        return
    with pytest.raises(fitkit.FitkitValueError, match=r"numpy_accuracy.*\.cpu\(\)"):
        model.fit(x, y, verbose=0)
