"""Model(net, device=...) names a device that exists here, or is refused naming the devices
there are (torch once raised a bare AssertionError or its own RuntimeError; TensorFlow
ignored the argument). GPUs are simulated by patching what each framework reports."""

from __future__ import annotations

import numpy as np
import pytest

import fitkit


@pytest.fixture
def no_gpu_torch(torch_kit, monkeypatch):
    monkeypatch.setattr(torch_kit.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch_kit.torch.cuda, "device_count", lambda: 0)
    return torch_kit


@pytest.fixture
def one_gpu_torch(torch_kit, monkeypatch):
    monkeypatch.setattr(torch_kit.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch_kit.torch.cuda, "device_count", lambda: 1)
    return torch_kit


@pytest.mark.parametrize(
    "device, says",
    [
        ("cuda", r"needs a CUDA GPU, and torch sees none here.*devices here are 'cpu'"),
        ("cuda:0", r"needs a CUDA GPU"),
        (0, r"needs a CUDA GPU"),
        (
            "gpu",
            r"'gpu'\) is not a torch device \(torch calls GPUs 'cuda'\); the devices here are "
            r"'cpu'",
        ),
        ("mps", r"MPS is not available here"),
    ],
)
def test_a_torch_device_that_is_not_here_is_refused_before_the_net_moves(
    no_gpu_torch, device, says
):
    net = no_gpu_torch.mlp(4, 1)
    before = no_gpu_torch.weights(net)
    with pytest.raises(fitkit.FitkitValueError, match=says):
        fitkit.Model(net, device=device)
    assert all(p.device.type == "cpu" for p in net.parameters())
    for a, b in zip(before, no_gpu_torch.weights(net), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "device, says",
    [
        (
            "cuda:7",
            r"there is no GPU 7; torch sees 1 GPU\(s\) here \(the devices are 'cpu', "
            r"'cuda:0'",
        ),
        ("gpu", r"torch calls GPUs 'cuda'\); the devices here are 'cpu', 'cuda:0'"),
        ("GPU:0", r"torch calls GPUs 'cuda'"),
    ],
)
def test_a_torch_device_past_the_gpus_there_are_is_refused(one_gpu_torch, device, says):
    with pytest.raises(fitkit.FitkitValueError, match=says):
        fitkit.Model(one_gpu_torch.mlp(4, 1), device=device)


def test_torch_cpu_names_are_accepted(torch_kit):
    for device in ("cpu", torch_kit.torch.device("cpu")):
        model = fitkit.Model(torch_kit.mlp(4, 1), device=device)
        assert model.runtime.adapter.device == torch_kit.torch.device("cpu")


# ---------------------------------------------------------------- TensorFlow
class FakeGPU:
    device_type = "GPU"
    name = "/physical_device:GPU:0"


@pytest.fixture
def one_gpu_tf(tf_kit, monkeypatch):
    real = tf_kit.tf.config.get_visible_devices
    monkeypatch.setattr(
        tf_kit.tf.config,
        "get_visible_devices",
        lambda kind=None: [FakeGPU()] if kind == "GPU" else real(kind),
    )
    return tf_kit


@pytest.mark.parametrize(
    "device, says",
    [
        ("cuda", r"there is no GPU:0 here; the devices here are CPU:0"),
        ("gpu:1", r"there is no GPU:1 here"),
        (
            "tpu",
            r"'tpu'\) is not a device name such as 'cpu', 'gpu' or 'GPU:0'; the devices here "
            r"are CPU:0",
        ),
        (3, r"is not a device name"),
    ],
)
def test_a_tensorflow_device_that_is_not_here_is_refused(tf_kit, device, says):
    if tf_kit.tf.config.get_visible_devices("GPU"):
        pytest.skip("this machine has a GPU")
    with pytest.raises(fitkit.FitkitValueError, match=says):
        fitkit.Model(tf_kit.mlp(4, 1), device=device)


def test_tensorflow_accepts_the_device_keras_places_the_model_on(tf_kit):
    if tf_kit.tf.config.get_visible_devices("GPU"):
        pytest.skip("this machine has a GPU")
    for device in ("cpu", "CPU:0", "/device:CPU:0"):
        assert (
            fitkit.Model(tf_kit.mlp(4, 1), device=device).runtime.adapter.device == "/device:CPU:0"
        )


def test_tensorflow_refuses_a_device_keras_would_not_place_the_model_on(one_gpu_tf):
    assert (
        fitkit.Model(one_gpu_tf.mlp(4, 1), device="gpu").runtime.adapter.device == "/device:GPU:0"
    )
    with pytest.raises(
        fitkit.FitkitValueError,
        match=r"trains where Keras places it, here GPU:0 \(the devices here are "
        r"CPU:0, GPU:0\).*set_visible_devices\(\[\]\)",
    ):
        fitkit.Model(one_gpu_tf.mlp(4, 1), device="cpu")
    with pytest.raises(fitkit.FitkitValueError, match=r"there is no GPU:7 here"):
        fitkit.Model(one_gpu_tf.mlp(4, 1), device="cuda:7")
