"""Contrastive (siamese) loss over mined pairs."""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F

from ..miners import SiameseMiner, SiameseSessionMiner
from ..miners.base import Miner
from .base import TupleLoss


class SiameseLoss(TupleLoss):
    """Loss of a pair ``(i, j)`` with target ``y`` (1 similar, 0 dissimilar)::

        y * d(i, j) + (1 - y) * max(0, margin - d(i, j))

    averaged over the mined pairs: similar pairs are pulled together, dissimilar ones
    pushed at least ``margin`` apart. Default miner: all pairs
    (:class:`~finetuner_selfsup.miners.SiameseMiner`, or
    :class:`~finetuner_selfsup.miners.SiameseSessionMiner` for session labels).
    """

    tuple_name = "pairs"

    def __init__(
        self, distance: str = "cosine", margin: float = 1.0, miner: Optional[Miner] = None
    ) -> None:
        super().__init__(distance=distance, margin=margin, miner=miner)

    def get_default_miner(
        self, is_session_dataset: bool
    ) -> Union[SiameseMiner, SiameseSessionMiner]:
        return SiameseSessionMiner() if is_session_dataset else SiameseMiner()

    def tuple_losses(
        self, distances: torch.Tensor, indices: Sequence[torch.Tensor]
    ) -> torch.Tensor:
        first, second, target = indices
        pair_distance = distances[first, second]
        similar = target.to(pair_distance.dtype)
        return similar * pair_distance + (1 - similar) * F.relu(self.margin - pair_distance)
