"""Serving speed: requests/s and p50/p99 latency of ``fitkit serve`` at 1, 8 and 64 concurrent
clients, batched and unbatched (--max-batch-size 1), against LitServe serving the same ONNX
artifact with its own batching; on a small MLP and on a text classifier (token ids).

Run:  PYTHONPATH=. python benchmarks/serve.py                  (~2 min on 2 cores)
      PYTHONPATH=. python benchmarks/serve.py --quick          (shorter runs)
      PYTHONPATH=. python benchmarks/serve.py --rounds 3       (medians and ranges of 3 rounds)
Each server runs in its own process; the clients (keep-alive connections on one asyncio loop,
uvloop's where installed, one row per request) run in this one, so on a small machine they
share its cores with the server. Besides req/s and latency, each row reports the CPU time per
request of the server (its process tree, from /proc) and of the client, so a load generator
that eats the cores shows (``client %``: the client's share of the two), and fitkit's rows per
batch. Rounds restart every server in turn, so noise from other jobs falls on all of them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FEATURES, VOCAB, TOKENS = 32, 1000, 32


def build_artifacts(out: str) -> dict[str, tuple[str, dict]]:
    """Export the two networks to ONNX; returns name -> (path, one request's JSON body)."""
    import torch

    import fitkit

    fitkit.set_seed(0)
    mlp = torch.nn.Sequential(
        torch.nn.Linear(FEATURES, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10)
    )

    class TextClassifier(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = torch.nn.Embedding(VOCAB, 64)
            self.conv = torch.nn.Conv1d(64, 64, 3, padding=1)
            self.out = torch.nn.Linear(64, 4)

        def forward(self, tok: torch.Tensor) -> torch.Tensor:
            h = torch.relu(self.conv(self.emb(tok).transpose(1, 2)))
            return self.out(h.amax(dim=2))

    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, FEATURES)).astype("float32")
    tok = rng.integers(1, VOCAB, (8, TOKENS))
    paths = {}
    for name, net, example in (("mlp", mlp, x), ("text", TextClassifier(), tok)):
        path = os.path.join(out, f"{name}.onnx")
        fitkit.Model(net).export(path, format="onnx", example=example)
        paths[name] = (path, {"inputs": example[:1].tolist()})
    return paths


def forward_ms(path: str, rows: int) -> float:
    """The median time of one forward pass of ``rows`` rows, in ms (the p99 bound's part)."""
    import fitkit

    model = fitkit.load_exported(path)
    info = model.inputs[0]
    rng = np.random.default_rng(0)
    shape = (rows, *(TOKENS if d is None else d for d in info.shape[1:]))
    x = (
        rng.integers(1, VOCAB, shape)
        if "int" in info.dtype
        else rng.standard_normal(shape).astype(info.dtype)
    )
    times = []
    for _ in range(30):
        start = time.perf_counter()
        model.run_flat([x])
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


class Process:
    """A server process in a session of its own; ``ready`` is the line (or the health check)
    that says it serves. ``stop`` signals the whole group: LitServe's worker processes
    outlive a SIGTERM to its main process (left running, they ate the cores of every later
    measurement)."""

    def __init__(self, cmd: list[str]) -> None:
        env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "3"}
        self.proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            start_new_session=True,
        )

    def wait_line(self, marker: str) -> str:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if marker in line:
                return line
        raise RuntimeError(f"server exited before '{marker}' (code {self.proc.wait()})")

    def stop(self) -> None:
        group = self.proc.pid  # its own session: the group id is its pid
        self._signal_group(group, signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        deadline = time.time() + 10
        while self._signal_group(group, 0) and time.time() < deadline:
            time.sleep(0.1)  # its children finishing their own shutdown
        self._signal_group(group, signal.SIGKILL)

    @staticmethod
    def _signal_group(group: int, sig: int) -> bool:
        """Send ``sig`` to the group; False when no process of it is left."""
        try:
            os.killpg(group, sig)
        except ProcessLookupError:
            return False
        return True


def start_fitkit(path: str, max_batch_size: int, max_wait_ms: float) -> tuple[Process, str]:
    cmd = [sys.executable, "-m", "fitkit.cli", "serve", path, "--port", "0"]
    cmd += ["--max-batch-size", str(max_batch_size), "--max-wait-ms", str(max_wait_ms)]
    server = Process(cmd)
    line = server.wait_line("fitkit serve: listening on")
    return server, line.split()[4]


def _free_port() -> int:
    # LitServe takes a port number, not a socket: a free one now (a benchmark may race here)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


LITSERVE_APP = """
import sys, numpy as np, litserve as ls
from fitkit import load_exported
path, port, max_batch, wait_s = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])

class OnnxAPI(ls.LitAPI):
    def setup(self, device):
        self.model = load_exported(path)
        self.dtype = self.model.inputs[0].dtype
    def decode_request(self, request):
        return np.asarray(request["inputs"], dtype=self.dtype)
    def batch(self, inputs):
        return np.concatenate(inputs)
    def predict(self, x):
        return self.model.run_flat([x])[0]
    def unbatch(self, output):
        return [row[None] for row in output]
    def encode_response(self, output):
        return {"outputs": output.tolist()}

if __name__ == "__main__":  # LitServe starts its workers by spawning this file again
    api = OnnxAPI(max_batch_size=max_batch, batch_timeout=wait_s)
    ls.LitServer(api, accelerator="cpu").run(
        host="127.0.0.1", port=port, log_level="warning", generate_client_file=False)
"""


def start_litserve(path: str, max_batch_size: int, max_wait_ms: float) -> tuple[Process, str]:
    import httpx

    port = _free_port()
    app = os.path.join(os.path.dirname(path), "litserve_app.py")
    with open(app, "w", encoding="utf-8") as f:
        f.write(LITSERVE_APP)
    cmd = [sys.executable, app, path, str(port), str(max_batch_size)]
    server = Process([*cmd, str(max_wait_ms / 1000)])
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:  # LitServe prints no line with its port: poll its health
        if server.proc.poll() is not None:
            out = server.proc.stdout.read() if server.proc.stdout else ""
            raise RuntimeError("LitServe exited: " + out[-2000:])
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return server, url
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError("LitServe did not start within 120 s")


TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def tree_cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system) used so far by process ``pid`` and its descendants (a
    LitServe server runs its workers as child processes); None without /proc."""
    if not os.path.isdir("/proc"):
        return None
    parents, cpu = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        parents[int(entry)] = int(fields[1])
        cpu[int(entry)] = (int(fields[11]) + int(fields[12])) / TICKS
    tree, grew = {pid}, True
    while grew:
        more = {p for p, parent in parents.items() if parent in tree} - tree
        tree |= more
        grew = bool(more)
    return sum(cpu.get(p, 0.0) for p in tree)


class Connection:
    """A minimal keep-alive HTTP/1.1 client over asyncio streams: httpx's own overhead per
    request (about 1 ms of Python) would otherwise be what this measures."""

    def __init__(self, url: str) -> None:
        host, port = url.split("//")[1].split(":")
        self.host, self.port = host, int(port)

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def post(self, path: str, payload: bytes) -> int:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n"
        ).encode()
        self.writer.write(head + payload)
        status_line = await self.reader.readline()
        length = 0
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        body = await self.reader.readexactly(length)
        status = int(status_line.split()[1])
        if status == 200 and not body.startswith(b'{"outputs"'):
            return -1
        return status

    def close(self) -> None:
        self.writer.close()


async def load(
    url: str, path: str, body: dict, clients: int, seconds: float, server_pid: int
) -> dict:
    """``clients`` connections, each sending one request after another to ``path``; with the
    CPU time per request of the server's processes and of this one."""
    payload = json.dumps(body).encode()
    latencies: list[float] = []
    errors = 0
    connections = [Connection(url) for _ in range(clients)]
    await asyncio.gather(*(c.open() for c in connections))
    for c in connections[:3]:  # warm the server
        await c.post(path, payload)

    async def one_client(conn: Connection, stop: float) -> None:
        nonlocal errors
        while time.perf_counter() < stop:
            start = time.perf_counter()
            if await conn.post(path, payload) != 200:
                errors += 1
            latencies.append(time.perf_counter() - start)

    latencies.clear()
    errors = 0
    server_cpu, client_cpu = tree_cpu_s(server_pid), time.process_time()
    start = time.perf_counter()
    stop = start + seconds
    await asyncio.gather(*(one_client(c, stop) for c in connections))
    elapsed = time.perf_counter() - start
    client_cpu = time.process_time() - client_cpu
    server_end = tree_cpu_s(server_pid)
    for c in connections:
        c.close()
    ms = np.array(latencies) * 1000
    n = len(latencies)
    server_us = None if server_cpu is None or server_end is None else (server_end - server_cpu)
    return {
        "requests": n,
        "errors": errors,
        "rps": n / elapsed,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "server_cpu_us": None if server_us is None else 1e6 * server_us / n,
        "client_cpu_us": 1e6 * client_cpu / n,
    }


def run_load(
    url: str, path: str, body: dict, clients: int, seconds: float, server_pid: int
) -> dict:
    """``load`` on uvloop's event loop where installed (a cheaper client), else asyncio's."""
    factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:
        pass
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(load(url, path, body, clients, seconds, server_pid))


def batches_run(url: str) -> int | None:
    """fitkit's count of forward passes so far (its /health), None for other servers."""
    import httpx

    try:
        return int(httpx.get(url + "/health", timeout=10).json()["batches"])
    except (httpx.HTTPError, KeyError, ValueError, TypeError):
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1.5 s per measurement")
    parser.add_argument("--seconds", type=float, default=4.0, help="per measurement")
    parser.add_argument("--rounds", type=int, default=1, help="repeat every server this often")
    parser.add_argument("--clients", default="1,8,64")
    parser.add_argument("--models", default="mlp,text")
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--no-litserve", action="store_true")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    seconds = 1.5 if args.quick else args.seconds
    clients = [int(c) for c in args.clients.split(",")]
    servers = {
        "fitkit batched": lambda p: start_fitkit(p, args.max_batch_size, args.max_wait_ms),
        "fitkit unbatched": lambda p: start_fitkit(p, 1, 0),
    }
    if not args.no_litserve:
        try:
            import litserve  # type: ignore[import-untyped]  # noqa: F401

            servers["litserve batched"] = lambda p: start_litserve(
                p, args.max_batch_size, args.max_wait_ms
            )
        except ImportError:
            print("litserve is not installed: skipped (pip install litserve)")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        artifacts = build_artifacts(tmp)
        for model in args.models.split(","):
            path, body = artifacts[model]
            bound = args.max_wait_ms + forward_ms(path, args.max_batch_size)
            print(
                f"\n{model}: p99 goal at 64 clients <= max-wait + one batched forward = {bound:.1f} ms"
            )
            print(HEADER)
            for round_ in range(args.rounds):
                for name, start in servers.items():
                    server, url = start(path)
                    try:
                        for n in clients:
                            route = "/v1/predict" if name.startswith("fitkit") else "/predict"
                            before = batches_run(url) if name.startswith("fitkit") else None
                            row = run_load(url, route, body, n, seconds, server.proc.pid)
                            after = batches_run(url) if before is not None else None
                            row |= {"model": model, "server": name, "clients": n}
                            row |= {"p99_goal_ms": bound, "round": round_}
                            row["rows_per_batch"] = (
                                None  # the warm-up requests are in the count: about 3 more
                                if before is None or after is None
                                else row["requests"] / max(1, after - before - 3)
                            )
                            results.append(row)
                            print(_line(row), flush=True)
                    finally:
                        server.stop()
            if args.rounds > 1:
                print(f"{model}: medians of {args.rounds} rounds (req/s range)")
                for row in _medians([r for r in results if r["model"] == model]):
                    print(_line(row), flush=True)
    _checks(results)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1)


HEADER = (
    f"{'server':<18}{'clients':>8}{'req/s':>22}{'p50 ms':>9}{'p99 ms':>9}{'errors':>7}"
    f"{'server us/req':>15}{'client us/req':>15}{'client %':>9}{'rows/batch':>11}"
)


def _line(row: dict) -> str:
    rps = f"{row['rps']:.0f}"
    if "rps_min" in row:
        rps += f" ({row['rps_min']:.0f}-{row['rps_max']:.0f})"
    server, client = row["server_cpu_us"], row["client_cpu_us"]
    share = "" if server is None else f"{100 * client / (client + server):.0f}"
    batch = "" if row.get("rows_per_batch") is None else f"{row['rows_per_batch']:.1f}"
    return (
        f"{row['server']:<18}{row['clients']:>8}{rps:>22}{row['p50_ms']:>9.2f}"
        f"{row['p99_ms']:>9.2f}{row['errors']:>7}"
        f"{'' if server is None else f'{server:.0f}':>15}{client:>15.0f}{share:>9}{batch:>11}"
    )


def _medians(results: list[dict]) -> list[dict]:
    """One row per (model, server, clients): the median of each number over the rounds, and
    the range of req/s."""
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        groups.setdefault((r["model"], r["server"], r["clients"]), []).append(r)
    rows = []
    for (model, server, clients), runs in groups.items():
        row: dict = {"model": model, "server": server, "clients": clients}
        for key in ("rps", "p50_ms", "p99_ms", "server_cpu_us", "client_cpu_us"):
            values = [r[key] for r in runs if r[key] is not None]
            row[key] = statistics.median(values) if values else None
        batches = [r["rows_per_batch"] for r in runs if r.get("rows_per_batch") is not None]
        row["rows_per_batch"] = statistics.median(batches) if batches else None
        row["errors"] = sum(r["errors"] for r in runs)
        row["rps_min"] = min(r["rps"] for r in runs)
        row["rps_max"] = max(r["rps"] for r in runs)
        row["p99_goal_ms"] = runs[0]["p99_goal_ms"]
        rows.append(row)
    return rows


def _checks(results: list[dict]) -> None:
    """The issue's goals at 64 clients: 5x unbatched, at least LitServe, p99 bounded; medians
    over the rounds, with the range of the ratios of runs of the same round."""
    top = max(r["clients"] for r in results)
    print(f"\nchecks at {top} clients (medians over rounds; range of same-round ratios):")
    at_top = [r for r in results if r["clients"] == top]
    for model in sorted({r["model"] for r in at_top}):
        rows = {r["server"]: r for r in _medians([r for r in at_top if r["model"] == model])}
        batched = rows.get("fitkit batched")
        if batched is None:
            continue
        for other, goal in (("fitkit unbatched", "5x"), ("litserve batched", "1x")):
            if other not in rows:
                continue
            per_round = [
                a["rps"] / b["rps"]
                for a in at_top
                for b in at_top
                if a["model"] == b["model"] == model
                and a["round"] == b["round"]
                and a["server"] == "fitkit batched"
                and b["server"] == other
            ]
            print(
                f"  {model}: fitkit batched / {other} = {batched['rps'] / rows[other]['rps']:.1f}x"
                f" (rounds {min(per_round):.1f}-{max(per_round):.1f}x; goal >= {goal})"
            )
        over = batched["p99_ms"] > batched["p99_goal_ms"]
        print(
            f"  {model}: p99 {batched['p99_ms']:.1f} ms, bound {batched['p99_goal_ms']:.1f} ms "
            f"({'over' if over else 'within'}); {top} clients / req/s = "
            f"{1000 * top / batched['rps']:.1f} ms is the mean latency any server at that "
            "throughput has (Little's law)"
        )


if __name__ == "__main__":
    main()
