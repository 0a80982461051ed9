"""Mirror of ``finetuner.tuner.pytorch.losses`` (Finetuner 0.4.1).

The plugin redirects the upstream module name here (see :mod:`finetuner_selfsup._bootstrap`);
the implementations live in :mod:`finetuner_selfsup.losses` and
:mod:`finetuner_selfsup.miners`. Besides upstream's names this also offers the easy/hard
miners, which the SimCLR tutorial imports from this module.
"""
from ...losses import NTXentLoss, SiameseLoss, TripletLoss, get_distance
from ...losses import TupleLoss as PytorchTupleLoss
from ...miners import (
    SiameseEasyHardMiner,
    SiameseMiner,
    SiameseSessionMiner,
    TripletEasyHardMiner,
    TripletMiner,
    TripletSessionMiner,
)

__all__ = [
    "NTXentLoss",
    "PytorchTupleLoss",
    "SiameseEasyHardMiner",
    "SiameseLoss",
    "SiameseMiner",
    "SiameseSessionMiner",
    "TripletEasyHardMiner",
    "TripletLoss",
    "TripletMiner",
    "TripletSessionMiner",
    "get_distance",
]
