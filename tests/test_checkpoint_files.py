"""Training-state files (fitkit.checkpoint.save_state / load_state / describe_state): exact
round trips, atomic saves (a killed process keeps the previous file), and refusals that name
the file and the fix for every file that is not a whole fitkit checkpoint; never unpickling."""

from __future__ import annotations

import json
import os
import pickle
import re
import signal
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from numpy.lib import format as npformat

from fitkit import FitkitTypeError, FitkitValueError
from fitkit.checkpoint import HEADER, describe_state, is_state_file, load_state, save_state, sniff

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    out = {
        f"dtypes/{t}": (rng.standard_normal(7) * 50).astype(t)
        for t in (
            "float16",
            "float32",
            "float64",
            "int8",
            "int16",
            "int32",
            "int64",
            "uint8",
            "uint16",
            "uint32",
            "uint64",
            "complex64",
        )
    }
    out.update(
        {
            "net/linear.weight": rng.standard_normal((3, 4)).astype("float32"),
            "optimizer/state/0/exp_avg": np.full((3, 4), np.nan, "float32"),
            "rng/numpy": np.array(2**64 - 1, "uint64"),  # 0-d
            "flags": np.array([True, False, True]),
            "empty": np.zeros((0,), "float32"),
            "empty/2d": np.zeros((3, 0), "int64"),
            "specials": np.array([np.inf, -np.inf, -0.0, 5e-324], "float64"),
            "fortran": np.asfortranarray(np.arange(12.0).reshape(3, 4)),
            "strided": np.arange(20, dtype="int32")[::3],
            "../escape": np.ones(1),
            "/abs": np.ones(1),
            "a%2Fb": np.zeros(1),
            "%": np.ones(2),
            "fitkit.json": np.arange(3),
            "名前/ü": np.arange(2, dtype="int8"),
        }
    )
    return out


META = {
    "epoch": 3,
    "step": 1200,
    "note": "训练 ✓ — ünïcode",
    "best": float("inf"),
    "lr": [0.1, 0.01],
    "nested": {"a": None, "b": True, "c": {"d": [1, 2.5, "x"]}},
}


def _saved(tmp_path, name="state.fitkit", arrays=None, meta=None) -> str:
    path = str(tmp_path / name)
    save_state(path, _arrays() if arrays is None else arrays, META if meta is None else meta)
    return path


def _refused(path: str, *patterns: str) -> str:
    """load_state and describe_state raise a FitkitValueError naming the file and patterns."""
    for reader in (load_state, describe_state):
        with pytest.raises(FitkitValueError) as info:
            reader(path)
        message = str(info.value)
        assert repr(path) in message, message
        for pattern in patterns:
            assert re.search(pattern, message), (pattern, message)
    return message


def _same(got: np.ndarray, given: np.ndarray, key: str = "") -> None:
    """Same dtype, shape and bytes (NaN payloads and -0.0 included)."""
    assert got.dtype == given.dtype and got.shape == given.shape, key
    assert np.ascontiguousarray(got).tobytes() == np.ascontiguousarray(given).tobytes(), key


# ---------------------------------------------------------------------- round trips
def test_round_trip_is_bit_identical(tmp_path):
    path = _saved(tmp_path)
    arrays, meta = load_state(path)
    given = _arrays()
    assert list(arrays) == list(given)  # the order they were given
    for key, value in given.items():
        _same(arrays[key], value, key)
        assert arrays[key].flags.writeable
    assert meta == META and meta["note"] == "训练 ✓ — ünïcode"
    assert os.listdir(tmp_path) == ["state.fitkit"]  # no temp file left


def test_layout_is_a_plain_npz_with_a_json_header(tmp_path):
    path = _saved(
        tmp_path,
        arrays={"net/w": np.ones(2, "float32"), "rng/numpy": np.arange(3)},
        meta={"epoch": 1},
    )
    assert sniff(path) == "zip" and is_state_file(path)
    with zipfile.ZipFile(path) as archive:
        assert archive.namelist() == [HEADER, "net%2Fw.npy", "rng%2Fnumpy.npy"]
        assert all(i.compress_type == zipfile.ZIP_STORED for i in archive.infolist())
        header = json.loads(archive.read(HEADER))
    assert header == {
        "format": "fitkit-checkpoint",
        "version": 2,
        "meta": {"epoch": 1},
        "arrays": {
            "net/w": {"dtype": "float32", "shape": [2]},
            "rng/numpy": {"dtype": "int64", "shape": [3]},
        },
    }
    with np.load(path, allow_pickle=False) as npz:  # numpy reads it too
        np.testing.assert_array_equal(npz["net%2Fw"], np.ones(2, "float32"))


def test_empty_state_scalars_and_byte_order(tmp_path):
    assert load_state(_saved(tmp_path, "a", arrays={}, meta={})) == ({}, {})
    path = _saved(
        tmp_path,
        "b",
        arrays={"s": np.float32(1.5), "be": np.arange(3, dtype=">i4")},
        meta={"n": np.int64(7), "f": np.float32(0.5), "t": (1, 2)},
    )
    arrays, meta = load_state(path)
    assert arrays["s"].shape == () and arrays["s"].dtype == np.float32 and arrays["s"] == 1.5
    assert arrays["be"].dtype == np.dtype("int32") and arrays["be"].tolist() == [0, 1, 2]
    assert meta == {"n": 7, "f": 0.5, "t": [1, 2]}  # tuples come back as lists (JSON)
    assert type(meta["n"]) is int


def test_describe_state_reads_no_array_data(tmp_path):
    big = np.arange(100_000, dtype="float32")
    path = _saved(tmp_path, arrays={**_arrays(), "big": big})
    data = bytearray(open(path, "rb").read())
    data[data.index(big[-10:].tobytes()) + 5] ^= 0xFF  # deep in the big array's data
    open(path, "wb").write(bytes(data))
    header = describe_state(path)
    assert header["meta"] == META and header["format"] == "fitkit-checkpoint"
    assert header["arrays"]["net/linear.weight"] == {"dtype": "float32", "shape": [3, 4]}
    assert header["arrays"]["rng/numpy"] == {"dtype": "uint64", "shape": []}
    with pytest.raises(FitkitValueError, match=r"truncated or corrupt.*Bad CRC"):
        load_state(path)  # the data is checked when loaded


def test_a_new_save_replaces_the_old_one(tmp_path):
    path = _saved(tmp_path)
    save_state(path, {"x": np.zeros(2)}, {"epoch": 9})
    arrays, meta = load_state(path)
    assert list(arrays) == ["x"] and meta == {"epoch": 9}


# ---------------------------------------------------------------------- refused at save
@pytest.mark.parametrize(
    "arrays, match",
    [
        (
            {"o": np.array([object()], dtype=object)},
            r"arrays\['o'\] has dtype object.*never objects",
        ),
        ({"s": np.array(["a"])}, "dtype <U1"),
        ({"r": np.zeros(2, dtype=[("a", "f4")])}, "dtype"),
        ({"l": [1.0, 2.0]}, r"arrays\['l'\] is a list, not a numpy array"),
        ({"": np.ones(1)}, "non-empty strings"),
        ({3: np.ones(1)}, "non-empty strings"),
        ([np.ones(1)], "must be a dict"),
    ],
)
def test_save_refuses_what_it_cannot_store_and_writes_nothing(tmp_path, arrays, match):
    path = str(tmp_path / "s.fitkit")
    with pytest.raises(FitkitTypeError, match=match) as info:
        save_state(path, arrays, {})
    assert repr(path) in str(info.value)
    assert os.listdir(tmp_path) == []


def test_save_names_the_bfloat16_conversion(tmp_path):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    with pytest.raises(FitkitTypeError, match=r"bfloat16.*a\.view\(np\.uint16\).*meta"):
        save_state(str(tmp_path / "s"), {"w": np.ones(2, ml_dtypes.bfloat16)}, {})
    bits = np.ones(2, ml_dtypes.bfloat16).view(np.uint16)  # what the docstring says to do
    save_state(str(tmp_path / "s"), {"w": bits}, {"dtypes": {"w": "bfloat16"}})
    arrays, _meta = load_state(str(tmp_path / "s"))
    assert arrays["w"].view(ml_dtypes.bfloat16).tolist() == [1.0, 1.0]


@pytest.mark.parametrize(
    "meta, match",
    [
        ({0: "int key"}, r"meta has the key 0; meta keys must be strings"),
        ({"a": {"b": [1, {2.5: 1}]}}, r"meta\['a'\]\['b'\]\[1\] has the key 2.5"),
        ({"a": {1, 2}}, r"meta\['a'\] is a set"),
        ({"w": np.ones(2)}, r"meta\['w'\] is a ndarray.*Put arrays in arrays"),
        ([1], "meta must be a dict"),
    ],
)
def test_save_refuses_meta_json_would_change_or_cannot_hold(tmp_path, meta, match):
    with pytest.raises(FitkitTypeError, match=match):
        save_state(str(tmp_path / "s"), {}, meta)
    assert os.listdir(tmp_path) == []


def test_save_to_a_folder_or_under_a_file_names_the_path(tmp_path):
    with pytest.raises(FitkitValueError, match=r"it is a folder.*checkpoint.fitkit"):
        save_state(str(tmp_path), {}, {})
    (tmp_path / "plain").write_text("x")
    path = str(tmp_path / "plain" / "s.fitkit")
    with pytest.raises(FitkitValueError, match=re.escape(repr(path)) + ".*is a file"):
        save_state(path, {}, {})


def test_save_into_a_read_only_folder_keeps_the_previous_file(tmp_path):
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        pytest.skip("root writes through chmod; the other unwritable-path tests cover it")
    folder = tmp_path / "ro"
    folder.mkdir()
    path = _saved(folder)
    old = open(path, "rb").read()
    folder.chmod(0o500)
    try:
        with pytest.raises(FitkitValueError, match=re.escape(repr(path)) + ".*writable folder"):
            save_state(path, {"x": np.zeros(1)}, {})
    finally:
        folder.chmod(0o700)
    assert open(path, "rb").read() == old and os.listdir(folder) == ["state.fitkit"]


def test_a_full_disk_mid_save_keeps_the_previous_file(tmp_path, monkeypatch):
    path = _saved(tmp_path)
    old = open(path, "rb").read()
    calls = []

    def full(f, array, **kwargs):
        calls.append(1)
        if len(calls) > 3:  # a few arrays are written, then the disk is full
            raise OSError(28, "No space left on device")
        return write_array(f, array, **kwargs)

    write_array = npformat.write_array
    monkeypatch.setattr(npformat, "write_array", full)
    with pytest.raises(FitkitValueError) as info:
        save_state(path, _arrays(), {"epoch": 99})
    message = str(info.value)
    assert repr(path) in message and "No space left" in message and "unchanged" in message
    assert open(path, "rb").read() == old and os.listdir(tmp_path) == ["state.fitkit"]


# ---------------------------------------------------------------------- refused at load
def test_missing_folder_and_empty_files_are_refused(tmp_path):
    _refused(str(tmp_path / "nothing" / "s.fitkit"), "No checkpoint file", "save_checkpoint")
    _refused(str(tmp_path), "is a folder, not a checkpoint file")
    (tmp_path / "empty").write_bytes(b"")
    _refused(str(tmp_path / "empty"), r"empty \(0 bytes\)", "earlier checkpoint")


def test_truncated_files_are_refused_at_every_length(tmp_path):
    path = _saved(tmp_path)
    data = open(path, "rb").read()
    cut = str(tmp_path / "cut.fitkit")
    for length in (
        1,
        3,
        4,
        10,
        30,
        100,
        len(data) // 3,
        len(data) // 2,
        len(data) - 1000,
        len(data) - 100,
        len(data) - 22,
        len(data) - 21,
        len(data) - 1,
    ):
        open(cut, "wb").write(data[:length])
        message = _refused(cut, "load_checkpoint|save_checkpoint")
        assert re.search("truncated or corrupt|not a fitkit checkpoint", message), message


def test_no_single_byte_corruption_loads_wrong_data(tmp_path):
    """Every flipped byte is refused with a FitkitValueError, or changes nothing that loads."""
    arrays, meta = (
        {"w": np.arange(6, dtype="float32").reshape(2, 3), "rng/n": np.array(7)},
        {"epoch": 2},
    )
    path = _saved(tmp_path, arrays=arrays, meta=meta)
    data = open(path, "rb").read()
    bad = str(tmp_path / "bad.fitkit")
    refused = 0
    for i in range(len(data)):
        flipped = bytearray(data)
        flipped[i] ^= 0x5A
        open(bad, "wb").write(bytes(flipped))
        try:
            got, got_meta = load_state(bad)
        except FitkitValueError as err:
            assert repr(bad) in str(err)
            refused += 1
            continue
        assert got_meta == meta and list(got) == list(arrays), i
        for key in arrays:
            _same(got[key], arrays[key])
    assert refused > len(data) // 2


def test_a_zip_that_is_not_a_checkpoint_is_refused(tmp_path):
    plain = str(tmp_path / "plain.npz")
    np.savez(plain, w=np.ones(2))
    _refused(
        plain,
        "not a fitkit checkpoint",
        "without fitkit's 'fitkit.json' header",
        "model.save_checkpoint",
    )
    keras = str(tmp_path / "model.keras")
    with zipfile.ZipFile(keras, "w") as archive:
        archive.writestr("config.json", "{}")
        archive.writestr("model.weights.h5", b"\x89HDF\r\n\x1a\n")
    _refused(keras, r"'\.keras' archive.*keras\.saving\.load_model")


def _rewrite_header(path: str, out: str, **changes) -> None:
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            body = src.read(info)
            if info.filename == HEADER:
                header = json.loads(body)
                header.update(changes)
                body = json.dumps(header).encode()
            dst.writestr(info, body)


def test_other_formats_and_versions_are_refused(tmp_path):
    path = _saved(tmp_path)
    other = str(tmp_path / "other.fitkit")
    _rewrite_header(path, other, format="something-else")
    _refused(other, "not a fitkit checkpoint", "not a fitkit checkpoint header")
    _rewrite_header(path, other, version=3)
    _refused(other, "version 3", "newer fitkit", "Upgrade fitkit")
    _rewrite_header(path, other, version="1")
    _refused(other, "version '1'", "damaged or was not written by fitkit")
    _rewrite_header(
        path, other, arrays={"net/linear.weight": {"dtype": "float32", "shape": [3, 4]}}
    )
    _refused(other, "truncated or corrupt", "do not match its header")
    _rewrite_header(
        path,
        other,
        arrays={**describe_state(path)["arrays"], "rng/numpy": {"dtype": "int64", "shape": []}},
    )
    with pytest.raises(FitkitValueError, match="header says int64"):
        load_state(other)


def test_torch_files_are_refused_with_the_call_to_use(tmp_path):
    torch = pytest.importorskip("torch")
    state = torch.nn.Linear(2, 1).state_dict()
    zipped, legacy = str(tmp_path / "w.pt"), str(tmp_path / "legacy.pt")
    torch.save(state, zipped)
    torch.save(state, legacy, _use_new_zipfile_serialization=False)
    _refused(zipped, "not a fitkit checkpoint", "torch.save file", r"model\.load_weights\(path\)")
    _refused(legacy, "pickle file", "arbitrary code", r"model\.load_weights\(path\)")
    assert not is_state_file(zipped) and not is_state_file(legacy)


def test_pickle_and_keras_and_safetensors_files_are_refused(tmp_path):
    pickled = str(tmp_path / "state.pkl")
    with open(pickled, "wb") as f:
        pickle.dump({"w": [1.0]}, f)
    _refused(pickled, "pickle file", "never hold pickles", "model.load_weights")
    h5py = pytest.importorskip("h5py")
    keras_file = str(tmp_path / "model.weights.h5")
    with h5py.File(keras_file, "w") as f:
        f.create_dataset("layers/dense/vars/0", data=np.zeros((2, 2), "float32"))
    _refused(keras_file, "HDF5 file", r"Keras '\.weights\.h5'", r"model\.load_weights\(path\)")
    safe = str(tmp_path / "w.safetensors")
    head = json.dumps({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    open(safe, "wb").write(len(head).to_bytes(8, "little") + head + b"\0" * 4)
    _refused(safe, "safetensors", "model.load_weights")
    npy = str(tmp_path / "a.npy")
    np.save(npy, np.ones(2))
    _refused(npy, "not a fitkit checkpoint", "another format")


class _Payload:
    """Unpickling it opens (creates) the marker file: proof that code ran."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _crafted(tmp_path, declared: str) -> tuple[str, str]:
    """A valid checkpoint whose array member is an object array (a pickle of _Payload)."""
    marker = str(tmp_path / f"pwned-{declared}")
    path = str(tmp_path / f"crafted-{declared}.fitkit")
    header = {
        "format": "fitkit-checkpoint",
        "version": 1,
        "meta": {},
        "arrays": {"net/w": {"dtype": declared, "shape": [1]}},
    }
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(HEADER, json.dumps(header))
        with archive.open("net%2Fw.npy", "w") as f:
            npformat.write_array(f, np.array([_Payload(marker)], dtype=object), allow_pickle=True)
    return path, marker


@pytest.mark.parametrize("declared", ["float32", "object"])
def test_a_crafted_pickle_inside_is_refused_and_runs_nothing(tmp_path, declared):
    path, marker = _crafted(tmp_path, declared)
    _refused(
        path, "holds Python objects", "never unpickles", "arbitrary code", "Nothing was loaded"
    )
    assert not os.path.exists(marker)
    with np.load(path, allow_pickle=True) as npz:  # the payload is live: numpy would run it
        npz["net%2Fw"]
    assert os.path.exists(marker)


def test_a_plain_npz_holding_a_pickle_runs_nothing(tmp_path):
    marker, path = str(tmp_path / "pwned"), str(tmp_path / "evil.npz")
    np.savez(path, w=np.array([_Payload(marker)], dtype=object))
    _refused(path, "not a fitkit checkpoint")
    assert not os.path.exists(marker)


# ---------------------------------------------------------------------- killed mid-save
_WRITER = """
import os
import signal
import sys
import numpy as np
from numpy.lib import format as npformat
sys.path.insert(0, sys.argv[2])
from fitkit.checkpoint import save_state

path, kill_at, step = sys.argv[1], sys.argv[3], int(sys.argv[4])
def killed():  # as a crash or the OOM killer: no handler, no cleanup runs
    os.kill(os.getpid(), signal.SIGKILL)
write_array, replace, written = npformat.write_array, os.replace, [0]
def counted(*args, **kwargs):
    written[0] += 1
    if kill_at == "mid" and written[0] == 5:  # 4 of the 8 arrays are in the temp file
        killed()
    return write_array(*args, **kwargs)
def renamed(*args, **kwargs):
    if kill_at == "rename":  # the temp file is whole and synced, not yet renamed
        killed()
    return replace(*args, **kwargs)
npformat.write_array, os.replace = counted, renamed
save_state(path, {f"net/w{j}": np.full(1000, step, "float64") for j in range(8)}, {"step": step})
if kill_at == "after":
    killed()
"""


def test_a_process_killed_while_saving_leaves_a_whole_checkpoint(tmp_path):
    """SIGKILL at known points of a save over an existing file (half-way through the arrays,
    just before the rename) and after one: the file loads, and holds the last complete state;
    the temp files the kills left are ignored."""
    if not hasattr(signal, "SIGKILL"):
        pytest.skip("no SIGKILL on this platform")
    path = str(tmp_path / "backup.fitkit")
    runs = (("after", 1, 1), ("mid", 2, 1), ("rename", 3, 1), ("after", 4, 4), ("mid", 5, 4))
    for kill_at, step, whole in runs:
        done = subprocess.run(
            [sys.executable, "-c", _WRITER, path, ROOT, kill_at, str(step)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == -signal.SIGKILL, done.stderr  # killed where it was meant to be
        arrays, meta = load_state(path)
        assert meta["step"] == whole, kill_at
        assert list(arrays) == [f"net/w{j}" for j in range(8)]
        assert all(a.shape == (1000,) and (a == whole).all() for a in arrays.values())
    leftovers = [n for n in os.listdir(tmp_path) if n != "backup.fitkit"]
    assert len(leftovers) == 3, leftovers  # one per kill inside a save
    assert all(re.fullmatch(r"\.backup\.fitkit\.[0-9a-f]{8}\.tmp", n) for n in leftovers)
    save_state(path, {"x": np.ones(1)}, {"step": 0})  # saving again is unaffected
    assert load_state(path)[1] == {"step": 0}
