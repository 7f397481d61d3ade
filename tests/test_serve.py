"""``fitkit serve`` against a real server process and a real HTTP client (httpx): outputs equal
model.predict, 60 concurrent requests each get their own rows (and are batched), bad requests
get 400 / 413 / 422 and the server stays up, SIGTERM finishes a request in flight and exits 0.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import pathlib
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import fitkit
from fitkit.export import MissingExtraError
from fitkit.serving import READY
from fitkit.serving.batcher import Batcher

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RNG = np.random.default_rng(1)


# ------------------------------------------------------------------ the batcher, in process
def test_batcher_gives_each_caller_its_rows_and_batches_them() -> None:
    sizes: list[int] = []

    def run(arrays: list[np.ndarray]) -> list[np.ndarray]:
        sizes.append(len(arrays[0]))
        return [arrays[0] * 2.0, arrays[0].sum(axis=1)]

    async def main() -> Any:
        batcher = Batcher(run, max_batch_size=16, max_wait_ms=50)
        batcher.start()
        batcher.arriving = 1  # callers on their way in: the batcher waits for them
        requests = [
            RNG.standard_normal((int(RNG.integers(1, 4)), 3 if i % 3 else 5)) for i in range(50)
        ]
        results = await asyncio.gather(*(batcher.submit([r]) for r in requests))
        await batcher.stop()
        return requests, results

    requests, results = asyncio.run(main())
    for r, (doubled, summed) in zip(requests, results, strict=True):
        np.testing.assert_array_equal(doubled, r * 2.0)
        np.testing.assert_array_equal(summed, r.sum(axis=1))
    assert max(sizes) <= 16 and len(sizes) < 50  # batched, never over the limit


def test_a_failing_batch_fails_its_callers_and_the_batcher_goes_on() -> None:
    def run(arrays: list[np.ndarray]) -> list[np.ndarray]:
        if (arrays[0] < 0).any():
            raise RuntimeError("negative input")
        return [arrays[0] + 1]

    async def main() -> Any:
        batcher = Batcher(run, max_batch_size=4, max_wait_ms=1)
        batcher.start()
        with pytest.raises(RuntimeError, match="negative input"):
            await batcher.submit([-np.ones((2, 3))])
        (out,) = await batcher.submit([np.zeros((2, 3))])
        await batcher.stop()
        return out

    np.testing.assert_array_equal(asyncio.run(main()), np.ones((2, 3)))


def test_serve_without_the_extra_names_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from fitkit import cli

    monkeypatch.setitem(sys.modules, "fastapi", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'fitkit\[serve\]'"):
        fitkit.serving.serve("model.onnx")
    with pytest.raises(SystemExit) as exit_:
        cli.main(["serve", "model.onnx"])
    assert exit_.value.code == 2 and "fitkit[serve]" in capsys.readouterr().err


# ------------------------------------------------------------------ a real server process
class Server:
    """``fitkit serve`` in a subprocess; its output read by a thread (the ready line says
    where it listens: port 0 lets the OS pick a free one)."""

    def __init__(self, path: str, *args: str) -> None:
        env = {**os.environ, "PYTHONPATH": ROOT}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fitkit.cli", "serve", path, "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        while True:
            line = self.lines.get(timeout=120)
            assert line is not None, "server exited:\n" + "".join(self.output)
            if line.startswith(READY):
                self.url = line.split()[4]
                break

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)
            self.lines.put(line)
        self.lines.put(None)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)


@pytest.fixture(scope="module")
def text_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[fitkit.Model, str]:
    torch = pytest.importorskip("torch")
    pytest.importorskip("httpx")

    class TextNet(torch.nn.Module):  # type: ignore[name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.emb = torch.nn.Embedding(30, 8)
            self.dense = torch.nn.Linear(4, 8)
            self.cls = torch.nn.Linear(8, 3)

        def forward(self, x: Any, tok: Any) -> dict:
            h = torch.tanh(self.dense(x) + self.emb(tok).mean(dim=1))
            return {"cls": self.cls(h), "score": h.sum(dim=-1, keepdim=True)}

    fitkit.set_seed(0)
    model = fitkit.Model(TextNet())
    example = {
        "x": RNG.standard_normal((8, 4)).astype("float32"),
        "tok": RNG.integers(0, 30, (8, 6)),
    }
    path = str(tmp_path_factory.mktemp("served") / "text.onnx")
    model.export(path, format="onnx", example=example)
    return model, path


@pytest.fixture(scope="module")
def server(text_model: tuple[fitkit.Model, str]) -> Iterator[Server]:
    srv = Server(
        text_model[1], "--max-batch-size", "32", "--max-wait-ms", "20", "--max-body-mb", "0.05"
    )
    yield srv
    assert srv.stop() == 0, "".join(srv.output)


def _request(rows: int, length: int) -> dict:
    return {
        "x": RNG.standard_normal((rows, 4)).astype("float32"),
        "tok": RNG.integers(0, 30, (rows, length)),
    }


def test_the_served_onnx_session_does_not_spin(text_model: tuple[fitkit.Model, str]) -> None:
    """onnxruntime's intra-op threads spin after each run by default, and take every core,
    the event loop's too: the server's session leaves one core and does not spin."""
    from fitkit.serving.app import load_for_serving

    model, path = text_model
    served = load_for_serving(path)
    options = served.runtime.session.get_session_options()  # type: ignore[attr-defined]
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.intra_op_num_threads == max(1, len(os.sched_getaffinity(0)) - 1)
    x = _request(3, 5)
    np.testing.assert_allclose(served.predict(x)["cls"], model.predict(x)["cls"], atol=1e-5)


@pytest.mark.slow
def test_health_metadata_and_one_prediction(
    server: Server, text_model: tuple[fitkit.Model, str]
) -> None:
    import httpx

    model = text_model[0]
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert client.get("/health").json()["status"] == "ok"
        meta = client.get("/v1/metadata").json()
        assert meta["format"] == "onnx" and [i["name"] for i in meta["inputs"]] == ["x", "tok"]
        assert meta["inputs"][1]["shape"] == [None, None] and meta["max_batch_size"] == 32
        x = _request(3, 9)
        reply = client.post("/v1/predict", json={"inputs": {k: v.tolist() for k, v in x.items()}})
        assert reply.status_code == 200, reply.text
        want = model.predict(x)
        for key in ("cls", "score"):
            np.testing.assert_allclose(np.array(reply.json()["outputs"][key]), want[key], atol=1e-5)
        buffer = io.BytesIO()
        np.savez(buffer, **x)
        reply = client.post(
            "/v1/predict", content=buffer.getvalue(), headers={"content-type": "application/x-npz"}
        )
        assert reply.status_code == 200, reply.text
        np.testing.assert_allclose(np.array(reply.json()["outputs"]["cls"]), want["cls"], atol=1e-5)


@pytest.mark.slow
def test_sixty_concurrent_requests_each_get_their_rows(
    server: Server, text_model: tuple[fitkit.Model, str]
) -> None:
    import httpx

    model = text_model[0]
    requests = [_request(int(RNG.integers(1, 5)), 5 if i % 2 else 8) for i in range(60)]

    async def main() -> Any:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            before = (await client.get("/health")).json()["batches"]
            replies = await asyncio.gather(
                *(
                    client.post(
                        "/v1/predict", json={"inputs": {k: v.tolist() for k, v in r.items()}}
                    )
                    for r in requests
                )
            )
            after = (await client.get("/health")).json()["batches"]
            return replies, after - before

    replies, batches = asyncio.run(main())
    for r, reply in zip(requests, replies, strict=True):
        assert reply.status_code == 200, reply.text
        want = model.predict(r)
        got = reply.json()["outputs"]
        np.testing.assert_allclose(np.array(got["cls"]), want["cls"], atol=1e-5)
        np.testing.assert_allclose(np.array(got["score"]), want["score"], atol=1e-5)
    assert batches < 60  # requests shared forward passes


@pytest.mark.slow
def test_bad_requests_are_answered_and_the_server_stays_up(server: Server) -> None:
    import httpx

    good_x, good_tok = [[0.0, 1.0, 2.0, 3.0]], [[1, 2, 3]]
    cases: list[tuple[bytes | dict, int, str]] = [
        (b"{not json", 400, "not valid JSON"),
        (b'{"outputs": 1}', 400, '"inputs"'),
        ({"inputs": {"x": good_x, "tokens": good_tok}}, 422, "unknown input 'tokens'"),
        (
            {"inputs": {"x": [[0.0, 1.0]], "tok": good_tok}},
            422,
            r"'x' has shape [1, 2]; expected [None, 4]",
        ),
        ({"inputs": {"x": [["a", "b", "c", "d"]], "tok": good_tok}}, 422, "'x': values of type"),
        ({"inputs": {"x": good_x, "tok": [[1.5, 2, 3]]}}, 422, "'tok': expects whole numbers"),
        ({"inputs": {"x": [[0.0, 1.0, 2.0, 3.0], [1.0]], "tok": good_tok}}, 422, "'x'"),
        ({"inputs": {"x": good_x * 2, "tok": good_tok}}, 422, "batch sizes differ"),
        ({"inputs": [[1, 2, 3, 4]]}, 422, "several inputs ['x', 'tok']"),
        (b"0" * 60_000, 413, "over the limit"),
        (b"\x93NUMPY garbage", 400, ".npy"),
    ]
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for body, status, text in cases:
            if isinstance(body, dict):
                reply = client.post("/v1/predict", json=body)
            else:  # raw bytes
                npy = body.startswith(b"\x93NUMPY")
                headers = {"content-type": "application/x-npy" if npy else "application/json"}
                reply = client.post("/v1/predict", content=body, headers=headers)
            assert reply.status_code == status, (body, reply.text)
            assert text in reply.json()["error"], reply.text
        assert client.get("/health").json()["status"] == "ok"
        reply = client.post("/v1/predict", json={"inputs": {"x": good_x, "tok": good_tok}})
        assert reply.status_code == 200


@pytest.mark.slow
def test_sigterm_finishes_the_request_in_flight_then_exits_0(
    text_model: tuple[fitkit.Model, str],
) -> None:
    import httpx

    model, path = text_model
    srv = Server(path)
    x = _request(2, 4)
    body = json.dumps({"inputs": {"x": x["x"].tolist(), "tok": x["tok"].tolist()}}).encode()
    release = threading.Event()
    reply: list = []

    def body_parts() -> Iterator[bytes]:
        yield body[:10]
        release.wait(timeout=60)  # the rest comes after SIGTERM
        yield body[10:]

    def send() -> None:
        with httpx.Client(base_url=srv.url, timeout=60) as client:
            reply.append(client.post("/v1/predict", content=body_parts()))

    sender = threading.Thread(target=send)
    sender.start()
    with httpx.Client(base_url=srv.url, timeout=30) as client:
        while client.get("/health").json()["in_flight"] < 1:  # the request has begun
            pass
    srv.proc.send_signal(signal.SIGTERM)
    # the server stops accepting, then waits for the request; it is still running here
    while True:  # until new connections are refused
        try:
            httpx.get(srv.url + "/health", timeout=5)
        except httpx.ConnectError:
            break
        except (httpx.RemoteProtocolError, httpx.ReadError):
            continue  # accepted as the listener closed, then dropped
    assert srv.proc.poll() is None
    release.set()
    sender.join(timeout=60)
    assert reply and reply[0].status_code == 200, reply
    np.testing.assert_allclose(
        np.array(reply[0].json()["outputs"]["cls"]), model.predict(x)["cls"], atol=1e-5
    )
    assert srv.stop() == 0, "".join(srv.output)


@pytest.mark.slow
def test_a_tensorflow_saved_model_is_served(tmp_path: pathlib.Path) -> None:
    keras = pytest.importorskip("keras")
    import httpx

    xi = keras.Input((4,), name="x")
    ti = keras.Input((None,), dtype="int32", name="tok")
    pooled = keras.ops.mean(keras.layers.Embedding(30, 4)(ti), axis=1)
    model = fitkit.Model(
        keras.Model({"x": xi, "tok": ti}, keras.layers.Dense(2)(xi) + pooled[:, :2])
    )
    example = {
        "x": RNG.standard_normal((8, 4)).astype("float32"),
        "tok": RNG.integers(0, 30, (8, 5)).astype("int32"),
    }
    path = model.export(str(tmp_path / "saved"), format="tf_saved_model", example=example)
    srv = Server(path, "--max-wait-ms", "2")
    try:
        x = {
            "x": RNG.standard_normal((3, 4)).astype("float32"),
            "tok": RNG.integers(0, 30, (3, 7)).astype("int32"),
        }
        reply = httpx.post(
            srv.url + "/v1/predict",
            json={"inputs": {k: v.tolist() for k, v in x.items()}},
            timeout=60,
        )
        assert reply.status_code == 200, reply.text
        np.testing.assert_allclose(np.array(reply.json()["outputs"]), model.predict(x), atol=1e-5)
        meta = httpx.get(srv.url + "/v1/metadata").json()
        assert meta["format"] == "tf_saved_model" and meta["inputs"][1]["shape"] == [None, None]
    finally:
        assert srv.stop() == 0, "".join(srv.output)


@pytest.mark.slow
def test_several_workers_serve_and_stop_with_exit_code_0(
    text_model: tuple[fitkit.Model, str],
) -> None:
    import httpx

    model, path = text_model
    srv = Server(path, "--workers", "2")
    try:
        x = _request(2, 3)
        body = {"inputs": {k: v.tolist() for k, v in x.items()}}
        with httpx.Client(base_url=srv.url, timeout=60) as client:
            replies = [client.post("/v1/predict", json=body) for _ in range(4)]
        for reply in replies:
            assert reply.status_code == 200, reply.text
            np.testing.assert_allclose(
                np.array(reply.json()["outputs"]["cls"]), model.predict(x)["cls"], atol=1e-5
            )
    finally:
        assert srv.stop() == 0, "".join(srv.output)
