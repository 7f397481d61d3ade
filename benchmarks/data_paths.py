"""Data-path benchmarks: predict, train_on_batch, and memory on large and memory-mapped data.

    python benchmarks/data_paths.py predict  [--calls 5]     # 200k x 32 rows, batch 32
    python benchmarks/data_paths.py on_batch [--calls 300]   # us per train_on_batch call
    python benchmarks/data_paths.py memory   [--runs 1] [--impls ...]   # 1 GB in memory
    python benchmarks/data_paths.py memmap   [--runs 1] [--impls ...]   # 2 GB .npy, mmap
    python benchmarks/data_paths.py all
    common options: --fitkit DIR, --torch-threads N, --out FILE, --note TEXT

Every measurement runs in a fresh child process (this script with ``_child``), one backend
per process. predict and on_batch alternate fitkit and its reference call by call inside
the child (drift hits both); memory and memmap run one process per implementation and
run, implementations interleaved round by round.

Memory: the child reads /proc/self/status. After imports, data creation and the network,
it records the resident set (the baseline), resets the kernel's peak (VmHWM, by writing 5
to /proc/self/clear_refs) and samples RssAnon / RssFile every 10 ms in a thread while it
trains; "peak above baseline" is VmHWM at the end minus the baseline (exact, no sampling),
split into anonymous and file-backed pages from the samples. ru_maxrss cannot be used
as is: it is a lifetime high-water mark that data creation or TensorFlow's import may
already have pushed above the training's peak.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from workloads import fill_classification  # noqa: E402

MB = 1 << 20
BACKEND = {
    "torch_loop": "torch",
    "fitkit_torch": "torch",
    "tf_loop": "tensorflow",
    "tf_loop_numpy": "tensorflow",
    "fitkit_tf": "tensorflow",
    "keras_tf": "tensorflow",
}
MEMORY_IMPLS = ["torch_loop", "fitkit_torch", "tf_loop", "tf_loop_numpy", "fitkit_tf", "keras_tf"]
# *_view: the memmap passed as x.view(np.ndarray), a plain ndarray over the same mapping
# (what a user can do when a library refuses np.memmap); no copy is made by the view.
MEMMAP_IMPLS = [
    "torch_loop",
    "fitkit_torch",
    "fitkit_torch_view",
    "tf_loop_numpy",
    "fitkit_tf",
    "fitkit_tf_view",
    "keras_tf",
]
MEMORY_ROWS, MEMMAP_ROWS, FEATURES, BATCH = 4_000_000, 8_000_000, 64, 1024


# ============================================================================ memory probes
def proc_status() -> dict:
    """VmRSS, VmHWM, RssAnon, RssFile, RssShmem of this process, in bytes."""
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"):
                out[key] = int(rest.split()[0]) * 1024
    return out


class RssWatch:
    """Peak resident memory of this process between start() and stop(), above start()."""

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        self.peaks = {"VmRSS": 0, "RssAnon": 0, "RssFile": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def start(self) -> RssWatch:
        gc.collect()
        try:  # reset VmHWM to the current RSS (Linux >= 4.0)
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
            self.hwm_reset = True
        except OSError:
            self.hwm_reset = False
        self.base = proc_status()
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            now = proc_status()
            for key in self.peaks:
                self.peaks[key] = max(self.peaks[key], now[key])
            self._stop.wait(self.interval)

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        end = proc_status()
        for key in self.peaks:
            self.peaks[key] = max(self.peaks[key], end[key])
        peak = max(end["VmHWM"], self.peaks["VmRSS"]) if self.hwm_reset else self.peaks["VmRSS"]
        return {
            "baseline_mb": self.base["VmRSS"] / MB,
            "baseline_anon_mb": self.base["RssAnon"] / MB,
            "baseline_file_mb": self.base["RssFile"] / MB,
            "peak_above_mb": (peak - self.base["VmRSS"]) / MB,
            "peak_anon_above_mb": (self.peaks["RssAnon"] - self.base["RssAnon"]) / MB,
            "peak_file_above_mb": (self.peaks["RssFile"] - self.base["RssFile"]) / MB,
            "end_above_mb": (end["VmRSS"] - self.base["VmRSS"]) / MB,
            "peak_exact": self.hwm_reset,
        }


# ============================================================================ children
def _imports(backend: str):
    """Import the backend (and fitkit); returns (module, fitkit, seconds)."""
    start = time.perf_counter()
    if backend == "torch":
        import torch as mod
        from impls import torch_threads

        mod.set_num_threads(torch_threads())
    else:
        import tensorflow as mod
    import fitkit

    return mod, fitkit, time.perf_counter() - start


def _summary(values: list[float], keep_runs: bool = True) -> dict:
    out = {"median": statistics.median(values), "min": min(values), "max": max(values)}
    if keep_runs:
        out["runs"] = values
    else:  # many values: quartiles instead of every one
        q = statistics.quantiles(values, n=4)
        out.update({"q1": q[0], "q3": q[2], "n": len(values)})
    return out


def _alternate(calls: dict, n: int, warmup: int) -> dict:
    """Time each callable ``n`` times, one call of each in turn, after ``warmup`` calls."""
    for _ in range(warmup):
        for fn in calls.values():
            fn()
    times: dict = {name: [] for name in calls}
    for _ in range(n):
        for name, fn in calls.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def _paired(times: dict, name: str, ref: str) -> dict:
    paired = [a / b for a, b in zip(times[name], times[ref], strict=True)]
    return {
        "ratio_of_medians": statistics.median(times[name]) / statistics.median(times[ref]),
        "per_call": _summary(paired),
    }


def child_predict(backend: str, args: dict) -> dict:
    """fitkit predict vs Keras predict (TF) / a no_grad loop (torch): 200k x 32, batch 32."""
    mod, fitkit, _ = _imports(backend)
    from workloads import keras_net, torch_net

    rng = np.random.default_rng(0)
    x = rng.standard_normal((args["rows"], 32), dtype=np.float32)
    bs = args["batch_size"]
    if backend == "torch":
        torch = mod
        net = torch_net("W1")
        model = fitkit.Model(net)
        model.compile(torch.optim.Adam(net.parameters(), lr=1e-3), torch.nn.CrossEntropyLoss())

        def hand_written():
            net.eval()
            xt = torch.from_numpy(x)
            with torch.no_grad():
                return torch.cat([net(xt[i : i + bs]) for i in range(0, len(xt), bs)]).numpy()

        calls = {"fitkit": lambda: model.predict(x, batch_size=bs), "hand-written": hand_written}
    else:
        import keras

        net = keras_net("W1")
        model = fitkit.Model(net)
        model.compile(keras.optimizers.Adam(1e-3), "cross_entropy")
        calls = {
            "fitkit": lambda: model.predict(x, batch_size=bs),
            "keras": lambda: net.predict(x, batch_size=bs, verbose=0),
        }
    outs = {name: fn() for name, fn in calls.items()}  # the warm-up call; outputs compared
    a, b = outs.values()
    times = _alternate(calls, args["calls"], warmup=0)
    ref = next(k for k in calls if k != "fitkit")
    return {
        "seconds": {k: _summary(v) for k, v in times.items()},
        "fitkit_vs_" + ref: _paired(times, "fitkit", ref),
        "max_abs_diff": float(np.max(np.abs(np.asarray(a) - np.asarray(b)))),
        "rows": args["rows"],
        "batch_size": bs,
    }


def child_on_batch(backend: str, args: dict) -> dict:
    """fitkit train_on_batch vs Keras train_on_batch (TF) / a plain torch step, W1 batch 64."""
    mod, fitkit, _ = _imports(backend)
    from workloads import WORKLOADS, keras_net, torch_net

    xt, yt, _, _ = WORKLOADS["W1"]["data"]()
    xb, yb = xt[:64], yt[:64]
    if backend == "torch":
        torch = mod
        net = torch_net("W1")
        model = fitkit.Model(net)
        model.compile(
            torch.optim.Adam(net.parameters(), lr=1e-3),
            torch.nn.CrossEntropyLoss(),
            metrics=["accuracy"],
        )
        plain = torch_net("W1")
        opt, loss_fn = torch.optim.Adam(plain.parameters(), lr=1e-3), torch.nn.CrossEntropyLoss()

        def plain_step():  # from numpy, one step, loss and accuracy read once (as fitkit's)
            x, y = torch.from_numpy(xb), torch.from_numpy(yb)
            opt.zero_grad(set_to_none=True)
            out = plain(x)
            loss = loss_fn(out, y)
            loss.backward()
            opt.step()
            acc = (out.argmax(1) == y).float().mean()
            return dict(
                zip(("loss", "accuracy"), torch.stack([loss.detach(), acc]).tolist(), strict=True)
            )

        calls = {"fitkit": lambda: model.train_on_batch(xb, yb), "plain torch": plain_step}
    else:
        import keras

        model = fitkit.Model(keras_net("W1"))
        model.compile(keras.optimizers.Adam(1e-3), "cross_entropy", metrics=["accuracy"])
        knet = keras_net("W1")
        knet.compile(
            optimizer=keras.optimizers.Adam(1e-3),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        calls = {
            "fitkit": lambda: model.train_on_batch(xb, yb),
            "keras": lambda: knet.train_on_batch(xb, yb, return_dict=True),
        }
    times = _alternate(calls, args["calls"], warmup=args["warmup"])
    ref = next(k for k in calls if k != "fitkit")
    us = {k: [t * 1e6 for t in v] for k, v in times.items()}
    paired = _paired(times, "fitkit", ref)
    paired["per_call"].pop("runs")  # hundreds of calls: the JSON keeps summaries only
    return {
        "us_per_call": {k: _summary(v, keep_runs=False) for k, v in us.items()},
        "fitkit_vs_" + ref: paired,
        "calls": args["calls"],
    }


def _train_torch(impl, x, y, fitkit, torch):
    """One epoch of ``impl`` on (x, y); returns (final logs, callable that trains)."""
    from workloads import torch_mlp

    net = torch_mlp()
    opt, loss_fn = torch.optim.Adam(net.parameters(), lr=1e-3), torch.nn.CrossEntropyLoss()
    if impl == "fitkit_torch":
        model = fitkit.Model(net)
        model.compile(opt, loss_fn, metrics=["accuracy"])
        return lambda: model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0).history

    mapped = isinstance(x, np.memmap) or not x.flags.writeable
    xs, ys = (x, y) if mapped else (torch.from_numpy(x), torch.from_numpy(y))

    def loop():  # a permutation per epoch, applied per batch as an index; sums on the device
        n = len(x)
        perm = torch.randperm(n)
        loss_sum, correct = torch.zeros(()), torch.zeros((), dtype=torch.int64)
        for i in range(0, n, BATCH):
            idx = perm[i : i + BATCH]
            if mapped:  # rows read from the mapped file by numpy, then wrapped
                ids = idx.numpy()
                xb, yb = torch.from_numpy(xs[ids]), torch.from_numpy(ys[ids])
            else:
                xb, yb = xs[idx], ys[idx]
            opt.zero_grad(set_to_none=True)
            out = net(xb)
            loss = loss_fn(out, yb)
            loss.backward()
            opt.step()
            loss_sum += loss.detach() * len(xb)
            correct += (out.argmax(1) == yb).sum()
        return {"loss": [(loss_sum / n).item()], "accuracy": [correct.item() / n]}

    return loop


def _train_tf(impl, x, y, fitkit, tf):
    import keras
    from workloads import keras_mlp

    net = keras_mlp()
    if impl == "fitkit_tf":
        model = fitkit.Model(net)
        model.compile(keras.optimizers.Adam(1e-3), "cross_entropy", metrics=["accuracy"])
        return lambda: model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0).history
    if impl == "keras_tf":
        net.compile(
            optimizer=keras.optimizers.Adam(1e-3),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        return lambda: {
            k: v for k, v in net.fit(x, y, batch_size=BATCH, epochs=1, verbose=0).history.items()
        }
    opt = keras.optimizers.Adam(1e-3)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    loss_sum = tf.Variable(0.0, dtype=tf.float64)
    correct = tf.Variable(0, dtype=tf.int64)

    def step(xb, yb):
        with tf.GradientTape() as tape:
            out = net(xb, training=True)
            loss = loss_fn(yb, out)
        grads = tape.gradient(loss, net.trainable_variables)
        opt.apply_gradients(zip(grads, net.trainable_variables, strict=True))
        loss_sum.assign_add(tf.cast(loss, tf.float64) * tf.cast(tf.shape(xb)[0], tf.float64))
        correct.assign_add(tf.reduce_sum(tf.cast(tf.argmax(out, 1) == yb, tf.int64)))

    n = len(x)
    if impl == "tf_loop":  # the data as tensors (converted once), tf.gather per batch

        @tf.function(reduce_retracing=True)
        def gather_step(x_all, y_all, idx):
            step(tf.gather(x_all, idx), tf.gather(y_all, idx))

        def loop():
            x_all, y_all = tf.convert_to_tensor(x), tf.convert_to_tensor(y)
            perm = tf.random.shuffle(tf.range(n))
            for i in range(0, n, BATCH):
                gather_step(x_all, y_all, perm[i : i + BATCH])
            return {"loss": [float(loss_sum) / n], "accuracy": [int(correct) / n]}

        return loop

    spec = (tf.TensorSpec([None, x.shape[1]], tf.float32), tf.TensorSpec([None], tf.int64))
    numpy_step = tf.function(step, input_signature=spec)

    def numpy_loop():  # tf_loop_numpy: rows taken by numpy per batch (works on a memmap)
        perm = np.random.default_rng(0).permutation(n)
        for i in range(0, n, BATCH):
            ids = perm[i : i + BATCH]
            numpy_step(x[ids], y[ids])
        return {"loss": [float(loss_sum) / n], "accuracy": [int(correct) / n]}

    return numpy_loop


def child_memory(impl: str, args: dict) -> dict:
    """One epoch of ``impl`` on 1 GB in memory, or on a memory-mapped .npy (args["memmap"])."""
    view = impl.endswith("_view")
    impl = impl[: -len("_view")] if view else impl
    backend = BACKEND[impl]
    mod, fitkit, imported = _imports(backend)
    if args.get("memmap"):
        x = np.load(args["memmap"], mmap_mode="r")
        y = np.load(args["labels"])
        if view:
            x = x.view(np.ndarray)
    else:
        x = np.empty((args["rows"], FEATURES), np.float32)
        y = np.empty(args["rows"], np.int64)
        fill_classification(x, y)
    train = (_train_torch if backend == "torch" else _train_tf)(impl, x, y, fitkit, mod)
    watch = RssWatch().start()
    start = time.perf_counter()
    logs = train()
    epoch_s = time.perf_counter() - start
    mem = watch.stop()
    data_mb = x.nbytes / MB
    return {
        **mem,
        "epoch_s": epoch_s,
        "data_mb": data_mb,
        "peak_above_pct_of_data": 100 * mem["peak_above_mb"] / data_mb,
        "loss": float(logs["loss"][-1]),
        "accuracy": float(logs["accuracy"][-1]),
        "import_s": imported,
    }


CHILDREN = {"predict": child_predict, "on_batch": child_on_batch, "memory": child_memory}


# ============================================================================ orchestration
def _env(fitkit_src: str, threads: int) -> dict:
    env = {
        **os.environ,
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "KERAS_BACKEND": "tensorflow",
        "OMP_NUM_THREADS": str(threads),
        "BENCH_TORCH_THREADS": str(threads),
        "PYTHONPATH": os.pathsep.join(
            [fitkit_src, os.path.dirname(HERE), os.environ.get("PYTHONPATH", "")]
        ),
    }
    env.pop("FITKIT_BACKEND", None)
    return env


def spawn(opts, kind: str, what: str, args: dict) -> dict:
    print(f"  {kind} {what}", file=sys.stderr, flush=True)
    done = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "_child", kind, what, json.dumps(args)],
        env=_env(opts.fitkit, opts.torch_threads),
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        return {"failed": done.stderr[-1500:]}
    line = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
    return json.loads(line[-1][7:])


def run_predict(opts) -> dict:
    args = {"rows": 200_000, "batch_size": 32, "calls": opts.calls or 5}
    return {backend: spawn(opts, "predict", backend, args) for backend in ("torch", "tensorflow")}


def run_on_batch(opts) -> dict:
    args = {"calls": opts.calls or 300, "warmup": 30}
    return {backend: spawn(opts, "on_batch", backend, args) for backend in ("torch", "tensorflow")}


def _rounds(opts, impls: list[str], args: dict) -> dict:
    """One fresh process per implementation and run, implementations interleaved."""
    runs: dict = {impl: [] for impl in impls}
    for _ in range(opts.runs):
        for impl in impls:
            runs[impl].append(spawn(opts, "memory", impl, args))
    out = {}
    for impl, results in runs.items():
        good = [r for r in results if "failed" not in r]
        if not good:
            out[impl] = {"failed": results[-1]["failed"]}
            continue
        out[impl] = {
            key: _summary([r[key] for r in good])
            for key in (
                "peak_above_mb",
                "peak_anon_above_mb",
                "peak_file_above_mb",
                "peak_above_pct_of_data",
                "epoch_s",
                "baseline_mb",
            )
        }
        out[impl].update(
            {
                "data_mb": good[0]["data_mb"],
                "accuracy": good[-1]["accuracy"],
                "peak_exact": all(r["peak_exact"] for r in good),
                "all_runs": good,
            }
        )
    return out


def run_memory(opts) -> dict:
    return _rounds(opts, opts.impls or MEMORY_IMPLS, {"rows": MEMORY_ROWS})


def run_memmap(opts) -> dict:
    folder = opts.dir or tempfile.mkdtemp(prefix="fitkit-memmap-")
    os.makedirs(folder, exist_ok=True)
    path, labels = os.path.join(folder, "x.npy"), os.path.join(folder, "y.npy")
    try:
        if not (os.path.exists(path) and os.path.exists(labels)):
            print(
                f"  writing {MEMMAP_ROWS} x {FEATURES} float32 to {path}",
                file=sys.stderr,
                flush=True,
            )
            x = np.lib.format.open_memmap(
                path + ".tmp", mode="w+", dtype=np.float32, shape=(MEMMAP_ROWS, FEATURES)
            )
            y = np.empty(MEMMAP_ROWS, np.int64)
            fill_classification(x, y)
            x.flush()
            del x
            os.replace(path + ".tmp", path)
            np.save(labels, y)
        return {
            **_rounds(opts, opts.impls or MEMMAP_IMPLS, {"memmap": path, "labels": labels}),
            "file": path,
            "file_mb": os.path.getsize(path) / MB,
        }
    finally:
        if not opts.dir and not opts.keep:
            shutil.rmtree(folder, ignore_errors=True)


# ============================================================================ report
def _why(failed: str) -> str:
    """The last line of a child's traceback (the exception)."""
    return ([ln for ln in failed.splitlines() if ln.strip()] or ["?"])[-1][:200]


def _fmt(s: dict, unit: str = "", digits: int = 3) -> str:
    return f"{s['median']:.{digits}f}{unit} ({s['min']:.{digits}f}-{s['max']:.{digits}f})"


def report(results: dict) -> str:
    lines = []
    if "predict" in results:
        lines.append(
            "predict: 200000 x 32 rows, batch 32, W1 MLP; seconds per call, median (min-max)"
        )
        for backend, r in results["predict"].items():
            if "failed" in r:
                lines.append(f"  {backend}: failed: {_why(r['failed'])}")
                continue
            ref = next(k for k in r["seconds"] if k != "fitkit")
            p = r["fitkit_vs_" + ref]
            lines.append(
                f"  {backend:<10} fitkit {_fmt(r['seconds']['fitkit'], ' s')}  "
                f"{ref} {_fmt(r['seconds'][ref], ' s')}  fitkit/{ref} "
                f"{p['ratio_of_medians']:.2f}x (per call {_fmt(p['per_call'], 'x', 2)})"
                f"  max |diff| {r['max_abs_diff']:.1e}"
            )
    if "on_batch" in results:
        lines.append("train_on_batch: W1 batch 64 (numpy), us per call, median (min-max)")
        for backend, r in results["on_batch"].items():
            if "failed" in r:
                lines.append(f"  {backend}: failed: {_why(r['failed'])}")
                continue
            ref = next(k for k in r["us_per_call"] if k != "fitkit")
            p = r["fitkit_vs_" + ref]
            lines.append(
                f"  {backend:<10} fitkit {_fmt(r['us_per_call']['fitkit'], '', 0)}  "
                f"{ref} {_fmt(r['us_per_call'][ref], '', 0)}  fitkit/{ref} "
                f"{p['ratio_of_medians']:.2f}x"
            )
    for kind, title in (
        ("memory", f"memory: {MEMORY_ROWS} x {FEATURES} float32 in memory"),
        ("memmap", f"memmap: {MEMMAP_ROWS} x {FEATURES} float32 .npy, np.load(mmap_mode='r')"),
    ):
        if kind not in results:
            continue
        rows = {k: v for k, v in results[kind].items() if isinstance(v, dict)}
        lines.append(
            f"{title}; MLP 64-64-10, batch {BATCH}, one epoch; MB above the "
            f"baseline (imports, data, network), median (min-max)"
        )
        lines.append(
            f"  {'implementation':<18} {'peak above MB':<20} {'% of data':>9} "
            f"{'anon MB':>8} {'file MB':>8} {'epoch s':>8} {'baseline MB':>12}"
        )
        for impl, r in rows.items():
            if "failed" in r:
                lines.append(f"  {impl:<18} failed: {_why(r['failed'])}")
                continue
            lines.append(
                f"  {impl:<18} {_fmt(r['peak_above_mb'], '', 0):<20} "
                f"{r['peak_above_pct_of_data']['median']:>8.0f}% "
                f"{r['peak_anon_above_mb']['median']:>8.0f} "
                f"{r['peak_file_above_mb']['median']:>8.0f} "
                f"{r['epoch_s']['median']:>8.2f} {r['baseline_mb']['median']:>12.0f}"
            )
    lines += [""] + checks(results)
    return "\n".join(lines)


def checks(results: dict) -> list[str]:
    """The targets these rows are read for, where both sides were measured."""
    out = []
    mem = results.get("memory", {})

    def peak(rows, impl):
        r = rows.get(impl)
        return r["peak_above_mb"]["median"] if r and "failed" not in r else None

    data = next((r["data_mb"] for r in mem.values() if "data_mb" in r), None)
    if data and peak(mem, "fitkit_torch") is not None and peak(mem, "torch_loop") is not None:
        limit = peak(mem, "torch_loop") + 0.10 * data
        out.append(
            f"memory: fitkit_torch peak {peak(mem, 'fitkit_torch'):.0f} MB above data; "
            f"target <= torch_loop + 10 % of data = {limit:.0f} MB: "
            f"{'met' if peak(mem, 'fitkit_torch') <= limit else 'NOT met'}"
        )
    if data and peak(mem, "fitkit_tf") is not None:
        out.append(
            f"memory: fitkit_tf peak {peak(mem, 'fitkit_tf'):.0f} MB above data "
            f"({100 * peak(mem, 'fitkit_tf') / data:.0f} %); target <= 120 % of data "
            f"= {1.2 * data:.0f} MB: "
            f"{'met' if peak(mem, 'fitkit_tf') <= 1.2 * data else 'NOT met'}"
        )
    mm = results.get("memmap", {})
    for impl in ("fitkit_torch", "fitkit_tf"):
        if isinstance(mm.get(impl), dict) and "failed" in mm[impl]:
            out.append(
                f"memmap: {impl} failed ({_why(mm[impl]['failed'])}); target < 512 MB: NOT met"
            )
        if peak(mm, impl) is not None:
            anon = mm[impl]["peak_anon_above_mb"]["median"]
            out.append(
                f"memmap: {impl} peak {peak(mm, impl):.0f} MB above its baseline "
                f"(anonymous {anon:.0f} MB); target < 512 MB: "
                f"{'met' if peak(mm, impl) < 512 else 'NOT met'}"
            )
    return out


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        kind, what, args = sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
        print("RESULT " + json.dumps(CHILDREN[kind](what, args)), flush=True)
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("what", choices=["predict", "on_batch", "memory", "memmap", "all"])
    parser.add_argument("--runs", type=int, default=1, help="memory/memmap: processes per row")
    parser.add_argument(
        "--calls",
        type=int,
        default=None,
        help="predict: timed calls (5); on_batch: timed calls (300)",
    )
    parser.add_argument(
        "--impls", nargs="+", default=None, help=f"memory: {MEMORY_IMPLS}; memmap: {MEMMAP_IMPLS}"
    )
    parser.add_argument("--dir", default=None, help="memmap: folder for the .npy (kept)")
    parser.add_argument("--keep", action="store_true", help="memmap: keep the temporary file")
    parser.add_argument(
        "--fitkit",
        default=os.path.dirname(HERE),
        metavar="DIR",
        help="directory holding the fitkit package to measure",
    )
    parser.add_argument("--torch-threads", type=int, default=2)
    parser.add_argument(
        "--out", default=None, help="JSON file (default benchmarks/results/latest-<what>.json)"
    )
    parser.add_argument("--note", default="")
    opts = parser.parse_args()
    opts.fitkit = os.path.abspath(opts.fitkit)
    todo = ["predict", "on_batch", "memory", "memmap"] if opts.what == "all" else [opts.what]
    runners = {
        "predict": run_predict,
        "on_batch": run_on_batch,
        "memory": run_memory,
        "memmap": run_memmap,
    }
    results = {}
    for what in todo:
        print(f"running {what}", file=sys.stderr, flush=True)
        results[what] = runners[what](opts)
    text = report(results)
    print(text)
    out = opts.out or os.path.join(HERE, "results", f"latest-{opts.what}.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    from run import fitkit_source, versions

    with open(out, "w") as fh:
        json.dump(
            {
                "date": datetime.date.today().isoformat(),
                "machine": platform.platform(),
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "versions": versions(),
                "fitkit": fitkit_source(opts.fitkit),
                "torch_threads": opts.torch_threads,
                "note": opts.note,
                "results": results,
                "table": text,
            },
            fh,
            indent=1,
        )
    print(f"\nwrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
