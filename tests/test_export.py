"""model.export / fitkit.load_exported / model.save on both backends: every format runs a batch
of another size (and token inputs of another length) as model.predict does, the check after
writing catches a differing artifact, missing extras are named, artifacts run without the net.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import textwrap
from typing import Any

import numpy as np
import pytest

import fitkit
from fitkit.export import MissingExtraError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXT = {"torch": ".pt2", "torchscript": ".pt", "onnx": ".onnx", "litert": ".tflite"}
RNG = np.random.default_rng(0)


def _path(tmp_path: pathlib.Path, fmt: str) -> str:
    return str(tmp_path / f"model{EXT.get(fmt, '')}")


def _batch(rows: int, length: int) -> dict:
    return {
        "x": RNG.standard_normal((rows, 4)).astype("float32"),
        "tok": RNG.integers(0, 20, (rows, length)),
    }


def _assert_same(got: Any, want: Any) -> None:
    if isinstance(want, dict):
        assert set(got) == set(want)
        for key in want:
            np.testing.assert_allclose(got[key], want[key], atol=1e-5, rtol=1e-4)
    elif isinstance(want, tuple):
        assert isinstance(got, tuple) and len(got) == len(want)
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(g, w, atol=1e-5, rtol=1e-4)
    else:
        assert isinstance(got, np.ndarray)
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-4)


# ---------------------------------------------------------------------------------- torch
def _torch_text_net() -> Any:
    import torch

    class TextNet(torch.nn.Module):  # two inputs (features and token ids), two outputs
        def __init__(self) -> None:
            super().__init__()
            self.emb = torch.nn.Embedding(20, 6)
            self.dense = torch.nn.Linear(4, 6)
            self.cls = torch.nn.Linear(6, 3)

        def forward(self, x: Any, tok: Any) -> dict:
            h = torch.relu(self.dense(x) + self.emb(tok).mean(dim=1))
            return {"cls": self.cls(h), "score": h.sum(dim=-1, keepdim=True)}

    return TextNet()


@pytest.fixture(scope="module")
def torch_text_model() -> fitkit.Model:
    pytest.importorskip("torch")
    fitkit.set_seed(0)
    model = fitkit.Model(_torch_text_net())
    model.compile("adam", {"cls": "cross_entropy", "score": "mse"})
    x = _batch(16, 7)
    model.fit(
        x, {"cls": RNG.integers(0, 3, 16), "score": RNG.random((16, 1))}, batch_size=8, verbose=0
    )
    return model


@pytest.mark.parametrize("fmt", ["torch", "onnx", "torchscript"])
def test_torch_formats_dict_inputs_outputs_free_batch_and_length(
    torch_text_model: fitkit.Model, fmt: str, tmp_path: pathlib.Path
) -> None:
    model = torch_text_model  # fit saw batches of 8 rows, 7 tokens
    path = model.export(_path(tmp_path, fmt), format=fmt)
    artifact = fitkit.load_exported(path)
    assert artifact.format == fmt and artifact.input_names == ["x", "tok"]
    assert [o.name for o in artifact.outputs] == ["cls", "score"]
    x = _batch(3, 11)  # another batch size and sequence length
    _assert_same(artifact.predict(x), model.predict(x))


def test_onnx_session_options_are_applied_and_refused_for_other_formats(
    torch_text_model: fitkit.Model, tmp_path: pathlib.Path
) -> None:
    onnx_path = torch_text_model.export(tmp_path / "m.onnx", format="onnx")
    artifact = fitkit.load_exported(onnx_path, intra_op_threads=1, spinning=False)
    options = artifact.runtime.session.get_session_options()  # type: ignore[attr-defined]
    assert options.intra_op_num_threads == 1
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    x = _batch(2, 5)
    _assert_same(artifact.predict(x), torch_text_model.predict(x))
    pt2 = torch_text_model.export(tmp_path / "m.pt2", format="torch")
    with pytest.raises(fitkit.FitkitTypeError, match=r"ONNX Runtime's options.*Leave them out"):
        fitkit.load_exported(pt2, intra_op_threads=1)


def test_torch_tuple_mlp_and_input_signature(tmp_path: pathlib.Path) -> None:
    import torch

    class Pair(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = torch.nn.Linear(3, 2), torch.nn.Linear(5, 2)

        def forward(self, a: Any, b: Any) -> tuple:
            s = self.a(a) + self.b(b)
            return s, s.sigmoid()

    model = fitkit.Model(Pair())
    path = model.export(
        str(tmp_path / "pair.onnx"), format="onnx", input_signature=((None, 3), (None, 5))
    )
    x = (
        RNG.standard_normal((3, 3)).astype("float32"),
        RNG.standard_normal((3, 5)).astype("float32"),
    )
    _assert_same(fitkit.load_exported(path).predict(x), model.predict(x))


def test_torch_the_shapes_given_to_summary_are_the_signature(tmp_path: pathlib.Path) -> None:
    import torch

    model = fitkit.Model(torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh()))
    with pytest.raises(fitkit.FitkitValueError, match="needs the inputs' shapes"):
        model.export(str(tmp_path / "none.onnx"), format="onnx")
    model.summary(input_shape=(3,), print_fn=None)  # nothing else seen: summary's shape
    artifact = fitkit.load_exported(model.export(str(tmp_path / "m.onnx"), format="onnx"))
    assert artifact.inputs[0].shape == (None, 3)
    x = RNG.standard_normal((5, 3)).astype("float32")
    _assert_same(artifact.predict(x), model.predict(x))


@pytest.mark.parametrize("fmt", ["torch", "onnx"])
def test_torch_a_length_the_network_needs_is_in_the_metadata(
    fmt: str, tmp_path: pathlib.Path
) -> None:
    import torch

    class FlatTokens(torch.nn.Module):  # flattens 6 embedded tokens: the length is fixed
        def __init__(self) -> None:
            super().__init__()
            self.emb, self.out = torch.nn.Embedding(20, 4), torch.nn.Linear(24, 2)

        def forward(self, tok: Any) -> Any:
            return self.out(self.emb(tok).flatten(1))

    model = fitkit.Model(FlatTokens())
    tokens = RNG.integers(0, 20, (8, 6))
    artifact = fitkit.load_exported(model.export(_path(tmp_path, fmt), format=fmt, example=tokens))
    assert artifact.inputs[0].shape == (None, 6)
    _assert_same(artifact.predict(tokens[:3]), model.predict(tokens[:3]))


def test_torch_class_style_predict_step_is_exported(tmp_path: pathlib.Path) -> None:
    import torch

    class Probabilities(fitkit.Model):
        def predict_step(self, batch: Any) -> Any:
            return torch.softmax(self.net(batch[0]), dim=-1)

    model = Probabilities(torch.nn.Linear(4, 3))
    x = RNG.standard_normal((8, 4)).astype("float32")
    path = model.export(str(tmp_path / "p.pt2"), format="torch", example=x)
    got = fitkit.load_exported(path).predict(x[:3])
    np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-5)
    _assert_same(got, model.predict(x[:3]))


def test_export_check_names_the_differing_output(
    torch_text_model: fitkit.Model, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fitkit import exported

    real = exported.OnnxRuntime.run
    monkeypatch.setattr(
        exported.OnnxRuntime, "run", lambda self, arrays: [o + 0.5 for o in real(self, arrays)]
    )
    with pytest.raises(fitkit.FitkitValueError, match=r"output 'cls'.*differs.*by up to 0\.5"):
        torch_text_model.export(str(tmp_path / "m.onnx"), format="onnx")


def test_export_argument_errors(tmp_path: pathlib.Path) -> None:
    import torch

    fresh = fitkit.Model(torch.nn.Linear(4, 2))
    with pytest.raises(fitkit.FitkitValueError, match=r"example=.*input_signature="):
        fresh.export(str(tmp_path / "m.onnx"))
    with pytest.raises(fitkit.FitkitValueError, match="'tf_saved_model' is a tensorflow format"):
        fresh.export(str(tmp_path / "m"), format="tf_saved_model", example=np.zeros((2, 4)))
    with pytest.raises(fitkit.FitkitTypeError, match="save_checkpoint"):
        fresh.save(str(tmp_path / "m.keras"))


def test_missing_runtime_names_the_extra(
    torch_text_model: fitkit.Model, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = torch_text_model.export(str(tmp_path / "m.onnx"), format="onnx")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    with pytest.raises(MissingExtraError, match=r"pip install 'fitkit\[export\]'"):
        fitkit.load_exported(path)
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(MissingExtraError, match=r"onnx.*fitkit\[export\]"):
        torch_text_model.export(str(tmp_path / "n.onnx"), format="onnx")


@pytest.mark.slow
def test_artifacts_run_without_the_network_class(tmp_path: pathlib.Path) -> None:
    """A fresh process that cannot import the net's class runs every torch artifact."""
    import torch

    module = tmp_path / "netdef"
    module.mkdir()
    (module / "secret_net.py").write_text(
        textwrap.dedent(
            """
            import torch
            class SecretNet(torch.nn.Module):
                def __init__(self) -> None:
                    super().__init__()
                    self.emb = torch.nn.Embedding(20, 4)
                    self.out = torch.nn.Linear(4, 2)
                def forward(self, tok):
                    return self.out(self.emb(tok).mean(dim=1))
            """
        )
    )
    sys.path.insert(0, str(module))
    try:
        import secret_net  # type: ignore[import-not-found]

        model = fitkit.Model(secret_net.SecretNet())
    finally:
        sys.path.remove(str(module))
    tokens = RNG.integers(0, 20, (8, 6))
    paths = [
        model.export(str(tmp_path / f"m{EXT[f]}"), format=f, example=tokens)
        for f in ("torch", "onnx", "torchscript")
    ]
    probe = RNG.integers(0, 20, (3, 9))
    np.save(tmp_path / "probe.npy", probe)
    script = textwrap.dedent(
        """
        import importlib.util, json, sys
        import numpy as np
        from fitkit import load_exported
        assert importlib.util.find_spec("secret_net") is None
        probe = np.load(sys.argv[1])
        results = [load_exported(p).predict(probe).tolist() for p in sys.argv[2:]]
        print(json.dumps(results))
        """
    )
    env = {**os.environ, "PYTHONPATH": ROOT}
    run = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "probe.npy"), *paths],
        capture_output=True,
        text=True,
        cwd=str(tmp_path),
        env=env,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    want = model.predict(probe)
    for got in json.loads(run.stdout.strip().splitlines()[-1]):
        np.testing.assert_allclose(np.array(got), want, atol=1e-5, rtol=1e-4)
    # an ONNX file runs on onnxruntime alone: neither framework is imported
    only_onnx = script.replace(
        "print(", "assert not {'torch', 'tensorflow'} & set(sys.modules)\nprint("
    )
    run = subprocess.run(
        [sys.executable, "-c", only_onnx, str(tmp_path / "probe.npy"), paths[1]],
        capture_output=True,
        text=True,
        cwd=str(tmp_path),
        env=env,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])[0]
    np.testing.assert_allclose(np.array(got), want, atol=1e-5, rtol=1e-4)
    del torch


# ----------------------------------------------------------------------------- TensorFlow
@pytest.fixture(scope="module")
def tf_text_model() -> fitkit.Model:
    keras = pytest.importorskip("keras")
    fitkit.set_seed(0)
    xi = keras.Input((4,), name="x")
    ti = keras.Input((None,), dtype="int32", name="tok")
    pooled = keras.ops.mean(keras.layers.Embedding(20, 6)(ti), axis=1)
    h = keras.layers.Activation("relu")(keras.layers.Dense(6)(xi) + pooled)
    outputs = {"cls": keras.layers.Dense(3)(h), "score": keras.ops.sum(h, axis=-1, keepdims=True)}
    model = fitkit.Model(keras.Model({"x": xi, "tok": ti}, outputs))
    model.compile("adam", {"cls": "cross_entropy", "score": "mse"})
    x = _batch(16, 7)
    x["tok"] = x["tok"].astype("int32")
    model.fit(
        x, {"cls": RNG.integers(0, 3, 16), "score": RNG.random((16, 1))}, batch_size=8, verbose=0
    )
    return model


@pytest.mark.parametrize(
    "fmt", ["tf_saved_model", "onnx", pytest.param("litert", marks=pytest.mark.slow)]
)
def test_tf_formats_dict_inputs_outputs_free_batch_and_length(
    tf_text_model: fitkit.Model, fmt: str, tmp_path: pathlib.Path
) -> None:
    path = tf_text_model.export(_path(tmp_path, fmt), format=fmt)
    artifact = fitkit.load_exported(path)
    assert artifact.format == fmt and sorted(artifact.input_names) == ["tok", "x"]
    x = _batch(3, 11)
    x["tok"] = x["tok"].astype("int32")
    _assert_same(artifact.predict(x), tf_text_model.predict(x))


def test_tf_class_style_predict_step_and_sequential(tmp_path: pathlib.Path) -> None:
    keras = pytest.importorskip("keras")
    import tensorflow as tf

    class Probabilities(fitkit.Model):
        def predict_step(self, batch: Any) -> Any:
            return tf.nn.softmax(self.net(batch[0], training=False))

    net = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model = Probabilities(net)
    x = RNG.standard_normal((8, 4)).astype("float32")
    path = model.export(str(tmp_path / "sm"), format="tf_saved_model", example=x)
    got = fitkit.load_exported(path).predict(x[:3])
    np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-5)
    _assert_same(got, model.predict(x[:3]))


def test_tf_keras_inputs_are_the_signature_when_no_data_was_seen(tmp_path: pathlib.Path) -> None:
    keras = pytest.importorskip("keras")
    net = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model = fitkit.Model(net)  # nothing seen: the Input layer gives the shape
    artifact = fitkit.load_exported(model.export(str(tmp_path / "m.onnx"), format="onnx"))
    assert artifact.inputs[0].shape == (None, 4)
    x = RNG.standard_normal((3, 4)).astype("float32")
    _assert_same(artifact.predict(x), model.predict(x))


def test_tf_list_inputs_and_outputs(tmp_path: pathlib.Path) -> None:
    keras = pytest.importorskip("keras")
    a, b = keras.Input((3,)), keras.Input((5,))
    h = keras.layers.Concatenate()([a, b])
    model = fitkit.Model(keras.Model([a, b], [keras.layers.Dense(2)(h), keras.layers.Dense(1)(h)]))
    x = [
        RNG.standard_normal((8, 3)).astype("float32"),
        RNG.standard_normal((8, 5)).astype("float32"),
    ]
    artifact = fitkit.load_exported(
        model.export(str(tmp_path / "m.onnx"), format="onnx", example=x)
    )
    assert artifact.input_names == ["input_0", "input_1"]
    small = [x[0][:3], x[1][:3]]
    got, want = artifact.predict(small), model.predict(small)
    assert isinstance(got, list) and isinstance(want, list) and len(got) == len(want) == 2
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, atol=1e-5, rtol=1e-4)


def test_tf_save_is_a_compiled_keras_archive_with_optimizer_state(
    tf_text_model: fitkit.Model, tmp_path: pathlib.Path
) -> None:
    keras = pytest.importorskip("keras")
    path = tf_text_model.save(str(tmp_path / "m.keras"))
    loaded = keras.models.load_model(path)
    assert loaded.compiled and loaded.optimizer is not None
    assert int(loaded.optimizer.iterations.numpy()) == 2  # 16 rows in batches of 8
    mine = {v.path: v.numpy() for v in tf_text_model.optimizer.variables}
    theirs = {v.path: v.numpy() for v in loaded.optimizer.variables}
    assert mine.keys() == theirs.keys()
    for key in mine:
        np.testing.assert_array_equal(mine[key], theirs[key])
    x = _batch(3, 5)
    x["tok"] = x["tok"].astype("int32")
    _assert_same(
        {k: np.asarray(v) for k, v in loaded.predict(x, verbose=0).items()},
        tf_text_model.predict(x),
    )
    with pytest.raises(fitkit.FitkitValueError, match=r"\.keras"):
        tf_text_model.save(str(tmp_path / "m.h5"))
