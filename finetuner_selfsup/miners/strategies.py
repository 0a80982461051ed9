"""Easy/hard/semihard selection of positives and negatives per anchor (vectorised).

Given, for every anchor (row) ``a``, its candidate positives ``P(a)`` and candidate
negatives ``N(a)`` as boolean ``[N, N]`` masks and the distance matrix ``d``:

=================  =============================================================
``pos_strategy``   positive(s) kept for anchor ``a``
=================  =============================================================
``'hard'``         the furthest positive: ``argmax_{p in P(a)} d[a, p]``
``'easy'``         the closest positive: ``argmin_{p in P(a)} d[a, p]``
``'semihard'``     the furthest positive *closer than the selected negative* ``n*``:
                   ``argmax {d[a, p] : p in P(a), d[a, p] < d[a, n*]}``
``'all'``          every ``p in P(a)``
=================  =============================================================

=================  =============================================================
``neg_strategy``   negative(s) kept for anchor ``a``
=================  =============================================================
``'hard'``         the closest negative: ``argmin_{n in N(a)} d[a, n]``
``'easy'``         the furthest negative: ``argmax_{n in N(a)} d[a, n]``
``'semihard'``     the closest negative *further than the selected positive* ``p*``:
                   ``argmin {d[a, n] : n in N(a), d[a, n] > d[a, p*]}``
``'all'``          every ``n in N(a)``
=================  =============================================================

``'semihard'`` is relative to the single sample the *other* strategy selects, so (as in
Finetuner 0.4) both cannot be ``'semihard'`` and ``'semihard'`` cannot be combined with
``'all'``. The selected sample is picked first (``'hard'``/``'easy'`` as in the tables),
then the semihard one among the candidates on the right side of it. Note that this is
Finetuner's notion of semihard: unlike FaceNet's, no margin bounds it from the other side.

Anchors with no candidate (or, for semihard, no candidate on the right side, or no
sample selected by the other strategy) get no sample of that kind. Ties are broken
towards the lowest index.

Differences from Finetuner 0.4.1's ``TorchStrategicMiningHelper``, which marks
non-candidates with distance 0: here candidates come from the masks only, so a candidate
at distance exactly 0 (a duplicate) is eligible like any other (upstream silently
ignores it), and a semihard positive is never selected for an anchor without negatives
(upstream compares it to a meaningless threshold).
"""
from __future__ import annotations

from typing import Tuple

import torch

#: Names accepted for ``pos_strategy`` and ``neg_strategy``.
STRATEGIES: Tuple[str, ...] = ("hard", "semihard", "easy", "all")


def check_strategies(pos_strategy: str, neg_strategy: str) -> None:
    """Raise ``ValueError`` for unknown strategies or an unsupported combination."""
    for name, value in (("pos_strategy", pos_strategy), ("neg_strategy", neg_strategy)):
        if value not in STRATEGIES:
            raise ValueError(
                f"{name} must be one of {', '.join(map(repr, STRATEGIES))}, got {value!r}."
            )
    if pos_strategy == "semihard" and neg_strategy == "semihard":
        raise ValueError(
            "pos_strategy and neg_strategy cannot both be 'semihard': a semihard sample "
            "is chosen relative to the single sample the other strategy selects."
        )
    if "semihard" in (pos_strategy, neg_strategy) and "all" in (pos_strategy, neg_strategy):
        raise ValueError(
            "When one strategy is 'semihard', the other must select a single sample per "
            f"anchor ('hard' or 'easy'), not 'all'; got pos_strategy={pos_strategy!r}, "
            f"neg_strategy={neg_strategy!r}."
        )


def _select(
    candidates: torch.Tensor, distances: torch.Tensor, furthest: bool
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per row, keep only the furthest (or closest) candidate.

    :return: ``(selected, selected_distance)``: a boolean ``[N, N]`` mask with at most
        one ``True`` per row, and the ``[N]`` distance of that sample (NaN for rows
        without candidates, so every comparison with it is False).
    """
    fill = float("-inf") if furthest else float("inf")
    masked = distances.masked_fill(~candidates, fill)
    column = masked.argmax(dim=1) if furthest else masked.argmin(dim=1)
    has_any = candidates.any(dim=1)
    selected = torch.zeros_like(candidates)
    rows = torch.arange(len(candidates), device=candidates.device)
    selected[rows[has_any], column[has_any]] = True
    chosen = distances[rows, column]
    chosen = torch.where(has_any, chosen, torch.full_like(chosen, float("nan")))
    return selected, chosen


def _apply(
    strategy: str, candidates: torch.Tensor, distances: torch.Tensor, hard_is_furthest: bool
) -> Tuple[torch.Tensor, torch.Tensor]:
    if strategy == "all":
        return candidates, torch.full((len(candidates),), float("nan"), device=distances.device)
    return _select(candidates, distances, furthest=(strategy == "hard") == hard_is_furthest)


def select_by_strategy(
    positives: torch.Tensor,
    negatives: torch.Tensor,
    distances: torch.Tensor,
    pos_strategy: str = "hard",
    neg_strategy: str = "hard",
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Apply the strategies (see the module docstring) row by row.

    :param positives: ``[N, N]`` bool mask, ``positives[a, p]``: ``p`` may be ``a``'s positive.
    :param negatives: ``[N, N]`` bool mask, ``negatives[a, n]``: ``n`` may be ``a``'s negative.
    :param distances: ``[N, N]`` distances (not modified).
    :return: the kept positives and negatives as ``[N, N]`` bool masks (subsets of the inputs).
    """
    check_strategies(pos_strategy, neg_strategy)
    positives, negatives = positives.bool(), negatives.bool()
    distances = distances.detach()
    if not distances.is_floating_point():
        distances = distances.float()

    if pos_strategy == "semihard":
        kept_neg, neg_dist = _apply(neg_strategy, negatives, distances, hard_is_furthest=False)
        closer = distances < neg_dist.unsqueeze(1)  # False where the anchor has no negative
        kept_pos, _ = _select(positives & closer, distances, furthest=True)
    elif neg_strategy == "semihard":
        kept_pos, pos_dist = _apply(pos_strategy, positives, distances, hard_is_furthest=True)
        further = distances > pos_dist.unsqueeze(1)  # False where the anchor has no positive
        kept_neg, _ = _select(negatives & further, distances, furthest=False)
    else:
        kept_pos, _ = _apply(pos_strategy, positives, distances, hard_is_furthest=True)
        kept_neg, _ = _apply(neg_strategy, negatives, distances, hard_is_furthest=False)
    return kept_pos, kept_neg
