"""The miner interface (Finetuner 0.4's): ``mine(labels, distances) -> index tensors``.

A miner picks, from one batch, the pairs or triplets a tuple loss is computed on. It is
called with the batch labels and the *detached* ``[N, N]`` distance matrix, and returns a
tuple of equally long 1-D ``int64`` tensors on the distance matrix's device:

* pair miners: ``(first, second, target)`` with ``target`` 1 for similar, 0 for
  dissimilar pairs;
* triplet miners: ``(anchor, positive, negative)``.
"""
from __future__ import annotations

import abc
from typing import Tuple, Union

import torch

#: ``(first, second, target)`` index tensors of mined pairs.
PairIndices = Tuple[torch.Tensor, torch.Tensor, torch.Tensor]
#: ``(anchor, positive, negative)`` index tensors of mined triplets.
TripletIndices = Tuple[torch.Tensor, torch.Tensor, torch.Tensor]
#: Session labels: ``(session_ids, match_types)``; match type 0 anchor, 1 positive, -1 negative.
SessionLabels = Tuple[torch.Tensor, torch.Tensor]


class Miner(abc.ABC):
    """Anything with ``mine(labels, distances)``; losses accept any such object."""

    @abc.abstractmethod
    def mine(
        self, labels: Union[torch.Tensor, SessionLabels], distances: torch.Tensor
    ) -> Tuple[torch.Tensor, ...]:
        """Return the mined tuples as a tuple of 1-D index tensors."""


class ClassMiner(Miner):
    """Miner for class data: ``labels`` is a 1-D tensor of class ids."""

    @abc.abstractmethod
    def mine(self, labels: torch.Tensor, distances: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """Return the mined tuples as a tuple of 1-D index tensors."""


class SessionMiner(Miner):
    """Miner for session data: ``labels`` is ``(session_ids, match_types)``."""

    @abc.abstractmethod
    def mine(self, labels: SessionLabels, distances: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """Return the mined tuples as a tuple of 1-D index tensors."""


def as_label_tensor(labels, distances: torch.Tensor, name: str = "labels") -> torch.Tensor:
    """``labels`` as a 1-D tensor on ``distances``' device, checked against its size."""
    tensor = torch.as_tensor(labels, device=distances.device)
    if tensor.ndim != 1 or distances.ndim != 2 or distances.shape != (len(tensor),) * 2:
        raise ValueError(
            f"Expected 1-D {name} of length N and an [N, N] distance matrix, got {name} "
            f"of shape {tuple(tensor.shape)} and distances of shape {tuple(distances.shape)}."
        )
    return tensor
