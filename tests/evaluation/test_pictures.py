"""Tests of ``finetuner_selfsup.pictures``: the retrieval grid and the loss curve PNGs.

Geometry is checked against the documented formula (written out here, not taken from
``GridLayout``), and the partner's green frame is checked pixel by pixel: present on the
four sides of exactly the partner's cell, absent on every other cell.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Tuple

import numpy as np
import pytest
import torch
from docarray import Document, DocumentArray
from PIL import Image

from finetuner_selfsup import pictures
from finetuner_selfsup.pictures import (
    FRAME,
    GREEN,
    HEADER_HEIGHT,
    LABEL_WIDTH,
    PAD,
    TITLE_HEIGHT,
    save_loss_curve,
    save_retrieval_examples,
)

RED = (200, 40, 40)
BLUE = (40, 60, 200)
GREY = (128, 128, 128)


# --------------------------------------------------------------------------- helpers


def uint8_doc(colour: Tuple[int, int, int], size: Tuple[int, int] = (20, 20)) -> Document:
    """A document whose ``tensor`` is a solid uint8 ``(H, W, 3)`` image."""
    return Document(tensor=np.full((*size, 3), colour, dtype=np.uint8))


def normalised_doc(colour: Tuple[int, int, int], size: int = 16) -> Document:
    """A document whose ``tensor`` is a float ``(3, H, W)`` ImageNet-normalised solid image."""
    mean = np.array(pictures.IMAGENET_MEAN)[:, None, None]
    std = np.array(pictures.IMAGENET_STD)[:, None, None]
    pixels = np.broadcast_to(np.array(colour, dtype=np.float64)[:, None, None] / 255.0, (3, size, size))
    return Document(tensor=((pixels - mean) / std).astype(np.float32))


def uri_doc(tmp_path: Path, name: str, colour: Tuple[int, int, int]) -> Document:
    """A document that only has a ``uri`` to a solid PNG file."""
    path = tmp_path / f"{name}.png"
    Image.new("RGB", (24, 18), colour).save(path)
    return Document(uri=str(path))


def expected_size(rows: int, k: int, thumb: int, title: bool) -> Tuple[int, int]:
    """The documented picture size of a retrieval grid."""
    cell = thumb + 2 * PAD
    return LABEL_WIDTH + (k + 1) * cell, (TITLE_HEIGHT if title else 0) + HEADER_HEIGHT + rows * cell


def thumb_origin(row: int, column: int, thumb: int, title: bool) -> Tuple[int, int]:
    """Top-left pixel of the thumbnail in ``row``, ``column`` (0 = query)."""
    cell = thumb + 2 * PAD
    top = (TITLE_HEIGHT if title else 0) + HEADER_HEIGHT
    return LABEL_WIDTH + column * cell + PAD, top + row * cell + PAD


def frame_samples(row: int, column: int, thumb: int, title: bool) -> List[Tuple[int, int]]:
    """One pixel in the middle of each side of the frame band around a thumbnail."""
    left, top = thumb_origin(row, column, thumb, title)
    inset = FRAME // 2 + 1  # inside the band of FRAME pixels just outside the thumbnail
    middle = thumb // 2
    return [
        (left + middle, top - inset),
        (left + middle, top + thumb - 1 + inset),
        (left - inset, top + middle),
        (left + thumb - 1 + inset, top + middle),
    ]


def centre_pixel(image: Image.Image, row: int, column: int, thumb: int, title: bool):
    left, top = thumb_origin(row, column, thumb, title)
    return image.getpixel((left + thumb // 2, top + thumb // 2))


@pytest.fixture
def retrieval(tmp_path: Path):
    """4 queries, an index of 8 documents of three kinds, top-5 results, partners."""
    queries = DocumentArray([uint8_doc(RED) for _ in range(4)])
    index = DocumentArray(
        [uint8_doc(GREY, (30, 20)) for _ in range(3)]
        + [normalised_doc(BLUE) for _ in range(3)]
        + [uri_doc(tmp_path, f"img{i}", RED) for i in range(2)]
    )
    topk = torch.tensor(
        [
            [0, 1, 2, 3, 4],  # partner 2 -> rank 3
            [7, 6, 5, 4, 3],  # partner 7 -> rank 1
            [1, 2, 3, 4, 5],  # partner 0 -> not in the top-5
            [5, 4, 3, 2, 6],  # partner 6 -> rank 5
        ]
    )
    partner = np.array([2, 7, 0, 6])
    ranks = [3, 1, None, 5]
    return queries, index, topk, partner, ranks


# --------------------------------------------------------------------------- retrieval grid


@pytest.mark.parametrize("title", [None, "Retrieval after fine-tuning"])
@pytest.mark.parametrize("thumb", [32, 50])
def test_grid_is_written_with_the_documented_size(tmp_path, retrieval, title, thumb):
    queries, index, topk, partner, _ = retrieval
    out = save_retrieval_examples(
        tmp_path / "sub" / "grid.png", queries, index, topk, partner, thumb_size=thumb, title=title
    )
    assert out == tmp_path / "sub" / "grid.png" and out.is_file()
    with Image.open(out) as image:
        assert image.format == "PNG"
        assert image.size == expected_size(4, 5, thumb, bool(title))


def test_num_queries_limits_the_rows(tmp_path, retrieval):
    queries, index, topk, partner, _ = retrieval
    out = save_retrieval_examples(tmp_path / "g.png", queries, index, topk, partner, num_queries=2, thumb_size=40)
    with Image.open(out) as image:
        assert image.size == expected_size(2, 5, 40, False)
    out = save_retrieval_examples(tmp_path / "g.png", queries, index, topk, partner, num_queries=99, thumb_size=40)
    with Image.open(out) as image:
        assert image.size == expected_size(4, 5, 40, False)


def test_green_frame_is_exactly_around_the_partner(tmp_path, retrieval):
    queries, index, topk, partner, ranks = retrieval
    thumb = 40
    out = save_retrieval_examples(tmp_path / "g.png", queries, index, topk, partner, thumb_size=thumb, title="t")
    with Image.open(out) as opened:
        image = opened.convert("RGB")
    for row, rank in enumerate(ranks):
        for column in range(6):  # the query and the 5 results
            colours = {image.getpixel(xy) for xy in frame_samples(row, column, thumb, True)}
            if column == rank:
                assert colours == {GREEN}, (row, column)
            else:
                assert GREEN not in colours, (row, column)


def test_explicit_rows_choose_and_order_the_queries(tmp_path, retrieval):
    queries, index, topk, partner, ranks = retrieval
    thumb = 36
    out = save_retrieval_examples(tmp_path / "g.png", queries, index, topk, partner, thumb_size=thumb, rows=[3, 0])
    with Image.open(out) as opened:
        image = opened.convert("RGB")
    assert image.size == expected_size(2, 5, thumb, False)
    for row, query_position in enumerate([3, 0]):
        rank = ranks[query_position]
        assert {image.getpixel(xy) for xy in frame_samples(row, rank, thumb, False)} == {GREEN}


def test_images_from_uint8_normalised_float_and_uri(tmp_path, retrieval):
    queries, index, topk, partner, _ = retrieval
    thumb = 40
    out = save_retrieval_examples(tmp_path / "g.png", queries, index, topk, partner, thumb_size=thumb)
    with Image.open(out) as opened:
        image = opened.convert("RGB")
    assert centre_pixel(image, 0, 0, thumb, False) == RED  # uint8 query
    assert centre_pixel(image, 0, 1, thumb, False) == GREY  # uint8, not square
    # row 1 shows index 7, 6 (uri files) then 5, 4, 3 (normalised float CHW)
    assert centre_pixel(image, 1, 1, thumb, False) == RED
    for column in (3, 4, 5):
        got = centre_pixel(image, 1, column, thumb, False)
        assert all(abs(a - b) <= 1 for a, b in zip(got, BLUE)), got


def test_torch_tensor_images_and_numpy_topk(tmp_path):
    queries = DocumentArray([Document(tensor=torch.full((12, 12, 3), 100, dtype=torch.uint8))])
    index = DocumentArray([Document(tensor=torch.zeros(3, 12, 12)) for _ in range(3)])
    out = save_retrieval_examples(tmp_path / "g.png", queries, index, np.array([[2, 1, 0]]), [1], thumb_size=24)
    with Image.open(out) as image:
        assert image.size == expected_size(1, 3, 24, False)


def test_grayscale_tensor(tmp_path):
    queries = DocumentArray([Document(tensor=np.full((10, 10), 77, dtype=np.uint8))])
    index = DocumentArray([Document(tensor=np.full((1, 10, 10), 0.5, dtype=np.float32))])
    out = save_retrieval_examples(tmp_path / "g.png", queries, index, [[0]], [0], thumb_size=20)
    with Image.open(out) as opened:
        image = opened.convert("RGB")
    assert centre_pixel(image, 0, 0, 20, False) == (77, 77, 77)
    assert {image.getpixel(xy) for xy in frame_samples(0, 1, 20, False)} == {GREEN}


def test_documents_are_not_modified(tmp_path, retrieval):
    queries, index, topk, partner, _ = retrieval
    before = [(doc.uri, None if doc.tensor is None else doc.tensor.copy()) for doc in index]
    save_retrieval_examples(tmp_path / "g.png", queries, index, topk, partner, thumb_size=20)
    for doc, (uri, tensor) in zip(index, before):
        assert doc.uri == uri
        assert (doc.tensor is None) == (tensor is None)
        if tensor is not None:
            np.testing.assert_array_equal(doc.tensor, tensor)


@pytest.mark.parametrize(
    "topk, partner, kwargs, message",
    [
        ([0, 1], [0], {}, "shape"),
        ([[0, 1]], [0, 1], {}, "partner"),
        ([[0, 99]], [0], {}, "outside the index"),
        ([[0, 1]], [0], {"rows": [5]}, "outside"),
        ([[0, 1]], [0], {"num_queries": 0}, "no query"),
        ([[0, 1]], [0], {"thumb_size": 0}, "thumb_size"),
    ],
)
def test_bad_inputs_are_refused(tmp_path, topk, partner, kwargs, message):
    queries = DocumentArray([uint8_doc(RED)])
    index = DocumentArray([uint8_doc(BLUE), uint8_doc(GREY)])
    with pytest.raises(ValueError, match=message):
        save_retrieval_examples(tmp_path / "g.png", queries, index, topk, partner, **kwargs)


def test_document_without_image_is_named(tmp_path):
    queries = DocumentArray([Document(id="lonely")])
    index = DocumentArray([uint8_doc(BLUE)])
    with pytest.raises(ValueError, match="lonely"):
        save_retrieval_examples(tmp_path / "g.png", queries, index, [[0]], [0])


def test_sixteen_bit_file_is_drawn_as_training_sees_it(tmp_path):
    # PIL's convert('RGB') would clip 20000 to 255 (white); training scales it to 78
    from finetuner_selfsup.pictures import document_image

    path = tmp_path / "deep.png"
    Image.fromarray(np.full((4, 4), 20000, np.uint16)).save(path)
    assert Image.open(path).mode == "I;16"
    drawn = np.asarray(document_image(Document(uri=str(path))))
    assert drawn.shape == (4, 4, 3) and (drawn == 78).all()  # round(20000 * 255 / 65535)


def test_partner_rank():
    assert pictures.partner_rank([4, 2, 9], 9) == 3
    assert pictures.partner_rank(np.array([4, 2, 9]), np.int64(4)) == 1
    assert pictures.partner_rank([4, 2, 9], 7) is None


def test_imagenet_statistics_match_the_preprocessor():
    from finetuner_selfsup.augment import IMAGENET_MEAN, IMAGENET_STD

    assert pictures.IMAGENET_MEAN == IMAGENET_MEAN and pictures.IMAGENET_STD == IMAGENET_STD


# --------------------------------------------------------------------------- loss curve


def line_pixels(path: Path) -> int:
    """How many pixels have the curve's colour."""
    with Image.open(path) as opened:
        array = np.asarray(opened.convert("RGB"))
    return int(np.all(array == np.array(pictures.LINE), axis=-1).sum())


def test_loss_curve_is_written_and_not_blank(tmp_path):
    losses = [4.0 / (1 + step) for step in range(50)]
    out = save_loss_curve(tmp_path / "c" / "loss.png", losses, title="SimCLR", epoch_boundaries=[10, 20, 30, 40])
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size == (640, 360)
        assert len(set(np.asarray(image.convert("L")).reshape(-1).tolist())) > 2
    assert line_pixels(out) > 300


def test_loss_curve_size_and_tensor_input(tmp_path):
    out = save_loss_curve(tmp_path / "loss.png", torch.linspace(2, 1, 30), width=300, height=200, ylabel="NT-Xent")
    with Image.open(out) as image:
        assert image.size == (300, 200)
    assert line_pixels(out) > 100


def test_single_value_is_a_dot(tmp_path):
    out = save_loss_curve(tmp_path / "loss.png", [1.25])
    assert 10 < line_pixels(out) < 100


def test_constant_losses(tmp_path):
    assert line_pixels(save_loss_curve(tmp_path / "loss.png", [0.0] * 10)) > 300


def test_non_finite_values_are_skipped_and_reported(tmp_path):
    losses = [3.0, 2.0, float("nan"), 1.5, float("inf"), 1.0, 0.9]
    out = save_loss_curve(tmp_path / "loss.png", losses, title="run")
    assert line_pixels(out) > 100
    assert pictures._chart_title("run", 2, 7) == "run (2 of 7 values non-finite, not drawn)"
    assert pictures._chart_title("run", 0, 7) == "run"
    with Image.open(out) as image:  # the y range comes from the finite values only
        assert image.size == (640, 360)


def test_only_non_finite_values_still_draw_a_chart(tmp_path):
    out = save_loss_curve(tmp_path / "loss.png", [float("nan"), float("-inf")])
    with Image.open(out) as image:
        image.load()
    assert line_pixels(out) == 0


@pytest.mark.parametrize("empty", [[], np.array([]), torch.tensor([])])
def test_empty_losses_are_refused(tmp_path, empty):
    with pytest.raises(ValueError, match="empty"):
        save_loss_curve(tmp_path / "loss.png", empty)
    assert not (tmp_path / "loss.png").exists()


def test_too_small_chart_is_refused(tmp_path):
    with pytest.raises(ValueError, match="no room"):
        save_loss_curve(tmp_path / "loss.png", [1.0, 2.0], width=50, height=50)
