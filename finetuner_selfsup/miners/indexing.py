"""Turn boolean selection masks into the index tensors miners return.

Miners decide *which* pairs are eligible as ``[N, N]`` boolean masks; these helpers
enumerate them. :func:`triplets_from_masks` avoids the ``[N, N, N]`` mask a naive
implementation builds, so memory grows with the number of triplets, not with ``N**3``.
"""
from __future__ import annotations

import torch

from .base import PairIndices, TripletIndices


def _exclusive_cumsum(counts: torch.Tensor) -> torch.Tensor:
    return torch.cumsum(counts, 0) - counts


def pairs_from_masks(similar: torch.Tensor, dissimilar: torch.Tensor) -> PairIndices:
    """Pairs ``(i, j)`` where ``similar[i, j]`` (target 1), then where ``dissimilar[i, j]``
    (target 0); each group in row-major order.
    """
    sim_i, sim_j = torch.nonzero(similar, as_tuple=True)
    dis_i, dis_j = torch.nonzero(dissimilar, as_tuple=True)
    target = torch.cat([torch.ones_like(sim_i), torch.zeros_like(dis_i)])
    return torch.cat([sim_i, dis_i]), torch.cat([sim_j, dis_j]), target


def triplets_from_masks(positive: torch.Tensor, negative: torch.Tensor) -> TripletIndices:
    """All ``(a, p, n)`` with ``positive[a, p]`` and ``negative[a, n]``.

    Ordered by anchor, then positive, then negative (the order in which
    ``torch.where(positive[:, :, None] & negative[:, None, :])`` would list them).
    """
    pos_anchor, pos_index = torch.nonzero(positive, as_tuple=True)
    _, neg_index = torch.nonzero(negative, as_tuple=True)  # grouped by anchor, ascending
    negatives_per_anchor = negative.sum(dim=1)
    first_negative = _exclusive_cumsum(negatives_per_anchor)

    # Each (anchor, positive) pair is repeated once per negative of its anchor.
    repeats = negatives_per_anchor[pos_anchor]
    anchor = pos_anchor.repeat_interleave(repeats)
    positive_idx = pos_index.repeat_interleave(repeats)
    # Position of each output row within its (anchor, positive) run: 0, 1, ..., k-1.
    run_start = _exclusive_cumsum(repeats).repeat_interleave(repeats)
    within_run = torch.arange(anchor.numel(), device=anchor.device) - run_start
    negative_idx = neg_index[first_negative[pos_anchor].repeat_interleave(repeats) + within_run]
    return anchor, positive_idx, negative_idx
