"""fitkit's per-epoch overhead over a hand-written loop, measured in one process.

Whole-process timings on a shared 2-core machine drift by 10-30 % between runs; this
alternates one fitkit epoch and one hand-written epoch on W1 (same data, same step code)
and compares the fastest of each, which drift cannot favour.

    PYTHONPATH=. python benchmarks/overhead.py [--rounds 8] [--input arrays|loader|tf_data]
                                               [--torch-threads 1] [--loss native|name]
                                               [--clock wall|cpu]

--input arrays   fitkit.fit(numpy arrays) vs the tensor-slicing torch loop (torch_loop)
--input loader   fitkit.fit(DataLoader) vs a hand-written loop over the same DataLoader
                 (DataLoader(TensorDataset(...), batch_size=64, shuffle=True))
--input steps    fitkit's compiled train step (model.runtime.function("train")) vs the
                 hand-written step, over the same 300 batches sliced beforehand: the
                 per-step cost alone, without the loader, fit's setup or its epoch hooks
--input tf_data  fitkit.fit(tf.data) vs the hand-written tf.function loop over the same
                 pipeline (tf_loop) vs Keras fit on it; TensorFlow only
--loss native    (torch) fitkit gets torch.nn.CrossEntropyLoss(), as the loop does;
--loss name      fitkit gets the portable name "cross_entropy" (the loop keeps the module)

--clock cpu      time each epoch by the main thread's CPU time (time.thread_time) instead
                 of the wall clock: with 1 torch thread and a loader without workers every
                 step runs on that thread, and time spent descheduled (other processes on a
                 shared machine) is not counted, so the ratio's spread shrinks

Training epochs only (no validation). One warm-up round (tracing, first-batch checks) is
run first and not counted.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from workloads import WORKLOADS


def torch_contenders(kind: str, loss: str = "native") -> dict:
    """{name: one training epoch} for fitkit and the hand-written loop, on torch."""
    import torch
    from impls import torch_loader_epoch, torch_loop_epoch, torch_threads
    from torch.utils.data import DataLoader, TensorDataset
    from workloads import torch_net

    import fitkit

    torch.set_num_threads(torch_threads())
    xt, yt, _, _ = WORKLOADS["W1"]["data"]()
    ours = torch_net("W1")
    model = fitkit.Model(ours)
    model.compile(
        torch.optim.Adam(ours.parameters(), lr=1e-3),
        "cross_entropy" if loss == "name" else torch.nn.CrossEntropyLoss(),
        metrics=["accuracy"],
    )
    theirs = torch_net("W1")
    opt, loss_fn = torch.optim.Adam(theirs.parameters(), lr=1e-3), torch.nn.CrossEntropyLoss()
    x, y = torch.from_numpy(xt), torch.from_numpy(yt)
    if kind == "steps":
        model.fit(xt[:640], yt[:640], batch_size=64, epochs=1, verbose=0)  # builds the step
        step = model.runtime.function("train")
        batches = [(x[i : i + 64], y[i : i + 64]) for i in range(0, 64 * 300, 64)]

        def fitkit_steps() -> None:
            for batch in batches:
                step(batch)

        return {
            "fitkit": fitkit_steps,
            "hand-written": lambda: torch_loader_epoch(theirs, opt, loss_fn, batches),
        }
    if kind == "arrays":
        return {
            "fitkit": lambda: model.fit(xt, yt, batch_size=64, epochs=1, verbose=0),
            "hand-written": lambda: torch_loop_epoch(theirs, opt, loss_fn, x, y, 64),
        }
    loader = DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True)
    return {
        "fitkit": lambda: model.fit(loader, epochs=1, verbose=0),
        "hand-written": lambda: torch_loader_epoch(theirs, opt, loss_fn, loader),
    }


def tf_contenders() -> dict:
    """{name: one training epoch} for fitkit, the hand-written tf.function loop and Keras."""
    os.environ["KERAS_BACKEND"] = "tensorflow"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import tensorflow as tf
    from impls import tf_datasets
    from workloads import keras_net

    import fitkit

    spec = WORKLOADS["W1"]
    xt, yt, xv, yv = spec["data"]()
    train, _ = tf_datasets(tf, spec, xt, yt, xv, yv)
    model = fitkit.Model(keras_net("W1"))
    model.compile(keras.optimizers.Adam(1e-3), "cross_entropy", metrics=["accuracy"])

    net = keras_net("W1")
    opt = keras.optimizers.Adam(1e-3)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    loss_m, acc_m = keras.metrics.Mean(), keras.metrics.SparseCategoricalAccuracy()

    @tf.function
    def train_step(x, y):  # tf_loop's step
        with tf.GradientTape() as tape:
            out = net(x, training=True)
            loss = loss_fn(y, out)
        grads = tape.gradient(loss, net.trainable_variables)
        opt.apply_gradients(zip(grads, net.trainable_variables, strict=True))
        loss_m.update_state(loss)
        acc_m.update_state(y, out)

    def loop_epoch():
        for m in (loss_m, acc_m):
            m.reset_state()
        for xb, yb in train:
            train_step(xb, yb)
        return float(loss_m.result()), float(acc_m.result())

    knet = keras_net("W1")
    knet.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return {
        "fitkit": lambda: model.fit(train, epochs=1, verbose=0),
        "hand-written": loop_epoch,
        "keras": lambda: knet.fit(train, epochs=1, verbose=0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument(
        "--input", choices=["arrays", "loader", "steps", "tf_data"], default="arrays"
    )
    parser.add_argument("--loss", choices=["native", "name"], default="native")
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=None,
        help="torch intra-op threads (default 2, or $BENCH_TORCH_THREADS)",
    )
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    parser.add_argument("--out", default=None, help="also write the times as JSON here")
    args = parser.parse_args()
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    if args.torch_threads is not None:
        os.environ["BENCH_TORCH_THREADS"] = str(args.torch_threads)
    contenders = (
        tf_contenders() if args.input == "tf_data" else torch_contenders(args.input, args.loss)
    )
    for run in contenders.values():  # warm-up: tracing, first-batch checks, allocator
        run()
    times: dict = {name: [] for name in contenders}
    for _ in range(args.rounds):
        for name, run in contenders.items():
            start = clock()
            run()
            times[name].append(clock() - start)
    base = times["hand-written"]
    parts = [
        f"{name} min {min(t):.3f} s (median {statistics.median(t):.3f})"
        for name, t in times.items()
    ]
    print(
        f"W1 epoch ({args.input}, {args.clock} clock), {args.rounds} alternating rounds: "
        + ", ".join(parts)
    )
    for name, t in times.items():
        if name == "hand-written":
            continue
        paired = [a / b for a, b in zip(t, base, strict=True)]
        print(
            f"  {name} / hand-written: min {min(t) / min(base):.3f}, median "
            f"{statistics.median(t) / statistics.median(base):.3f}, per round median "
            f"{statistics.median(paired):.3f} ({min(paired):.3f}-{max(paired):.3f})"
        )
    if "keras" in times:
        print(
            f"  fitkit / keras: min {min(times['fitkit']) / min(times['keras']):.3f}, median "
            f"{statistics.median(times['fitkit']) / statistics.median(times['keras']):.3f}"
        )
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(
                {
                    "date": datetime.date.today().isoformat(),
                    "fitkit_file": sys.modules["fitkit"].__file__,
                    "input": args.input,
                    "rounds": args.rounds,
                    "clock": args.clock,
                    "epoch_s": times,
                    "torch_threads": os.environ.get("BENCH_TORCH_THREADS", "2"),
                },
                fh,
                indent=1,
            )


if __name__ == "__main__":
    main()
