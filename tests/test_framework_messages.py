"""The framework errors fitkit recognises by their words (fitkit/framework_errors.py), provoked
for real on the installed torch and TensorFlow: a new release that rewords one fails here,
not silently in a user's diagnosis. Errors with a type of their own are recognised by it."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from fitkit import checks, framework_errors
from fitkit.framework_errors import (
    CUDA_ASSERT,
    DEVICE,
    DTYPE,
    FORWARD_WORDS,
    INDEX,
    METRIC_WORDS,
    SHAPE,
    forward_kind,
    is_cuda_assert,
    said,
)


def raised(fn) -> Exception:
    with pytest.raises(Exception) as info:
        fn()
    return info.value


# ---------------------------------------------------------------------- torch
@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


def test_torch_input_width_is_a_shape_error(torch):
    err = raised(lambda: torch.nn.Linear(2, 5)(torch.ones(4, 3)))
    assert type(err) is RuntimeError  # no type of its own: the words tell it
    assert forward_kind(err) == SHAPE


def test_torch_embedding_id_out_of_range_is_known_by_its_type(torch):
    err = raised(lambda: torch.nn.Embedding(5, 2)(torch.tensor([7])))
    assert isinstance(err, IndexError)
    assert forward_kind(err) == INDEX


@pytest.mark.parametrize("case", ["integers into a Linear", "floats into an Embedding"])
def test_torch_input_dtypes_are_dtype_errors(torch, case):
    if case == "integers into a Linear":
        err = raised(lambda: torch.nn.Linear(2, 5)(torch.ones(4, 2, dtype=torch.long)))
    else:
        err = raised(lambda: torch.nn.Embedding(5, 2)(torch.ones(3)))
    assert said(err, FORWARD_WORDS) == DTYPE


def test_torch_device_tensor_to_numpy_is_a_device_error(torch):
    # a meta tensor refuses .numpy() with the words a CUDA tensor's refusal has
    err = raised(lambda: torch.ones(2, device="meta").numpy())
    assert said(err, METRIC_WORDS) == DEVICE


def test_torch_broadcasting_is_a_shape_error(torch):
    err = raised(lambda: torch.ones(4, 3) - torch.ones(4, 5))
    assert said(err, METRIC_WORDS) == SHAPE


def test_a_cuda_assert_needs_torchs_type_not_only_the_words(torch):
    assert not is_cuda_assert(RuntimeError("CUDA error: device-side assert triggered"))
    assert is_cuda_assert(torch.AcceleratorError("CUDA error: device-side assert triggered"))
    assert not is_cuda_assert(torch.AcceleratorError("CUDA error: invalid device ordinal"))


def test_torch_mixed_devices_and_a_real_cuda_assert(torch):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    err = raised(lambda: torch.ones(2, 2, device="cuda") @ torch.ones(2, 2))
    assert said(err, METRIC_WORDS) == DEVICE
    # the assert ruins the process's CUDA context: provoke it in a child process
    code = (
        "import torch\n"
        "from fitkit.framework_errors import is_cuda_assert\n"
        "emb = torch.nn.Embedding(5, 2).cuda()\n"
        "try:\n"
        "    emb(torch.tensor([7], device='cuda')); torch.cuda.synchronize()\n"
        "except Exception as err:\n"
        "    print(is_cuda_assert(err))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip().splitlines()[-1] == "True", out.stderr[-2000:]


# ---------------------------------------------------------------------- TensorFlow
@pytest.fixture(scope="module")
def tf():
    return pytest.importorskip("tensorflow")


def test_keras_input_width_is_a_shape_error(tf):
    import keras

    net = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3)])
    err = raised(lambda: net(np.ones((4, 3), "float32")))
    assert isinstance(err, ValueError)  # Keras's input-spec error: no type of its own
    assert forward_kind(err) == SHAPE


def test_keras_embedding_id_out_of_range_is_an_index_error(tf):
    import keras

    net = keras.Sequential([keras.Input((1,), dtype="int32"), keras.layers.Embedding(5, 2)])
    err = raised(lambda: net(np.array([[7]], "int32")))
    assert isinstance(err, tf.errors.InvalidArgumentError)  # TensorFlow's type for all ops
    assert forward_kind(err) == INDEX


def test_tensorflow_matmul_width_is_a_shape_error(tf):
    class Net(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(tf.ones((2, 3)))

        def __call__(self, x):
            return tf.matmul(x, self.w)

    err = raised(lambda: Net()(tf.ones((4, 3))))
    assert forward_kind(err) == SHAPE


def test_tensorflow_broadcasting_is_a_shape_error(tf):
    err = raised(lambda: tf.ones((4, 3)) - tf.ones((4, 5)))
    assert said(err, METRIC_WORDS) == SHAPE


# ---------------------------------------------------------------------- what users read
def test_each_kind_has_a_diagnosis():
    kinds = {kind for kind, _ in FORWARD_WORDS} | {CUDA_ASSERT}
    assert kinds <= set(checks._DIAGNOSES)
    assert framework_errors.said("nothing known", FORWARD_WORDS) is None
