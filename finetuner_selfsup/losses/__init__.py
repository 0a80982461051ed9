"""PyTorch losses with Finetuner 0.4's interface: ``loss(embeddings, labels)``.

* :mod:`.ntxent` -- :class:`NTXentLoss` (SimCLR) and the functional :func:`nt_xent_loss`;
* :mod:`.siamese`, :mod:`.triplet` -- tuple losses over pairs/triplets chosen by a miner
  (:mod:`finetuner_selfsup.miners`), sharing :mod:`.base`;
* :mod:`.distances` -- pairwise distance matrices, computed in full precision.
"""
from .base import TupleLoss
from .distances import DISTANCES, get_distance
from .ntxent import NTXentLoss, nt_xent_loss, views_from_labels
from .siamese import SiameseLoss
from .triplet import TripletLoss

__all__ = [
    "DISTANCES",
    "NTXentLoss",
    "SiameseLoss",
    "TripletLoss",
    "TupleLoss",
    "get_distance",
    "nt_xent_loss",
    "views_from_labels",
]
