"""Pictures of a run, drawn with Pillow only: retrieval examples and loss curves.

* :func:`save_retrieval_examples` -- a PNG grid with one row per query: the query image,
  then its top-k results in rank order; the query's true partner is outlined with a thick
  green frame where it appears, and the row label says at which rank (or that it is not in
  the top-k). This is what "hit@k" looks like, for a reader who wants to see it.
* :func:`save_loss_curve` -- a plain line chart of per-step losses with min/max tick labels
  and optional epoch boundaries, for a quick look at whether training converged.

Why Pillow and not matplotlib: Pillow is already a dependency (images are decoded with
it), and these two pictures need nothing more than rectangles, lines and text.

Documents' images come from ``doc.tensor`` when it is set -- uint8 ``(H, W, C)`` as
docarray loads it, or float ``(C, H, W)`` normalised with the ImageNet mean/std as
:func:`finetuner_selfsup.augment.vision_preprocessor` and docarray's
``set_image_tensor_normalization`` produce it (de-normalised for display) -- otherwise
from ``doc.blob`` (encoded bytes) or ``doc.uri`` (a file). Documents are never modified.
"""
from __future__ import annotations

import io
import math
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

from .augment.image_loading import to_rgb

__all__ = [
    "FRAME",
    "GREEN",
    "GridLayout",
    "PAD",
    "document_image",
    "partner_rank",
    "save_loss_curve",
    "save_retrieval_examples",
    "tensor_to_image",
]

PathLike = Union[str, Path]

#: ImageNet statistics, the same as ``finetuner_selfsup.augment.IMAGENET_MEAN``/``_STD``
#: (repeated here so that drawing pictures does not import torch).
IMAGENET_MEAN: Tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: Tuple[float, float, float] = (0.229, 0.224, 0.225)

#: space around each thumbnail, in pixels; the partner's frame is drawn inside it
PAD = 6
#: thickness of the partner's green frame (at most ``PAD``)
FRAME = 5
#: width of the row-label column on the left of the retrieval grid
LABEL_WIDTH = 100
#: height of the column captions ("query", "1", "2", ...)
HEADER_HEIGHT = 18
#: height of the title band (only when a title is given)
TITLE_HEIGHT = 24

#: colour of the partner's frame
GREEN: Tuple[int, int, int] = (0, 200, 0)
#: colour of the thin frame around each query image
QUERY_FRAME: Tuple[int, int, int] = (70, 110, 200)
BACKGROUND: Tuple[int, int, int] = (255, 255, 255)
THUMB_BACKGROUND: Tuple[int, int, int] = (235, 235, 235)
TEXT: Tuple[int, int, int] = (0, 0, 0)
MISS_TEXT: Tuple[int, int, int] = (190, 0, 0)
LINE: Tuple[int, int, int] = (31, 119, 180)
BOUNDARY: Tuple[int, int, int] = (190, 190, 190)


# --------------------------------------------------------------------------- images


def _as_numpy(array: Any) -> np.ndarray:
    """A numpy view of a numpy array or a torch tensor (detached, on the CPU)."""
    if hasattr(array, "detach"):
        array = array.detach().cpu().numpy()
    return np.asarray(array)


def _channels_last(array: np.ndarray, prefer_channels_first: bool) -> np.ndarray:
    """``array`` as ``(H, W, C)``; ``(H, W)`` becomes one channel.

    The channel axis is the one of size 1, 3 or 4; when both ends qualify (tiny images)
    float tensors are taken as channel-first (what preprocessing produces) and integer
    ones as channel-last (what docarray's image loading produces).
    """
    if array.ndim == 2:
        return array[:, :, None]
    if array.ndim != 3:
        raise ValueError(f"an image tensor must have 2 or 3 axes, got shape {array.shape}")
    first, last = array.shape[0] in (1, 3, 4), array.shape[-1] in (1, 3, 4)
    if first and (prefer_channels_first or not last):
        return np.moveaxis(array, 0, -1)
    if last:
        return array
    raise ValueError(f"cannot tell the channel axis of an image tensor of shape {array.shape}")


def _denormalize(array: np.ndarray) -> np.ndarray:
    """Undo ImageNet normalisation of a float ``(H, W, C)`` image; returns uint8.

    One-channel images use the mean of the statistics; a fourth (alpha) channel is
    dropped.
    """
    array = array[..., :3].astype(np.float64)
    channels = array.shape[-1]
    if channels == 3:
        mean, std = np.array(IMAGENET_MEAN), np.array(IMAGENET_STD)
    else:
        mean, std = np.array([np.mean(IMAGENET_MEAN)]), np.array([np.mean(IMAGENET_STD)])
    restored = np.clip(array * std + mean, 0.0, 1.0)
    return np.round(restored * 255.0).astype(np.uint8)


def tensor_to_image(tensor: Any) -> Image.Image:
    """An RGB PIL image of a document tensor.

    Integer tensors hold 0-255 values (clipped); float tensors are ImageNet-normalised
    and are de-normalised. Non-finite float values show as black.
    """
    array = _as_numpy(tensor)
    is_float = np.issubdtype(array.dtype, np.floating)
    array = _channels_last(array, prefer_channels_first=is_float)
    if is_float:
        pixels = _denormalize(np.nan_to_num(array, nan=-10.0, posinf=-10.0, neginf=-10.0))
    else:
        pixels = np.clip(array[..., :3], 0, 255).astype(np.uint8)
    if pixels.shape[-1] == 1:
        return Image.fromarray(pixels[..., 0]).convert("RGB")
    return Image.fromarray(pixels)


def _read_uri(uri: str) -> bytes:
    """Bytes behind a local path, ``file://``, ``data:`` or ``http(s)://`` uri."""
    scheme = urllib.parse.urlparse(uri).scheme
    if scheme in {"http", "https", "data"}:
        with urllib.request.urlopen(uri) as response:
            return response.read()
    if scheme == "file":
        uri = urllib.request.url2pathname(urllib.parse.urlparse(uri).path)
    return Path(uri).expanduser().read_bytes()


def document_image(doc: Any) -> Image.Image:
    """The RGB image of a document, from ``tensor``, else ``blob`` bytes, else ``uri``.

    Raises ``ValueError`` naming the document when it has none of them or the data
    cannot be decoded, so a bad document is found rather than drawn as a blank cell.
    """
    name = f"Document id={getattr(doc, 'id', None)!r}, uri={getattr(doc, 'uri', None)!r}"
    try:
        if getattr(doc, "tensor", None) is not None:
            return tensor_to_image(doc.tensor)
        blob = getattr(doc, "blob", None)
        data = blob if isinstance(blob, (bytes, bytearray)) and blob else None
        if data is None and getattr(doc, "uri", None):
            data = _read_uri(doc.uri)
        if data is None:
            raise ValueError("it has no tensor, blob or uri")
        with Image.open(io.BytesIO(data)) as image:
            # to_rgb, as training does: 16-bit greyscale rescaled, float images checked
            return to_rgb(ImageOps.exif_transpose(image))
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot draw the image of {name}: {error}") from error


def _thumbnail(image: Image.Image, size: int) -> Image.Image:
    """``image`` scaled to fit a ``size`` x ``size`` square, centred on a grey square."""
    square = Image.new("RGB", (size, size), THUMB_BACKGROUND)
    fitted = ImageOps.contain(image, (size, size))
    square.paste(fitted, ((size - fitted.width) // 2, (size - fitted.height) // 2))
    return square


# --------------------------------------------------------------------------- text


def _font() -> ImageFont.ImageFont:
    """Pillow's built-in font (no font files needed)."""
    return ImageFont.load_default()


def _fit_text(draw: ImageDraw.ImageDraw, text: str, max_width: int, font: Any) -> str:
    """``text``, shortened with an ellipsis until it is at most ``max_width`` pixels wide."""
    if draw.textlength(text, font=font) <= max_width:
        return text
    while text and draw.textlength(text + "…", font=font) > max_width:
        text = text[:-1]
    return text + "…" if text else ""


# --------------------------------------------------------------------------- retrieval grid


@dataclass(frozen=True)
class GridLayout:
    """Pixel geometry of a retrieval grid; column 0 is the query, 1..k the results."""

    rows: int
    k: int
    thumb_size: int
    has_title: bool

    @property
    def cell(self) -> int:
        """Side of one cell: the thumbnail with ``PAD`` on each side."""
        return self.thumb_size + 2 * PAD

    @property
    def top(self) -> int:
        """y of the first row (below the title band and the column captions)."""
        return (TITLE_HEIGHT if self.has_title else 0) + HEADER_HEIGHT

    @property
    def size(self) -> Tuple[int, int]:
        """``(width, height)`` of the whole picture."""
        return LABEL_WIDTH + (self.k + 1) * self.cell, self.top + self.rows * self.cell

    def thumb_box(self, row: int, column: int) -> Tuple[int, int, int, int]:
        """``(left, top, right, bottom)`` of a thumbnail, right/bottom exclusive."""
        left = LABEL_WIDTH + column * self.cell + PAD
        top = self.top + row * self.cell + PAD
        return left, top, left + self.thumb_size, top + self.thumb_size


def partner_rank(topk_row: Sequence[int], partner: int) -> Optional[int]:
    """1-based rank of ``partner`` among ``topk_row``, or ``None`` when it is not there."""
    for position, candidate in enumerate(topk_row):
        if int(candidate) == int(partner):
            return position + 1
    return None


def _frame(draw: ImageDraw.ImageDraw, box: Tuple[int, int, int, int], width: int, colour) -> None:
    """A frame of ``width`` pixels just outside ``box`` (right/bottom exclusive)."""
    left, top, right, bottom = box
    draw.rectangle(
        (left - width, top - width, right + width - 1, bottom + width - 1),
        outline=colour,
        width=width,
    )


def _check_retrieval_inputs(
    queries: Any, index: Any, topk: np.ndarray, partner: np.ndarray, rows: List[int]
) -> None:
    """Raise ``ValueError`` for shapes or positions that do not fit together."""
    if topk.ndim != 2 or topk.shape[1] < 1:
        raise ValueError(f"topk must have shape [n_queries, k] with k >= 1, got {topk.shape}")
    if partner.shape != (topk.shape[0],):
        raise ValueError(f"partner must have shape [{topk.shape[0]}], got {partner.shape}")
    if len(queries) < topk.shape[0]:
        raise ValueError(f"{len(queries)} queries but topk has {topk.shape[0]} rows")
    if topk.size and (topk.min() < 0 or topk.max() >= len(index)):
        raise ValueError(f"topk holds positions outside the index of {len(index)} documents")
    if not rows:
        raise ValueError("no query to draw (num_queries < 1 or an empty rows list)")
    bad = [row for row in rows if not 0 <= row < topk.shape[0]]
    if bad:
        raise ValueError(f"query positions {bad} are outside 0..{topk.shape[0] - 1}")


def _row_label(rank: Optional[int], k: int) -> Tuple[str, Tuple[int, int, int]]:
    """Text and colour saying where the partner is among a row's results."""
    if rank is None:
        return f"partner: > {k}", MISS_TEXT
    return f"partner: {rank}", TEXT


def save_retrieval_examples(
    path: PathLike,
    queries: Any,
    index: Any,
    topk: Any,
    partner: Any,
    num_queries: int = 8,
    thumb_size: int = 96,
    title: Optional[str] = None,
    *,
    rows: Optional[Sequence[int]] = None,
) -> Path:
    """Draw retrieval examples as a PNG grid; returns the written path.

    :param path: where to write the PNG (parent folders are created).
    :param queries: the query documents; row ``i`` of ``topk`` belongs to ``queries[i]``.
    :param index: the documents that ``topk`` positions point into.
    :param topk: ``[n_queries, k]`` index positions, best first (tensor or array).
    :param partner: ``[n_queries]`` index position of each query's true match.
    :param num_queries: draw the first ``num_queries`` queries (ignored with ``rows``).
    :param thumb_size: side of each thumbnail in pixels.
    :param title: optional title above the grid.
    :param rows: explicit query positions to draw, in this order.

    The picture is ``LABEL_WIDTH + (k + 1) * (thumb_size + 2 * PAD)`` pixels wide and
    ``[TITLE_HEIGHT +] HEADER_HEIGHT + n_rows * (thumb_size + 2 * PAD)`` high (see
    :class:`GridLayout`). The partner's thumbnail gets a ``FRAME``-pixel ``GREEN`` frame.
    """
    topk_array = _as_numpy(topk).astype(np.int64, copy=False)
    partner_array = _as_numpy(partner).astype(np.int64, copy=False).reshape(-1)
    if thumb_size < 1:
        raise ValueError(f"thumb_size must be positive, got {thumb_size}")
    chosen = [int(r) for r in rows] if rows is not None else list(range(min(num_queries, len(topk_array))))
    _check_retrieval_inputs(queries, index, topk_array, partner_array, chosen)

    layout = GridLayout(len(chosen), topk_array.shape[1], thumb_size, bool(title))
    canvas = Image.new("RGB", layout.size, BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    font = _font()
    if title:
        draw.text((PAD, 5), _fit_text(draw, title, layout.size[0] - 2 * PAD, font), fill=TEXT, font=font)
    _draw_column_captions(draw, layout, font)
    for row, query_position in enumerate(chosen):
        _draw_retrieval_row(
            canvas, draw, layout, row, queries[query_position],
            [index[int(p)] for p in topk_array[query_position]],
            partner_rank(topk_array[query_position], partner_array[query_position]),
            query_position, font,
        )
    return _save(canvas, path)


def _draw_column_captions(draw: ImageDraw.ImageDraw, layout: GridLayout, font: Any) -> None:
    """"query", "1", ..., "k" above the columns."""
    y = layout.top - HEADER_HEIGHT + 3
    for column in range(layout.k + 1):
        left = layout.thumb_box(0, column)[0]
        caption = "query" if column == 0 else str(column)
        draw.text((left, y), _fit_text(draw, caption, layout.thumb_size, font), fill=TEXT, font=font)


def _draw_retrieval_row(
    canvas: Image.Image,
    draw: ImageDraw.ImageDraw,
    layout: GridLayout,
    row: int,
    query: Any,
    results: List[Any],
    rank: Optional[int],
    query_position: int,
    font: Any,
) -> None:
    """One row: label, query thumbnail, result thumbnails, green frame on the partner."""
    label_top = layout.thumb_box(row, 0)[1]
    draw.text((PAD, label_top), f"query {query_position}", fill=TEXT, font=font)
    text, colour = _row_label(rank, layout.k)
    draw.text((PAD, label_top + 16), text, fill=colour, font=font)
    for column, doc in enumerate([query] + results):
        box = layout.thumb_box(row, column)
        canvas.paste(_thumbnail(document_image(doc), layout.thumb_size), box[:2])
        if column == 0:
            _frame(draw, box, 2, QUERY_FRAME)
        elif column == rank:
            _frame(draw, box, FRAME, GREEN)


def _save(image: Image.Image, path: PathLike) -> Path:
    """Write ``image`` as PNG to ``path`` (creating folders); return the path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    image.save(target, format="PNG")
    return target


# --------------------------------------------------------------------------- loss curve

#: margins of the loss chart: left (y tick labels), right, top (title, y label), bottom
CHART_MARGINS = (70, 20, 44, 36)


def _finite_losses(losses: Any) -> Tuple[np.ndarray, np.ndarray]:
    """``(steps, values)`` of the finite losses; ``ValueError`` when ``losses`` is empty."""
    values = _as_numpy(losses).astype(np.float64).reshape(-1)
    if values.size == 0:
        raise ValueError("losses is empty: nothing to draw")
    steps = np.arange(values.size)
    finite = np.isfinite(values)
    return steps[finite], values[finite]


def _value_range(low: float, high: float) -> Tuple[float, float]:
    """``(low, high)`` widened when they coincide, so a constant curve has a height."""
    if high > low:
        return low, high
    spread = abs(low) * 0.5 or 1.0
    return low - spread, high + spread


def _chart_title(title: str, skipped: int, total: int) -> str:
    """The title, with a note when non-finite values were left out."""
    if not skipped:
        return title
    note = f"{skipped} of {total} values non-finite, not drawn"
    return f"{title} ({note})" if title else note


def _runs(steps: np.ndarray) -> List[slice]:
    """Slices of ``steps`` over consecutive steps; lines are not drawn across gaps."""
    if steps.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(steps) != 1) + 1
    edges = [0, *breaks.tolist(), steps.size]
    return [slice(a, b) for a, b in zip(edges[:-1], edges[1:])]


def save_loss_curve(
    path: PathLike,
    losses: Any,
    title: str = "",
    epoch_boundaries: Optional[Sequence[float]] = None,
    ylabel: str = "loss",
    *,
    width: int = 640,
    height: int = 360,
) -> Path:
    """Draw per-step losses as a line chart PNG; returns the written path.

    :param path: where to write the PNG (parent folders are created).
    :param losses: one value per step (list, array or tensor); must not be empty.
    :param title: text above the chart.
    :param epoch_boundaries: steps at which an epoch starts, drawn as grey vertical lines.
    :param ylabel: name of the values, written above the y axis.
    :param width: picture width in pixels.
    :param height: picture height in pixels.

    x is the step (0-based), y spans the finite values' min..max, labelled at both ends.
    Non-finite values (a diverged step) are skipped, the line is broken there, and the
    title says how many were skipped. A single value is drawn as a dot.
    """
    all_count = _as_numpy(losses).size
    steps, values = _finite_losses(losses)
    left, right, top, bottom = CHART_MARGINS
    if width < left + right + 10 or height < top + bottom + 10:
        raise ValueError(f"a {width}x{height} chart leaves no room to draw in")
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    font = _font()
    plot = (left, top, width - right, height - bottom)

    x_low, x_high = _value_range(0.0, float(all_count - 1))
    y_low, y_high = _value_range(float(values.min()), float(values.max())) if values.size else (0.0, 1.0)

    def to_pixel(step: float, value: float) -> Tuple[float, float]:
        x = plot[0] + (step - x_low) / (x_high - x_low) * (plot[2] - plot[0])
        y = plot[3] - (value - y_low) / (y_high - y_low) * (plot[3] - plot[1])
        return x, y

    text = _chart_title(title, all_count - values.size, all_count)
    draw.text((left, 6), _fit_text(draw, text, width - left - right, font), fill=TEXT, font=font)
    draw.text((left, top - 16), _fit_text(draw, ylabel, width - left - right, font), fill=TEXT, font=font)
    _draw_boundaries(draw, plot, epoch_boundaries, x_low, x_high, to_pixel)
    x_ticks = [(to_pixel(float(step), 0.0)[0], str(step)) for step in sorted({0, all_count - 1})]
    _draw_axes(draw, plot, font, x_ticks, (y_low, y_high) if values.size else None)
    _draw_line(draw, steps, values, to_pixel)
    return _save(canvas, path)


def _draw_boundaries(draw, plot, boundaries, x_low, x_high, to_pixel) -> None:
    """Grey vertical lines at epoch boundaries that fall inside the x range."""
    for boundary in boundaries or ():
        boundary = float(boundary)
        if math.isfinite(boundary) and x_low <= boundary <= x_high:
            x, _ = to_pixel(boundary, 0.0)
            draw.line((x, plot[1], x, plot[3]), fill=BOUNDARY, width=1)


def _draw_axes(draw, plot, font, x_ticks, y_range: Optional[Tuple[float, float]]) -> None:
    """The two axes, ``y_range`` labelled at both ends, x ticks ``(pixel, label)``, "step"."""
    x0, y0, x1, y1 = plot
    draw.line((x0, y0, x0, y1), fill=TEXT, width=1)
    draw.line((x0, y1, x1, y1), fill=TEXT, width=1)
    if y_range is not None:
        for value, y in ((y_range[1], y0), (y_range[0], y1)):
            label = f"{value:.4g}"
            draw.text((x0 - 6 - draw.textlength(label, font=font), y - 6), label, fill=TEXT, font=font)
    for x, label in x_ticks:
        draw.line((x, y1, x, y1 + 3), fill=TEXT, width=1)
        half = draw.textlength(label, font=font) / 2
        draw.text((min(max(x - half, x0 - half), x1 - 2 * half), y1 + 5), label, fill=TEXT, font=font)
    middle = (x0 + x1) / 2 - draw.textlength("step", font=font) / 2
    draw.text((middle, y1 + 18), "step", fill=TEXT, font=font)


def _draw_line(draw, steps: np.ndarray, values: np.ndarray, to_pixel) -> None:
    """Polylines over runs of consecutive finite steps; single points as dots."""
    for run in _runs(steps):
        points = [to_pixel(float(s), float(v)) for s, v in zip(steps[run], values[run])]
        if len(points) == 1:
            x, y = points[0]
            draw.ellipse((x - 3, y - 3, x + 3, y + 3), fill=LINE)
        else:
            draw.line(points, fill=LINE, width=2)
