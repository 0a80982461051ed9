"""What the engine's error messages say about the data they are about.

A batch only carries dataset positions (:attr:`~.collate.Batch.indices`); the datasets of
this package map them back to documents (``dataset.document(i)`` for sessions,
``dataset.docs[i]`` otherwise), so that e.g. a non-finite loss can name its documents.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, List, Sequence

import torch

from ..documents import describe_document


def batch_documents(dataset: Any, indices: Sequence[int], limit: int = 5) -> str:
    """The documents at ``indices`` (each once, in batch order): the first ``limit``, then
    how many more; ``''`` for a dataset that cannot say."""
    unique: List[int] = list(dict.fromkeys(int(i) for i in indices))
    find = getattr(dataset, "document", None)
    docs = getattr(dataset, "docs", None)
    if find is None and docs is None:
        return ""
    named = [describe_document(find(i) if find is not None else docs[i]) for i in unique[:limit]]
    more = len(unique) - limit
    return ", ".join(named) + (f" and {more} more" if more > 0 else "")


def non_finite_items(inputs: Any, indices: Sequence[int]) -> List[int]:
    """Positions (from ``indices``) whose input row holds NaN or inf; empty when the inputs
    are not one tensor with a row per index (e.g. a user's collate_fn built a dict)."""
    if not isinstance(inputs, torch.Tensor) or not inputs.is_floating_point():
        return []
    if inputs.ndim == 0 or inputs.shape[0] != len(indices):
        return []
    bad_rows = (~torch.isfinite(inputs.reshape(len(indices), -1))).any(dim=1)
    return list(dict.fromkeys(int(indices[row]) for row in bad_rows.nonzero().flatten().tolist()))


@contextmanager
def blame_eval_data() -> Iterator[None]:
    """Say that a ValueError raised while batching or evaluating ``eval_data`` is about
    ``eval_data``: the sampler's and collation's messages only speak of "the data", and the
    user's train_data may be fine with the same settings."""
    try:
        yield
    except ValueError as exc:
        if "eval_data" in str(exc):
            raise
        raise ValueError(
            f"eval_data: {exc} (ft.fit batches eval_data like train_data: with the same "
            f"batch_size, num_items_per_class and preprocess_fn.)"
        ) from exc
