"""Tests of :mod:`finetuner_selfsup.evaluation`: metrics by hand, tie rule, chunking,
agreement with docarray's ``match`` + the tutorial's hit-rate loop, and end-to-end runs."""
from __future__ import annotations

import math
from pathlib import Path
from typing import List

import numpy as np
import pytest
import torch
from torch import nn

from finetuner_selfsup.augment.preprocessor import vision_preprocessor
from finetuner_selfsup.evaluation import (
    PairRetrievalResult,
    document_key,
    embed_documents,
    evaluate_pairs,
    format_table,
    pair_keys_to_partner,
    rank_of_partner,
    retrieval_metrics,
    top_k,
)

docarray = pytest.importorskip("docarray")
Document, DocumentArray = docarray.Document, docarray.DocumentArray


# ------------------------------------------------------------------ metrics by hand


def test_metrics_match_hand_computed_values():
    metrics = retrieval_metrics(torch.tensor([1, 2, 5]), ks=(1, 2, 5))
    assert metrics["hit@1"] == pytest.approx(1 / 3)
    assert metrics["hit@2"] == pytest.approx(2 / 3)
    assert metrics["hit@5"] == pytest.approx(1.0)
    for k in (1, 2, 5):
        assert metrics[f"recall@{k}"] == metrics[f"hit@{k}"]
    assert metrics["mrr"] == pytest.approx((1 + 1 / 2 + 1 / 5) / 3)
    assert metrics["map"] == metrics["mrr"]
    # ndcg: 1/log2(rank + 1) for rank <= k: rank 1 -> 1, rank 2 -> 1/log2(3), rank 5 -> 1/log2(6)
    assert metrics["ndcg@1"] == pytest.approx(1 / 3)
    assert metrics["ndcg@2"] == pytest.approx((1 + 1 / math.log2(3)) / 3)
    assert metrics["ndcg@5"] == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(6)) / 3)
    assert all(type(value) is float for value in metrics.values())


def test_metrics_accept_k_beyond_the_index_and_single_query():
    # 4 index items: every rank is <= 4, so hit@10 = 1
    metrics = retrieval_metrics([4, 3], ks=(1, 10))
    assert metrics["hit@1"] == 0.0 and metrics["hit@10"] == 1.0
    single = retrieval_metrics([1], ks=(1, 5))
    assert single["hit@1"] == single["mrr"] == single["ndcg@5"] == 1.0


@pytest.mark.parametrize("bad", [[], [0, 1], [1.5]])
def test_metrics_reject_invalid_ranks(bad):
    with pytest.raises(ValueError):
        retrieval_metrics(bad)


# ------------------------------------------------------------------ ranks and ties


def test_ranks_by_hand():
    index = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])
    queries = torch.tensor([[2.0, 0.0], [0.0, 3.0]])  # norms do not matter
    # query 0: similarities 1, 0.8, 0 ; query 1: 0, 0.6, 1
    assert rank_of_partner(queries, index, [1, 0]).tolist() == [2, 3]
    assert rank_of_partner(queries, index, [0, 2]).tolist() == [1, 1]


def test_ties_follow_index_position():
    index = torch.ones(5, 3)  # all equally similar to every query
    queries = torch.randn(4, 3)
    ranks = rank_of_partner(queries, index, [0, 2, 4, 3])
    assert ranks.tolist() == [1, 3, 5, 4]
    found = top_k(queries, index, k=3)
    assert found.indices.tolist() == [[0, 1, 2]] * 4
    # zero vectors tie with everything at similarity 0
    assert rank_of_partner(torch.zeros(1, 3), torch.zeros(3, 3), [2]).tolist() == [3]


def test_tie_rule_mixed_with_better_items():
    index = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    query = torch.tensor([[1.0, 0.0]])
    # order: 1, 3 (similarity 1), then 0, 2, 4 (similarity 0)
    assert [rank_of_partner(query, index, [j]).item() for j in range(5)] == [3, 1, 4, 2, 5]
    assert top_k(query, index, k=4).indices.tolist() == [[1, 3, 0, 2]]


def test_many_ties_match_a_stable_sort_in_every_chunking():
    # one-hot index rows: similarities are exactly q_normalised[i, class of j], whatever the
    # order of the additions, so the reference below sees the very same (tied) values
    generator = torch.Generator().manual_seed(5)
    classes = torch.randint(0, 4, (30,), generator=generator)
    index = nn.functional.one_hot(classes, 4).float()
    queries = torch.randn(9, 4, generator=generator)
    partner = torch.randint(0, 30, (9,), generator=generator)
    sims = nn.functional.normalize(queries, dim=1)[:, classes]
    order = torch.sort(sims, dim=1, descending=True, stable=True).indices
    expected_ranks = (order == partner[:, None]).nonzero()[:, 1] + 1
    for kwargs in ({}, {"chunk_size": 2}, {"max_chunk_bytes": 1}):
        assert torch.equal(rank_of_partner(queries, index, partner, **kwargs), expected_ranks)
        for k in (1, 7, 12, 30):
            assert torch.equal(top_k(queries, index, k, **kwargs).indices, order[:, :k])


def test_single_item_and_k_beyond_index():
    query, index = torch.randn(1, 4), torch.randn(1, 4)
    assert rank_of_partner(query, index, [0]).tolist() == [1]
    found = top_k(query, index, k=10)
    assert found.indices.shape == (1, 1) and found.indices.item() == 0


def _random_pairs(n_query: int, n_index: int, dim: int = 16, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    queries = torch.randn(n_query, dim, generator=generator)
    index = torch.randn(n_index, dim, generator=generator)
    partner = torch.randperm(n_index, generator=generator)[:n_query]
    return queries, index, partner


def _full_ranks(queries, index, partner) -> torch.Tensor:
    """Reference: full similarity matrix, stable sort by descending similarity."""
    sims = nn.functional.normalize(queries, dim=1) @ nn.functional.normalize(index, dim=1).t()
    order = torch.sort(sims, dim=1, descending=True, stable=True).indices
    return (order == partner[:, None]).nonzero()[:, 1] + 1


def test_chunked_ranks_equal_unchunked():
    queries, index, partner = _random_pairs(57, 80)
    expected = rank_of_partner(queries, index, partner, max_chunk_bytes=2**40)
    assert torch.equal(expected, _full_ranks(queries, index, partner))
    # 4 * 80 bytes per row: 1 row per chunk, then 3 rows, then an explicit chunk_size
    for kwargs in ({"max_chunk_bytes": 1}, {"max_chunk_bytes": 3 * 4 * 80}, {"chunk_size": 7}):
        assert torch.equal(rank_of_partner(queries, index, partner, **kwargs), expected)


def test_top_k_matches_torch_topk_and_ranks():
    queries, index, partner = _random_pairs(23, 40)
    sims = nn.functional.normalize(queries, dim=1) @ nn.functional.normalize(index, dim=1).t()
    values, positions = torch.topk(sims, 5, dim=1)
    for kwargs in ({}, {"chunk_size": 4}, {"max_chunk_bytes": 1}):
        found = top_k(queries, index, 5, **kwargs)
        assert torch.equal(found.indices, positions)
        assert torch.allclose(found.scores, values, atol=1e-6)
    # the item at top-k position j has rank j + 1
    found = top_k(queries, index, 40)
    ranks = rank_of_partner(queries, index, partner)
    assert torch.equal((found.indices == partner[:, None]).nonzero()[:, 1] + 1, ranks)


def test_rank_input_errors():
    queries, index, _ = _random_pairs(2, 3)
    with pytest.raises(ValueError, match="partner_index"):
        rank_of_partner(queries, index, [0, 3])
    with pytest.raises(ValueError, match="width"):
        rank_of_partner(queries, torch.randn(3, 5), [0, 1])
    with pytest.raises(ValueError, match="NaN"):
        rank_of_partner(torch.full((2, 16), float("nan")), index, [0, 1])


# ------------------------------------------------------------------ cross-check with docarray


def _tutorial_hit_rate(queries: "DocumentArray", k: int) -> float:
    """The tutorial's loop: a hit when the query's file name is among the top-k matches'."""
    hits = 0
    for query in queries:
        names = [Path(match.uri).name for match in query.matches[:k]]
        hits += int(Path(query.uri).name in names)
    return hits / len(queries)


def test_hit_at_k_agrees_with_docarray_match():
    n = 30
    queries_emb, index_emb, _ = _random_pairs(n, n, dim=8, seed=3)
    shuffle = torch.randperm(n, generator=torch.Generator().manual_seed(1)).tolist()
    queries = DocumentArray(
        [Document(uri=f"left/{i:05d}.jpg", embedding=queries_emb[i].numpy()) for i in range(n)]
    )
    # index in another order than the queries, so the pairing must go through the keys
    index = DocumentArray(
        [Document(uri=f"right/{i:05d}.jpg", embedding=index_emb[i].numpy()) for i in shuffle]
    )
    partner = pair_keys_to_partner(
        [document_key(doc) for doc in queries], [document_key(doc) for doc in index]
    )
    ranks = rank_of_partner(queries_emb, index_emb[shuffle], partner)
    ours = retrieval_metrics(ranks, ks=(1, 5, 10))
    matched = DocumentArray([Document(query, copy=True) for query in queries])
    matched.match(index, metric="cosine", limit=10)
    for k in (1, 5, 10):
        assert ours[f"hit@{k}"] == pytest.approx(_tutorial_hit_rate(matched, k))
    assert 0 < ours["hit@10"] < 1  # a non-trivial comparison


# ------------------------------------------------------------------ keys


def test_pair_keys():
    assert pair_keys_to_partner(["b", "a"], ["a", "b", "c"]).tolist() == [1, 0]
    with pytest.raises(ValueError, match="'00007.jpg'"):
        pair_keys_to_partner(["00001.jpg", "00007.jpg"], ["00001.jpg", "00002.jpg"])
    with pytest.raises(ValueError, match="more than once.*'a'"):
        pair_keys_to_partner(["a"], ["a", "a"])
    with pytest.raises(ValueError, match="and 2 more"):
        pair_keys_to_partner([f"q{i}" for i in range(12)], ["x"])
    assert document_key(Document(uri="left/00001.jpg")) == "00001.jpg"
    doc = Document()
    assert document_key(doc) == doc.id


# ------------------------------------------------------------------ embedding


class TinyCNN(nn.Module):
    """A small image embedder with dropout and batch norm (so eval mode matters)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(2)
        )
        self.dropout = nn.Dropout(0.5)
        self.head = nn.Linear(32, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(x).flatten(1)))


def _image_docs(side: str, n: int, seed: int) -> "DocumentArray":
    rng = np.random.default_rng(seed)
    return DocumentArray(
        [
            Document(
                uri=f"{side}/{i:05d}.jpg",
                tensor=rng.integers(0, 256, (40, 36, 3), dtype=np.uint8),
            )
            for i in range(n)
        ]
    )


def _snapshot(docs) -> List[tuple]:
    return [
        (doc.id, doc.uri, doc.tensor.copy(), doc.embedding, len(doc.matches)) for doc in docs
    ]


def test_embed_documents_leaves_docs_and_mode_alone():
    torch.manual_seed(0)
    model = TinyCNN().train()
    model.dropout.eval()  # a mixed state must come back as it was
    docs = _image_docs("left", 5, seed=0)
    before = _snapshot(docs)
    preprocess = vision_preprocessor(height=32, width=32, phase="validation")

    first = embed_documents(docs, model, preprocess, batch_size=2, progress=False)
    second = embed_documents(docs, model, preprocess, batch_size=5, progress=False)
    assert first.shape == (5, 6) and first.dtype == torch.float32
    assert torch.allclose(first, second, atol=1e-6)  # eval mode: no dropout, fixed BN
    assert model.training and not model.dropout.training and model.features.training
    for (id_, uri, tensor, embedding, matches), doc in zip(before, docs):
        assert (doc.id, doc.uri, doc.embedding, len(doc.matches)) == (id_, uri, embedding, matches)
        assert np.array_equal(doc.tensor, tensor)
    # ... unless asked to write the embeddings
    embed_documents(docs, model, preprocess, progress=False, write_embeddings=True)
    assert np.allclose(docs[3].embedding, first[3].numpy(), atol=1e-6)


def test_embed_documents_with_workers_and_progress_bar_gives_the_same_rows():
    torch.manual_seed(0)
    model = TinyCNN()
    docs = _image_docs("left", 6, seed=4)
    preprocess = vision_preprocessor(height=32, width=32, phase="validation")
    plain = embed_documents(docs, model, preprocess, batch_size=4, progress=False)
    parallel = embed_documents(docs, model, preprocess, batch_size=4, num_workers=1)
    assert torch.allclose(plain, parallel, atol=1e-6)


def test_embed_documents_without_preprocess_uses_tensor():
    docs = DocumentArray([Document(tensor=np.full(4, i, dtype=np.float32)) for i in range(3)])
    out = embed_documents(docs, nn.Identity(), batch_size=2, progress=False)
    assert torch.equal(out, torch.arange(3.0)[:, None].expand(3, 4))


@pytest.mark.parametrize("batch_size", [2, 4])
def test_embed_documents_names_a_document_of_another_shape(batch_size):
    docs = DocumentArray([Document(tensor=np.zeros(4, dtype=np.float32)) for _ in range(4)])
    odd = Document(id="odd-one", tensor=np.zeros(5, dtype=np.float32))
    docs[2] = odd
    # batch_size 4: mismatch inside a batch; 2: between batches
    with pytest.raises(ValueError, match="odd-one"):
        embed_documents(docs, nn.Identity(), batch_size=batch_size, progress=False)


# ------------------------------------------------------------------ end to end


def test_evaluate_pairs_end_to_end():
    torch.manual_seed(0)
    model = TinyCNN()
    left, right = _image_docs("left", 6, seed=1), _image_docs("right", 6, seed=2)
    right = DocumentArray(list(reversed(right)))  # pairing goes by file name
    preprocess = vision_preprocessor(height=32, width=32, phase="validation")

    def run() -> PairRetrievalResult:
        return evaluate_pairs(
            model, left, right, preprocess, ks=(1, 5, 10), batch_size=4,
            both_directions=True, progress=False,
        )

    first, second = run(), run()
    assert first.num_queries == first.num_index == 6 and first.ks == (1, 5, 10)
    assert all(0.0 <= value <= 1.0 for value in first.metrics.values())
    assert first.metrics["hit@10"] == 1.0  # k beyond the 6 index items
    assert first.metrics == second.metrics and torch.equal(first.ranks, second.ranks)
    assert first.reverse_metrics is not None and first.reverse_ranks.shape == (6,)
    for name, value in first.mean_metrics.items():
        assert value == pytest.approx((first.metrics[name] + first.reverse_metrics[name]) / 2)

    one_way = evaluate_pairs(model, left, right, preprocess, progress=False)
    assert one_way.reverse_metrics is None and one_way.mean_metrics is None
    assert one_way.metrics == first.metrics


def test_evaluate_pairs_reports_missing_partner():
    left, right = _image_docs("left", 3, seed=1), _image_docs("right", 2, seed=2)
    with pytest.raises(ValueError, match="00002.jpg"):
        evaluate_pairs(TinyCNN(), left, right, progress=False)


# ------------------------------------------------------------------ table


def test_format_table_exact():
    table = format_table(
        {
            "pre-trained": {"hit@1": 0.068, "hit@5": 0.142, "hit@10": 0.183},
            "fine-tuned": {"hit@1": 0.1224, "hit@5": 0.23, "hit@10": 0.3014},
            "self-supervision": {},
        },
        ks=(1, 5, 10),
    )
    assert table == (
        "| hit@k  | pre-trained | fine-tuned | self-supervision |\n"
        "|--------|-------------|------------|------------------|\n"
        "| hit@1  | 0.068       | 0.122      | -                |\n"
        "| hit@5  | 0.142       | 0.230      | -                |\n"
        "| hit@10 | 0.183       | 0.301      | -                |"
    )
