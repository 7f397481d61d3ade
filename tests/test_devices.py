"""fitkit.devices on both backends (CPU machine): the shape of list_devices, where fitkit
trains, settings that need a GPU fail clearly, TF's logical CPUs feed a MirroredStrategy, and a
TF setting made after TF initialised names the call to move (each in a fresh process)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

import fitkit
from fitkit import devices

BACKENDS = ("torch", "tensorflow")
KEYS = {"name", "type", "kind", "memory_mb", "description"}


def _no_gpu(backend: str) -> None:
    if devices.cuda_info(backend=backend)["available"]:
        pytest.skip("this check is for machines without a GPU")


def run_python(code: str, backend: str = "tensorflow") -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CONFIG", "RANK", "WORLD_SIZE")}
    env.update(FITKIT_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
    )


# ---------------------------------------------------------------- both backends, in process
@pytest.mark.parametrize("backend", BACKENDS)
def test_list_devices_returns_described_dicts(backend):
    found = devices.list_devices(backend=backend)
    assert found and all(set(d) == KEYS for d in found)
    assert all(d["kind"] in ("physical", "logical") for d in found)
    assert all(
        d["memory_mb"] is None or (isinstance(d["memory_mb"], int) and d["memory_mb"] > 0)
        for d in found
    )
    assert any(d["type"] == "CPU" and d["kind"] == "physical" for d in found)
    physical = devices.list_devices(initialize=False, backend=backend)
    assert physical and all(d["kind"] == "physical" for d in physical)
    if backend == "tensorflow":  # physical, then the logical devices TF runs on
        assert [d["kind"] for d in found][-1] == "logical"
        assert any(d["name"] == "/device:CPU:0" for d in found)


@pytest.mark.parametrize("backend", BACKENDS)
def test_device_names_where_fitkit_trains(backend):
    gpu = devices.cuda_info(backend=backend)["available"]
    expected = {
        ("torch", False): "cpu",
        ("torch", True): "cuda:0",
        ("tensorflow", False): "/device:CPU:0",
        ("tensorflow", True): "/device:GPU:0",
    }
    assert devices.device(backend=backend) == expected[backend, gpu]


@pytest.mark.parametrize("backend", BACKENDS)
def test_cuda_info_keys(backend):
    info = devices.cuda_info(backend=backend)
    assert set(info) == {"built", "available", "devices", "version"}
    assert info["available"] == (info["devices"] > 0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_memory_growth_without_gpu_returns_false_and_changes_nothing(backend, monkeypatch):
    _no_gpu(backend)
    monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF", raising=False)
    assert devices.memory_growth(True, backend=backend) is False
    assert devices.memory_growth(False, backend=backend) is False
    assert "PYTORCH_CUDA_ALLOC_CONF" not in os.environ


@pytest.mark.parametrize("backend", BACKENDS)
def test_set_memory_limit_without_gpu_is_a_clear_error(backend):
    _no_gpu(backend)
    with pytest.raises(fitkit.FitkitError, match=r"set_memory_limit\(512.*GPU.*cuda_info"):
        devices.set_memory_limit(512, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_arguments_are_checked_before_the_backend(backend):
    with pytest.raises(fitkit.FitkitValueError, match="count must be a positive integer"):
        devices.virtual_devices(0, backend=backend)
    with pytest.raises(fitkit.FitkitValueError, match="mb must be a positive integer"):
        devices.set_memory_limit(-5, backend=backend)
    with pytest.raises(fitkit.FitkitValueError, match="not a GPU"):
        devices.set_visible_devices(["cpu:0"], backend=backend)
    with pytest.raises(fitkit.FitkitValueError, match="twice"):
        devices.set_visible_devices([0, "cuda:0"], backend=backend)
    with pytest.raises(fitkit.FitkitTypeError):
        devices.set_visible_devices([1.5], backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_cache_runs_anywhere(backend):
    assert devices.empty_cache(backend=backend) is None


def test_tf_placement_settings_report_what_is_on():
    # TF's defaults (soft placement on, no log), so other tests are not affected
    assert devices.soft_device_placement(True, backend="tf") is True
    assert devices.log_device_placement(False, backend="tf") is False


def test_torch_has_no_placement_settings_and_says_so():
    with pytest.warns(UserWarning, match="no soft placement"):
        assert devices.soft_device_placement(True, backend="torch") is False
    with pytest.warns(UserWarning, match="no device placement log"):
        assert devices.log_device_placement(True, backend="torch") is False
    assert devices.soft_device_placement(False, backend="torch") is False


def test_torch_virtual_devices_points_to_fitkit_launch():
    with pytest.raises(fitkit.FitkitValueError, match="fitkit launch -n 2"):
        devices.virtual_devices(2, backend="torch")
    assert devices.virtual_devices(1, backend="torch") == [devices.device(backend="torch")]


def test_torch_set_visible_devices_sets_cuda_visible_devices(monkeypatch):
    import torch

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    devices.set_visible_devices(["cuda:1", "GPU:0", 3], backend="torch")
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "1,0,3"
    devices.set_visible_devices([], backend="torch")
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "-1"  # no GPU at all


def test_torch_settings_after_cuda_started_name_the_call(monkeypatch):
    import torch

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF", raising=False)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(fitkit.FitkitError, match=r"set_visible_devices\(\[1\]\) came too late"):
        devices.set_visible_devices(1, backend="torch")
    devices.set_visible_devices(0, backend="torch")  # unchanged: nothing to refuse
    with pytest.raises(fitkit.FitkitError, match=r"memory_growth\(True\) came too late.*top"):
        devices.memory_growth(True, backend="torch")


def test_torch_memory_growth_keeps_other_allocator_settings(monkeypatch):
    import torch

    applied = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    monkeypatch.setattr(
        torch._C, "_accelerator_setAllocatorSettings", applied.append, raising=False
    )
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "max_split_size_mb:128,expandable_segments:False")
    monkeypatch.delenv("PYTORCH_ALLOC_CONF", raising=False)
    assert devices.memory_growth(True, backend="torch") is True
    assert os.environ["PYTORCH_CUDA_ALLOC_CONF"] == "max_split_size_mb:128,expandable_segments:True"
    assert applied == ["max_split_size_mb:128,expandable_segments:True"]
    monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF")
    monkeypatch.setenv("PYTORCH_ALLOC_CONF", "max_split_size_mb:64")  # torch's newer name
    devices.memory_growth(False, backend="torch")
    assert os.environ["PYTORCH_ALLOC_CONF"] == "max_split_size_mb:64,expandable_segments:False"
    assert "PYTORCH_CUDA_ALLOC_CONF" not in os.environ


def test_tf_settings_needing_a_gpu_say_so():
    _no_gpu("tensorflow")
    devices.set_visible_devices([], backend="tf")  # hiding GPUs that are not there: fine
    with pytest.raises(fitkit.FitkitError, match="needs a GPU"):
        devices.set_visible_devices([0], backend="tf")


@pytest.mark.parametrize(
    "call",
    [
        lambda: devices.set_memory_limit(2048, backend="tf"),
        lambda: devices.virtual_devices(2, 1024, backend="tf"),
    ],
)
def test_tf_memory_limit_after_memory_growth_is_refused_not_dropped(call, monkeypatch):
    """TensorFlow would ignore growth on a GPU with logical devices without a word. No GPU
    here: TensorFlow is told it has one, whose growth memory_growth(True) switched on."""
    import tensorflow as tf

    gpu = tf.config.PhysicalDevice("/physical_device:GPU:0", "GPU")
    configured = []
    monkeypatch.setattr(
        tf.config, "list_physical_devices", lambda kind=None: [gpu] if kind == "GPU" else []
    )
    monkeypatch.setattr(tf.config.experimental, "get_memory_growth", lambda device: True)
    monkeypatch.setattr(
        tf.config, "set_logical_device_configuration", lambda *args: configured.append(args)
    )
    with pytest.raises(
        fitkit.FitkitValueError,
        match=r"memory_growth\(True\) is on for /physical_device:GPU:0.*"
        r"memory_growth\(False\)",
    ):
        call()
    assert configured == []  # refused before anything was set


# ---------------------------------------------------------------- TF, in fresh processes
@pytest.mark.slow
def test_tf_virtual_devices_give_logical_cpus_a_mirrored_strategy_uses():
    done = run_python("""
        import fitkit
        names = fitkit.devices.virtual_devices(2, memory_limit=1024)
        import tensorflow as tf
        logical = [d["name"] for d in fitkit.devices.list_devices() if d["kind"] == "logical"]
        strategy = tf.distribute.MirroredStrategy()
        print("NAMES", names, "LOGICAL", logical, "REPLICAS", strategy.num_replicas_in_sync)
        print("AGAIN", fitkit.devices.virtual_devices(2))  # the same setting again: no error
    """)
    if "GPU" in done.stdout:
        pytest.skip("a GPU is present: logical GPUs, checked by hand")
    assert (
        "NAMES ['/device:CPU:0', '/device:CPU:1'] LOGICAL ['/device:CPU:0', "
        "'/device:CPU:1'] REPLICAS 2"
    ) in done.stdout, done.stdout + done.stderr
    assert "AGAIN ['/device:CPU:0', '/device:CPU:1']" in done.stdout


@pytest.mark.slow
def test_tf_setting_after_tf_started_names_the_call_to_move():
    done = run_python("""
        import tensorflow as tf, fitkit
        tf.constant(1.0) + 1.0            # TF initialises its devices here
        try:
            fitkit.devices.virtual_devices(2)
        except fitkit.FitkitError as err:
            print("ERROR", type(err).__name__, err)
    """)
    assert (
        "ERROR FitkitError fitkit.devices.virtual_devices(2, memory_limit=None) came too "
        "late" in done.stdout
    ), done.stdout + done.stderr
    assert "Move it to the top of your script" in done.stdout
    assert "cannot be modified after being initialized" in done.stdout  # TF's own words


@pytest.mark.slow
def test_tf_list_devices_without_initialising_leaves_settings_open():
    done = run_python("""
        import fitkit
        physical = fitkit.devices.list_devices(initialize=False)
        print("KINDS", sorted({d["kind"] for d in physical}))
        print("NAMES", fitkit.devices.virtual_devices(3, memory_limit=256))
    """)
    assert "KINDS ['physical']" in done.stdout, done.stdout + done.stderr
    kind = "GPU" if devices.cuda_info(backend="tf")["available"] else "CPU"
    assert f"NAMES ['/device:{kind}:0', '/device:{kind}:1', '/device:{kind}:2']" in done.stdout
