"""The HTTP side of ``fitkit serve``: a FastAPI app over one exported artifact — POST /v1/predict
(JSON or .npy/.npz bodies), GET /health, GET /v1/metadata — and the checks that answer a bad
request with 400 / 413 / 422. Batching is batcher.py's; running the artifact, exported.py's.
"""

from __future__ import annotations

import gc
import io
import json
import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import numpy as np

from ..export import require
from ..exported import ExportedModel, detect_format, load_exported
from .batcher import Batcher

NPY_TYPES = ("application/x-npy", "application/octet-stream")
NPZ_TYPE = "application/x-npz"
CONFIG_ENV = "FITKIT_SERVE_CONFIG"  # the settings a worker process builds its app from


class RequestError(Exception):
    """A request the server refuses: its HTTP status and the message the caller reads."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _shape_text(shape: tuple) -> str:
    return "[" + ", ".join("None" if d is None else str(d) for d in shape) + "]"


def check_inputs(model: ExportedModel, inputs: Any) -> list[np.ndarray]:
    """A request's inputs as one array per artifact input, or a RequestError (422) naming the
    input and what it should be."""
    names = model.input_names
    if isinstance(inputs, Mapping):
        unknown = [str(k) for k in inputs if k not in names]
        missing = [n for n in names if n not in inputs]
        if unknown or missing:
            parts = [f"unknown input {k!r}" for k in unknown] + [
                f"missing input {n!r}" for n in missing
            ]
            raise RequestError(422, f"{'; '.join(parts)}: the model takes inputs {names}")
        leaves = [inputs[n] for n in names]
    elif len(names) == 1:
        leaves = [inputs]
    elif (
        model.input_structure in ("tuple", "list")
        and isinstance(inputs, list)
        and len(inputs) == len(names)
    ):
        leaves = inputs  # a tuple-input network: one entry per input, in order
    else:
        raise RequestError(
            422, f"the model takes several inputs {names}: send {{name: values}} for each"
        )
    arrays = [_check_one(info, leaf) for info, leaf in zip(model.inputs, leaves, strict=True)]
    rows = {len(a) for a in arrays}
    if len(rows) != 1:
        sizes = ", ".join(f"{n}: {len(a)}" for n, a in zip(names, arrays, strict=True))
        raise RequestError(422, f"the inputs' batch sizes differ ({sizes})")
    if 0 in rows:
        raise RequestError(422, "the request has no rows (batch size 0)")
    return arrays


def _check_one(info: Any, value: Any) -> np.ndarray:
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as err:
        raise RequestError(
            422,
            f"input {info.name!r}: not a regular array ({err}); expected shape "
            f"{_shape_text(info.shape)}",
        ) from None
    want = np.dtype(info.dtype)
    if array.dtype.kind not in "biuf":
        raise RequestError(
            422,
            f"input {info.name!r}: values of type {array.dtype} where {want} numbers are "
            f"expected (shape {_shape_text(info.shape)})",
        )
    if want.kind in "iu" and array.dtype.kind == "f":
        if not np.all(np.isfinite(array)) or not np.all(array == np.round(array)):
            raise RequestError(
                422, f"input {info.name!r}: expects whole numbers ({want}), got fractions"
            )
    if array.ndim != len(info.shape) or any(
        d is not None and d != s for d, s in zip(info.shape, array.shape, strict=False)
    ):
        raise RequestError(
            422,
            f"input {info.name!r} has shape {_shape_text(array.shape)}; expected "
            f"{_shape_text(info.shape)} (None: any size)",
        )
    return array.astype(want, copy=False)


def parse_body(body: bytes, content_type: str) -> Any:
    """A request body as its inputs (400 for a body that is not what its type says)."""
    kind = content_type.split(";")[0].strip().lower()
    if kind in NPY_TYPES or kind == NPZ_TYPE:
        try:
            loaded = np.load(io.BytesIO(body), allow_pickle=False)
        except (ValueError, OSError, EOFError) as err:
            raise RequestError(400, f"the body is not a valid .npy/.npz file ({err})") from None
        if isinstance(loaded, np.ndarray):
            return loaded
        with loaded:
            return {k: loaded[k] for k in loaded.files}
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as err:
        raise RequestError(400, f"the body is not valid JSON ({err})") from None
    if not isinstance(payload, dict) or "inputs" not in payload:
        raise RequestError(
            400, 'the JSON body must be an object {"inputs": nested lists | {name: nested lists}}'
        )
    return payload["inputs"]


def _tolist(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _tolist(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_tolist(v) for v in value]
    return np.asarray(value).tolist()


def create_app(
    model: ExportedModel,
    *,
    max_batch_size: int = 32,
    max_wait_ms: float = 5.0,
    max_body_bytes: int = 64 * 2**20,
) -> Any:
    """The ASGI app serving ``model`` (FastAPI, with POST /v1/predict in front of it); its
    batcher starts and drains with the app."""
    fastapi = require("fastapi", "serve")
    Response = require("fastapi.responses", "serve").Response
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        batcher = Batcher(model.run_flat, max_batch_size=max_batch_size, max_wait_ms=max_wait_ms)
        batcher.start()
        state["batcher"] = batcher
        try:
            yield
        finally:
            await batcher.stop()  # uvicorn has let the requests in flight finish first

    app = fastapi.FastAPI(title="fitkit serve", lifespan=lifespan)
    state["in_flight"] = 0

    async def health(request: Any) -> Any:
        batcher = state["batcher"]
        body = {
            "status": "ok",
            "in_flight": state["in_flight"],
            "queued": batcher.queued,
            "batches": batcher.batches,
        }
        return Response(json.dumps(body), media_type="application/json")

    async def metadata(request: Any) -> Any:
        body = model.metadata() | {
            "max_batch_size": max_batch_size,
            "max_wait_ms": max_wait_ms,
            "max_body_bytes": max_body_bytes,
        }
        return Response(json.dumps(body), media_type="application/json")

    async def predict(receive: Any, headers: dict[bytes, bytes]) -> tuple[int, bytes, bytes]:
        """(status, body, content type) of one POST /v1/predict."""
        batcher: Batcher = state["batcher"]
        state["in_flight"] += 1
        batcher.arriving += 1
        arrived = True
        try:
            declared = headers.get(b"content-length", b"")
            if declared.isdigit() and int(declared) > max_body_bytes:
                raise RequestError(413, f"the body is over the limit of {max_body_bytes} bytes")
            body = await _read_body(receive, max_body_bytes)
            inputs = parse_body(body, headers.get(b"content-type", b"").decode("latin-1"))
            arrays = check_inputs(model, inputs)
            batcher.arriving -= 1
            arrived = False
            rows = await batcher.submit(arrays)
        except RequestError as err:
            return err.status, json.dumps({"error": str(err)}).encode(), JSON
        except Exception as err:  # noqa: BLE001 - the runtime failed: the server stays up
            text = f"the model failed on this batch: {type(err).__name__}: {err}"
            return 500, json.dumps({"error": text}).encode(), JSON
        finally:
            state["in_flight"] -= 1
            if arrived:
                batcher.arriving -= 1
        outputs = model.structure_outputs(rows)
        accept = headers.get(b"accept", b"").decode("latin-1")
        if any(t in accept for t in NPY_TYPES) and isinstance(outputs, np.ndarray):
            buffer = io.BytesIO()
            np.save(buffer, outputs, allow_pickle=False)
            return 200, buffer.getvalue(), NPY_TYPES[0].encode()
        return 200, json.dumps({"outputs": _tolist(outputs)}).encode(), JSON

    app.router.add_route("/health", health, methods=["GET"])
    app.router.add_route("/v1/metadata", metadata, methods=["GET"])
    return PredictFirst(app, predict)


JSON = b"application/json"


async def _read_body(receive: Any, limit: int) -> bytes:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise RequestError(400, "the client went away before sending the whole body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"the body is over the limit of {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


class PredictFirst:
    """The ASGI app uvicorn runs: POST /v1/predict answered straight from ASGI messages (the
    hot path: no routing or middleware per request), everything else by the FastAPI app
    (the other routes, lifespan, /docs)."""

    def __init__(self, app: Any, predict: Any) -> None:
        self.app = app
        self.predict = predict

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != "/v1/predict":
            return await self.app(scope, receive, send)
        if scope["method"] != "POST":
            status, body, kind = 405, b'{"error": "POST /v1/predict"}', JSON
        else:
            status, body, kind = await self.predict(receive, dict(scope["headers"]))
        headers = [(b"content-type", kind), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def load_for_serving(path: str) -> ExportedModel:
    """``load_exported(path)``; an ONNX artifact's session made again for a server: its
    intra-op threads one fewer than the cores (the event loop parsing the next requests needs
    one) and sleeping between runs (by default they spin for a while after each run). On 2
    cores at 64 clients the defaults cost the text CNN half its throughput: the forward's 2
    threads starved the loop, batches shrank to a few rows."""
    if detect_format(path) == "onnx":
        return load_exported(path, "onnx", intra_op_threads=max(1, _cores() - 1), spinning=False)
    return load_exported(path)


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def freeze_startup_heap() -> None:
    """Leave what the server process has built so far (modules, the model, the app) out of
    the garbage collector's full passes: a full pass over its ~60k objects stopped the event
    loop for 40-90 ms under load (about one per 5 s at 64 clients), a pause every request in
    flight pays. What requests allocate is collected as before."""
    gc.collect()
    gc.freeze()


def app_from_env() -> Any:
    """The app a ``--workers N`` worker process builds (settings in FITKIT_SERVE_CONFIG)."""
    settings = json.loads(os.environ[CONFIG_ENV])
    app = create_app(
        load_for_serving(settings["path"]),
        max_batch_size=settings["max_batch_size"],
        max_wait_ms=settings["max_wait_ms"],
        max_body_bytes=settings["max_body_bytes"],
    )
    freeze_startup_heap()
    return app
