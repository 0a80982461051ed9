"""Data for the tutorials and the demo: Totally-Looks-Like loading and splitting, and a
small synthetic pair set of the same shape, and a real cross-style pair set drawn from two
typefaces (matplotlib's fonts)."""
from __future__ import annotations

from .demo_pairs import DEMO_DESCRIPTION, make_demo_pairs, render_pair
from .font_pairs import FONT_DESCRIPTION, make_font_pairs
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
    split_self_supervised_with_chosen_labels,
    split_supervised,
)

__all__ = [
    "DEMO_DESCRIPTION",
    "FONT_DESCRIPTION",
    "ExtractionReport",
    "SelfSupervisedSplit",
    "SupervisedSplit",
    "TLLPairs",
    "UnsafeArchiveError",
    "extract_tll_zips",
    "load_tll",
    "locate_tll",
    "make_demo_pairs",
    "make_font_pairs",
    "pair_name",
    "split_self_supervised",
    "split_self_supervised_with_chosen_labels",
    "split_supervised",
    "render_pair",
]
