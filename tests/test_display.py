"""Display: plain lines where stdout is no terminal, a live bar where it is; step logs name
the epoch; summary's input_shape vocabulary."""

from __future__ import annotations

import io
import sys
import types

import pytest

import fitkit
from fitkit.display import EpochDisplay, interactive, step_label, summary_shapes
from fitkit.errors import FitkitValueError


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def drive(display: EpochDisplay, epochs: int = 2, steps: int = 4) -> None:
    """What the facade does during a fit, with a step log every second step."""
    for epoch in range(epochs):
        display.begin_epoch(epoch, steps)
        for step in range(1, steps + 1):
            display.advance(1)
            if step % 2 == 0:
                display.step_log(step, {"loss": 0.1234, "mae": 0.5})
        display.end_epoch(epoch, {"loss": 0.1234, "mae": 0.5}, 0.1)
    display.close()


def test_step_label_carries_the_epoch():
    assert step_label(1, 30) == "[epoch = 2, step = 30]"
    assert step_label(None, 30) == "[step = 30]"


def test_not_a_terminal_prints_plain_lines(capsys):
    assert not interactive()  # pytest's capture is no terminal
    drive(EpochDisplay(verbose=1, epochs=2))
    out = capsys.readouterr().out
    assert "\r" not in out and "it/s" not in out and "step/s" not in out
    assert "[epoch = 1, step = 2] loss: 0.1234 - mae: 0.5000" in out.splitlines()
    assert "[epoch = 2, step = 4] loss: 0.1234 - mae: 0.5000" in out.splitlines()
    assert out.count("| epoch |") == 2 and out.count("=" * 60) == 2  # the tutorial's table


def test_terminal_keeps_the_live_bar(monkeypatch):
    terminal = Terminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    assert interactive()
    drive(EpochDisplay(verbose=1, epochs=1))
    out = terminal.getvalue()
    assert "\r" in out and "Epoch 1/1" in out  # tqdm's redrawn frames
    assert "[epoch = 1, step = 2] loss: 0.1234" in out and "| epoch |" in out


def test_jupyter_kernel_counts_as_interactive(monkeypatch):
    shell = type("ZMQInteractiveShell", (), {})()
    fake = types.SimpleNamespace(get_ipython=lambda: shell)
    monkeypatch.setitem(sys.modules, "IPython", fake)
    assert interactive(io.StringIO())
    terminal_ipython = type("TerminalInteractiveShell", (), {})()
    monkeypatch.setitem(
        sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: terminal_ipython)
    )
    assert not interactive(io.StringIO())


def test_verbose_two_and_zero(capsys):
    drive(EpochDisplay(verbose=2, epochs=2))
    out = capsys.readouterr().out
    assert "[epoch = 2, step = 4] loss: 0.1234" in out and "Epoch 2/2 - " in out
    assert "| epoch |" not in out
    drive(EpochDisplay(verbose=0, epochs=2))
    assert capsys.readouterr().out == ""


def test_fit_in_a_pipe_prints_plain_lines_with_epochs(kit, regression, capsys):
    model = fitkit.Model(kit.mlp(4, 1))
    model.compile("adam", "mse")
    model.fit(*regression, batch_size=32, epochs=2, verbose=1, log_step_freq=4)
    out = capsys.readouterr().out
    assert "\r" not in out
    assert "[epoch = 1, step = 4] loss:" in out and "[epoch = 2, step = 8] loss:" in out
    assert out.count("| epoch |") == 2


@pytest.mark.parametrize(
    "given, expected",
    [
        (8, (8,)),
        ((8,), (8,)),
        ([8], (8,)),
        ((1, 28, 28), (1, 28, 28)),
        ((), ()),
        ([(3,), 2], [(3,), (2,)]),
        (((3,), (2, 4)), [(3,), (2, 4)]),
        ({"a": 3, "b": (2, 4)}, {"a": (3,), "b": (2, 4)}),
    ],
)
def test_summary_shapes(given, expected):
    assert summary_shapes(given) == expected


@pytest.mark.parametrize("bad", ["8", (None, 8), (-1,), [(3,), [(2,)]], 2.5, {"a": {"b": 3}}])
def test_summary_shapes_refuse_what_is_no_shape(bad):
    with pytest.raises(FitkitValueError, match="input_shape"):
        summary_shapes(bad)
