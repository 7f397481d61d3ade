"""fitkit's per-epoch overhead over the hand-written torch loop, measured in one process.

Whole-process timings on a shared 2-core machine drift by 10-30 % between runs; this
alternates one fitkit epoch and one hand-written epoch on W1 (same data, same step code)
and compares the fastest of each, which drift cannot favour.

    PYTHONPATH=. python benchmarks/overhead.py [--rounds 8]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import fitkit  # noqa: E402
from impls import torch_loop_epoch  # noqa: E402
from workloads import WORKLOADS, torch_net  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(2)
    xt, yt, _, _ = WORKLOADS["W1"]["data"]()
    ours = torch_net("W1")
    model = fitkit.Model(ours)
    model.compile(torch.optim.Adam(ours.parameters(), lr=1e-3), torch.nn.CrossEntropyLoss(),
                  metrics=["accuracy"])
    theirs = torch_net("W1")
    opt, loss_fn = torch.optim.Adam(theirs.parameters(), lr=1e-3), torch.nn.CrossEntropyLoss()
    x, y = torch.from_numpy(xt), torch.from_numpy(yt)

    fitkit_s, loop_s = [], []
    for _ in range(args.rounds):
        start = time.perf_counter()
        model.fit(xt, yt, batch_size=64, epochs=1, verbose=0)
        fitkit_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        torch_loop_epoch(theirs, opt, loss_fn, x, y, 64)
        loop_s.append(time.perf_counter() - start)
    print(f"W1 epoch, {args.rounds} alternating rounds: fitkit min {min(fitkit_s):.3f} s "
          f"(median {statistics.median(fitkit_s):.3f}), hand-written min {min(loop_s):.3f} s "
          f"(median {statistics.median(loop_s):.3f}); fitkit / loop: "
          f"min {min(fitkit_s) / min(loop_s):.3f}, median "
          f"{statistics.median(fitkit_s) / statistics.median(loop_s):.3f}")


if __name__ == "__main__":
    main()
