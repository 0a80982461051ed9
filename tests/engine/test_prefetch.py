"""The background batch loader used when views are made on the GPU."""
from __future__ import annotations

import threading
import time

import pytest

from finetuner_selfsup.engine.prefetch import prefetch


def test_yields_every_item_in_order_from_another_thread():
    seen_threads = set()

    def items():
        for i in range(50):
            seen_threads.add(threading.current_thread().name)
            yield i

    assert list(prefetch(items(), depth=3)) == list(range(50))
    assert seen_threads == {"finetuner-selfsup-prefetch"}


def test_runs_ahead_by_at_most_depth():
    produced = []

    def items():
        for i in range(10):
            produced.append(i)
            yield i

    iterator = prefetch(items(), depth=2)
    assert next(iterator) == 0
    time.sleep(0.3)
    # item 0 consumed, 2 waiting in the queue, 1 more blocked in put(): 4 produced at most
    assert len(produced) <= 4
    iterator.close()


def test_producer_error_reaches_the_consumer():
    def items():
        yield 1
        raise ValueError("broken file 007.jpg")

    iterator = prefetch(items())
    assert next(iterator) == 1
    with pytest.raises(ValueError, match="007.jpg"):
        next(iterator)


def test_early_stop_ends_the_producer():
    def items():
        i = 0
        while True:
            yield i
            i += 1

    iterator = prefetch(items(), depth=1)
    next(iterator)
    iterator.close()
    time.sleep(0.3)
    assert not any(t.name == "finetuner-selfsup-prefetch" and t.is_alive() for t in threading.enumerate())
