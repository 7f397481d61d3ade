"""fitkit/mapped.py: the read-ahead thread keeps order, raises its errors, and stops early."""

from __future__ import annotations

import threading

import pytest

from fitkit.mapped import read_ahead


def test_read_ahead_yields_every_item_in_order():
    assert list(read_ahead(iter(range(50)))) == list(range(50))


def test_an_error_in_the_reader_is_raised_to_the_consumer():
    def broken():
        yield 1
        raise OSError("disk gone")

    items = read_ahead(broken())
    assert next(items) == 1
    with pytest.raises(OSError, match="disk gone"):
        next(items)


def test_the_reader_stops_when_the_consumer_stops_early():
    produced = []

    def endless():
        while True:
            produced.append(1)
            yield len(produced)

    before = set(threading.enumerate())
    items = read_ahead(endless(), depth=2)
    assert [next(items) for _ in range(3)] == [1, 2, 3]
    (reader,) = (t for t in set(threading.enumerate()) - before if t.name == "fitkit-read-ahead")
    items.close()  # what islice / a break does to the generator
    reader.join(timeout=10)
    assert not reader.is_alive(), "the reader thread still runs after the consumer stopped"
    count = len(produced)  # at most depth + 1 items ahead of the 3 taken
    assert count <= 3 + 2 + 1
