"""GPU benchmarks (torch only): fitkit from numpy arrays vs a hand-written on-device loop.

G1: the W1 MLP (batch 64). G2: a VGG-style CNN on 32x32x3 inputs, batch 256, bf16 autocast.
The hand-written loop copies the arrays to the GPU once and slices there without host
syncs; fitkit gets the numpy arrays. Reported: warm-epoch samples/s and the ratio. A second
check runs one fitkit epoch under torch.cuda.set_sync_debug_mode("error").

    PYTHONPATH=. FITKIT_BACKEND=torch python benchmarks/gpu.py [--epochs 4] [--small]

Without a GPU it runs on the CPU (use --small) so the script itself can be checked.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from workloads import torch_net, w1_data

import fitkit

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def vgg_data(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    templates = rng.standard_normal((10, 3, 8, 8)).astype("float32")
    x = rng.standard_normal((n, 3, 32, 32)).astype("float32")
    y = rng.integers(0, 10, n).astype("int64")
    rows, cols = rng.integers(0, 24, n), rng.integers(0, 24, n)
    for i in range(n):
        x[i, :, rows[i] : rows[i] + 8, cols[i] : cols[i] + 8] += 2.0 * templates[y[i]]
    return x, y


def vgg_net():
    def block(cin, cout):
        return [
            nn.Conv2d(cin, cout, 3, padding=1),
            nn.BatchNorm2d(cout),
            nn.ReLU(),
            nn.Conv2d(cout, cout, 3, padding=1),
            nn.BatchNorm2d(cout),
            nn.ReLU(),
            nn.MaxPool2d(2),
        ]

    return nn.Sequential(
        *block(3, 64),
        *block(64, 128),
        *block(128, 256),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(256, 10),
    )


def sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def hand_written(net, x, y, batch_size, epochs, bf16):
    """Arrays to the device once, a permutation per epoch, slices, no host sync per step."""
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    xd, yd = torch.from_numpy(x).to(DEVICE), torch.from_numpy(y).to(DEVICE)
    ends = []
    sync()
    start = time.perf_counter()
    for _ in range(epochs):
        perm = torch.randperm(len(xd), device=DEVICE)
        xp, yp = xd[perm], yd[perm]
        loss_sum = torch.zeros((), device=DEVICE)
        correct = torch.zeros((), device=DEVICE, dtype=torch.int64)
        for i in range(0, len(xp), batch_size):
            xb, yb = xp[i : i + batch_size], yp[i : i + batch_size]
            with torch.autocast(DEVICE.type, dtype=torch.bfloat16, enabled=bf16):
                out = net(xb)
                loss = loss_fn(out, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.detach() * len(xb)
            correct += (out.argmax(1) == yb).sum()
        (loss_sum / len(xp)).item(), correct.item()  # epoch-end read, as fitkit does
        ends.append(time.perf_counter() - start)
    return ends


def with_fitkit(net, x, y, batch_size, epochs, bf16):
    model = fitkit.Model(net, device=DEVICE)
    model.compile(
        torch.optim.Adam(net.parameters(), lr=1e-3),
        "cross_entropy",
        metrics=["accuracy"],
        precision="bf16" if bf16 else "32",
    )
    ends = []

    class Clock(fitkit.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            ends.append(time.perf_counter() - start)

    sync()
    start = time.perf_counter()
    model.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=0, callbacks=[Clock()])
    return ends


def sync_free_epoch(net, x, y, batch_size, bf16) -> str:
    """One fitkit epoch with CUDA sync debugging set to 'error' from first to last step."""
    if DEVICE.type != "cuda":
        return "skipped (no CUDA)"
    steps = -(-len(x) // batch_size)

    class SyncGuard(fitkit.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if batch == 0:
                torch.cuda.set_sync_debug_mode("error")

        def on_train_batch_end(self, batch, logs=None):
            if batch == steps - 1:
                torch.cuda.set_sync_debug_mode("default")

    model = fitkit.Model(net, device=DEVICE)
    model.compile(
        torch.optim.Adam(net.parameters(), lr=1e-3),
        "cross_entropy",
        metrics=["accuracy"],
        precision="bf16" if bf16 else "32",
    )
    try:
        model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0, callbacks=[SyncGuard()])
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return "no host sync inside the epoch"


def throughput(ends, n):
    warm = [b - a for a, b in itertools.pairwise(ends)]
    return n / statistics.median(warm)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--small", action="store_true", help="tiny sizes, to check the script")
    args = parser.parse_args()
    xt, yt, _, _ = w1_data()
    n_vgg = 256 if args.small else 20000
    xv, yv = vgg_data(n_vgg)
    if args.small:
        xt, yt = xt[:2048], yt[:2048]
    cases = {
        "G1 MLP batch 64": (lambda: torch_net("W1"), xt, yt, 64, False),
        "G2 VGG batch 256 bf16": (vgg_net, xv, yv, 256, True),
    }
    report = {
        "device": str(torch.cuda.get_device_name(0) if DEVICE.type == "cuda" else "cpu"),
        "torch": torch.__version__,
        "results": {},
    }
    for name, (make, x, y, bs, bf16) in cases.items():
        torch.manual_seed(0)
        ours = throughput(with_fitkit(make().to(DEVICE), x, y, bs, args.epochs, bf16), len(x))
        torch.manual_seed(0)
        theirs = throughput(hand_written(make().to(DEVICE), x, y, bs, args.epochs, bf16), len(x))
        guard = sync_free_epoch(make().to(DEVICE), x, y, bs, bf16)
        report["results"][name] = {
            "fitkit_samples_s": ours,
            "hand_written_samples_s": theirs,
            "ratio": ours / theirs,
            "sync_check": guard,
        }
        print(
            f"{name:<24} fitkit {ours:>10.0f}/s  hand-written {theirs:>10.0f}/s  "
            f"ratio {ours / theirs:.3f}  sync: {guard}",
            flush=True,
        )
    print(json.dumps(report))


if __name__ == "__main__":
    main()
