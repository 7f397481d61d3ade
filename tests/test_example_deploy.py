"""examples/deploy.py runs as a newcomer runs it, on both backends: every format of the backend
matches predict, and the served model answers over HTTP and stops with exit code 0."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"
FORMATS = {
    "torch": ("torch", "onnx", "torchscript"),
    "tensorflow": ("tf_saved_model", "litert", "onnx"),
}


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["torch", "tensorflow"])
def test_deploy_example_exports_every_format_and_serves(
    backend: str, tmp_path: pathlib.Path
) -> None:
    env = {
        **os.environ,
        "FITKIT_BACKEND": backend,
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "PYTHONPATH": str(EXAMPLES.parent),
    }
    done = subprocess.run(
        [sys.executable, "deploy.py", "--quick", "--out", str(tmp_path)],
        cwd=EXAMPLES,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    for fmt in FORMATS[backend]:
        diff = re.search(rf"^{fmt} .*from predict ([0-9.e+-]+)$", out, re.M)
        assert diff is not None and float(diff.group(1)) < 1e-5, out
    assert "server stopped with exit code 0" in out
    served = re.search(r"^served: .*from predict ([0-9.e+-]+)$", out, re.M)
    assert served is not None and float(served.group(1)) < 1e-5, out
    accuracy = float(out.split("'accuracy': ")[1].split("}")[0])
    assert accuracy > 0.8
