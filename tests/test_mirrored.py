"""fitkit/torch/ and fitkit/tf/ mirror each other: a file in both defines the same public names
(and its shared classes the same public attributes), except the real differences listed here
once (docs/design.md, "The two backends", says why each one is real)."""

from __future__ import annotations

import ast
import importlib
import inspect
import pathlib
from types import ModuleType

import pytest

pytest.importorskip("torch")
pytest.importorskip("tensorflow")

import fitkit

BACKENDS = ("torch", "tf")
ROOT = pathlib.Path(fitkit.__file__).parent

# Files with no counterpart: what they hold exists on that backend only.
ONE_SIDED_FILES = {
    "torch": set(),
    "tf": {
        "functions",  # tf.function tracing, retracing and jit_compile (torch.compile: controls)
        "keras_steps",  # a Keras model's own train_step / test_step
    },
}

# Names in one backend's file only: the concept is real on that framework alone.
# Key: a file, or "file.Class" for a class both files define.
REAL_DIFFERENCES: dict[str, dict[str, set[str]]] = {
    "controls": {
        "torch": {"compile_step", "precision_context"},  # torch.compile; autocast
        "tf": {"check_precision", "wrap_optimizer"},  # Keras dtype policies; LossScaleOptimizer
    },
    "controls.Update": {
        "torch": {"params", "syncs_next"},  # .grad of the param groups; DDP's no_sync
        "tf": {"build", "after_step"},  # accumulators made before tracing; cross-replica apply
    },
    "data": {
        "torch": {
            "PrefetchingSource",  # CUDA side-stream copies
            "fits_on_device",  # in-memory data moved to the accelerator once
            "WHOLE_GATHER_BYTES",
            "shuffle_order",  # one CPU permutation per pass
            # DDP: each process's share of a global batch
            "Share",
            "share",
            "split_rows",
            "check_divisible",
            "ShardedBatches",
            "ShardedIterableSource",
            "ShardedPrefetchingSource",
            "ShardedTensorSource",
        },
        "tf": {
            "DatasetSource",  # tf.data pipelines
            "Chunk",  # several batches per compiled call (steps_per_execution)
            "IteratorChunk",
            "shuffle_generator",  # a tf.random.Generator, saved with checkpoints
            "reset_shuffle_generator",
        },
    },
    "distribute": {
        "torch": {"Single", "Mirrored", "DDP", "distributed_loader"},  # one class per kind
        "tf": {
            "Strategy",  # wraps a tf.distribute strategy
            "for_compile",
            "replica_share",  # documented: a replica's share of a batch
            "unscaled",
            "Source",  # distributed datasets
            "Chunk",
        },
    },
    "distribute.Replicas": {
        # process-group collectives around a DistributedDataParallel wrapper
        "torch": {
            "all_gather",
            "average",
            "before_step",
            "broadcast",
            "check_open",
            "compiled",
            "draw_seed",
            "forward",
            "gather",
            "loader",
            "log_values",
            "make_function",
            "total_rows",
        },
        # strategy.run in a replica context, distributed datasets, mirrored variables
        "tf": {
            "all_reduce",
            "check_optimizer",
            "distribute",
            "from_first_replica",
            "one_batch",
            "outside",
            "predictor",
            "rows_per_replica",
            "run",
            "scope",
            "share",
            "source",
        },
    },
    "losses": {"torch": set(), "tf": {"keras_loss"}},  # Keras loss identifiers and objects
    "metrics": {"torch": set(), "tf": {"synced"}},  # ON_READ variables under a strategy
    "metrics.LogTracker": {"torch": set(), "tf": {"expect"}},  # no variable made in a replica
    "optimizers": {
        "torch": {"check_params", "group_rates", "rates", "scaled_rates", "set_rates"},  # groups
        "tf": {"rate", "with_lr_pointer"},  # one rate; Keras 2's optimizer.lr
    },
    "readout": {
        "torch": {"read_values"},  # the logs' values stacked in one read
        "tf": {"log_functions"},  # read / reset as functions the adapter compiles
    },
    "schedules": {"torch": set(), "tf": {"GRAPH_OPS"}},  # formulas evaluated in the graph
    "state": {
        "torch": {"LoaderRngs", "loader_rngs"},  # a DataLoader's own generators
        "tf": {"local_value"},  # a read with no collective
    },
    "summary": {
        # forward hooks; integer inputs found by trying (embeddings)
        "torch": {"Recorder", "run_zeros", "index_error", "INDEX_MODULES"},
        # wrapped layer calls (no hooks in Keras 3); the model's declared inputs
        "tf": {"summarize", "declared_inputs", "default_example", "FREE_DIM"},
    },
}
for _metric in (
    "StateMetric",
    "Accuracy",
    "TopKAccuracy",
    "ErrorMean",
    "AUC",
    "PrecisionRecall",
    "R2Score",
    "BatchMean",
    "NativeMetric",
):
    # DDP gathers and merges states; tf.distribute aggregates ON_READ variables
    REAL_DIFFERENCES[f"metrics.{_metric}"] = {
        "torch": {"local_state", "merge", "state_names"},
        "tf": {"aggregations", "state_shapes"},
    }


def _files(backend: str) -> set[str]:
    return {p.stem for p in (ROOT / backend).glob("*.py") if p.stem != "__init__"}


MIRRORED = sorted(_files("torch") & _files("tf"))


def _defined(module: ModuleType) -> set[str]:
    """Public names the module's own file defines (imported ones excluded)."""
    tree = ast.parse(pathlib.Path(inspect.getfile(module)).read_text())
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
    return {n for n in names if not n.startswith("_")}


def _public(cls: type) -> set[str]:
    return {n for n in dir(cls) if not n.startswith("_")}


def _differences() -> dict[str, dict[str, set[str]]]:
    found: dict[str, dict[str, set[str]]] = {}
    for name in MIRRORED:
        torch_mod = importlib.import_module(f"fitkit.torch.{name}")
        tf_mod = importlib.import_module(f"fitkit.tf.{name}")
        torch_names, tf_names = _defined(torch_mod), _defined(tf_mod)
        if torch_names != tf_names:
            found[name] = {"torch": torch_names - tf_names, "tf": tf_names - torch_names}
        for shared in sorted(torch_names & tf_names):
            a, b = getattr(torch_mod, shared), getattr(tf_mod, shared)
            if inspect.isclass(a) and inspect.isclass(b) and _public(a) != _public(b):
                found[f"{name}.{shared}"] = {
                    "torch": _public(a) - _public(b),
                    "tf": _public(b) - _public(a),
                }
    return found


def test_one_sided_files_are_the_listed_ones():
    for backend in BACKENDS:
        other = "tf" if backend == "torch" else "torch"
        assert _files(backend) - _files(other) == ONE_SIDED_FILES[backend], backend


def test_mirrored_files_share_their_names_but_the_listed_differences():
    found = _differences()
    listed = {k: v for k, v in REAL_DIFFERENCES.items() if v["torch"] or v["tf"]}
    for key in sorted(set(found) | set(listed)):
        got = found.get(key, {"torch": set(), "tf": set()})
        want = listed.get(key, {"torch": set(), "tf": set()})
        for backend in BACKENDS:
            added = got[backend] - want[backend]
            assert not added, (
                f"{backend}/{key} has {sorted(added)} that the other backend lacks: give both "
                f"the same name, or list it in REAL_DIFFERENCES (and docs/design.md)"
            )
            stale = want[backend] - got[backend]
            assert not stale, (
                f"REAL_DIFFERENCES lists {backend}/{key} {sorted(stale)}: not one-sided now"
            )


def test_the_check_sees_a_name_added_to_one_side(monkeypatch):
    import fitkit.torch.finite as torch_finite

    real = _defined

    def with_extra(module: ModuleType) -> set[str]:
        return real(module) | ({"only_here"} if module is torch_finite else set())

    monkeypatch.setitem(globals(), "_defined", with_extra)
    assert _differences()["finite"] == {"torch": {"only_here"}, "tf": set()}
