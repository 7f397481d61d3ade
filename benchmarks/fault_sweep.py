"""A fault sweep: hostile files, disk limits, signals, kill storms, hung and dead ranks, bad
streamed batches and the silent-wrong cases of issue 17, each run in a fresh process.

Owns the probe only (it is a measurement, not a test: tests/ pins each behaviour). Every case
runs on torch and TensorFlow and ends in one outcome:
  ok       did the right thing (trained to the right numbers, or refused with a clear error)
  unclear  raised something that is not a fitkit error naming the argument or file
  wrong    finished with a silently wrong result (no error where one was due, numbers off)
  lost     a weight, file or history changed where the call should have left it alone
  crash    died by a signal it was not sent; hang: ran past its time limit

usage: python benchmarks/fault_sweep.py [--backend torch|tensorflow] [-k SUBSTRING] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# Runs first in every case's process: tiny nets and data, and the verdict helpers.
PRELUDE = r'''
import os, sys, signal, json, warnings, tempfile, zipfile, resource, subprocess
import numpy as np
import fitkit
B = os.environ["FITKIT_BACKEND"]
TMP = tempfile.mkdtemp(prefix="sweep-")
fitkit.set_seed(0)

def net(drop=0.0, n_in=6):
    if B == "torch":
        import torch.nn as nn
        return nn.Sequential(nn.Linear(n_in, 16), nn.ReLU(), nn.Dropout(drop), nn.Linear(16, 2))
    import keras
    return keras.Sequential([keras.Input((n_in,)), keras.layers.Dense(16, activation="relu"),
                             keras.layers.Dropout(drop), keras.layers.Dense(2)])

def xy(n=200, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype("float32")
    return x, (x[:, :3].sum(1) > 0).astype("int64")

def compiled(opt="adam", drop=0.0, **kw):
    model = fitkit.Model(net(drop))
    model.compile(opt, "cross_entropy", metrics=["accuracy"], lr=0.01, **kw)
    return model

def weights(model):
    return [np.array(w, copy=True) for w in model.get_weights()]

def same(a, b):
    return len(a) == len(b) and all(np.array_equal(u, v, equal_nan=True) for u, v in zip(a, b))

def verdict(status, detail=""):
    print("SWEEP", status, str(detail).replace("\n", " ")[:300], flush=True)
    sys.exit(0)

def refuse(call, *, model=None, files=(), names=(), harmless=None):
    """The call must raise a FitkitError naming each of ``names``, changing nothing; or, where
    ``harmless`` is given, succeed and leave a model that ``harmless()`` can still use."""
    before = weights(model) if model is not None else None
    kept = {f: open(f, "rb").read() for f in files if os.path.exists(f)}
    try:
        call()
    except fitkit.FitkitError as err:
        status, detail = "ok", f"{type(err).__name__}: {err}"
        missing = [n for n in names if str(n) not in str(err)]
        if missing:
            status, detail = "unclear", f"does not name {missing}: {err}"
    except BaseException as err:  # noqa: BLE001 -- classifying is the point
        status, detail = "unclear", f"{type(err).__name__}: {err}"
    else:
        status, detail = "wrong", "no error"
        if harmless is not None:
            try:
                harmless()
            except BaseException as err:  # noqa: BLE001
                verdict("lost", f"accepted, then broke the model: {type(err).__name__}: {err}")
            verdict("ok", "accepted, and the model still trains")
        verdict(status, detail)
    if before is not None and not same(before, weights(model)):
        status, detail = "lost", "weights changed; " + detail
    for f, data in kept.items():
        if not os.path.exists(f) or open(f, "rb").read() != data:
            status, detail = "lost", f"{f} changed; " + detail
    verdict(status, detail)

def child(code, timeout=120, env=None):
    """Run ``code`` (after this prelude) in another process: (returncode, output)."""
    full = open(__file__).read().split("# --- case ---")[0] + "\n" + code
    proc = subprocess.run([sys.executable, "-c", full], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})
    return proc.returncode, proc.stdout + proc.stderr
'''

CASES: list[tuple[str, str]] = []


def case(name: str, code: str) -> None:
    CASES.append((name, textwrap.dedent(code)))


# ---------------------------------------------------------------- hostile files
case(
    "bomb: deflated 2 GiB member in a .fitkit",
    r"""
model = compiled(); x, y = xy(); model.fit(x, y, epochs=1, verbose=0)
p = os.path.join(TMP, "c.fitkit"); model.save_checkpoint(p)
bomb = os.path.join(TMP, "bomb.fitkit")
import io
from numpy.lib import format as npformat
head = io.BytesIO(); npformat.write_array_header_1_0(head, {"descr": "<f4", "fortran_order": False, "shape": (1 << 29,)})
with zipfile.ZipFile(p) as src, zipfile.ZipFile(bomb, "w") as dst:
    first = [n for n in src.namelist() if n.endswith(".npy")][0]
    for n in src.namelist():
        if n != first:
            dst.writestr(n, src.read(n)); continue
        info = zipfile.ZipInfo(n); info.compress_type = zipfile.ZIP_DEFLATED
        with dst.open(info, "w", force_zip64=True) as f:  # 2 GiB of zeros, ~2 MB on disk
            f.write(head.getvalue()); chunk = bytes(1 << 24)
            for _ in range(128): f.write(chunk)
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    refuse(lambda: model.load_checkpoint(bomb), model=model, names=[bomb])
finally:
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss) / 1024
    if grown > 300: verdict("crash", f"memory grew {grown:.0f} MB")
""",
)
case(
    "fifo behind a symlink: load_weights",
    r"""
model = compiled(); fifo = os.path.join(TMP, "fifo"); os.mkfifo(fifo)
link = os.path.join(TMP, "w.weights.h5" if B != "torch" else "w.pt"); os.symlink(fifo, link)
refuse(lambda: model.load_weights(link), model=model, names=[link])
""",
)
case(
    "fifo behind a symlink: load_checkpoint",
    r"""
model = compiled(); fifo = os.path.join(TMP, "fifo"); os.mkfifo(fifo)
link = os.path.join(TMP, "c.fitkit"); os.symlink(fifo, link)
refuse(lambda: model.load_checkpoint(link), model=model, names=[link])
""",
)
for edit in [(mode, part) for mode in ("drop", "type") for part in (0.0, 0.2, 0.4, 0.6, 0.8)]:
    case(
        f"edited header ({edit[0]} the leaf at {edit[1]:.0%} of the meta)",
        r"""
    MODE, PART = @@
    model = compiled(); x, y = xy(); model.fit(x, y, epochs=1, verbose=0)
    p = os.path.join(TMP, "c.fitkit"); model.save_checkpoint(p)
    with zipfile.ZipFile(p) as z:
        members = {n: z.read(n) for n in z.namelist()}
    head = json.loads(members["fitkit.json"])
    def leaves(node, path=()):
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        found = [path] if not items else []
        for k, v in items: found += leaves(v, path + (k,))
        return found
    path = leaves(head["meta"])[int(PART * len(leaves(head["meta"])))]
    parent = head["meta"]
    for k in path[:-1]: parent = parent[k]
    if MODE == "drop" and isinstance(parent, dict): del parent[path[-1]]
    else: parent[path[-1]] = {"bogus": [1]}
    members["fitkit.json"] = json.dumps(head).encode()
    with zipfile.ZipFile(p, "w") as z:
        for n, b in members.items(): z.writestr(n, b)
    model.fit(x, y, epochs=1, verbose=0)
    refuse(lambda: model.load_checkpoint(p), model=model, names=[p],
           harmless=lambda: model.fit(x, y, epochs=1, verbose=0))
    """.replace("@@", repr(edit)),
    )
case(
    "SGD checkpoint into an Adam model",
    r"""
x, y = xy(); sgd = compiled("sgd"); sgd.fit(x, y, epochs=1, verbose=0)
p = os.path.join(TMP, "sgd.fitkit"); sgd.save_checkpoint(p)
adam = compiled("adam"); adam.fit(x, y, epochs=1, verbose=0)
refuse(lambda: adam.load_checkpoint(p), model=adam, names=[p])
""",
)
case(
    "load_weights on a .fitkit checkpoint",
    r"""
model = compiled(); p = os.path.join(TMP, "c.fitkit"); model.save_checkpoint(p)
refuse(lambda: model.load_weights(p), model=model, names=["load_checkpoint"])
""",
)
for kind in ("empty", "random", "truncated"):
    case(
        f"{kind} weights file",
        r"""
    model = compiled(); ext = ".pt" if B == "torch" else ".weights.h5"
    p = os.path.join(TMP, "w" + ext); model.save_weights(p); data = open(p, "rb").read()
    KIND = "@@"
    body = b"" if KIND == "empty" else os.urandom(4096) if KIND == "random" else data[: len(data) // 2]
    open(p, "wb").write(body)
    refuse(lambda: model.load_weights(p), model=model, names=[p])
    """.replace("@@", kind),
    )

# ---------------------------------------------------------------- disks
for what in ("save_weights", "save_checkpoint"):
    case(
        f"disk full during {what}",
        r"""
    WHAT = "@@"
    model = compiled(); x, y = xy(); model.fit(x, y, epochs=1, verbose=0)
    p = os.path.join(TMP, "w.pt" if B == "torch" and WHAT == "save_weights" else
                     "w.weights.h5" if WHAT == "save_weights" else "c.fitkit")
    getattr(model, WHAT)(p); model.fit(x, y, epochs=1, verbose=0)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (512, resource.RLIM_INFINITY))
    refuse(lambda: getattr(model, WHAT)(p), files=[p], names=[p])
    """.replace("@@", what),
    )
case(
    "disk full: no temp file left behind",
    r"""
model = compiled(); p = os.path.join(TMP, "w.pt" if B == "torch" else "w.weights.h5")
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (256, resource.RLIM_INFINITY))
try:
    model.save_weights(p)
except fitkit.FitkitError:
    left = [f for f in os.listdir(TMP) if f != os.path.basename(p)]
    verdict("lost" if left else "ok", f"left {left}")
except BaseException as err:
    verdict("unclear", repr(err))
verdict("wrong", "saved past the limit")
""",
)

# ---------------------------------------------------------------- signals and kill storms
RESUME = r'''
STEPS = %r; SIG = %r
script = r"""
import os, signal, sys
x, y = xy(); cut = int(os.environ.get("CUT", "0"))
class Cut(fitkit.callbacks.Callback):
    n = 0
    def on_train_batch_end(self, batch, logs=None):
        Cut.n += 1
        if cut and Cut.n == cut: os.kill(os.getpid(), getattr(signal, os.environ["SIG"]))
model = compiled(drop=0.3)
model.fit(x, y, batch_size=16, epochs=3, shuffle=True, verbose=0, callbacks=[Cut(),
          fitkit.callbacks.BackupAndRestore(os.environ["DIR"], save_freq=4, verbose=0)])
np.savez(os.environ["OUT"], *model.get_weights())
"""
ref = os.path.join(TMP, "ref.npz")
rc, out = child(script, env={"DIR": os.path.join(TMP, "a"), "OUT": ref, "SIG": SIG})
if rc: verdict("unclear", out[-300:])
got = os.path.join(TMP, "got.npz"); d = os.path.join(TMP, "b")
for cut in STEPS:  # each run is killed at its own step, counted from its own start
    rc, out = child(script, env={"DIR": d, "OUT": got, "CUT": str(cut), "SIG": SIG})
    want = -getattr(signal, SIG)
    if rc not in (want, 128 - want): verdict("crash" if rc < 0 else "unclear", f"exit {rc}: {out[-300:]}")
rc, out = child(script, env={"DIR": d, "OUT": got, "SIG": SIG})
if rc: verdict("unclear", out[-300:])
a, b = np.load(ref), np.load(got)
verdict("ok" if all(np.array_equal(a[k], b[k]) for k in a.files) else "wrong", "resumed weights differ")
'''
case("SIGTERM mid-epoch, resume bit-identical", RESUME % ((7,), "SIGTERM"))
for storm in ((5, 3, 9), (2, 2, 2, 2), (11, 1, 6)):
    case(f"SIGKILL storm {storm}, resume bit-identical", RESUME % (storm, "SIGKILL"))

# ---------------------------------------------------------------- bad streamed batches
case(
    "NaN inside a streamed batch stops training",
    r"""
x, y = xy(); x[37, 2] = np.nan
def batches():
    for i in range(0, 200, 16): yield x[i:i + 16], y[i:i + 16]
model = compiled()
try:
    model.fit(batches(), epochs=2, verbose=0)
except fitkit.FitkitError as err:
    verdict("ok" if "step" in str(err) else "unclear", err)
except BaseException as err:
    verdict("unclear", repr(err))
bad = not all(np.isfinite(w).all() for w in model.get_weights())
verdict("wrong" if bad else "ok", "trained on with NaN weights" if bad else "no NaN reached the weights")
""",
)
case(
    "Inf in validation data is warned about",
    r"""
x, y = xy(); xv = x[:40].copy(); xv[3, 1] = np.inf
model = compiled()
with warnings.catch_warnings(record=True) as seen:
    warnings.simplefilter("always")
    try:
        model.fit(x, y, epochs=1, verbose=0, validation_data=(xv, y[:40]))
    except fitkit.FitkitError as err:
        verdict("ok", err)
hit = [w for w in seen if "valid" in str(w.message).lower()]
verdict("ok" if hit else "wrong", "no warning naming the validation data")
""",
)

# ---------------------------------------------------------------- the silent-wrong cases
case(
    "optimizer over another net's parameters",
    r"""
if B != "torch": verdict("ok", "torch only")
import torch
model = fitkit.Model(net()); other = net()
refuse(lambda: model.compile(torch.optim.SGD(other.parameters(), lr=0.1), "cross_entropy"),
       names=["optimizer"])
""",
)
case(
    "param groups keep their ratio under ReduceLROnPlateau",
    r"""
if B != "torch": verdict("ok", "torch only")
import torch
n = net(); opt = torch.optim.SGD([{"params": n[0].parameters(), "lr": 1e-4},
                                  {"params": n[3].parameters(), "lr": 1e-2}])
model = fitkit.Model(n); model.compile(opt, "cross_entropy"); x, y = xy()
model.fit(x, y, epochs=3, verbose=0, validation_data=(x, y), callbacks=[
    fitkit.callbacks.ReduceLROnPlateau("val_loss", factor=0.5, patience=0, min_delta=10)])
lrs = [g["lr"] for g in opt.param_groups]
verdict("ok" if abs(lrs[1] / lrs[0] - 100) < 1e-6 else "wrong", lrs)
""",
)
case(
    "batch_size with a loader or generator",
    r"""
x, y = xy()
if B == "torch":
    import torch
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(
        torch.from_numpy(x), torch.from_numpy(y)), batch_size=8)
else:
    import tensorflow as tf
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
model = compiled()
refuse(lambda: model.fit(data, batch_size=64, epochs=1, verbose=0), model=model,
       names=["batch_size", "8"])
""",
)
case(
    "device string naming no device",
    r"""
if B != "torch": verdict("ok", "torch only")
refuse(lambda: fitkit.Model(net(), device="cuda:7"), names=["cuda:7"])
""",
)
case(
    "metric that raises on the first batch",
    r"""
def bad(y_true, y_pred): raise RuntimeError("metric bug")
model = fitkit.Model(net()); model.compile("adam", "cross_entropy", metrics={"mine": bad})
x, y = xy()
refuse(lambda: model.fit(x, y, epochs=1, verbose=0), model=model, names=["mine"])
""",
)
case(
    "repeat() + steps_per_epoch walks the stream as Keras does",
    r"""
if B == "torch": verdict("ok", "tf.data only")
import tensorflow as tf, keras
x, y = xy(400)
def ds(): return tf.data.Dataset.from_tensor_slices((x, y)).batch(32).repeat()
keras.utils.set_random_seed(0); a = net(); a.compile(keras.optimizers.SGD(0.1),
    keras.losses.SparseCategoricalCrossentropy(from_logits=True))
keras.utils.set_random_seed(0); b = net(); b.set_weights(a.get_weights())
a.fit(ds(), steps_per_epoch=7, epochs=3, verbose=0)
m = fitkit.Model(b); m.compile("sgd", "cross_entropy", lr=0.1)
m.fit(ds(), steps_per_epoch=7, epochs=3, verbose=0)
gap = max(float(np.abs(u - v).max()) for u, v in zip(a.get_weights(), b.get_weights()))
verdict("ok" if gap < 1e-5 else "wrong", f"max weight gap {gap:.2e}")
""",
)

# ---------------------------------------------------------------- ranks and ports
LAUNCH = r"""
import socket
MODE = %r
script = os.path.join(os.getcwd(), "tests", "scripts", "hang_rank.py")
args = [sys.executable, "-m", "fitkit.cli", "launch", "-n", "2", "--backend", B]
if MODE == "port":
    held = socket.socket(); held.bind(("127.0.0.1", 0)); held.listen(1)
    args += ["--master-port" if B == "torch" else "--workers",
             str(held.getsockname()[1]) if B == "torch" else
             f"127.0.0.1:{held.getsockname()[1]},127.0.0.1:{held.getsockname()[1] + 1}"]
args += ["--timeout", "10", script, TMP, "hang" if MODE == "hang" else "die", "1", "3"]
try:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=150)
except subprocess.TimeoutExpired:
    verdict("hang", "launch did not end in 150 s")
out = proc.stdout + proc.stderr
if proc.returncode == 0: verdict("wrong", "launch exited 0")
want = {"hang": "rank 1", "die": "rank 1", "port": "port"}[MODE]
verdict("ok" if want in out.lower() else "unclear", out[-300:])
"""
for mode in ("hang", "die", "port"):
    case(
        f"launch with a rank that {mode}s mid-epoch" if mode != "port" else "launch on a busy port",
        LAUNCH % mode,
    )


def run_case(name: str, code: str, backend: str, timeout: float) -> tuple[str, str, float]:
    prelude = PRELUDE.replace('open(__file__).read().split("# --- case ---")[0]', repr(PRELUDE))
    env = {
        **os.environ,
        "FITKIT_BACKEND": backend,
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, "-c", prelude + "\n# --- case ---\n" + code],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            cwd=ROOT,
        )
    except subprocess.TimeoutExpired:
        return "hang", f"no verdict in {timeout:.0f} s", time.perf_counter() - start
    spent = time.perf_counter() - start
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("SWEEP ")]
    if lines:
        status, _, detail = lines[-1][6:].partition(" ")
        return status, detail, spent
    if proc.returncode < 0:
        return "crash", f"signal {-proc.returncode}", spent
    return "unclear", (proc.stderr or proc.stdout)[-300:].replace("\n", " "), spent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["torch", "tensorflow"], action="append")
    parser.add_argument("-k", default="", help="run only cases whose name holds this")
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--json", help="write every outcome to this file")
    args = parser.parse_args()
    rows = []
    for name, code in CASES:
        if args.k.lower() not in name.lower():
            continue
        for backend in args.backend or ["torch", "tensorflow"]:
            status, detail, spent = run_case(name, code, backend, args.timeout)
            rows.append(
                {
                    "case": name,
                    "backend": backend,
                    "status": status,
                    "detail": detail,
                    "seconds": round(spent, 1),
                }
            )
            print(
                f"{status:8} {backend:10} {spent:6.1f}s  {name}"
                + ("" if status == "ok" else f"\n         {detail[:240]}"),
                flush=True,
            )
    counts = {
        s: sum(r["status"] == s for r in rows)
        for s in ("ok", "unclear", "wrong", "lost", "crash", "hang")
    }
    print(f"\n{len(rows)} runs: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"counts": counts, "runs": rows}, f, indent=1)
    return 0 if counts["ok"] == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
