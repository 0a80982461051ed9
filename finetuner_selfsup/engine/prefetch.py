"""Load the next batches in a background thread while the GPU trains on this one.

With ``num_workers=0`` (the tutorial's call) and views made on the GPU, the CPU's part of a
batch is reading cached sources and stacking them into pinned uint8 memory. Done in the
training thread, the GPU would wait for it every step; done here, ``depth`` batches ahead,
it overlaps the GPU's work (PIL decoding and torch's copies release the GIL).

Only for loaders whose batches draw no random numbers (the views are drawn later, in the
training thread), so seeded runs stay repeatable.
"""
from __future__ import annotations

import queue
import threading
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")

_DONE = object()


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def prefetch(iterable: Iterable[T], depth: int = 2) -> Iterator[T]:
    """The items of ``iterable``, produced up to ``depth`` ahead by a daemon thread.

    An exception in the producer is raised in the consumer at the point it occurred; a
    consumer that stops early (break, exception) stops the producer too.
    """
    items: "queue.Queue[object]" = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in iterable:
                if not put(item):
                    return
        except BaseException as exc:  # handed to the consumer
            put(_Failure(exc))
            return
        put(_DONE)

    thread = threading.Thread(target=produce, name="finetuner-selfsup-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = items.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item  # type: ignore[misc]
    finally:
        stop.set()
