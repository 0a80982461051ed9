"""Common machinery of losses over mined tuples (pairs or triplets).

``forward(embeddings, labels)`` computes the distance matrix once, lets the miner pick
tuples on a detached copy of it, and averages the per-tuple losses of the subclass.
This is Finetuner 0.4's ``BaseLoss`` contract: the ``distance`` and ``miner``
attributes, ``compute(embeddings, indices)`` and ``get_default_miner(is_session)``.
"""
from __future__ import annotations

import abc
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from ..miners.base import Miner
from .distances import check_distance, get_distance

#: Class labels (1-D tensor) or session labels ``(session_ids, match_types)``.
Labels = Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor], List[torch.Tensor]]


def is_session_labels(labels: Labels) -> bool:
    """Session batches carry ``(session_ids, match_types)``; class batches one tensor."""
    return isinstance(labels, (tuple, list))


class TupleLoss(nn.Module, abc.ABC):
    """Base class of :class:`SiameseLoss` and :class:`TripletLoss`."""

    #: What the mined tuples are called in error messages.
    tuple_name = "tuples"

    def __init__(
        self, distance: str = "cosine", margin: float = 1.0, miner: Optional[Miner] = None
    ) -> None:
        """:param distance: ``'cosine'``, ``'euclidean'`` or ``'sqeuclidean'``.
        :param margin: the margin of the loss (see the subclass).
        :param miner: object with ``mine(labels, distances)``; ``None`` means all
            pairs/triplets (:meth:`get_default_miner`, chosen per batch by label type).
        """
        super().__init__()
        self.distance = check_distance(distance)
        self.margin = margin
        self.miner = miner

    def extra_repr(self) -> str:
        return f"distance={self.distance!r}, margin={self.margin}, miner={self.miner!r}"

    @abc.abstractmethod
    def get_default_miner(self, is_session_dataset: bool) -> Miner:
        """The miner used when none was given: all tuples, for class or session data."""

    @abc.abstractmethod
    def tuple_losses(
        self, distances: torch.Tensor, indices: Sequence[torch.Tensor]
    ) -> torch.Tensor:
        """Loss of every mined tuple, from the ``[N, N]`` distance matrix."""

    def forward(self, embeddings: torch.Tensor, labels: Labels) -> torch.Tensor:
        """Mean loss over the tuples the miner picks from this batch.

        :param embeddings: ``[N, d]`` embeddings.
        :param labels: ``[N]`` class ids, or ``(session_ids, match_types)``.
        """
        miner = self.miner
        if miner is None:
            miner = self.get_default_miner(is_session_labels(labels))
        distances = get_distance(embeddings, self.distance)
        indices = miner.mine(labels, distances.detach().clone())
        return self._mean_loss(distances, indices)

    def compute(self, embeddings: torch.Tensor, indices: Sequence[torch.Tensor]) -> torch.Tensor:
        """Mean loss over already mined ``indices`` (what ``miner.mine`` returns)."""
        return self._mean_loss(get_distance(embeddings, self.distance), indices)

    def _mean_loss(self, distances: torch.Tensor, indices: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(indices) == 0 or any(index.numel() == 0 for index in indices):
            raise ValueError(
                f"{type(self).__name__}: the miner found no {self.tuple_name} in this "
                "batch (got empty tuples/triplets). For class data, a batch needs at "
                "least two items of some class and at least two classes: set "
                "num_items_per_class >= 2 and a batch_size that holds several classes "
                "(e.g. batch_size >= 2 * num_items_per_class). For session data, every "
                "session needs an anchor with a positive (and a negative for triplets). "
                "A strict mining strategy (e.g. 'semihard') can also leave nothing."
            )
        indices = [index.to(distances.device) for index in indices]
        return self.tuple_losses(distances, indices).mean()
