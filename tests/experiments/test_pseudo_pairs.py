"""Pseudo-pairs (the ``pseudo-pairs`` recipe): matching unlabelled left and right images."""
from __future__ import annotations

import itertools

import pytest
import torch
from docarray import Document, DocumentArray
from torch import nn

from finetuner_selfsup.experiments.data.tll import LABEL_TAG
from finetuner_selfsup.experiments.reproduce.pseudo_pairs import (
    PSEUDO_LABEL_PREFIX,
    assigned_pairs,
    image_side,
    make_pseudo_pairs,
    mutual_nearest_pairs,
)
from finetuner_selfsup.experiments.reproduce.results_file import pseudo_pair_record


def test_mutual_nearest_pairs_keeps_only_pairs_that_choose_each_other_surest_first():
    # left 0 and right 1 choose each other; left 1 and left 2 both prefer right 0, which
    # prefers left 2 -> (2, 0); left 1 is left without a partner, right 2 is nobody's best
    left = torch.tensor([[0.0, 1.0], [1.0, 0.2], [1.0, 0.0]])
    right = torch.tensor([[1.0, 0.05], [0.1, 1.0], [-1.0, -1.0]])
    cos = torch.nn.functional.normalize(left, dim=1) @ torch.nn.functional.normalize(right, dim=1).T
    pairs = mutual_nearest_pairs(left, right)
    # (2, 0) is the more similar pair (0.999 against 0.995), but left 1 is almost as close
    # to right 0 (0.989): its margin is 0.01, that of (0, 1) 0.70, so (0, 1) comes first
    assert [(p.left, p.right) for p in pairs] == [(0, 1), (2, 0)]
    assert [p.similarity for p in pairs] == pytest.approx([float(cos[0, 1]), float(cos[2, 0])])
    margin_01 = min(cos[0, 1] - cos[0, 0], cos[0, 1] - cos[1, 1])
    margin_20 = min(cos[2, 0] - cos[2, 1], cos[2, 0] - cos[1, 0])
    assert [p.margin for p in pairs] == pytest.approx([float(margin_01), float(margin_20)])
    assert float(margin_20) < 0.02 < 0.6 < float(margin_01)
    assert mutual_nearest_pairs(left[:0], right) == []
    single = mutual_nearest_pairs(left[:1], right[1:2])
    assert [(p.left, p.right) for p in single] == [(0, 0)] and single[0].margin == pytest.approx(single[0].similarity)


def test_assigned_pairs_is_the_one_to_one_pairing_of_largest_total_similarity():
    # the matrix of the test above: mutual neighbours pair only two left images, the
    # assignment pairs all three; right 2 is opposite to both left 1 (cos -0.83) and
    # left 2 (-0.71), so left 2 takes it and left 1 gets right 0 (0.989, against 0.999
    # for left 2): 0.989 - 0.707 = 0.28 beats 0.999 - 0.832 = 0.17
    left = torch.tensor([[0.0, 1.0], [1.0, 0.2], [1.0, 0.0]])
    right = torch.tensor([[1.0, 0.05], [0.1, 1.0], [-1.0, -1.0]])
    pairs = assigned_pairs(left, right)
    assert sorted((p.left, p.right) for p in pairs) == [(0, 1), (1, 0), (2, 2)]
    # against every one-to-one pairing of random 5 x 5 embeddings
    generator = torch.Generator().manual_seed(0)
    left, right = torch.randn(5, 8, generator=generator), torch.randn(5, 8, generator=generator)
    cos = torch.nn.functional.normalize(left, dim=1) @ torch.nn.functional.normalize(right, dim=1).T
    best = max(itertools.permutations(range(5)), key=lambda perm: float(sum(cos[i, j] for i, j in enumerate(perm))))
    pairs = assigned_pairs(left, right)
    assert sorted((p.left, p.right) for p in pairs) == list(enumerate(best))
    # margins: similarity minus the best other similarity of either image; surest first
    for p in pairs:
        others = torch.cat([cos[p.left, :p.right], cos[p.left, p.right + 1:], cos[:p.left, p.right], cos[p.left + 1:, p.right]])
        assert p.margin == pytest.approx(float(cos[p.left, p.right] - others.max()))
        assert p.similarity == pytest.approx(float(cos[p.left, p.right]))
    assert [p.margin for p in pairs] == sorted((p.margin for p in pairs), reverse=True)
    # unequal sides: every image of the smaller side gets a partner
    assert len(assigned_pairs(left[:3], right)) == 3 and assigned_pairs(left[:0], right) == []


def test_image_side_is_the_folder_and_other_layouts_are_refused_by_name():
    assert image_side(Document(uri="/data/tll/left/001.jpg")) == "left"
    assert image_side(Document(uri="/data/tll/right/001.jpg")) == "right"
    with pytest.raises(ValueError, match=r"'odd'.*not in a 'left/' or 'right/' folder"):
        image_side(Document(id="odd", uri="/data/tll/top/001.jpg"))
    with pytest.raises(ValueError, match="'blank'"):
        image_side(Document(id="blank"))


class _MeanColour(nn.Module):
    """An embedding model with no weights: the mean colour of the image."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images.mean(dim=(2, 3))


def _unlabelled(colours):
    """Left image ``i`` and right image ``i`` share colour ``colours[i]`` (so they are each
    other's nearest neighbours); the right images are listed in reverse order and under
    other file names, so only the embeddings can pair them."""
    left = [Document(id=f"L{i}", uri=f"/d/left/a{i}.png", tensor=torch.tensor(c)) for i, c in enumerate(colours)]
    right = [Document(id=f"R{i}", uri=f"/d/right/b{i}.png", tensor=torch.tensor(c)) for i, c in enumerate(colours)]
    return DocumentArray(left + right[::-1])


def _image(doc):
    colour = torch.as_tensor(doc.tensor, dtype=torch.float32)
    return colour.view(3, 1, 1).expand(3, 4, 4).clone()


COLOURS = [(1.0, 0.1, 0.1), (0.1, 1.0, 0.1), (0.1, 0.1, 1.0), (0.6, 0.6, 0.1)]


@pytest.mark.parametrize("matching", ["mutual", "assignment"])
def test_make_pseudo_pairs_labels_matched_copies_and_leaves_the_originals_alone(matching):
    unlabelled = _unlabelled(COLOURS)
    documents, matches = make_pseudo_pairs(_MeanColour(), unlabelled, _image, share=1.0, matching=matching)
    assert sorted((left.id, right.id) for left, right, _ in matches) == [(f"L{i}", f"R{i}") for i in range(4)]
    assert len(documents) == 8
    labels = {}
    for doc in documents:
        labels.setdefault(doc.tags[LABEL_TAG], []).append(doc.id)
    assert sorted(sorted(ids) for ids in labels.values()) == [[f"L{i}", f"R{i}"] for i in range(4)]
    assert all(label.startswith(PSEUDO_LABEL_PREFIX) for label in labels)
    assert all(not doc.tags for doc in unlabelled)  # the inputs got no labels
    assert {doc.uri for doc in documents} == {doc.uri for doc in unlabelled}


def test_make_pseudo_pairs_keeps_the_most_similar_share():
    unlabelled = _unlabelled(COLOURS)
    documents, matches = make_pseudo_pairs(_MeanColour(), unlabelled, _image, share=0.5)
    assert len(matches) == 2 and len(documents) == 4
    margins = [margin for _, _, margin in matches]
    assert margins == sorted(margins, reverse=True)
    with pytest.raises(ValueError, match="share"):
        make_pseudo_pairs(_MeanColour(), unlabelled, _image, share=0.0)
    with pytest.raises(ValueError, match="matching must be 'mutual' or 'assignment', got 'greedy'"):
        make_pseudo_pairs(_MeanColour(), unlabelled, _image, share=1.0, matching="greedy")


def test_pseudo_pair_record_counts_true_pairs_by_file_name():
    record = pseudo_pair_record([("/d/left/1.jpg", "/d/right/1.jpg", 0.9), ("/d/left/2.jpg", "/d/right/3.jpg", 0.5)])
    assert record == {"made": 2, "correct": 1, "precision": 0.5, "smallest_margin": 0.5}
    assert pseudo_pair_record([])["precision"] is None
