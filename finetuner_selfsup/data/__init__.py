"""Data for the tutorials and the demo: Totally-Looks-Like loading and splitting, and a
small synthetic pair set of the same shape."""
from __future__ import annotations

from .demo_pairs import DEMO_DESCRIPTION, make_demo_pairs, render_pair
from .tll import (
    ExtractionReport,
    SelfSupervisedSplit,
    SupervisedSplit,
    TLLPairs,
    UnsafeArchiveError,
    extract_tll_zips,
    load_tll,
    locate_tll,
    pair_name,
    split_self_supervised,
    split_supervised,
)

__all__ = [
    "DEMO_DESCRIPTION",
    "ExtractionReport",
    "SelfSupervisedSplit",
    "SupervisedSplit",
    "TLLPairs",
    "UnsafeArchiveError",
    "extract_tll_zips",
    "load_tll",
    "locate_tll",
    "make_demo_pairs",
    "pair_name",
    "split_self_supervised",
    "split_supervised",
    "render_pair",
]
