"""The first fit on TensorFlow: fitkit's against Keras's own, each in a fresh interpreter.

Owns the whole-process measurement of a first fit (imports, building, tracing, one epoch);
the per-epoch overhead in one process is overhead.py's, the workloads' data is workloads.py's.

    PYTHONPATH=. python benchmarks/first_fit.py [--rounds 5] [--nets mlp,lstm]
                                                [--contenders keras,fitkit] [--out FILE]
                                                [--base DIR] [--validation]

--base DIR  adds the contender "fitkit_base": fitkit imported from DIR (e.g. an export of
            an earlier commit: git archive <rev> fitkit | tar -x -C DIR), run alternately
            with the others, so a change is measured against its baseline in the same rounds.

Each round runs every (net, contender) pair once, alternating, in its own `python` process
with one TensorFlow thread (intra and inter op), on the same Keras network (same seed),
the same synthetic data and batch size, for 1 epoch. Per run it records the whole process
(from launch to exit), the import of tensorflow + keras (+ fitkit), and the first fit call;
the whole process and the first fit also in CPU seconds (all the process's threads), which
time spent waiting for a core on a shared machine does not inflate.

mlp:  4096 x 32 float32 -> Dense 64 relu, Dense 64 relu, Dense 10; sparse CE; batch 64
lstm: 2048 x 20 x 8 float32 -> LSTM 32, Dense 10; sparse CE; batch 64
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

CHILD = r"""
import os, sys, time, json
os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
t0 = time.perf_counter()
import numpy as np
import tensorflow as tf
tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)
import keras
net_kind, contender, with_val = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
if contender.startswith("fitkit"):
    import fitkit
t_import = time.perf_counter() - t0
rng = np.random.default_rng(0)
keras.utils.set_random_seed(0)
if net_kind == "mlp":
    x = rng.standard_normal((4096, 32)).astype("float32")
    net = keras.Sequential([keras.Input((32,)), keras.layers.Dense(64, activation="relu"),
                            keras.layers.Dense(64, activation="relu"), keras.layers.Dense(10)])
else:
    x = rng.standard_normal((2048, 20, 8)).astype("float32")
    net = keras.Sequential([keras.Input((20, 8)), keras.layers.LSTM(32), keras.layers.Dense(10)])
y = rng.integers(0, 10, len(x)).astype("int64")
val = (x[:512], y[:512]) if with_val else None
t1, c1 = time.perf_counter(), time.process_time()
if contender == "keras":
    net.compile(optimizer=keras.optimizers.Adam(1e-3),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"])
    hist = net.fit(x, y, batch_size=64, epochs=1, verbose=0, validation_data=val).history
    loss = hist["loss"][-1]
else:
    model = fitkit.Model(net)
    model.compile(keras.optimizers.Adam(1e-3), "cross_entropy", metrics=["accuracy"])
    hist = model.fit(x, y, batch_size=64, epochs=1, verbose=0, validation_data=val)
    loss = float(hist.df["loss"].iloc[-1])
t_fit, c_fit = time.perf_counter() - t1, time.process_time() - c1
print(json.dumps({"import_s": t_import, "first_fit_s": t_fit, "first_fit_cpu_s": c_fit,
                  "loss": loss}))
"""


def run_one(net: str, contender: str, base: str | None = None, validation: bool = False) -> dict:
    """One fresh interpreter: returns its timings (whole process measured from outside)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONHASHSEED="0")
    if contender == "fitkit_base" and base:
        env["PYTHONPATH"] = base
    # the child runs from a file, as a user's script does: under `python -c` TensorFlow's
    # AutoGraph converted far less (a base fitkit's first LSTM fit took 1.0 s there, 2.9 s
    # from a file)
    with tempfile.NamedTemporaryFile("w", suffix="_first_fit.py", delete=False) as fh:
        fh.write(CHILD)
    start, cpu = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(
        [sys.executable, fh.name, net, contender, "1" if validation else "0"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    wall = time.perf_counter() - start
    os.unlink(fh.name)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    process_cpu = (after.ru_utime + after.ru_stime) - (cpu.ru_utime + cpu.ru_stime)
    if done.returncode != 0:
        raise SystemExit(f"{net}/{contender} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_s"], result["process_cpu_s"] = wall, process_cpu
    return result


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--nets", default="mlp,lstm")
    parser.add_argument("--contenders", default="keras,fitkit")
    parser.add_argument("--out", default=None, help="also write every run as JSON here")
    parser.add_argument("--base", default=None, help="fitkit_base's fitkit: a folder holding it")
    parser.add_argument(
        "--validation", action="store_true", help="fit with validation_data (512 rows)"
    )
    args = parser.parse_args()
    nets, contenders = args.nets.split(","), args.contenders.split(",")
    if args.base:
        contenders.append("fitkit_base")
    runs: dict = {(n, c): [] for n in nets for c in contenders}
    for round_no in range(args.rounds):
        # alternate the order each round, so neither contender always runs second
        order = contenders if round_no % 2 == 0 else contenders[::-1]
        for net in nets:
            for contender in order:
                runs[net, contender].append(run_one(net, contender, args.base, args.validation))
    print(
        f"first fit, fresh interpreter, 1 TF thread, {args.rounds} alternating rounds"
        + (", with validation_data" if args.validation else "")
    )
    keys = ("process_s", "process_cpu_s", "import_s", "first_fit_s", "first_fit_cpu_s")
    print(f"{'net':5} {'contender':11} " + " ".join(f"{k:>18}" for k in keys))
    for (net, contender), got in runs.items():
        cols = [summary([r[k] for r in got]) for k in keys]
        print(f"{net:5} {contender:11} " + " ".join(f"{c:>18}" for c in cols))
    pairs = [(c, "keras") for c in contenders if c != "keras" and "keras" in contenders]
    if "fitkit_base" in contenders and "fitkit" in contenders:
        pairs.append(("fitkit", "fitkit_base"))
    for net in nets:
        for contender, reference in pairs:
            for key in ("process_s", "process_cpu_s", "first_fit_s", "first_fit_cpu_s"):
                paired = [
                    a[key] / b[key]
                    for a, b in zip(runs[net, contender], runs[net, reference], strict=True)
                ]
                print(
                    f"  {net} {contender}/{reference} {key}: per round median "
                    f"{statistics.median(paired):.2f} ({min(paired):.2f}-{max(paired):.2f})"
                )
    if args.out:
        with open(args.out, "w") as fh:
            json.dump({f"{n}/{c}": r for (n, c), r in runs.items()}, fh, indent=1)


if __name__ == "__main__":
    main()
