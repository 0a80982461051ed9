"""Tests for finetuner_selfsup.losses: NT-Xent, the tuple losses and distances."""
import math

import pytest
import torch
import torch.nn.functional as F

from finetuner_selfsup.losses import (
    NTXentLoss,
    SiameseLoss,
    TripletLoss,
    get_distance,
    nt_xent_loss,
    views_from_labels,
)
from finetuner_selfsup.miners import (
    SiameseSessionMiner,
    TripletEasyHardMiner,
    TripletMiner,
    TripletSessionMiner,
)


def naive_nt_xent(embeddings: torch.Tensor, labels, temperature: float) -> float:
    """Textbook NT-Xent, one query at a time, in float64 Python arithmetic."""
    emb = embeddings.detach().double()
    labels = [int(x) for x in labels]
    size = len(labels)
    total = 0.0
    for i in range(size):
        (j,) = [k for k in range(size) if k != i and labels[k] == labels[i]]
        sim = [F.cosine_similarity(emb[i], emb[k], dim=0).item() / temperature for k in range(size)]
        denominator = sum(math.exp(sim[k]) for k in range(size) if k != i)
        total += -math.log(math.exp(sim[j]) / denominator)
    return total / size


# ----------------------------------------------------------------------------- NT-Xent


def test_ntxent_matches_hand_computed_value():
    # Batch [a, b, a', b'] (labels=None): instance a has views a, a'; b has b, b'.
    a, b = [1.0, 0.0], [0.0, 1.0]
    a2, b2 = [1.0, 1.0], [-1.0, 1.0]
    embeddings = torch.tensor([a, b, a2, b2])
    t = 0.5
    c = 1 / math.sqrt(2)  # cos(a, a') = cos(b, a') = cos(b, b') = c; cos(a, b') = -c
    # cos(a, b) = cos(a', b') = 0. Per query: -positive/t + log(sum over the 3 others).
    loss_a = -c / t + math.log(math.exp(c / t) + math.exp(0) + math.exp(-c / t))
    loss_b = -c / t + math.log(math.exp(c / t) + math.exp(0) + math.exp(c / t))
    loss_a2 = -c / t + math.log(math.exp(c / t) + math.exp(c / t) + math.exp(0))
    loss_b2 = -c / t + math.log(math.exp(c / t) + math.exp(-c / t) + math.exp(0))
    expected = (loss_a + loss_b + loss_a2 + loss_b2) / 4

    assert NTXentLoss(temperature=t)(embeddings).item() == pytest.approx(expected, rel=1e-6)
    labels = torch.tensor([0, 1, 0, 1])
    assert NTXentLoss(t)(embeddings, labels).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("temperature", [0.05, 0.1, 0.5, 2.0])
def test_ntxent_matches_naive_loop(temperature):
    torch.manual_seed(0)
    embeddings = torch.randn(10, 7)
    labels = torch.randperm(5).repeat(2)[torch.randperm(10)]
    expected = naive_nt_xent(embeddings, labels, temperature)
    got = NTXentLoss(temperature)(embeddings, labels)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_ntxent_matches_cross_entropy_over_other_views():
    # Independent formulation: per view, cross-entropy over the logits of all *other*
    # views (self dropped by slicing, not masking).
    torch.manual_seed(1)
    n, t = 6, 0.2
    z = F.normalize(torch.randn(2 * n, 5, dtype=torch.float64), dim=1)
    losses = []
    for i in range(2 * n):
        others = [k for k in range(2 * n) if k != i]
        logits = z[others] @ z[i] / t
        target = others.index((i + n) % (2 * n))
        losses.append(F.cross_entropy(logits.unsqueeze(0), torch.tensor([target])))
    expected = torch.stack(losses).mean()
    got = nt_xent_loss(z[:n], z[n:], temperature=t)
    assert torch.allclose(got, expected, rtol=1e-10, atol=1e-12)


def test_ntxent_label_permutation_invariance_and_none_labels():
    torch.manual_seed(2)
    n = 6
    embeddings = torch.randn(2 * n, 8)
    loss = NTXentLoss(0.3)
    reference = loss(embeddings, None)
    # labels=None is the same as labels [0..n-1, 0..n-1] (any label values).
    ids = torch.tensor([17, 3, 99, 5, 42, 8])
    assert torch.allclose(loss(embeddings, torch.cat([ids, ids])), reference, atol=1e-6)
    for seed in range(3):
        perm = torch.randperm(2 * n, generator=torch.Generator().manual_seed(seed))
        labels = torch.cat([ids, ids])[perm]
        assert torch.allclose(loss(embeddings[perm], labels), reference, atol=1e-6)


def test_views_from_labels_pairs_up_the_two_views():
    labels = torch.tensor([5, 2, 2, 9, 5, 9])
    first, second = views_from_labels(labels)
    assert first.tolist() == [1, 0, 3] and second.tolist() == [2, 4, 5]


def test_ntxent_identical_embeddings_and_tiny_temperature():
    n = 4
    same = torch.ones(2 * n, 3)
    for t in (0.5, 0.01, 1e-4):
        # All logits equal: every query's loss is log(2n - 1).
        assert NTXentLoss(t)(same).item() == pytest.approx(math.log(2 * n - 1), rel=1e-5)
    torch.manual_seed(3)
    embeddings = torch.randn(2 * n, 16, requires_grad=True)
    for t in (0.01, 1e-3):
        value = NTXentLoss(t)(embeddings)
        value.backward()
        assert torch.isfinite(value) and torch.isfinite(embeddings.grad).all()
        embeddings.grad = None


@pytest.mark.parametrize("dtype,tol", [(torch.bfloat16, 0.1), (torch.float16, 0.02)])
@pytest.mark.parametrize("temperature", [0.1, 0.01])
def test_ntxent_low_precision_inputs(dtype, tol, temperature):
    torch.manual_seed(4)
    embeddings = torch.randn(16, 32)
    labels = torch.arange(8).repeat(2)
    reference = NTXentLoss(temperature)(embeddings, labels)
    low = embeddings.to(dtype).requires_grad_()
    value = NTXentLoss(temperature)(low, labels)
    value.backward()
    assert value.dtype == torch.float32
    assert torch.isfinite(value) and torch.isfinite(low.grad.float()).all()
    assert low.grad.dtype == dtype
    assert value.item() == pytest.approx(reference.item(), rel=tol / 10, abs=tol)
    # Identical low-precision embeddings (exp of large logits, masked diagonal) stay finite.
    same = torch.ones(8, 4, dtype=dtype, requires_grad=True)
    same_value = NTXentLoss(temperature)(same)
    same_value.backward()
    assert torch.isfinite(same_value) and torch.isfinite(same.grad.float()).all()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_ntxent_under_autocast(dtype):
    torch.manual_seed(5)
    layer = torch.nn.Linear(8, 16)
    inputs = torch.randn(12, 8)
    reference = NTXentLoss(0.1)(layer(inputs))
    with torch.autocast(device_type="cpu", dtype=dtype):
        embeddings = layer(inputs)
        assert embeddings.dtype == dtype
        value = NTXentLoss(0.1)(embeddings)
    value.backward()
    assert value.dtype == torch.float32 and torch.isfinite(value)
    assert all(torch.isfinite(p.grad).all() for p in layer.parameters())
    assert value.item() == pytest.approx(reference.item(), abs=0.1)


def test_ntxent_gradcheck_float64():
    torch.manual_seed(6)
    embeddings = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([2, 0, 1, 1, 2, 0])
    assert torch.autograd.gradcheck(lambda e: NTXentLoss(0.5)(e, labels), (embeddings,))
    z1 = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: nt_xent_loss(a, b, 0.2), (z1, z2))


def test_nt_xent_sharded_batch_with_gathered_views_equals_full_batch():
    # What a data-parallel caller would do: every shard's local views against the
    # gathered views of all shards, with its own offset.
    torch.manual_seed(7)
    z1, z2 = torch.randn(6, 5), torch.randn(6, 5)
    full = nt_xent_loss(z1, z2, 0.1)
    shards = [
        nt_xent_loss(z1[s : s + 2], z2[s : s + 2], 0.1, all_z1=z1, all_z2=z2, offset=s)
        for s in (0, 2, 4)
    ]
    assert torch.allclose(torch.stack(shards).mean(), full, atol=1e-6)
    assert torch.allclose(nt_xent_loss(z1, z2, 0.1, all_z1=z1, all_z2=z2), full)


def test_ntxent_errors():
    loss = NTXentLoss()
    with pytest.raises(ValueError, match="even batch"):
        loss(torch.randn(5, 3))
    with pytest.raises(ValueError, match="at least 2 instances"):
        loss(torch.randn(2, 3))
    with pytest.raises(ValueError, match=r"exactly twice.*1 \(x3\)"):
        loss(torch.randn(6, 3), torch.tensor([0, 1, 1, 1, 0, 2]))
    with pytest.raises(ValueError, match="labels of shape"):
        loss(torch.randn(6, 3), torch.tensor([0, 0, 1, 1]))
    with pytest.raises(ValueError, match="session labels"):
        loss(torch.randn(4, 3), (torch.zeros(4), torch.zeros(4)))
    for bad in (0, -0.1, float("nan")):
        with pytest.raises(ValueError, match="temperature"):
            NTXentLoss(bad)
        with pytest.raises(ValueError, match="temperature"):
            nt_xent_loss(torch.randn(2, 3), torch.randn(2, 3), bad)
    with pytest.raises(ValueError, match="same shape"):
        nt_xent_loss(torch.randn(2, 3), torch.randn(3, 3))
    with pytest.raises(ValueError, match="offset"):
        nt_xent_loss(torch.randn(2, 3), torch.randn(2, 3), all_z1=torch.randn(3, 3),
                     all_z2=torch.randn(3, 3), offset=2)


# ----------------------------------------------------------------------------- distances


def test_get_distance_values():
    x = torch.tensor([[3.0, 4.0], [0.0, 2.0], [-3.0, -4.0]])
    expected = {
        "euclidean": [0.0, math.sqrt(13), 10.0],
        "sqeuclidean": [0.0, 13.0, 100.0],
        "cosine": [0.0, 1 - 8 / 10, 2.0],  # cos = (3*0 + 4*2) / (5 * 2)
    }
    for distance, row in expected.items():
        assert torch.allclose(get_distance(x, distance)[0], torch.tensor(row), atol=1e-4)
    assert get_distance(x.half(), "cosine").dtype == torch.float32
    with pytest.raises(ValueError, match="Unknown distance"):
        get_distance(x, "manhattan")
    with pytest.raises(ValueError, match="Unknown distance"):
        TripletLoss(distance="manhattan")


# ----------------------------------------------------------------------------- tuple losses

# Points on a line: items 0, 1 (class 0) at x = 0, 1; item 2 (class 1) at x = 3.
LINE = torch.tensor([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0]])
LINE_LABELS = torch.tensor([0, 0, 1])


def test_triplet_loss_hand_computed():
    # Triplets (0, 1, 2): relu(1 - 3 + 2.5) = 0.5 and (1, 0, 2): relu(1 - 2 + 2.5) = 1.5.
    loss = TripletLoss(distance="euclidean", margin=2.5)
    assert loss(LINE, LINE_LABELS).item() == pytest.approx(1.0)
    # sqeuclidean: relu(1 - 9 + 2.5) = 0 and relu(1 - 4 + 2.5) = 0.
    assert TripletLoss("sqeuclidean", 2.5)(LINE, LINE_LABELS).item() == pytest.approx(0.0)


def test_siamese_loss_hand_computed():
    # (0, 1) similar: d = 1; (0, 2) dissimilar: relu(2.5 - 3) = 0; (1, 2): relu(2.5 - 2) = 0.5.
    loss = SiameseLoss(distance="euclidean", margin=2.5)
    assert loss(LINE, LINE_LABELS).item() == pytest.approx(1.5 / 3)
    # cosine distance: item 0 is orthogonal to items 1 and 2, which are parallel.
    emb = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 2.0]])
    # (0, 1) similar d = 1; (0, 2) dissimilar relu(1 - 1) = 0; (1, 2) dissimilar relu(1 - 0) = 1.
    assert SiameseLoss()(emb, LINE_LABELS).item() == pytest.approx(2 / 3, abs=1e-6)


def test_batch_hard_triplet_loss_matches_direct_formula():
    torch.manual_seed(8)
    emb = torch.randn(12, 6)
    labels = torch.arange(4).repeat_interleave(3)
    d = torch.cdist(emb, emb)
    same = labels[:, None] == labels[None, :]
    hardest_pos = d.masked_fill(~same, -1).max(1).values
    hardest_neg = d.masked_fill(same, float("inf")).min(1).values
    expected = F.relu(hardest_pos - hardest_neg + 0.5).mean()
    loss = TripletLoss("euclidean", 0.5, miner=TripletEasyHardMiner("hard", "hard"))
    assert torch.allclose(loss(emb, labels), expected, atol=1e-5)


def test_session_labels_use_session_miners():
    torch.manual_seed(9)
    emb = torch.randn(7, 4)
    labels = (torch.tensor([0, 0, 0, 1, 1, 1, 1]), torch.tensor([0, 1, -1, 0, 1, -1, -1]))
    dists = get_distance(emb, "cosine")
    pairs = ((TripletLoss(), TripletSessionMiner()), (SiameseLoss(), SiameseSessionMiner()))
    for loss, miner in pairs:
        expected = loss.compute(emb, miner.mine(labels, dists))
        assert torch.allclose(loss(emb, labels), expected)
        assert torch.allclose(loss(emb, list(labels)), expected)  # default_collate gives a list
        assert loss.miner is None  # the default miner is chosen per batch, not stored


def test_tuple_losses_attributes_and_custom_miner():
    calls = []

    class RecordingMiner(TripletMiner):
        def mine(self, labels, distances):
            calls.append(distances)
            return super().mine(labels, distances)

    miner = RecordingMiner()
    loss = TripletLoss(distance="euclidean", margin=0.3, miner=miner)
    assert (loss.distance, loss.margin, loss.miner) == ("euclidean", 0.3, miner)
    emb = torch.randn(6, 3, requires_grad=True)
    loss(emb, torch.tensor([0, 0, 1, 1, 2, 2])).backward()
    assert len(calls) == 1 and not calls[0].requires_grad
    assert SiameseLoss().distance == "cosine" and SiameseLoss().miner is None


def test_empty_tuples_raise_helpful_error():
    emb = torch.randn(4, 3)
    with pytest.raises(ValueError, match="no triplets.*num_items_per_class"):
        TripletLoss()(emb, torch.zeros(4, dtype=torch.long))  # one class: no negatives
    with pytest.raises(ValueError, match="no triplets"):
        TripletLoss()(emb, torch.arange(4))  # every item its own class: no positives
    only_negatives = (torch.zeros(4, dtype=torch.long), -torch.ones(4, dtype=torch.long))
    with pytest.raises(ValueError, match="no pairs.*num_items_per_class"):
        SiameseLoss()(emb, only_negatives)
    empty = torch.zeros(0, dtype=torch.long)
    with pytest.raises(ValueError, match="no pairs"):
        SiameseLoss().compute(emb, (empty, empty, empty))


@pytest.mark.parametrize("distance", ["cosine", "euclidean", "sqeuclidean"])
@pytest.mark.parametrize("loss_cls", [TripletLoss, SiameseLoss])
def test_tuple_losses_finite_gradients_with_duplicates_and_half_inputs(distance, loss_cls):
    torch.manual_seed(10)
    base = torch.randn(4, 5)
    emb = torch.cat([base, base]).requires_grad_()  # duplicates: zero distances
    labels = torch.tensor([0, 0, 1, 1, 0, 0, 1, 1])
    value = loss_cls(distance=distance)(emb, labels)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(emb.grad).all()
    half = base.to(torch.bfloat16).requires_grad_()
    value = loss_cls(distance=distance)(half, labels[:4])
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(half.grad.float()).all()


def test_tuner_pytorch_mirror_exports():
    from finetuner_selfsup import losses, miners
    from finetuner_selfsup.tuner.pytorch import losses as mirror_losses
    from finetuner_selfsup.tuner.pytorch import miner as mirror_miner

    for name in ("NTXentLoss", "TripletLoss", "SiameseLoss", "get_distance"):
        assert getattr(mirror_losses, name) is getattr(losses, name)
    for name in ("TripletEasyHardMiner", "SiameseEasyHardMiner"):
        assert getattr(mirror_losses, name) is getattr(miners, name)
    for name in mirror_miner.__all__:
        assert getattr(mirror_miner, name) is getattr(miners, name)
    assert set(mirror_miner.__all__) == {
        "SiameseMiner", "TripletMiner", "SiameseEasyHardMiner", "TripletEasyHardMiner",
        "SiameseSessionMiner", "TripletSessionMiner",
    }


# ---------------------------------------------------------------- NT-Xent memory bank


def _reference_with_queue(z1, z2, queue, t):
    """Hand-written NT-Xent with extra negatives: loop over queries."""
    import torch.nn.functional as F

    views = F.normalize(torch.cat([z1, z2]), dim=1)
    extra = F.normalize(queue, dim=1) if queue is not None else views[:0]
    n = z1.shape[0]
    losses = []
    for i in range(2 * n):
        positive = (i + n) % (2 * n)
        sims = [float(views[i] @ views[k]) / t for k in range(2 * n) if k != i]
        sims += [float(views[i] @ q) / t for q in extra]
        pos = float(views[i] @ views[positive]) / t
        losses.append(-pos + math.log(sum(math.exp(s) for s in sims)))
    return sum(losses) / len(losses)


def test_ntxent_memory_bank_adds_past_views_as_negatives():
    from finetuner_selfsup.losses import NTXentLoss

    torch.manual_seed(0)
    loss_fn = NTXentLoss(temperature=0.5, memory_bank_size=6)
    first = torch.randn(8, 4, dtype=torch.float64)  # 4 instances x 2 views
    second = torch.randn(8, 4, dtype=torch.float64)
    assert float(loss_fn(first)) == pytest.approx(_reference_with_queue(first[:4], first[4:], None, 0.5))
    assert loss_fn.memory_bank.shape == (6, 4)  # 8 views, the 6 newest kept
    queue = loss_fn.memory_bank.clone()
    assert torch.allclose(queue, torch.nn.functional.normalize(first, dim=1)[2:].float())
    value = float(loss_fn(second))
    assert value == pytest.approx(_reference_with_queue(second[:4], second[4:], queue.double(), 0.5), rel=1e-5)


def test_ntxent_memory_bank_is_left_alone_in_evaluation_and_off_by_default():
    from finetuner_selfsup.losses import NTXentLoss

    z = torch.randn(8, 4)
    assert NTXentLoss().memory_bank_size == 0
    plain = NTXentLoss()
    plain(z)
    assert plain.memory_bank is None
    banked = NTXentLoss(memory_bank_size=16).eval()
    assert float(banked(z)) == pytest.approx(float(NTXentLoss()(z)))
    assert banked.memory_bank is None
    with pytest.raises(ValueError, match="memory_bank_size"):
        NTXentLoss(memory_bank_size=-1)


def test_a_new_fit_starts_with_an_empty_memory_bank():
    """One loss object for two fits: the second must not contrast with the first model's
    queued embeddings (here they are even 8-d against the second model's 4-d)."""
    import numpy as np
    from docarray import Document, DocumentArray

    from finetuner_selfsup.fit import fit
    from finetuner_selfsup.losses import NTXentLoss

    rng = np.random.default_rng(0)
    docs = DocumentArray(Document(tensor=rng.standard_normal(6).astype(np.float32)) for _ in range(8))

    def views(doc):
        return torch.as_tensor(doc.tensor) + 0.1 * torch.randn(6)

    loss_fn = NTXentLoss(memory_bank_size=16)
    fit(torch.nn.Linear(6, 8), docs, epochs=1, batch_size=4, loss=loss_fn, preprocess_fn=views, seed=0)
    assert loss_fn.memory_bank.shape == (16, 8)
    fit(torch.nn.Linear(6, 4), docs, epochs=1, batch_size=4, loss=loss_fn, preprocess_fn=views, seed=0)
    assert loss_fn.memory_bank.shape == (16, 4)  # refilled by the second model only
    loss_fn.reset_memory_bank()
    assert loss_fn.memory_bank is None
