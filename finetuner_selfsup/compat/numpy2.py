"""Let Finetuner 0.4.1 and docarray 0.21 modules run on numpy 2, which removed some aliases.

``EarlyStopping`` and ``BestModelCheckpoint`` start from ``np.Inf``; docarray's
``dcg_at_k`` (behind ``ndcg_at_k``, used by Finetuner's ``Evaluator``) calls
``np.asfarray``. Rather than adding the removed names back to numpy for everybody, each of
these modules gets its own view of numpy that also answers them.
"""
from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy


def _asfarray(a: Any, dtype: Any = numpy.float64) -> numpy.ndarray:
    """numpy 1's ``asfarray``: an array of floating dtype (float64 unless a float dtype is given)."""
    if not numpy.issubdtype(numpy.dtype(dtype), numpy.inexact):
        dtype = numpy.float64
    return numpy.asarray(a, dtype=dtype)


class _NumpyWithRemovedAliases(ModuleType):
    """numpy, plus the aliases numpy 2 dropped that these old modules use."""

    Inf = numpy.inf
    asfarray = staticmethod(_asfarray)

    def __getattr__(self, name: str) -> Any:
        return getattr(numpy, name)


_NUMPY_COMPAT = _NumpyWithRemovedAliases("numpy")


def patch_module(module: ModuleType) -> None:
    """Point ``module.np`` at numpy-with-the-old-aliases (idempotent; no-op on numpy 1)."""
    if not hasattr(numpy, "Inf") or not hasattr(numpy, "asfarray"):
        module.np = _NUMPY_COMPAT
