"""torch's jit_compile=True on the CPU: compile time and steady epochs against eager.

Owns the measurement behind fitkit's jit_compile advice on torch (docs/performance.md); the
workloads' data and nets are workloads.py's.

    PYTHONPATH=. python benchmarks/jit_cpu.py [--nets mlp,conv] [--accumulate 1,4]
                                              [--rounds 5] [--torch-threads 1]

Per (net, gradient_accumulation_steps): one model compiled eagerly and one with
jit_compile=True, from the same weights. The first epoch of each (the compiled one pays
torch.compile there) is timed alone; then ``--rounds`` rounds alternate one eager epoch
and one compiled epoch. Prints the first epoch, the median steady epoch (range), the
compiled / eager ratio per round, and torch._dynamo's counters for the compiled model
(graphs compiled, graph breaks, recompilations after the first epoch).

mlp:  W1's MLP on 4096 of its rows, batch 64 (64 steps per epoch)
conv: W2's CNN on 512 of its rows, batch 64 (8 steps per epoch)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from workloads import WORKLOADS, torch_net


def model_for(net_name: str, accumulate: int, jit: bool):
    """A fitkit model of the workload's net (its fixed initial weights)."""
    import torch

    import fitkit

    net = torch_net("W1" if net_name == "mlp" else "W2")
    model = fitkit.Model(net)
    model.compile(
        torch.optim.Adam(net.parameters(), lr=1e-3),
        torch.nn.CrossEntropyLoss(),
        metrics=["accuracy"],
        gradient_accumulation_steps=accumulate,
        jit_compile=jit,
    )
    return model


def data_for(net_name: str):
    x, y, _, _ = WORKLOADS["W1" if net_name == "mlp" else "W2"]["data"]()
    rows = 4096 if net_name == "mlp" else 512
    return x[:rows], y[:rows]


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(net_name: str, accumulate: int, rounds: int) -> dict:
    import torch._dynamo
    from torch._dynamo.utils import counters

    x, y = data_for(net_name)
    torch._dynamo.reset()
    counters.clear()
    eager, jit = model_for(net_name, accumulate, False), model_for(net_name, accumulate, True)

    def epoch(model):
        return lambda: model.fit(x, y, batch_size=64, epochs=1, verbose=0, shuffle=False)

    first = {"eager": timed(epoch(eager)), "jit": timed(epoch(jit))}
    graphs_after_first = counters["stats"]["unique_graphs"]
    times: dict = {"eager": [], "jit": []}
    for _ in range(rounds):
        for name, model in (("eager", eager), ("jit", jit)):
            times[name].append(timed(epoch(model)))
    return {
        "first": first,
        "times": times,
        "graphs": graphs_after_first,
        "recompiled": counters["stats"]["unique_graphs"] - graphs_after_first,
        "breaks": sum(counters["graph_break"].values()),
        "break_reasons": sorted(counters["graph_break"])[:4],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nets", default="mlp,conv")
    parser.add_argument("--accumulate", default="1,4")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--torch-threads", type=int, default=1)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.torch_threads)
    print(
        f"torch {torch.__version__}, {args.torch_threads} thread(s), {args.rounds} alternating "
        f"rounds; seconds per epoch"
    )
    for net_name in args.nets.split(","):
        for accumulate in map(int, args.accumulate.split(",")):
            got = measure(net_name, accumulate, args.rounds)
            eager, jit = got["times"]["eager"], got["times"]["jit"]
            paired = [j / e for j, e in zip(jit, eager, strict=True)]
            print(
                f"{net_name} accumulate={accumulate}: first epoch eager {got['first']['eager']:.2f}"
                f" jit {got['first']['jit']:.2f}; steady eager {statistics.median(eager):.3f} "
                f"({min(eager):.3f}-{max(eager):.3f}) jit {statistics.median(jit):.3f} "
                f"({min(jit):.3f}-{max(jit):.3f}); jit/eager per round median "
                f"{statistics.median(paired):.2f} ({min(paired):.2f}-{max(paired):.2f}); "
                f"graphs {got['graphs']}, recompiled after epoch 1: {got['recompiled']}, "
                f"graph breaks {got['breaks']} {got['break_reasons']}"
            )


if __name__ == "__main__":
    main()
