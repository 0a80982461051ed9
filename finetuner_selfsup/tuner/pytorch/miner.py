"""Mirror of ``finetuner.tuner.pytorch.miner`` (Finetuner 0.4.1).

The plugin redirects the upstream module name here (see :mod:`finetuner_selfsup._bootstrap`);
the implementations live in :mod:`finetuner_selfsup.miners`.
"""
from ...miners import (
    SiameseEasyHardMiner,
    SiameseMiner,
    SiameseSessionMiner,
    TripletEasyHardMiner,
    TripletMiner,
    TripletSessionMiner,
)

__all__ = [
    "SiameseEasyHardMiner",
    "SiameseMiner",
    "SiameseSessionMiner",
    "TripletEasyHardMiner",
    "TripletMiner",
    "TripletSessionMiner",
]
