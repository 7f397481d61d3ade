"""TensorFlow device helpers: the devices TF sees, visibility, memory growth, logical devices.

Owns the tf.config calls behind fitkit/devices.py (which documents the public functions);
strategies belong to distribute.py. Most settings must come before TF initialises its devices.
"""

from __future__ import annotations

import contextlib
import gc
import re
from collections.abc import Iterator
from typing import Any

import tensorflow as tf

from ..errors import FitkitError, FitkitValueError


def default_device() -> str:
    """The device Keras places a new model on: the first GPU, else the CPU."""
    return "/device:GPU:0" if tf.config.get_visible_devices("GPU") else "/device:CPU:0"


_NAME = re.compile(r"^/?(?:device:)?(cpu|gpu|cuda)(?::(\d+))?$", re.IGNORECASE)


def resolve_device(device: Any) -> str | None:
    """``fitkit.Model(net, device=...)`` on TensorFlow: Keras places a model itself (see
    ``default_device``), so a name is accepted when it is that device ("cpu", "gpu",
    "GPU:0", "cuda"); another or unknown device is refused, naming the devices there are."""
    if device is None:
        return None
    there = ", ".join(
        f"{d.device_type}:{i}"
        for kind in ("CPU", "GPU")
        for i, d in enumerate(tf.config.get_visible_devices(kind))
    )
    match = _NAME.match(device.strip()) if isinstance(device, str) else None
    if match is None:
        raise FitkitValueError(
            f"Model(device={device!r}) is not a device name such as 'cpu', "
            f"'gpu' or 'GPU:0'; the devices here are {there}."
        )
    kind, index = ("CPU" if match.group(1).lower() == "cpu" else "GPU"), int(match.group(2) or 0)
    if index >= len(tf.config.get_visible_devices(kind)):
        raise FitkitValueError(
            f"Model(device={device!r}): there is no {kind}:{index} here; "
            f"the devices here are {there}."
        )
    if f"/device:{kind}:{index}" != default_device():
        hint = (
            "hide the GPUs first: fitkit.devices.set_visible_devices([])"
            if kind == "CPU"
            else f"make it the only visible GPU first: fitkit.devices."
            f"set_visible_devices([{index}])"
        )
        raise FitkitValueError(
            f"Model(device={device!r}): on TensorFlow a model trains where Keras places it, "
            f"here {default_device()[len('/device:') :]} (the devices here are {there}). To "
            f"train on {kind}:{index}, {hint} at the top of the script; or leave device out."
        )
    return f"/device:{kind}:{index}"


@contextlib.contextmanager
def _configuring(call: str) -> Iterator[None]:
    """Turn tf.config's errors into ones that say which call to move, and where."""
    try:
        yield
    except RuntimeError as err:
        if not _after_initialisation(err):
            raise
        raise FitkitError(
            f"fitkit.devices.{call} came too late: TensorFlow has already initialised its "
            f"devices in this process ({err}). Move it to the top of your script, right after "
            f"the imports, before the first thing that initialises them: creating a tensor, "
            f"a Keras model or a fitkit.Model, tf.config.list_logical_devices(), "
            f"fitkit.devices.list_devices() (initialize=False does not), or "
            f"fitkit.distribute.strategy(...). Every device setting must come before that."
        ) from err
    except ValueError as err:
        raise FitkitValueError(
            f"fitkit.devices.{call}: TensorFlow refused it: {err}. Memory "
            f"growth and logical devices (virtual_devices, set_memory_limit) "
            f"exclude each other on one GPU."
        ) from err


def _after_initialisation(err: RuntimeError) -> bool:
    """Whether tf.config refused a setting because the devices are initialised already. TF
    raises a plain RuntimeError for this as for other refusals, so only its text ("cannot be
    modified after being initialized") tells; tests/tf/test_tf_errors.py pins it."""
    return "initialized" in str(err) or "initialised" in str(err)


def _logical_gpu_limits() -> list[int | None]:
    limits: list[int | None] = []
    for gpu in tf.config.get_visible_devices("GPU"):
        config = tf.config.get_logical_device_configuration(gpu)
        limits += [c.memory_limit for c in config] if config else [None]
    return limits


def list_devices(initialize: bool = True) -> list[dict]:
    devices = []
    for dev in tf.config.list_physical_devices():
        details = tf.config.experimental.get_device_details(dev) if dev.device_type == "GPU" else {}
        devices.append(
            {
                "name": dev.name,
                "type": dev.device_type,
                "kind": "physical",
                "memory_mb": None,
                "description": details.get("device_name", ""),
            }
        )
    if initialize:  # listing logical devices initialises TensorFlow's runtime
        limits = _logical_gpu_limits()
        for dev in tf.config.list_logical_devices():
            memory = None
            if dev.device_type == "GPU":
                index = int(dev.name.rsplit(":", 1)[1])
                memory = limits[index] if index < len(limits) else None
            devices.append(
                {
                    "name": dev.name,
                    "type": dev.device_type,
                    "kind": "logical",
                    "memory_mb": memory,
                    "description": "",
                }
            )
    return devices


def _gpu(call: str, index: int) -> tf.config.PhysicalDevice:
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        raise FitkitError(
            f"fitkit.devices.{call} needs a GPU, but TensorFlow sees none here (TensorFlow "
            f"{tf.__version__}, built with CUDA: {tf.test.is_built_with_cuda()}). Guard the call "
            f"with `if fitkit.devices.cuda_info()['available']:`."
        )
    if not 0 <= index < len(gpus):
        raise FitkitValueError(
            f"fitkit.devices.{call}: GPU {index} does not exist; TensorFlow "
            f"sees {len(gpus)} GPU(s), numbered 0..{len(gpus) - 1}."
        )
    return gpus[index]


def set_visible_devices(indices: list[int]) -> None:
    chosen = [_gpu(f"set_visible_devices({indices})", i) for i in indices]
    with _configuring(f"set_visible_devices({indices})"):
        tf.config.set_visible_devices(chosen, "GPU")  # the CPU always stays visible


def memory_growth(enabled: bool = True) -> bool:
    gpus = tf.config.list_physical_devices("GPU")
    with _configuring(f"memory_growth({enabled})"):
        for gpu in gpus:
            tf.config.experimental.set_memory_growth(gpu, enabled)
    return bool(gpus)


def _refuse_with_growth(call: str, gpu: tf.config.PhysicalDevice) -> None:
    """TF drops memory growth, without a word, on a GPU split into logical devices."""
    if tf.config.experimental.get_memory_growth(gpu):
        raise FitkitValueError(
            f"fitkit.devices.{call}: memory_growth(True) is on for {gpu.name}, and TensorFlow "
            f"ignores growth on a GPU with logical devices (a memory limit makes one). Choose "
            f"one: the limit already caps what TensorFlow takes; or call "
            f"fitkit.devices.memory_growth(False) first."
        )


def set_memory_limit(mb: int, device: int = 0) -> None:
    call = f"set_memory_limit({mb}, device={device})"
    gpu = _gpu(call, device)
    _refuse_with_growth(call, gpu)
    with _configuring(call):
        tf.config.set_logical_device_configuration(
            gpu, [tf.config.LogicalDeviceConfiguration(memory_limit=mb)]
        )


def virtual_devices(count: int, memory_limit: int | None = None) -> list[str]:
    call = f"virtual_devices({count}, memory_limit={memory_limit})"
    gpus = tf.config.list_physical_devices("GPU")
    if gpus and memory_limit is None:
        raise FitkitValueError(
            f"fitkit.devices.{call}: logical GPUs need a memory limit each (TensorFlow requires "
            f"it), e.g. virtual_devices({count}, memory_limit=4096) for {count} x 4 GiB on GPU 0."
        )
    if gpus:
        _refuse_with_growth(call, gpus[0])
        device, config = gpus[0], tf.config.LogicalDeviceConfiguration(memory_limit=memory_limit)
    else:  # logical CPUs take no memory limit: multi-device code runs on a laptop
        device, config = (
            tf.config.list_physical_devices("CPU")[0],
            tf.config.LogicalDeviceConfiguration(),
        )
    with _configuring(call):
        tf.config.set_logical_device_configuration(device, [config] * count)
    kind = "GPU" if gpus else "CPU"
    return [f"/device:{kind}:{i}" for i in range(count)]


def soft_device_placement(enabled: bool = True) -> bool:
    tf.config.set_soft_device_placement(enabled)  # may change at any time
    return bool(enabled)


def log_device_placement(enabled: bool = True) -> bool:
    tf.debugging.set_log_device_placement(enabled)  # may change at any time
    return bool(enabled)


def empty_cache() -> None:
    # TensorFlow's allocator never returns GPU memory to the driver, and Keras's
    # clear_session() would drop the user's models' graphs: collecting unreachable tensors
    # (their memory goes back to TF's pool for reuse) is all that can honestly be done.
    gc.collect()


def device() -> str:
    return default_device()


def cuda_info() -> dict:
    build = tf.sysconfig.get_build_info()
    count = len(tf.config.list_physical_devices("GPU"))
    return {
        "built": bool(tf.test.is_built_with_cuda()),
        "available": count > 0,
        "devices": count,
        "version": build.get("cuda_version"),
    }
