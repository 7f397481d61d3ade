"""The ``>>>`` examples in fitkit's docstrings run, in a namespace with what they name: a tiny
compiled torch model ``model`` over ``net``, data ``x``, ``y`` (and ``xv``/``x_val``/``x_test``
...), optimizers ``opt``, ``opt_g``, ``opt_d``. Each docstring runs on its own, in a fresh namespace and a fresh
working folder (examples write files such as ``net.safetensors``).

An example shown with its output is checked against it; one shown without (a call whose
result or printed tables the docstring leaves out) is checked to run without an error.
Modules whose examples are not run yet are listed in ``NOT_RUN`` with the reason; a new module's
examples run by default. Examples whose output varies from run to run use ``+ELLIPSIS``.
"""

from __future__ import annotations

import ast
import doctest
import importlib
import pathlib

import numpy as np
import pytest

import fitkit

ROOT = pathlib.Path(fitkit.__file__).parent

# module -> why its examples are not run (each is a fragment of a larger program: a method of a
# subclass, a script's loop, a launch on several processes)
NOT_RUN = {
    "fitkit.custom_steps": "fragments of train_step overrides (self, batch inside a subclass)",
    "fitkit.compat.torchkeras": "torchkeras programs (CnnModel, dl_train) named, not defined",
    "fitkit.compat.torchkeras_v4": "torchkeras programs (dl_train, torchmetrics) not defined",
    "fitkit.compat.lightmodel": "a Lightning program (pl.Trainer, dl_train) not defined",
    "fitkit.compat.live_plot": "writes a plot during a 20-epoch fit",
    "fitkit.torch.loops": "a function-style script's loop (features, labels, dl_train)",
    "fitkit.tf.loops": "a function-style script's loop (features, labels, ds_train)",
    "fitkit.tf.schedules": "internal scheduler wiring (opt, keras schedules) shown",
    "fitkit.tf.distribute": "a line inside a GradientTape under a strategy",
    "fitkit.script": "a script-style loop's lines (loss, labels, epoch) out of their loop",
    "fitkit.scheduling": "a scheduler inside fit (scheduler) shown, not defined",
    "fitkit.sources": "a batch inside a custom step",
}


def _examples() -> list[tuple[str, str]]:
    """(module, qualified name) of every docstring with an example, read from the source."""
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        if module in NOT_RUN:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))

        def visit(node: ast.AST, prefix: str, module: str = module) -> None:
            doc = ast.get_docstring(node, clean=False) if not isinstance(node, ast.Module) else None
            if doc and ">>>" in doc:
                found.append((module, prefix))
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                    visit(child, f"{prefix}.{child.name}" if prefix else child.name)

        doc = ast.get_docstring(tree, clean=False)
        if doc and ">>>" in doc:
            found.append((module, ""))
        visit(tree, "")
    return found


EXAMPLES = _examples()


# docstrings whose example compiles "mse": their y is a (64, 10) float regression target
REGRESSION = {"fitkit.model.Model", "fitkit.distribute.strategy"}
# docstrings whose example drives a Keras network
KERAS = {"fitkit.callbacks.keras_bridge.KerasCallback", "fitkit.model.Model.save"}


def _namespace(name: str, doc: str) -> dict:
    """What the examples name, built fresh for each docstring: a classifier of 32 features
    into 10 classes (torch, or Keras for KERAS), compiled with Adam and cross-entropy."""
    fitkit.set_seed(0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 32)).astype("float32")
    y = rng.integers(0, 10, 64).astype("int64")
    if name in REGRESSION:
        y = rng.standard_normal((64, 10)).astype("float32")
    if name in KERAS:
        import keras

        def build_net():
            return keras.Sequential([keras.Input((32,)), keras.layers.Dense(10)])

        extra: dict = {"keras": keras}
    else:
        import torch

        def build_net():
            return torch.nn.Sequential(
                torch.nn.Linear(32, 16), torch.nn.ReLU(), torch.nn.Linear(16, 10)
            )

        extra = {"torch": torch}
        optimizers = [torch.optim.SGD(build_net().parameters(), lr=0.1) for _ in range(3)]
        extra.update(zip(("opt", "opt_g", "opt_d"), optimizers, strict=True))
    net = build_net()
    model = fitkit.Model(net)
    model.compile("adam", "cross_entropy", metrics=["accuracy"])
    twin = fitkit.Model(build_net())
    twin.compile("adam", "cross_entropy", metrics=["accuracy"])
    if "history" in doc and "history =" not in doc:
        extra["history"] = model.fit(x, y, epochs=1, verbose=0)
    return {
        "fitkit": fitkit,
        "np": np,
        "build_net": build_net,
        "net": net,
        "model": model,
        "twin": twin,
        "x": x,
        "y": y,
        "xv": x[:16],
        "yv": y[:16],
        "x_val": x[:16],
        "y_val": y[:16],
        "x_test": x[:16],
        **extra,
    }


@pytest.mark.parametrize(
    "module, qualname", EXAMPLES, ids=[f"{m}:{q}" if q else m for m, q in EXAMPLES]
)
def test_docstring_examples_run(module, qualname, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FITKIT_BACKEND", raising=False)  # the backend follows the network
    mod = importlib.import_module(module)
    obj = mod
    for part in qualname.split(".") if qualname else ():
        obj = vars(obj)[part] if isinstance(obj, type) else getattr(obj, part)
    name = f"{module}.{qualname}" if qualname else module
    doc = getattr(obj, "__doc__", "") or ""
    globs = {**vars(mod), **_namespace(name, doc)}  # as a plain doctest: the module's names
    (test,) = doctest.DocTestFinder(recurse=False).find(obj, name, module=mod, globs=globs)
    runner = doctest.DocTestRunner(checker=_Checker(), optionflags=doctest.NORMALIZE_WHITESPACE)
    report: list[str] = []
    result = runner.run(test, out=report.append)
    assert result.failed == 0, "".join(report)


class _Checker(doctest.OutputChecker):
    def check_output(self, want: str, got: str, optionflags: int) -> bool:
        # no output shown: the example is a call whose result the docstring leaves out
        return not want or super().check_output(want, got, optionflags)
