"""Benchmark orchestrator: every implementation x workload in fresh processes; one table + JSON.

Owns process launching, timing from outside, aggregation (median, min-max, ratios) and
the report. Usage:  python benchmarks/run.py [--runs 3] [--workloads W1 W2] [--impls ...]
[--fitkit DIR] (import fitkit from DIR instead of this checkout, e.g. an exported commit)
[--torch-threads 1]
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from impls import IMPLS, OPTIONAL  # noqa: E402

BASELINE = {"torch": "torch_loop", "tensorflow": "tf_loop"}


def _times(ratio: float, width: int) -> str:
    """A ratio as "1.23x", or "-" when its baseline was not run (not "nanx")."""
    return f"{ratio:.2f}x".rjust(width) if ratio == ratio else "-".rjust(width)


FITKIT_SRC = os.path.dirname(HERE)  # the directory `import fitkit` comes from (--fitkit)
TORCH_THREADS = 2  # torch's intra-op threads in every process (--torch-threads)

# The claims the table is read for: (workload, impl, reference impl, column, target ratio).
# Each is printed under the table as a ratio of medians and as the median of the ratios of
# runs of the same round (the rounds interleave, so a round's two runs saw the same machine).
CHECKS = [
    ("W1", "fitkit_torch", "torch_loop", "fit_s", 1.10),
    ("W2", "fitkit_torch", "torch_loop", "fit_s", 1.03),
    ("W1", "fitkit_torch_strings", "torch_loop", "fit_s", 0.90),
    ("W1", "fitkit_tf", "tf_loop", "warm_epoch_s", 1.0),
    ("W1", "fitkit_tf", "keras_tf", "warm_epoch_s", 0.6),
    ("W1", "fitkit_torch_loader", "torch_loader_loop", "fit_s", 1.03),
    ("W1", "fitkit_torch_loader", "torch_loader_loop", "warm_epoch_s", 1.03),
    ("W1", "fitkit_tf_data", "tf_loop", "warm_epoch_s", 0.5),
    ("W1", "fitkit_tf_data", "keras_tf_data", "warm_epoch_s", 0.5),
]


def _env(impl: str) -> dict:
    env = {
        **os.environ,
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "OMP_NUM_THREADS": str(TORCH_THREADS),
        "BENCH_TORCH_THREADS": str(TORCH_THREADS),
        "PYTHONPATH": os.pathsep.join(
            [FITKIT_SRC, os.path.dirname(HERE), os.environ.get("PYTHONPATH", "")]
        ),
    }
    env["KERAS_BACKEND"] = "torch" if impl == "keras_torch" else "tensorflow"
    env.pop("FITKIT_BACKEND", None)
    return env


def run_process(args: list[str], env: dict) -> tuple[float, dict]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{args} failed:\n{done.stderr[-2000:]}")
    line = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
    return wall, (json.loads(line[-1][7:]) if line else {})


def summarize(values: list[float]) -> dict:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "runs": values,
    }


def measure(impls: list[str], workload: str, runs: int) -> dict:
    """Round-robin over the implementations, so that drift in the machine's speed hits all."""
    one = os.path.join(HERE, "run_one.py")
    records: dict = {impl: [] for impl in impls}
    first: dict = {impl: [] for impl in impls}
    failed: dict = {}
    for _ in range(runs):
        for impl in impls:
            if impl in failed:
                continue
            print(f"  {workload} {impl}", file=sys.stderr, flush=True)
            try:
                records[impl].append(run_process([one, impl, workload], _env(impl)))
                first[impl].append(run_process([one, impl, workload, "first_step"], _env(impl))[0])
            except RuntimeError as err:  # one broken contender must not lose the others
                failed[impl] = {"skipped": f"failed: {str(err)[-300:]}"}
    return {impl: failed.get(impl) or summarize_impl(records[impl], first[impl]) for impl in impls}


def checks(results: dict) -> list[dict]:
    """The CHECKS whose two implementations were both measured."""
    found = []
    for workload, impl, ref, column, target in CHECKS:
        a, b = results.get(workload, {}).get(impl), results.get(workload, {}).get(ref)
        if not a or not b or not a.get(column) or not b.get(column):
            continue
        ratio = a[column]["median"] / b[column]["median"]
        paired = [x / y for x, y in zip(a[column]["runs"], b[column]["runs"], strict=True)]
        found.append(
            {
                "workload": workload,
                "impl": impl,
                "reference": ref,
                "column": column,
                "target": target,
                "ratio_of_medians": ratio,
                "ratio_of_fastest": a[column]["min"] / b[column]["min"],
                "paired": summarize(paired),
                "met": ratio <= target,
            }
        )
    return found


def checks_table(found: list[dict]) -> str:
    lines = ["checks (ratio of medians; of the fastest runs; per-round ratios: median, min-max):"]
    for c in found:
        p = c["paired"]
        lines.append(
            f"  {c['workload']} {c['impl']} / {c['reference']}, {c['column']}: "
            f"{c['ratio_of_medians']:.3f}x (fastest {c['ratio_of_fastest']:.3f}x; "
            f"rounds {p['median']:.3f}x, "
            f"{p['min']:.3f}-{p['max']:.3f}); target <= {c['target']:.2f}x: "
            f"{'met' if c['met'] else 'NOT met'}"
        )
    return "\n".join(lines) if found else ""


def summarize_impl(records: list, first: list) -> dict:
    fit = [r["epoch_ends"][-1] for _, r in records]
    warm = [
        (r["epoch_ends"][-1] - r["epoch_ends"][0]) / (len(r["epoch_ends"]) - 1)
        for _, r in records
        if len(r["epoch_ends"]) > 1
    ]
    return {
        "fit_s": summarize(fit),
        "warm_epoch_s": summarize(warm) if warm else None,
        "process_s": summarize([wall for wall, _ in records]),
        "first_step_process_s": summarize(first),
        "import_s": summarize([r["import_s"] for _, r in records]),
        "peak_rss_mb": summarize([r["peak_rss_mb"] for _, r in records]),
        "val_accuracy": statistics.median(r["val_accuracy"] for _, r in records),
        "epoch_times_estimated": any(r.get("epoch_ends_estimated") for _, r in records),
    }


def import_baselines(runs: int) -> dict:
    out = {}
    for name, code in (
        ("fitkit", "import fitkit"),
        ("torch", "import torch"),
        ("tensorflow", "import tensorflow"),
    ):
        out[name] = summarize([run_process(["-c", code], _env(""))[0] for _ in range(runs)])
    return out


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for dist in ("torch", "tensorflow-cpu", "keras", "numpy", "torchkeras", "lightning"):
        try:
            found[dist] = version(dist)
        except PackageNotFoundError:
            pass
    return found


def fitkit_source(src: str | None = None) -> dict:
    """Where fitkit came from: the directory, and its git commit and dirty files if any."""
    src = src or FITKIT_SRC
    out = {"dir": src}

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", src, *args], capture_output=True, text=True
        ).stdout.strip()

    if git("rev-parse", "--show-toplevel") == src:
        out["commit"] = git("rev-parse", "--short", "HEAD")
        out["uncommitted"] = git("status", "--short", "fitkit").splitlines()
    return out


def table(results: dict, baselines: dict) -> str:
    head = (
        f"{'workload':<8} {'implementation':<22} {'fit s (median, min-max)':<26} "
        f"{'x same-backend loop':>19} {'x torch loop':>13} {'warm epoch s':>13} "
        f"{'x loop warm':>12} {'process s':>10} {'first step s':>13} {'peak MB':>8} "
        f"{'val acc':>8}"
    )
    lines = [head, "-" * len(head)]
    for workload, impls in results.items():
        for impl, r in impls.items():
            if "skipped" in r:
                lines.append(f"{workload:<8} {impl:<22} skipped: {r['skipped']}")
                continue
            base = impls.get(BASELINE[IMPLS[impl][0]], {})
            torch_base = impls.get("torch_loop", {})
            fit = r["fit_s"]
            ratio = fit["median"] / base["fit_s"]["median"] if "fit_s" in base else float("nan")
            ratio_t = (
                fit["median"] / torch_base["fit_s"]["median"]
                if "fit_s" in torch_base
                else float("nan")
            )
            warm = r["warm_epoch_s"]["median"] if r["warm_epoch_s"] else float("nan")
            base_warm = (base.get("warm_epoch_s") or {}).get("median", float("nan"))
            est = "*" if r["epoch_times_estimated"] else ""
            lines.append(
                f"{workload:<8} {impl:<22} "
                f"{fit['median']:>7.3f} ({fit['min']:.3f}-{fit['max']:.3f}){'':<6} "
                f"{_times(ratio, 19)} {_times(ratio_t, 13)} {warm:>12.3f}{est} "
                f"{_times(warm / base_warm, 12)} "
                f"{r['process_s']['median']:>10.2f} {r['first_step_process_s']['median']:>13.2f} "
                f"{r['peak_rss_mb']['median']:>8.0f} {r['val_accuracy']:>8.3f}"
            )
    lines.append("")
    lines.append(
        "import (whole process, median s): "
        + ", ".join(f"{k} {v['median']:.2f}" for k, v in baselines.items())
    )
    return "\n".join(lines)


def main() -> None:
    global FITKIT_SRC, TORCH_THREADS
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workloads", nargs="+", default=["W1", "W2"])
    parser.add_argument("--impls", nargs="+", default=list(IMPLS))
    parser.add_argument("--out", default=os.path.join(HERE, "results", "latest.json"))
    parser.add_argument(
        "--fitkit",
        default=FITKIT_SRC,
        metavar="DIR",
        help="directory holding the fitkit package to measure (default: this "
        "checkout); e.g. `git archive <commit> fitkit | tar -x -C DIR`",
    )
    parser.add_argument("--note", default="", help="free text stored in the JSON (what fitkit is)")
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=TORCH_THREADS,
        help="torch intra-op threads (and OMP_NUM_THREADS); 1 is far steadier "
        "on a shared 2-core machine",
    )
    args = parser.parse_args()
    FITKIT_SRC = os.path.abspath(args.fitkit)
    TORCH_THREADS = args.torch_threads
    results: dict = {}
    for workload in args.workloads:
        missing = {
            impl: OPTIONAL[impl]
            for impl in args.impls
            if impl in OPTIONAL and importlib.util.find_spec(OPTIONAL[impl]) is None
        }
        present = [impl for impl in args.impls if impl not in missing]
        print(
            f"running {workload}: {len(present)} implementations x{args.runs}, interleaved",
            file=sys.stderr,
            flush=True,
        )
        measured = measure(present, workload, args.runs)
        results[workload] = {
            impl: measured.get(impl)
            or {"skipped": f"{missing[impl]} not installed (pip install '.[bench]')"}
            for impl in args.impls
        }
    baselines = import_baselines(args.runs)
    report = table(results, baselines)
    found = checks(results)
    if found:
        report += "\n\n" + checks_table(found)
    print(report)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(
            {
                "date": datetime.date.today().isoformat(),
                "machine": platform.platform(),
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "versions": versions(),
                "runs": args.runs,
                "fitkit": fitkit_source(),
                "torch_threads": TORCH_THREADS,
                "note": args.note,
                "results": results,
                "imports": baselines,
                "checks": found,
                "table": report,
            },
            fh,
            indent=1,
        )
    print(f"\nwrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
