"""The documentation's snippets run, so that the docs cannot drift from the code.

A ```python block runs when the line right before its fence is one of these markers:

    <!-- test: torch -->        run with FITKIT_BACKEND=torch
    <!-- test: tensorflow -->   run with FITKIT_BACKEND=tensorflow
    <!-- test: both -->         run once per backend
    <!-- test: setup -->        not run alone: it runs first, in the same namespace, before
                                every later marked block of the same file (shared helpers)

Every other ```python block says why it does not run, on the line before its fence:
``<!-- not run: a signature -->`` (checked by ``test_every_python_block_runs_or_says_why``).
A marker, its fence and the closing fence may be indented alike (a block inside a
``=== "PyTorch"`` content tab is indented by 4 spaces; there one blank line may stand between
marker and fence, so that the comment is not rendered in one paragraph with the code); the
code is dedented before it runs.
Each snippet runs in a fresh namespace, in a temporary working directory, with its printed
output captured; ``pytest -rP tests/test_docs.py`` shows what each one printed.
"""

from __future__ import annotations

import pathlib
import re
import textwrap

import pytest

import fitkit

ROOT = pathlib.Path(__file__).resolve().parent.parent
FILES = (
    "README.md",
    "docs/usage.md",
    "docs/checkpoints.md",
    "docs/callbacks.md",
    "docs/styles.md",
    "docs/migration-torchkeras.md",
    "docs/devices.md",
    "docs/distributed.md",
    "docs/getting-started.md",
    "docs/migration-keras.md",
    "docs/migration-lightning.md",
    "docs/huggingface.md",
    "docs/deploy.md",
    "docs/tracking.md",
)
BACKENDS = ("torch", "tensorflow")
# The marker, the fence and the closing fence share one indent (none, or a content tab's).
_BLOCK = re.compile(
    r"^(?P<indent> *)<!--\s*test:\s*(?P<kind>\w+)\s*-->[ \t]*\n(?:[ \t]*\n)?"
    r"(?P=indent)```python[ \t]*\n(?P<code>.*?)\n(?P=indent)```",
    re.DOTALL | re.MULTILINE,
)
_MARKER = re.compile(r"^ *<!--\s*test:", re.MULTILINE)


def _line(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def snippets(path: str) -> list[tuple[str, int, str, str]]:
    """(backend, line, setup code, code) of every runnable block in ``path``."""
    text = (ROOT / path).read_text(encoding="utf-8")
    found, setup = [], []
    for match in _BLOCK.finditer(text):
        kind, line = match["kind"], _line(text, match.start("code"))
        code = textwrap.dedent(match["code"])  # same lines, so the line numbers hold
        if kind == "setup":
            setup.append(code)
            continue
        if kind not in (*BACKENDS, "both"):
            raise ValueError(f"{path}:{line}: unknown marker 'test: {kind}'")
        for backend in BACKENDS if kind == "both" else (kind,):
            found.append((backend, line, "\n\n".join(setup), code))
    return found


CASES = [(path, *snippet) for path in FILES for snippet in snippets(path)]


def test_every_file_has_runnable_snippets():
    for path in FILES:
        assert snippets(path), f"{path} has no block marked <!-- test: ... -->"


def test_only_python_blocks_are_marked():
    """A marker before anything but a ```python fence would silently test nothing."""
    for path in FILES:
        text = (ROOT / path).read_text(encoding="utf-8")
        markers = len(_MARKER.findall(text))
        assert markers == len(_BLOCK.findall(text)), f"{path}: a marker not followed by ```python"


@pytest.mark.parametrize(
    "path, backend, line, setup, code",
    CASES,
    ids=[f"{path}:{line}-{backend}" for path, backend, line, _, _ in CASES],
)
def test_snippet_runs(path, backend, line, setup, code, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("FITKIT_BACKEND", backend)
    monkeypatch.chdir(tmp_path)  # files a snippet saves land here
    # W&B keeps caches and settings under ~ unless told otherwise
    for var, sub in (("WANDB_CACHE_DIR", "c"), ("WANDB_DATA_DIR", "d"), ("WANDB_CONFIG_DIR", "f")):
        monkeypatch.setenv(var, str(tmp_path / ".wandb" / sub))
    monkeypatch.delenv("WANDB_MODE", raising=False)
    fitkit.set_seed(0)
    namespace: dict = {"__name__": "__docs__"}
    if setup:
        exec(compile(setup, f"{path} (setup)", "exec"), namespace)
    exec(compile("\n" * (line - 1) + code, path, "exec"), namespace)
    print(f"--- {path}:{line} on {backend} printed:\n{capsys.readouterr().out}")  # pytest -rP


def test_the_site_builds_with_no_broken_link(tmp_path):
    """mkdocs in strict mode: a broken link, a missing page or a docstring the API
    reference cannot render fails the build."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (tmp_path / "site" / "api" / "index.html").exists()


def test_every_python_block_runs_or_says_why():
    """A ```python block in the docs is run by the tests, or marked with why it cannot be."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    unmarked = []
    for page in pages:
        lines = page.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            indent = line[: len(line) - len(line.lstrip(" "))]  # the marker's indent too
            before = lines[i - 1] if i else ""
            if indent and not before.strip() and i > 1:  # inside a tab: a blank line between
                before = lines[i - 2]
            if line.strip() == "```python" and not re.match(
                re.escape(indent) + r"<!--\s*(test:\s*\w+|not run:\s*\S.*?)\s*-->", before
            ):
                unmarked.append(f"{page.relative_to(ROOT)}:{i + 1}")
    assert not unmarked, f"python blocks neither run nor marked '<!-- not run: why -->': {unmarked}"


def test_every_page_with_runnable_blocks_is_run():
    marked = [
        p
        for p in sorted((ROOT / "docs").glob("*.md"))
        if "<!-- test:" in p.read_text(encoding="utf-8")
    ]
    assert {str(p.relative_to(ROOT)) for p in marked} <= set(FILES)
