"""Triplet margin loss over mined triplets."""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F

from ..miners import TripletMiner, TripletSessionMiner
from ..miners.base import Miner
from .base import TupleLoss


class TripletLoss(TupleLoss):
    """Loss of a triplet ``(a, p, n)``::

        max(0, d(a, p) - d(a, n) + margin)

    averaged over the mined triplets: each anchor should be closer to its positive than
    to its negative by at least ``margin``. Default miner: all triplets
    (:class:`~finetuner_selfsup.miners.TripletMiner`, or
    :class:`~finetuner_selfsup.miners.TripletSessionMiner` for session labels); pass
    e.g. ``TripletEasyHardMiner()`` for batch-hard mining.
    """

    tuple_name = "triplets"

    def __init__(
        self, distance: str = "cosine", margin: float = 1.0, miner: Optional[Miner] = None
    ) -> None:
        super().__init__(distance=distance, margin=margin, miner=miner)

    def get_default_miner(
        self, is_session_dataset: bool
    ) -> Union[TripletMiner, TripletSessionMiner]:
        return TripletSessionMiner() if is_session_dataset else TripletMiner()

    def tuple_losses(
        self, distances: torch.Tensor, indices: Sequence[torch.Tensor]
    ) -> torch.Tensor:
        anchor, positive, negative = indices
        return F.relu(distances[anchor, positive] - distances[anchor, negative] + self.margin)
