"""Paired bootstrap intervals of hit@k differences."""
from __future__ import annotations

import math

import pytest

from finetuner_selfsup.experiments.comparison import Difference, hit_difference


def _ranks(values):
    return {f"q{i:03d}": rank for i, rank in enumerate(values)}


def test_same_answers_on_every_query_give_a_zero_width_interval():
    better, worse = _ranks([1] * 20), _ranks([9] * 20)
    assert hit_difference(better, worse, 5) == Difference(1.0, 1.0, 1.0)
    assert hit_difference(worse, better, 5) == Difference(-1.0, -1.0, -1.0)
    assert hit_difference(better, worse, 10) == Difference(0.0, 0.0, 0.0)  # both hit at k=10


def test_two_queries_that_cancel_span_the_whole_range():
    # per query +1 and -1: resampled means are -1, 0, +1 with chances 1/4, 1/2, 1/4
    first, second = _ranks([1, 7]), _ranks([7, 1])
    result = hit_difference(first, second, 1)
    assert result.difference == 0.0 and (result.low, result.high) == (-1.0, 1.0)
    assert not result.is_clear


def test_interval_matches_the_normal_approximation_on_many_queries():
    # 400 queries, the first model finds 100 more partners at k=1: difference 0.25, per-query
    # sd sqrt(0.25 * 0.75), standard error 0.02165, so about 0.25 -/+ 1.96 * 0.02165
    first = _ranks([1] * 100 + [3] * 300)
    second = _ranks([2] * 400)
    result = hit_difference(first, second, 1)
    half_width = 1.96 * math.sqrt(0.25 * 0.75 / 400)
    assert result.difference == pytest.approx(0.25)
    assert result.low == pytest.approx(0.25 - half_width, abs=0.006)
    assert result.high == pytest.approx(0.25 + half_width, abs=0.006)
    assert result.is_clear
    assert str(result) == f"+0.250 ({result.low:+.3f} to {result.high:+.3f})"
    # seeded: the same interval every time
    assert hit_difference(first, second, 1) == result


def test_queries_must_be_the_same_in_both():
    with pytest.raises(ValueError, match=r"2 differ \(e.g. 'q001', 'x'\)"):
        hit_difference(_ranks([1, 2]), {"q000": 1, "x": 2}, 1)
    with pytest.raises(ValueError, match="no queries"):
        hit_difference({}, {}, 1)
    with pytest.raises(ValueError, match="k=0"):
        hit_difference(_ranks([1]), _ranks([1]), 0)
