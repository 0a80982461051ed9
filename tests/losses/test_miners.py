"""Tests for finetuner_selfsup.miners against brute-force loops and Finetuner 0.4.1."""
import functools
import importlib.util
import itertools
from pathlib import Path

import pytest
import torch

from finetuner_selfsup.miners import (
    STRATEGIES,
    SiameseEasyHardMiner,
    SiameseMiner,
    SiameseSessionMiner,
    TripletEasyHardMiner,
    TripletMiner,
    TripletSessionMiner,
)

INVALID_COMBOS = {("semihard", "semihard"), ("semihard", "all"), ("all", "semihard")}
VALID_COMBOS = [c for c in itertools.product(STRATEGIES, STRATEGIES) if c not in INVALID_COMBOS]


def as_lists(indices):
    return [t.tolist() for t in indices]


def random_batch(seed, n=12, num_classes=4, integer_distances=False):
    """Random labels (some classes may be singletons) and a symmetric distance matrix."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(num_classes, (n,), generator=g)
    if integer_distances:  # many ties, and zero distances between distinct items
        d = torch.randint(0, 3, (n, n), generator=g).float()
    else:
        d = torch.rand(n, n, generator=g) * 2
    d = torch.triu(d, 1)
    return labels, d + d.T


# ----------------------------------------------------------------------------- brute force


def reference_selection(labels, dists, pos_strategy, neg_strategy):
    """Per anchor, the kept positives and negatives, following the documented rules."""
    labels, d = labels.tolist(), dists.tolist()
    n = len(labels)
    selections = []
    for a in range(n):
        pos = [p for p in range(n) if p != a and labels[p] == labels[a]]
        neg = [x for x in range(n) if labels[x] != labels[a]]

        def furthest(cands):  # ties -> lowest index
            return [max(cands, key=lambda j: (d[a][j], -j))] if cands else []

        def closest(cands):
            return [min(cands, key=lambda j: (d[a][j], j))] if cands else []

        pick_pos = {"hard": furthest, "easy": closest, "all": list}
        pick_neg = {"hard": closest, "easy": furthest, "all": list}
        if pos_strategy == "semihard":
            kept_neg = pick_neg[neg_strategy](neg)
            kept_pos = (
                furthest([p for p in pos if d[a][p] < d[a][kept_neg[0]]]) if kept_neg else []
            )
        elif neg_strategy == "semihard":
            kept_pos = pick_pos[pos_strategy](pos)
            kept_neg = (
                closest([x for x in neg if d[a][x] > d[a][kept_pos[0]]]) if kept_pos else []
            )
        else:
            kept_pos, kept_neg = pick_pos[pos_strategy](pos), pick_neg[neg_strategy](neg)
        selections.append((kept_pos, kept_neg))
    return selections


def reference_triplets(selections):
    triplets = sorted(
        (a, p, x) for a, (kept_pos, kept_neg) in enumerate(selections)
        for p in kept_pos for x in kept_neg
    )
    return [list(col) for col in zip(*triplets)] if triplets else [[], [], []]


def reference_pairs(selections):
    similar, dissimilar = set(), set()
    for a, (kept_pos, kept_neg) in enumerate(selections):
        similar |= {(min(a, p), max(a, p)) for p in kept_pos}
        dissimilar |= {(min(a, x), max(a, x)) for x in kept_neg}
    rows = [(i, j, 1) for i, j in sorted(similar)] + [(i, j, 0) for i, j in sorted(dissimilar)]
    return [list(col) for col in zip(*rows)] if rows else [[], [], []]


def all_selections(labels):
    n = len(labels)
    return [
        ([p for p in range(n) if p != a and labels[p] == labels[a]],
         [x for x in range(n) if labels[x] != labels[a]])
        for a in range(n)
    ]


# ----------------------------------------------------------------------------- easy/hard


@pytest.mark.parametrize("pos_strategy,neg_strategy", VALID_COMBOS)
@pytest.mark.parametrize("integer_distances", [False, True])
def test_easy_hard_miners_match_brute_force(pos_strategy, neg_strategy, integer_distances):
    for seed in range(4):
        labels, dists = random_batch(seed, integer_distances=integer_distances)
        selections = reference_selection(labels, dists, pos_strategy, neg_strategy)
        triplets = TripletEasyHardMiner(pos_strategy, neg_strategy).mine(labels, dists)
        assert as_lists(triplets) == reference_triplets(selections)
        pairs = SiameseEasyHardMiner(pos_strategy, neg_strategy).mine(labels, dists)
        assert as_lists(pairs) == reference_pairs(selections)


def test_semihard_is_relative_to_the_other_selection():
    # One anchor (0) with positives at 0.2, 0.5, 0.9 and negatives at 0.4, 0.7.
    labels = torch.tensor([0, 0, 0, 0, 1, 1])
    row = torch.tensor([0.0, 0.2, 0.5, 0.9, 0.4, 0.7])
    dists = torch.full((6, 6), 5.0)
    dists[0], dists[:, 0] = row, row
    dists.fill_diagonal_(0)

    def anchor0(miner):
        a, p, n = miner.mine(labels, dists)
        return sorted((pi, ni) for ai, pi, ni in zip(a.tolist(), p.tolist(), n.tolist()) if ai == 0)

    # hard negative = 0.4 -> hardest positive closer than it: 0.2 (item 1)
    assert anchor0(TripletEasyHardMiner("semihard", "hard")) == [(1, 4)]
    # easy negative = 0.7 -> hardest positive closer than it: 0.5 (item 2)
    assert anchor0(TripletEasyHardMiner("semihard", "easy")) == [(2, 5)]
    # easy positive = 0.2 -> closest negative further than it: 0.4 (item 4)
    assert anchor0(TripletEasyHardMiner("easy", "semihard")) == [(1, 4)]
    # hard positive = 0.9 -> no negative is further: anchor skipped
    assert anchor0(TripletEasyHardMiner("hard", "semihard")) == []
    assert anchor0(TripletEasyHardMiner("hard", "hard")) == [(3, 4)]
    assert anchor0(TripletEasyHardMiner("easy", "easy")) == [(1, 5)]


def test_all_all_equals_the_plain_miners():
    for seed in range(3):
        labels, dists = random_batch(seed)
        assert as_lists(TripletEasyHardMiner("all", "all").mine(labels, dists)) == as_lists(
            TripletMiner().mine(labels, dists)
        )
        assert as_lists(SiameseEasyHardMiner("all", "all").mine(labels, dists)) == as_lists(
            SiameseMiner().mine(labels, dists)
        )


@pytest.mark.parametrize("miner_cls", [TripletEasyHardMiner, SiameseEasyHardMiner])
def test_invalid_strategies(miner_cls):
    with pytest.raises(ValueError, match="pos_strategy must be one of"):
        miner_cls("hardest", "hard")
    with pytest.raises(ValueError, match="neg_strategy must be one of"):
        miner_cls("hard", "medium")
    with pytest.raises(ValueError, match="cannot both be 'semihard'"):
        miner_cls("semihard", "semihard")
    for pos, neg in (("semihard", "all"), ("all", "semihard")):
        with pytest.raises(ValueError, match="not 'all'"):
            miner_cls(pos, neg)
    assert len(VALID_COMBOS) == 13


def test_miners_do_not_modify_distances_and_return_long_indices():
    labels, dists = random_batch(0)
    before = dists.clone()
    for miner in (TripletEasyHardMiner("easy", "semihard"), SiameseEasyHardMiner(), TripletMiner()):
        out = miner.mine(labels.tolist(), dists)  # plain lists work as labels too
        assert all(t.dtype == torch.int64 and t.device == dists.device for t in out)
    assert torch.equal(dists, before)
    with pytest.raises(ValueError, match="distance matrix"):
        TripletMiner().mine(labels[:-1], dists)


# ----------------------------------------------------------------------------- all tuples


def test_plain_miners_match_brute_force_and_upstream_order():
    for seed in range(4):
        labels, dists = random_batch(seed)
        selections = all_selections(labels.tolist())
        assert as_lists(TripletMiner().mine(labels, dists)) == reference_triplets(selections)
        assert as_lists(SiameseMiner().mine(labels, dists)) == reference_pairs(selections)
        # Finetuner 0.4.1 enumerates triplets from an [N, N, N] mask; same order here.
        same = labels[:, None] == labels[None, :]
        pos = same & ~torch.eye(len(labels), dtype=torch.bool)
        cube = pos[:, :, None] & ~same[:, None, :]
        assert as_lists(TripletMiner().mine(labels, dists)) == as_lists(torch.where(cube))


def test_single_class_and_singletons_give_no_triplets():
    dists = torch.zeros(4, 4)
    assert all(t.numel() == 0 for t in TripletMiner().mine(torch.zeros(4), dists))
    assert all(t.numel() == 0 for t in TripletMiner().mine(torch.arange(4), dists))
    assert all(t.numel() == 0 for t in TripletEasyHardMiner().mine(torch.zeros(4), dists))
    first, second, target = SiameseMiner().mine(torch.zeros(3), torch.zeros(3, 3))
    assert (first.tolist(), second.tolist(), target.tolist()) == ([0, 0, 1], [1, 2, 2], [1, 1, 1])


# ----------------------------------------------------------------------------- upstream


@functools.lru_cache(maxsize=None)
def load_upstream(relative_path: str, name: str):
    """Execute one self-contained file of Finetuner 0.4.1 without importing ``finetuner``
    (the plugin redirects some of its modules to ours)."""
    spec = importlib.util.find_spec("finetuner")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("finetuner is not installed")
    path = Path(list(spec.submodule_search_locations)[0]) / relative_path
    module_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("pos_strategy,neg_strategy", VALID_COMBOS)
def test_triplet_easy_hard_miner_matches_upstream_on_generic_batches(pos_strategy, neg_strategy):
    # Generic: distinct positive distances, every class at least twice, so upstream's
    # zero-as-missing convention makes no difference.
    upstream = load_upstream("tuner/miner/mining_strategies.py", "_upstream_mining_strategies")
    helper = upstream.TorchStrategicMiningHelper(pos_strategy, neg_strategy)
    for seed in range(3):
        g = torch.Generator().manual_seed(seed)
        labels = torch.arange(4).repeat(3)[torch.randperm(12, generator=g)]
        d = torch.triu(torch.rand(12, 12, generator=g) + 0.05, 1)
        dists = d + d.T
        same = (labels[:, None] == labels[None, :]).byte()
        matches, diffs = same.clone().fill_diagonal_(0), same ^ 1
        up_pos, up_neg = helper.apply_strategy(matches, diffs, dists.clone())
        expected = torch.where(up_pos.unsqueeze(2) * up_neg.unsqueeze(1))
        got = TripletEasyHardMiner(pos_strategy, neg_strategy).mine(labels, dists)
        assert as_lists(got) == as_lists(expected)


# ----------------------------------------------------------------------------- sessions


def random_sessions(seed, n=14):
    g = torch.Generator().manual_seed(seed)
    sessions = torch.randint(4, (n,), generator=g)
    match_types = torch.randint(-1, 2, (n,), generator=g)  # -1, 0 or 1
    return sessions, match_types


def test_session_miners_match_upstream_functions():
    upstream = load_upstream("tuner/miner/__init__.py", "_upstream_session_mining")
    for seed in range(5):
        sessions, match_types = random_sessions(seed)
        dists = torch.rand(len(sessions), len(sessions))
        s_list, m_list = sessions.tolist(), match_types.tolist()

        expected_pairs = sorted(zip(*upstream.get_session_pairs(s_list, m_list)))
        got_pairs = SiameseSessionMiner().mine((sessions, match_types), dists)
        got_pairs = sorted(zip(*as_lists(got_pairs)))
        assert got_pairs == expected_pairs and len(got_pairs) > 0

        expected_triplets = sorted(zip(*upstream.get_session_triplets(s_list, m_list)))
        got_triplets = TripletSessionMiner().mine([sessions, match_types], dists)  # list, too
        got_triplets = sorted(zip(*as_lists(got_triplets)))
        assert got_triplets == expected_triplets and len(got_triplets) > 0


def test_session_miners_hand_example_and_errors():
    # Session 7: anchor 0, positive 1, negative 2; session 3: anchor 3, negative 4.
    sessions = torch.tensor([7, 7, 7, 3, 3])
    match_types = torch.tensor([0, 1, -1, 0, -1])
    dists = torch.zeros(5, 5)
    first, second, target = SiameseSessionMiner().mine((sessions, match_types), dists)
    assert sorted(zip(first.tolist(), second.tolist(), target.tolist())) == [
        (0, 1, 1), (0, 2, 0), (1, 2, 0), (3, 4, 0)
    ]
    triplets = TripletSessionMiner().mine((sessions, match_types), dists)
    assert sorted(zip(*as_lists(triplets))) == [(0, 1, 2), (1, 0, 2)]
    with pytest.raises(ValueError, match="session_ids, match_types"):
        TripletSessionMiner().mine(sessions, dists)
    with pytest.raises(ValueError, match="distance matrix"):
        SiameseSessionMiner().mine((sessions, match_types[:3]), dists)
