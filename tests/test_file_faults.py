"""Hostile files and failing disks on both backends: a compressed (bomb) checkpoint is refused
with memory bounded, a FIFO behind a path is refused at once instead of hanging, a full disk
while saving ends in a clear error naming the path (the previous file whole, no temp file, the
process alive), and a checkpoint given to load_weights (or weights to load_checkpoint) names
the call to use."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import struct
import subprocess
import sys
import zipfile
import zlib
from contextlib import contextmanager

import numpy as np
import pytest
from conftest import make_regression
from numpy.lib import format as npformat

import fitkit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(script: str, *args: str, timeout: int = 240) -> dict:
    """Run ``script`` in a fresh interpreter; the JSON it prints last."""
    env = {
        **os.environ,
        "PYTHONPATH": ROOT + os.pathsep + os.path.join(ROOT, "tests"),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, (done.returncode, done.stdout[-2000:], done.stderr[-4000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------- compressed members
def _deflated_zeros(path: str, backend: str, size: int = 2 << 30) -> None:
    """A '.fitkit' file whose one array is ``size`` bytes of zeros, deflated (~2 MB on disk),
    its zip headers and CRC all valid: what a crafted checkpoint looks like."""
    npy = io.BytesIO()
    npformat.write_array_header_1_0(
        npy, {"descr": "<f4", "fortran_order": False, "shape": (size // 4,)}
    )
    head, chunk = npy.getvalue(), 1 << 24
    first, block = (zlib.compressobj(9, zlib.DEFLATED, -15) for _ in range(2))
    # after a full flush a deflate stream starts afresh: one block of zeros, repeated
    stream = first.compress(head) + first.flush(zlib.Z_FULL_FLUSH)
    stream += (block.compress(bytes(chunk)) + block.flush(zlib.Z_FULL_FLUSH)) * (size // chunk)
    stream += zlib.compressobj(9, zlib.DEFLATED, -15).flush()
    crc, zeros = zlib.crc32(head), bytes(chunk)
    for _ in range(size // chunk):
        crc = zlib.crc32(zeros, crc)
    header = {
        "format": "fitkit-checkpoint",
        "version": 1,
        "meta": {"backend": backend},
        "arrays": {"net/w": {"dtype": "float32", "shape": [size // 4]}},
    }
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("fitkit.json", json.dumps(header))
        archive.writestr("net%2Fw.npy", stream)  # stored; made a deflated member below
    data = bytearray(open(path, "rb").read())
    member = zipfile.ZipFile(path).getinfo("net%2Fw.npy").header_offset
    central = struct.unpack("<I", data[-6:-2])[0]
    entry = data.index(b"PK\x01\x02", data.index(b"net%2Fw.npy", central) - 46)
    for at, method, sizes in ((member, 8, 22), (entry, 10, 24)):
        data[at + method : at + method + 2] = struct.pack("<H", zipfile.ZIP_DEFLATED)
        data[at + method + 6 : at + method + 10] = struct.pack("<I", crc)
        data[at + sizes : at + sizes + 4] = struct.pack("<I", len(head) + size)
    open(path, "wb").write(bytes(data))


BOMB = """
import json, os, resource, sys, tracemalloc
backend, path = sys.argv[1:]
os.environ["FITKIT_BACKEND"] = backend
import fitkit
from conftest import TFKit, TorchKit
kit = TorchKit() if backend == "torch" else TFKit()
model = fitkit.Model(kit.mlp(4, 1))
model.compile("adam", "mse")
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
tracemalloc.start()
try:
    model.load_checkpoint(path)
    error = None
except Exception as err:
    error = [type(err).__name__, str(err)]
peak = tracemalloc.get_traced_memory()[1]
grew = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss) * 1024
print(json.dumps({"error": error, "peak": peak, "grew": grew}))
"""


def test_a_deflated_member_inflates_to_what_its_headers_say(tmp_path):
    """The crafted file is what it claims (a small one is checked by inflating it)."""
    path = str(tmp_path / "small.fitkit")
    _deflated_zeros(path, "torch", size=2 << 24)
    assert os.path.getsize(path) < 40_000
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("net%2Fw.npy")
        assert info.compress_type == zipfile.ZIP_DEFLATED
        with archive.open(info) as f:  # checks the CRC at the end
            array = npformat.read_array(f, allow_pickle=False)
    assert array.shape == (2 << 22,) and not array.any()


@pytest.mark.slow
def test_a_compressed_checkpoint_is_refused_with_memory_bounded(kit, tmp_path):
    """A 2 MB file declaring a 2 GiB array drove memory to 2.4-2.7 GB before a raw
    KeyError; now it is refused before a byte is inflated."""
    path = str(tmp_path / "bomb.fitkit")
    _deflated_zeros(path, kit.name)
    assert os.path.getsize(path) < 3_000_000
    out = _run(BOMB, kit.name, path)
    assert out["error"] and out["error"][0] == "FitkitValueError", out
    assert repr(path) in out["error"][1] and "is compressed" in out["error"][1]
    assert "load_checkpoint" in out["error"][1]
    assert out["peak"] < 300e6 and out["grew"] < 300e6, out


def test_a_compressed_member_of_a_torch_weights_file_is_refused(torch_kit, tmp_path):
    path = str(tmp_path / "w.pt")
    fitkit.Model(torch_kit.mlp(4, 1)).save_weights(path)
    deflated = str(tmp_path / "deflated.pt")
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(deflated, "w") as out:
        for info in src.infolist():
            out.writestr(info.filename, src.read(info), zipfile.ZIP_DEFLATED)
    net = torch_kit.mlp(4, 1)
    before = torch_kit.weights(net)
    with pytest.raises(
        fitkit.FitkitValueError, match=re.escape(repr(deflated)) + ".*is compressed.*save_weights"
    ):
        fitkit.Model(net).load_weights(deflated)
    for a, b in zip(before, torch_kit.weights(net), strict=True):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------------- non-regular paths
@contextmanager
def _deadline(seconds: float):
    """Fail (instead of hanging) if the block takes longer: a blocked open() is interrupted."""

    def expire(signum, frame):
        raise TimeoutError(f"still blocked after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_a_fifo_behind_any_path_is_refused_at_once(kit, tmp_path):
    fifo = str(tmp_path / "pipe")
    os.mkfifo(fifo)
    suffixes = [".pt", ".safetensors"] if kit.name == "torch" else [".weights.h5"]
    model = fitkit.Model(kit.mlp(4, 1))
    model.compile("adam", "mse")
    before = model.get_weights()
    for name in ["pipe"] + [f"link{s}" for s in suffixes + [".fitkit"]]:
        path = str(tmp_path / name)
        if name != "pipe":
            os.symlink(fifo, path)
        for load in (model.load_weights, model.load_checkpoint):
            with _deadline(20), pytest.raises(fitkit.FitkitValueError) as info:
                load(path)
            message = str(info.value)
            assert repr(path) in message and "FIFO" in message, message
            assert name == "pipe" or "links to" in message
    with _deadline(20), pytest.raises(fitkit.FitkitValueError, match="a device"):
        model.load_weights(os.devnull)
    for a, b in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------------- a full disk
DISK_FULL = """
import json, os, resource, signal, sys
backend, folder = sys.argv[1:]
os.environ["FITKIT_BACKEND"] = backend
import numpy as np
import fitkit
from conftest import TFKit, TorchKit, make_classes
from fitkit.callbacks import BackupAndRestore, ModelCheckpoint
kit = TorchKit() if backend == "torch" else TFKit()
model = fitkit.Model(kit.mlp(32, 4, hidden=256))  # ~40 KB of weights
model.compile("adam", "mse")
x, y = make_classes(n=64, d=32)
y = np.eye(4, dtype="float32")[y]
names = ["w.pt", "w.safetensors"] if backend == "torch" else ["w.weights.h5"]
paths = [os.path.join(folder, n) for n in names + ["state.fitkit"]]
for path in paths:  # the previous files, written while the disk has room
    (model.save_checkpoint if path.endswith(".fitkit") else model.save_weights)(path)
old = {p: open(p, "rb").read() for p in paths}
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, hard))
out = {"errors": []}
def attempt(call, *args, **kwargs):
    try:
        call(*args, **kwargs)
        out["errors"].append(None)
    except Exception as err:
        out["errors"].append([type(err).__name__, str(err)])
for path in paths:
    attempt(model.save_checkpoint if path.endswith(".fitkit") else model.save_weights, path)
for callback in (ModelCheckpoint(os.path.join(folder, names[0])),
                 ModelCheckpoint(paths[-1], save_weights_only=False),
                 BackupAndRestore(os.path.join(folder, "backup"), verbose=0)):
    attempt(model.fit, x, y, epochs=2, verbose=0, callbacks=[callback])
    out["errors"][-1].append(len(model.history))
out["unchanged"] = [open(p, "rb").read() == old[p] for p in paths]
out["files"] = sorted(os.listdir(folder)) + os.listdir(os.path.join(folder, "backup"))
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))  # room again: nothing was lost
model.save_weights(paths[0])
out["saved_after"] = os.path.getsize(paths[0]) > 20_000
print(json.dumps(out))
"""


@pytest.mark.slow
def test_a_full_disk_while_saving_is_a_clear_error_and_keeps_the_previous_file(kit, tmp_path):
    """Under a file size limit (EFBIG, as a full disk gives ENOSPC) every save ends in a
    FitkitValueError naming the path; TensorFlow's segfaulted inside h5py, torch's said only
    'basic_ios::clear'. Inside fit (ModelCheckpoint, BackupAndRestore) the fit stops with the
    same error and keeps its history; the process lives on and saves once there is room."""
    out = _run(DISK_FULL, kit.name, str(tmp_path))
    names = ["w.pt", "w.safetensors"] if kit.name == "torch" else ["w.weights.h5"]
    targets = names + ["state.fitkit"] + [names[0], "state.fitkit", "backup.fitkit"]
    assert len(out["errors"]) == len(targets)
    for error, target in zip(out["errors"], targets, strict=True):
        assert error is not None and error[0] == "FitkitValueError", (target, error)
        assert re.search(
            re.escape(target) + r"'.*File too large.*previous file there is "
            r"unchanged",
            error[1],
        ), (target, error[1])
    assert [e[2] for e in out["errors"][-3:]] == [1, 1, 1]  # the finished epoch is kept
    assert all(out["unchanged"]), out
    assert out["files"] == sorted(names + ["backup", "state.fitkit"]), out  # no temp file
    assert out["saved_after"]


def test_keras_weights_made_in_memory_are_keras_own_file(tf_kit, tmp_path):
    """save_weights builds the '.weights.h5' in memory (HDF5 never writes to the disk);
    it holds what Keras's own save_weights writes, and Keras loads it."""
    import h5py

    net = tf_kit.mlp(4, 2)
    ours, keras_own = str(tmp_path / "ours.weights.h5"), str(tmp_path / "keras.weights.h5")
    fitkit.Model(net).save_weights(ours)
    net.save_weights(keras_own)

    def contents(path):
        found = {}
        with h5py.File(path, "r") as f:
            f.visititems(
                lambda name, obj: found.__setitem__(
                    name, obj[()].tobytes() if isinstance(obj, h5py.Dataset) else dict(obj.attrs)
                )
            )
        return found

    assert contents(ours) == contents(keras_own) and len(contents(ours)) > 4
    other = tf_kit.mlp(4, 2)
    other.load_weights(ours)
    for a, b in zip(tf_kit.weights(net), tf_kit.weights(other), strict=True):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------------- the call to use
def test_each_loader_names_the_other_for_the_other_kind_of_file(kit, tmp_path):
    model = fitkit.Model(kit.mlp(4, 1))
    model.compile("adam", "mse")
    model.fit(*make_regression(n=32), epochs=1, verbose=0)
    checkpoint, weights = str(tmp_path / "state.fitkit"), kit.weights_path(tmp_path)
    model.save_checkpoint(checkpoint)
    model.save_weights(weights)
    before = model.get_weights()
    with pytest.raises(fitkit.FitkitValueError) as info:
        model.load_weights(checkpoint)
    message = str(info.value)
    assert repr(checkpoint) in message and "fitkit checkpoint" in message
    assert "model.load_checkpoint(path)" in message and "pickle" not in message
    assert "corrupt" not in message
    with pytest.raises(fitkit.FitkitValueError) as info:
        model.load_checkpoint(weights)
    assert repr(weights) in str(info.value) and "model.load_weights(path)" in str(info.value)
    for a, b in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
