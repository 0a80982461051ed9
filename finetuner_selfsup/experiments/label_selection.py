"""Which images to label: the most typical image of each cluster of the embeddings.

With a budget of a few labels, which images get them matters as much as how they are
used: a random tenth of a data set can miss whole kinds of images (on the fonts proxy, the
random 10 % held no accented a, and those were the queries the fine-tuned model missed;
docs page "Label efficiency"). TypiClust (Hacohen, Dekel & Weinshall 2022, "Active
Learning on a Budget", https://arxiv.org/abs/2202.02794) chooses them from the
self-supervised embeddings of the unlabelled images: cluster them into as many clusters as
there are labels to give, and label the most *typical* image of each cluster -- the one
closest, on average, to its nearest neighbours in the cluster. The labels then cover every
kind of image, each with an example that stands for its kind rather than an outlier; in
the few-labels regime that beats random choice and the uncertainty- and coverage-based
methods of active learning, which need many labels to pay off.

:func:`typical_per_cluster` works on an embedding matrix; :func:`choose_for_labelling`
embeds documents with a model first (e.g. the self-supervised model of the tutorial's first
``ft.fit``).
"""
from __future__ import annotations

import warnings
from typing import Any, Callable, List, Optional, Sequence

import numpy as np
import torch
from torch import nn

from ..devices import DeviceLike

#: neighbours whose mean distance measures an image's typicality (TypiClust's value)
TYPICALITY_NEIGHBOURS = 20


def typicality(embeddings: torch.Tensor, neighbours: int = TYPICALITY_NEIGHBOURS) -> torch.Tensor:
    """Per row, the inverse of the mean Euclidean distance to its ``neighbours`` nearest
    other rows (fewer when there are fewer other rows); a lone row, with nothing to
    compare it with, gets ``inf``."""
    count = embeddings.shape[0]
    k = min(neighbours, count - 1)
    if k < 1:
        return torch.full((count,), float("inf"))
    distances = torch.cdist(embeddings, embeddings)
    nearest = distances.topk(k + 1, dim=1, largest=False).values[:, 1:]  # drop the row itself
    return 1.0 / nearest.mean(dim=1).clamp_min(1e-12)


def typical_per_cluster(
    embeddings: torch.Tensor, count: int, *, seed: int = 0, neighbours: int = TYPICALITY_NEIGHBOURS
) -> List[int]:
    """``count`` row indices of ``embeddings`` to label: k-means (k-means++ start, seeded)
    of the L2-normalised rows into ``count`` clusters, and the most typical row
    (:func:`typicality`, within its cluster) of each, the largest cluster's first.

    Should k-means leave a cluster empty, the next most typical rows of the largest
    clusters fill the list, so it always has ``count`` distinct indices.

    :raises ValueError: ``count`` is not between 1 and the number of rows.
    """
    from scipy.cluster.vq import kmeans2

    total = embeddings.shape[0]
    if not 1 <= count <= total:
        raise ValueError(f"cannot choose {count} of {total} images to label; choose between 1 and {total}")
    points = torch.nn.functional.normalize(embeddings.detach().to(torch.float64).cpu(), dim=1)
    if count == total:
        return list(range(total))
    with warnings.catch_warnings():
        # an empty cluster is handled below (filled from the largest clusters)
        warnings.simplefilter("ignore")
        _, assignment = kmeans2(points.numpy(), count, iter=50, minit="++", **_kmeans_seed(kmeans2, seed))
    assignment = torch.as_tensor(assignment)
    clusters = [(assignment == c).nonzero().flatten() for c in range(count)]
    # per cluster, its rows from most to least typical; clusters largest first
    ranked = [
        members[typicality(points[members], neighbours).argsort(descending=True, stable=True)].tolist()
        for members in sorted((m for m in clusters if len(m)), key=len, reverse=True)
    ]
    chosen = [rows[0] for rows in ranked]
    depth = 1
    while len(chosen) < count:
        chosen.extend(rows[depth] for rows in ranked if len(rows) > depth)
        depth += 1
    return chosen[:count]


def _kmeans_seed(kmeans2: Callable[..., Any], seed: int) -> dict:
    """The seeding keyword of this scipy's ``kmeans2``: ``rng`` (scipy >= 1.15) or ``seed``."""
    import inspect

    name = "rng" if "rng" in inspect.signature(kmeans2).parameters else "seed"
    return {name: np.random.default_rng(seed)}


def choose_for_labelling(
    model: nn.Module,
    docs: Sequence[Any],
    count: int,
    *,
    preprocess_fn: Optional[Callable[[Any], Any]] = None,
    batch_size: int = 64,
    device: DeviceLike = "cpu",
    seed: int = 0,
    progress: bool = True,
    num_workers: int = 0,
) -> List[int]:
    """Indices of the ``count`` documents of ``docs`` to label first: embed them with
    ``model`` (as evaluation does: ``preprocess_fn`` per document, eval mode) and keep the
    most typical of each of ``count`` clusters (:func:`typical_per_cluster`).

    Give it the images a person would label -- in the TLL layout the left (query) images,
    each then labelled by finding its partner -- and the self-supervised model, which
    already groups images of a kind. A model with a projection head (what the tutorial's
    first ``ft.fit`` returns) is used without it: the backbone's embeddings are those the
    fine-tune starts from, and SimCLR's head output is the less general of the two.

    :param num_workers: DataLoader worker processes that read the images (as in
        :func:`~finetuner_selfsup.evaluation.embed_documents`).
    :raises ValueError: ``count`` is not between 1 and ``len(docs)``.
    """
    from ..evaluation import embed_documents
    from ..heads import is_model_with_head

    if is_model_with_head(model):
        model = model.embed_model
    if not 1 <= count <= len(docs):
        raise ValueError(f"cannot choose {count} of {len(docs)} documents to label; choose between 1 and {len(docs)}")
    embeddings = embed_documents(
        docs, model, preprocess_fn=preprocess_fn, batch_size=batch_size, device=device,
        progress=progress, num_workers=num_workers, description="Embedding images to choose labels",
    )
    return typical_per_cluster(embeddings, count, seed=seed)
