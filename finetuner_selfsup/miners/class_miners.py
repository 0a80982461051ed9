"""Miners for class data (``labels``: one class id per item).

Items with the same class are positives of each other (an item is never its own
positive), items of different classes are negatives.
"""
from __future__ import annotations

from typing import Tuple

import torch

from .base import ClassMiner, PairIndices, TripletIndices, as_label_tensor
from .indexing import pairs_from_masks, triplets_from_masks
from .strategies import check_strategies, select_by_strategy


def class_masks(labels: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(positives, negatives)`` ``[N, N]`` bool masks: same class (off the diagonal),
    different class."""
    same = labels.unsqueeze(1) == labels.unsqueeze(0)
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    return same & ~eye, ~same


def _unordered(selected: torch.Tensor) -> torch.Tensor:
    """Each selected pair once, as ``(i, j)`` with ``i < j``."""
    return torch.triu(selected | selected.transpose(0, 1), diagonal=1)


class SiameseMiner(ClassMiner):
    """All pairs of a batch: every unordered same-class pair (target 1) and every
    different-class pair (target 0), as ``(i, j, target)`` with ``i < j``."""

    def mine(self, labels: torch.Tensor, distances: torch.Tensor) -> PairIndices:
        positives, negatives = class_masks(as_label_tensor(labels, distances))
        return pairs_from_masks(torch.triu(positives, 1), torch.triu(negatives, 1))


class TripletMiner(ClassMiner):
    """All triplets ``(anchor, positive, negative)`` of a batch (ordered anchor/positive
    pairs of one class, times every item of another class)."""

    def mine(self, labels: torch.Tensor, distances: torch.Tensor) -> TripletIndices:
        positives, negatives = class_masks(as_label_tensor(labels, distances))
        return triplets_from_masks(positives, negatives)


class _EasyHardMixin:
    def __init__(self, pos_strategy: str = "hard", neg_strategy: str = "hard") -> None:
        """:param pos_strategy: ``'hard'``, ``'semihard'``, ``'easy'`` or ``'all'``.
        :param neg_strategy: ``'hard'``, ``'semihard'``, ``'easy'`` or ``'all'``.

        See :mod:`finetuner_selfsup.miners.strategies` for their meaning and the
        combinations that are not allowed (``ValueError``).
        """
        check_strategies(pos_strategy, neg_strategy)
        self.pos_strategy = pos_strategy
        self.neg_strategy = neg_strategy

    def _select(self, labels, distances: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        positives, negatives = class_masks(as_label_tensor(labels, distances))
        return select_by_strategy(
            positives, negatives, distances, self.pos_strategy, self.neg_strategy
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(pos_strategy={self.pos_strategy!r}, "
            f"neg_strategy={self.neg_strategy!r})"
        )


class TripletEasyHardMiner(_EasyHardMixin, ClassMiner):
    """Triplets from per-anchor easy/hard/semihard selection.

    For every anchor, positives and negatives are selected by ``pos_strategy`` and
    ``neg_strategy`` (e.g. ``'hard'``/``'hard'``: the furthest positive with the closest
    negative, "batch hard"); the triplets are all combinations of the anchor's selected
    positives and negatives. Anchors lacking either are skipped.
    """

    def mine(self, labels: torch.Tensor, distances: torch.Tensor) -> TripletIndices:
        kept_pos, kept_neg = self._select(labels, distances)
        return triplets_from_masks(kept_pos, kept_neg)


class SiameseEasyHardMiner(_EasyHardMixin, ClassMiner):
    """Pairs from per-anchor easy/hard/semihard selection.

    Every item is an anchor: it contributes its selected positive pair(s) (target 1) and
    negative pair(s) (target 0), independently of each other (except that semihard
    needs the other strategy's sample). Pairs are returned as ``(i, j, target)`` with
    ``i < j``; a pair selected from both of its ends appears once, so ``'all'``/``'all'``
    gives exactly :class:`SiameseMiner`'s pairs.

    Unlike Finetuner 0.4.1, which only looks at partners ``j > i`` of item ``i`` (so
    the last item of a batch is never an anchor), every item considers all others.
    """

    def mine(self, labels: torch.Tensor, distances: torch.Tensor) -> PairIndices:
        kept_pos, kept_neg = self._select(labels, distances)
        return pairs_from_masks(_unordered(kept_pos), _unordered(kept_neg))
