"""How sure a difference between two models is: a paired bootstrap over the queries.

On a small evaluation set one query is a visible step: with the proxies' 120 queries a
hit@k moves by 0.008 per query, and two fine-tunes that differ only in their seed differ by
several queries. So a difference between two columns of a table means little without its
uncertainty. Both models answer the same queries, so the comparison is *paired*: resample
the queries with replacement (Efron & Tibshirani 1993, ch. 13), recompute the difference
of hit@k on each resample, and report the middle 95 % of those differences (the percentile
interval). An interval that excludes 0 says the difference would most likely hold on other
queries drawn like these; it says nothing about other training runs, whose spread comes on
top (repeat the fit with other seeds for that).
"""
from __future__ import annotations

from typing import Mapping, NamedTuple

import torch

#: bootstrap resamples: enough for the percentile interval's ends to be stable to ~0.005
RESAMPLES = 10_000


class Difference(NamedTuple):
    """``first`` minus ``second`` in hit@k, and the bounds of its bootstrap interval."""

    difference: float
    low: float
    high: float

    @property
    def is_clear(self) -> bool:
        """Whether the interval lies wholly on one side of zero."""
        return self.low > 0 or self.high < 0

    def __str__(self) -> str:
        return f"{self.difference:+.3f} ({self.low:+.3f} to {self.high:+.3f})"


def hit_difference(
    first: Mapping[str, int],
    second: Mapping[str, int],
    k: int,
    *,
    confidence: float = 0.95,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> Difference:
    """hit@k of ``first`` minus hit@k of ``second``, with a paired bootstrap interval.

    :param first: each query's partner rank under the first model (1 = first), by query
        key -- the ``ranks`` a reproduction run stores per column.
    :param second: the same for the second model, over the same queries.
    :raises ValueError: the two do not rank the same queries (naming some that differ),
        there are none, or ``k``, ``confidence`` or ``resamples`` is out of range.
    """
    if set(first) != set(second):
        only = sorted(set(first) ^ set(second))
        raise ValueError(
            f"a paired comparison needs the same queries in both; {len(only)} differ "
            f"(e.g. {', '.join(map(repr, only[:3]))}) -- compare runs on the same evaluation split"
        )
    if not first:
        raise ValueError("no queries to compare")
    if k < 1 or not 0.0 < confidence < 1.0 or resamples < 1:
        raise ValueError(
            f"need k >= 1, 0 < confidence < 1 and resamples >= 1; got k={k}, "
            f"confidence={confidence}, resamples={resamples}"
        )
    keys = sorted(first)
    per_query = torch.tensor(
        [float(first[key] <= k) - float(second[key] <= k) for key in keys], dtype=torch.float64
    )
    generator = torch.Generator().manual_seed(seed)
    picks = torch.randint(len(keys), (resamples, len(keys)), generator=generator)
    means = per_query[picks].mean(dim=1)
    tail = (1.0 - confidence) / 2
    low, high = torch.quantile(means, torch.tensor([tail, 1.0 - tail], dtype=torch.float64)).tolist()
    return Difference(per_query.mean().item(), low, high)
