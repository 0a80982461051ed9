"""Choosing which images to label: typicality, one typical image per cluster, and the
document-level entry point."""
from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import nn

from finetuner_selfsup.experiments.label_selection import choose_for_labelling, typical_per_cluster, typicality


def test_typicality_is_the_inverse_mean_distance_to_the_nearest_others():
    points = torch.tensor([[0.0], [1.0], [3.0], [7.0]])
    # one neighbour: nearest distances 1, 1, 2, 4
    assert typicality(points, neighbours=1).tolist() == pytest.approx([1.0, 1.0, 0.5, 0.25])
    # two neighbours: (1+3)/2, (1+2)/2, (2+3)/2, (4+6)/2
    assert typicality(points, neighbours=2).tolist() == pytest.approx([0.5, 1 / 1.5, 0.4, 0.2])
    # more neighbours than other points: all of them
    assert typicality(points, neighbours=20).tolist() == pytest.approx([3 / 11, 1 / 3, 1 / 3, 3 / 17])
    assert typicality(points[:1]).tolist() == [float("inf")]


def _blobs(sizes, generator):
    """Blobs around orthogonal unit vectors: per blob a tight core of 4 points and the
    rest spread wide; returns the points, each point's blob and whether it is a core point."""
    rows, blob_of, core = [], [], []
    dim = 8
    for blob, size in enumerate(sizes):
        centre = torch.zeros(dim)
        centre[blob] = 1.0
        for i in range(size):
            spread = 0.005 if i < 4 else 0.15
            rows.append(centre + spread * torch.randn(dim, generator=generator))
            blob_of.append(blob)
            core.append(i < 4)
    order = torch.randperm(len(rows), generator=generator)
    return (torch.stack(rows)[order], [blob_of[i] for i in order.tolist()],
            [core[i] for i in order.tolist()])


def test_one_core_image_per_cluster_largest_cluster_first():
    points, blob_of, core = _blobs([30, 20, 12], torch.Generator().manual_seed(0))
    chosen = typical_per_cluster(points, 3)
    assert [blob_of[i] for i in chosen] == [0, 1, 2]
    assert all(core[i] for i in chosen), "an outlying image was chosen over the tight core"
    # the scale of the embeddings does not matter (rows are normalised)
    assert typical_per_cluster(points * 7.5, 3) == chosen


def test_choice_is_seeded_and_distinct():
    points = torch.randn(50, 6, generator=torch.Generator().manual_seed(1))
    first = typical_per_cluster(points, 10, seed=3)
    assert first == typical_per_cluster(points, 10, seed=3)
    assert len(set(first)) == 10 and all(0 <= i < 50 for i in first)


def test_empty_clusters_are_filled_with_the_next_most_typical_images():
    # identical rows: k-means finds one cluster, the other choices still have to be made
    points = torch.ones(10, 4)
    chosen = typical_per_cluster(points, 3)
    assert len(set(chosen)) == 3


def test_choosing_every_image_returns_them_all():
    assert typical_per_cluster(torch.randn(5, 3), 5) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("count", [0, 6])
def test_impossible_count_is_refused(count):
    with pytest.raises(ValueError, match=f"cannot choose {count} of 5 images"):
        typical_per_cluster(torch.randn(5, 3), count)


def test_documents_are_embedded_with_the_model_and_chosen_per_cluster():
    from docarray import Document, DocumentArray

    points, blob_of, core = _blobs([16, 10, 6], torch.Generator().manual_seed(2))
    docs = DocumentArray(Document(tensor=row.numpy()) for row in points)
    model = nn.Linear(8, 8, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.eye(8) * 2.0)  # embeddings = 2 x points: same clusters
    chosen = choose_for_labelling(
        model, docs, 3, preprocess_fn=lambda doc: torch.as_tensor(doc.tensor), progress=False
    )
    assert chosen == typical_per_cluster(points, 3)
    assert [blob_of[i] for i in chosen] == [0, 1, 2] and all(core[i] for i in chosen)
    with pytest.raises(ValueError, match="cannot choose 40 of 32 documents"):
        choose_for_labelling(model, docs, 40, progress=False)

    # a self-supervised model with its projection head is embedded without the head (a
    # head mapping everything to one point would make every image equally typical)
    head = nn.Linear(8, 4)
    nn.init.zeros_(head.weight)
    with_head = nn.Sequential(OrderedDict(embed_model=model, projection_head=head))
    assert choose_for_labelling(
        with_head, docs, 3, preprocess_fn=lambda doc: torch.as_tensor(doc.tensor), progress=False
    ) == chosen
