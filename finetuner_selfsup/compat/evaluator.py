"""Let Finetuner 0.4.1's ``Evaluator`` (and so its ``EvaluationCallback``) run on docarray 0.21.

Upstream calls ``DocumentArray.evaluate(ground_truth, metric=f, metric_name=n)`` and expects a
float. docarray 0.21 takes lists (``metrics=[f], metric_names=[n]``) and returns a dict, so
every evaluation crashed with "'function' object is not iterable". Only that call changes;
matching, embedding and the metric set stay upstream's.
"""
from __future__ import annotations

from types import ModuleType
from typing import Any, Dict


def _evaluate(
    self: Any,
    exclude_self: bool = True,
    limit: int = 20,
    distance: str = "cosine",
    num_workers: int = 1,
    **embed_kwargs: Any,
) -> Dict[str, float]:
    """Upstream ``Evaluator.evaluate`` with docarray 0.21's ``evaluate`` call."""
    self._score_docs(
        exclude_self=exclude_self, limit=limit, distance=distance, num_workers=num_workers,
        **embed_kwargs,
    )
    metrics = {}
    for metric_name, (metric_func, metric_kwargs) in self._metrics.items():
        result = self._summary.evaluate(
            ground_truth=self._ground_truth, metrics=[metric_func], metric_names=[metric_name],
            **metric_kwargs,
        )
        metrics[metric_name] = result[metric_name]
    for doc in self._query_data:
        doc.evaluations = self._summary[doc.id].evaluations
    return metrics


def patch_evaluation_module(module: ModuleType) -> None:
    """Replace ``Evaluator.evaluate`` when docarray has the list-based API (idempotent)."""
    import inspect

    from docarray import DocumentArray

    if "metrics" in inspect.signature(DocumentArray.evaluate).parameters:
        module.Evaluator.evaluate = _evaluate
