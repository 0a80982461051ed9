"""Miners: choose the pairs/triplets of a batch that tuple losses are computed on.

* :mod:`.base` -- the interface, ``mine(labels, distances) -> tuple of index tensors``;
* :mod:`.class_miners` -- all pairs/triplets, and easy/hard selection, for class data;
* :mod:`.session_miners` -- all pairs/triplets within sessions;
* :mod:`.strategies` -- the vectorised easy/hard/semihard selection rules;
* :mod:`.indexing` -- masks to index tensors.
"""
from .base import ClassMiner, Miner, PairIndices, SessionMiner, TripletIndices
from .class_miners import SiameseEasyHardMiner, SiameseMiner, TripletEasyHardMiner, TripletMiner
from .session_miners import SiameseSessionMiner, TripletSessionMiner
from .strategies import STRATEGIES, check_strategies, select_by_strategy

__all__ = [
    "ClassMiner",
    "Miner",
    "PairIndices",
    "STRATEGIES",
    "SessionMiner",
    "SiameseEasyHardMiner",
    "SiameseMiner",
    "SiameseSessionMiner",
    "TripletEasyHardMiner",
    "TripletIndices",
    "TripletMiner",
    "TripletSessionMiner",
    "check_strategies",
    "select_by_strategy",
]
