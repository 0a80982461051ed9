"""Let Finetuner 0.4.1's callbacks run on numpy 2, which removed ``np.Inf``.

``EarlyStopping`` and ``BestModelCheckpoint`` initialise their best value with ``np.Inf``.
Rather than adding the removed name back to numpy for everybody, each of these callback
modules gets its own view of numpy that also answers ``Inf``.
"""
from __future__ import annotations

from types import ModuleType

import numpy


class _NumpyWithInf(ModuleType):
    """numpy, plus the ``Inf`` alias numpy 2 dropped."""

    Inf = numpy.inf

    def __getattr__(self, name: str):
        return getattr(numpy, name)


_NUMPY_WITH_INF = _NumpyWithInf("numpy")


def patch_callback_module(module: ModuleType) -> None:
    """Point the callback module's ``np`` at numpy-with-``Inf`` (idempotent)."""
    if not hasattr(numpy, "Inf"):
        module.np = _NUMPY_WITH_INF
