"""Pseudo-pairs: the fine-tuned model pairs up unlabelled images for a second fine-tune.

Self-training (Lee 2013, "Pseudo-Label"; Xie et al. 2020, "Self-training with Noisy
Student", https://arxiv.org/abs/1911.04252): a model trained on the few labels labels the
unlabelled data, and a new model trains on both. Here the unlabelled 70 % of a TLL-shaped
set are left and right images whose pairing is unknown. After the fine-tune, every
unlabelled left image is matched with the unlabelled right images by cosine similarity of
the fine-tuned embeddings; a left and a right image that are each other's nearest
neighbour (*mutual* nearest neighbours, a much surer match than a one-sided one) become a
pseudo-pair, those that beat their runners-up by the widest margin first. Or
(``matching='assignment'``, the ``assigned-pairs`` recipe) every unlabelled left image is
paired: the one-to-one pairing with the largest total similarity, which on the fonts
proxy held 1.8x the true pairs of the mutual neighbours (at 44-46 % against 58-60 % of
all pairs made) -- TLL's unlabelled part, like the proxies', is made of whole pairs.

The side of an image is the folder it lies in (``left/`` or ``right/``, the TLL layout);
file names are never looked at -- in TLL's layout they would give the pairing away.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, List, NamedTuple, Sequence, Tuple

import torch
from torch import nn

from ..data.tll import LABEL_TAG
from ...evaluation import embed_documents

SIDES = ("left", "right")
#: prefix of a pseudo-pair's label, which sets it apart from real pairs' labels (file names)
PSEUDO_LABEL_PREFIX = "pseudo-pair:"


def is_pseudo_label(label: Any) -> bool:
    """Whether ``label`` is a pseudo-pair's (made by :func:`make_pseudo_pairs`)."""
    return isinstance(label, str) and label.startswith(PSEUDO_LABEL_PREFIX)


class PseudoPair(NamedTuple):
    """One matched left and right image (rows of the two embedding tensors), the cosine
    similarity of their embeddings, and by how much it beats the runner-up on either side."""

    left: int
    right: int
    similarity: float
    margin: float


def image_side(doc: Any) -> str:
    """``'left'`` or ``'right'``: the folder of the document's image file.

    :raises ValueError: the document has no file, or it is not in a ``left``/``right``
        folder (naming the document).
    """
    uri = getattr(doc, "uri", "") or ""
    side = Path(uri).parent.name if uri else ""
    if side not in SIDES:
        raise ValueError(
            f"pseudo-pairs need to know which side an unlabelled image is from, but document "
            f"{getattr(doc, 'id', '?')!r} (uri {uri!r}) is not in a 'left/' or 'right/' folder; "
            f"lay the images out as TLL does (left/NAME, right/NAME) or use a recipe without "
            f"pseudo-pairs."
        )
    return side


def check_sides(unlabelled: Sequence[Any]) -> List[str]:
    """The side of every document (:func:`image_side`), raising for the first that has none."""
    return [image_side(doc) for doc in unlabelled]


def mutual_nearest_pairs(left: torch.Tensor, right: torch.Tensor) -> List[PseudoPair]:
    """Rows ``i`` of ``left`` and ``j`` of ``right`` that are each other's most similar
    (cosine), the surest first.

    Sureness is the *margin* (:func:`_ranked_pairs`): how much more similar ``i`` and ``j``
    are than either is to its second most similar image (Lowe's ratio test, as a
    difference of cosines). It ranks true pairs far better than the similarity itself: on
    the proxies' unlabelled images, the 50 mutual pairs of largest margin were 76-96 % true
    pairs, the 50 most similar 56-66 % (docs page "Label efficiency"). With a single image
    on a side the margin is the similarity.
    """
    if left.shape[0] == 0 or right.shape[0] == 0:
        return []
    similarity = _cosine_similarity(left, right)
    best_right = similarity.argmax(dim=1)
    best_left = similarity.argmax(dim=0)
    rows = torch.arange(left.shape[0])
    mutual = best_left[best_right] == rows
    return _ranked_pairs(similarity, rows[mutual], best_right[mutual])


def assigned_pairs(left: torch.Tensor, right: torch.Tensor) -> List[PseudoPair]:
    """The one-to-one pairing of ``left`` and ``right`` rows with the largest total cosine
    similarity (the linear assignment problem, solved exactly by
    ``scipy.optimize.linear_sum_assignment``), the surest first.

    Every image of the smaller side gets a partner -- about twice the pairs mutual nearest
    neighbours give, at a lower share of true pairs. Sureness is the margin of
    :func:`mutual_nearest_pairs` (here it can be negative: an assigned partner need not be
    either image's most similar).
    """
    from scipy.optimize import linear_sum_assignment

    if left.shape[0] == 0 or right.shape[0] == 0:
        return []
    similarity = _cosine_similarity(left, right)
    rows, columns = linear_sum_assignment(similarity.numpy(), maximize=True)
    return _ranked_pairs(similarity, torch.as_tensor(rows), torch.as_tensor(columns))


def _cosine_similarity(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    left = torch.nn.functional.normalize(left.to(torch.float32), dim=1)
    right = torch.nn.functional.normalize(right.to(torch.float32), dim=1)
    return left @ right.T


def _ranked_pairs(similarity: torch.Tensor, rows: torch.Tensor, columns: torch.Tensor) -> List[PseudoPair]:
    """The pairs ``(rows[k], columns[k])`` (each row and column at most once), largest
    margin first. A pair's margin is its similarity less the larger of its two runners-up:
    the left image's best other right image and the right image's best other left image
    (0 where a side has no other image). In float64, the cosines being float32."""
    values = similarity[rows, columns]
    # each image's best other match: its row (column) without the pair's own entry
    others = similarity.index_put((rows, columns), torch.tensor(float("-inf")))
    no_other = torch.zeros_like(values)
    runner_up_of_left = others.max(dim=1).values[rows] if similarity.shape[1] > 1 else no_other
    runner_up_of_right = others.max(dim=0).values[columns] if similarity.shape[0] > 1 else no_other
    margins = values.double() - torch.maximum(runner_up_of_left, runner_up_of_right).double()
    pairs = [
        PseudoPair(i, j, value, margin)
        for i, j, value, margin in zip(rows.tolist(), columns.tolist(), values.tolist(), margins.tolist())
    ]
    return sorted(pairs, key=lambda pair: -pair.margin)


def make_pseudo_pairs(
    model: nn.Module,
    unlabelled: Sequence[Any],
    preprocess_fn: Callable[[Any], Any],
    share: float,
    *,
    matching: str = "mutual",
    batch_size: int = 64,
    device: str = "cpu",
    num_workers: int = 0,
) -> Tuple[Any, List[Tuple[Any, Any, float]]]:
    """Labelled copies of matched unlabelled images, for a fine-tune beside the real pairs.

    :param share: keep at most ``share`` x (number of unlabelled left images) pairs, those
        of largest margin.
    :param matching: ``'mutual'`` (:func:`mutual_nearest_pairs`) or ``'assignment'``
        (:func:`assigned_pairs`).
    :param num_workers: DataLoader worker processes that read the images.
    :return: ``(documents, matches)``: new documents (id and uri of the originals, a
        ``pseudo-pair:<left id>`` label on both images of a pair; the originals are not
        touched) and, per kept pair, ``(left document, right document, margin)``.
    """
    from docarray import Document, DocumentArray

    if not 0.0 < share <= 1.0:
        raise ValueError(f"share of pseudo-pairs must be in (0, 1], got {share}")
    sides = check_sides(unlabelled)
    left_docs = [doc for doc, side in zip(unlabelled, sides) if side == "left"]
    right_docs = [doc for doc, side in zip(unlabelled, sides) if side == "right"]

    def embed(docs: List[Any]) -> torch.Tensor:
        return embed_documents(
            docs, model, preprocess_fn=preprocess_fn, batch_size=batch_size, device=device, progress=False,
            num_workers=num_workers,
        )

    matchers = {"mutual": mutual_nearest_pairs, "assignment": assigned_pairs}
    if matching not in matchers:
        raise ValueError(f"matching must be 'mutual' or 'assignment', got {matching!r}")
    match = matchers[matching]
    pairs = match(embed(left_docs), embed(right_docs))
    pairs = pairs[: int(share * len(left_docs))]
    documents = DocumentArray()
    matches = []
    for pair in pairs:
        left_doc, right_doc = left_docs[pair.left], right_docs[pair.right]
        label = f"{PSEUDO_LABEL_PREFIX}{left_doc.id}"
        for doc in (left_doc, right_doc):
            documents.append(Document(id=doc.id, uri=doc.uri, tags={LABEL_TAG: label}))
        matches.append((left_doc, right_doc, pair.margin))
    return documents, matches
