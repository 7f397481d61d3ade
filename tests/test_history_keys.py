"""The learning rate is logged under Keras 3's key, ``learning_rate``, in the history and the
CSV; files written when it was ``lr`` load under the new name."""

from __future__ import annotations

import csv
import json
import zipfile

import pytest
from conftest import compiled, make_regression

import fitkit


def test_the_rate_is_logged_as_learning_rate_in_history_and_csv(kit, tmp_path):
    x, y = make_regression(n=64)
    model, _ = compiled(kit, lr=0.05)
    log = tmp_path / "log.csv"
    history = model.fit(x, y, epochs=2, verbose=0, callbacks=[fitkit.callbacks.CSVLogger(str(log))])
    assert history.history["learning_rate"] == pytest.approx([0.05, 0.05])
    assert "lr" not in history.history
    assert float(next(iter(csv.DictReader(open(log))))["learning_rate"]) == pytest.approx(0.05)


def test_a_checkpoint_written_with_lr_loads_its_history_as_learning_rate(kit, tmp_path):
    x, y = make_regression(n=64)
    model, _ = compiled(kit, lr=0.05)
    model.fit(x, y, epochs=2, verbose=0)
    path = tmp_path / "old.fitkit"
    model.save_checkpoint(str(path))
    with zipfile.ZipFile(path) as archive:  # as an older fitkit wrote it
        members = {name: archive.read(name) for name in archive.namelist()}
    header = json.loads(members["fitkit.json"])
    saved = header["meta"]["history"]["history"]
    saved["lr"] = saved.pop("learning_rate")
    members["fitkit.json"] = json.dumps(header).encode()
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    fresh, _ = compiled(kit, lr=0.05)
    fresh.load_checkpoint(str(path))
    assert fresh.history.history["learning_rate"] == pytest.approx([0.05, 0.05])
    fresh.fit(x, y, epochs=3, verbose=0)  # continues the same column
    assert fresh.history.history["learning_rate"] == pytest.approx([0.05] * 3)
