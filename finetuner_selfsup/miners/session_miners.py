"""Miners for session data (Finetuner 0.4's ``SessionDataset``).

``labels`` is ``(session_ids, match_types)``: items of one session belong together;
match type ``0`` marks the anchor, ``1`` a positive match and ``-1`` a negative match
(any negative value is treated as a negative match). Only items of the same session are
combined, as in Finetuner's ``get_session_pairs``/``get_session_triplets``; the same
pairs/triplets are returned, computed with tensor ops instead of Python loops (the order
of the tuples differs, which no loss depends on).
"""
from __future__ import annotations

from typing import Sequence, Tuple

import torch

from .base import PairIndices, SessionLabels, SessionMiner, TripletIndices, as_label_tensor
from .indexing import pairs_from_masks, triplets_from_masks


def _split(labels: SessionLabels, distances: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(labels, Sequence) or len(labels) != 2:
        raise ValueError(
            "Session miners expect labels as a pair (session_ids, match_types), got "
            f"{type(labels).__name__}."
        )
    sessions = as_label_tensor(labels[0], distances, "session_ids")
    match_types = as_label_tensor(labels[1], distances, "match_types")
    return sessions, match_types


def session_pair_masks(
    sessions: torch.Tensor, match_types: torch.Tensor
) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(similar, dissimilar)`` upper-triangular ``[N, N]`` masks of same-session pairs:
    similar if neither item is a negative match, dissimilar if exactly one is (pairs of
    two negative matches are not used)."""
    same_session = torch.triu(sessions.unsqueeze(1) == sessions.unsqueeze(0), diagonal=1)
    negative = match_types < 0
    negatives_in_pair = negative.unsqueeze(1).int() + negative.unsqueeze(0).int()
    return same_session & (negatives_in_pair == 0), same_session & (negatives_in_pair == 1)


def session_triplet_masks(
    sessions: torch.Tensor, match_types: torch.Tensor
) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(positives, negatives)`` ``[N, N]`` masks for triplets: within a session, any
    two distinct non-negative items form an (anchor, positive) pair in both orders, and
    every negative match of the session is a negative of each of them."""
    same_session = sessions.unsqueeze(1) == sessions.unsqueeze(0)
    negative = match_types < 0
    eye = torch.eye(len(sessions), dtype=torch.bool, device=sessions.device)
    positives = same_session & ~eye & ~negative.unsqueeze(1) & ~negative.unsqueeze(0)
    negatives = same_session & ~negative.unsqueeze(1) & negative.unsqueeze(0)
    return positives, negatives


class SiameseSessionMiner(SessionMiner):
    """All pairs within each session, as ``(i, j, target)`` with ``i < j``."""

    def mine(self, labels: SessionLabels, distances: torch.Tensor) -> PairIndices:
        return pairs_from_masks(*session_pair_masks(*_split(labels, distances)))


class TripletSessionMiner(SessionMiner):
    """All ``(anchor, positive, negative)`` triplets within each session."""

    def mine(self, labels: SessionLabels, distances: torch.Tensor) -> TripletIndices:
        return triplets_from_masks(*session_triplet_masks(*_split(labels, distances)))
