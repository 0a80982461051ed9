"""The fast input path: decode each image once, make the views of a whole batch at once.

When ``preprocess_fn`` is this package's training-phase :class:`VisionPreprocessor` (what
``vision_preprocessor()`` returns, as in the tutorial) and there is no ``collate_fn``, the
engine does not call ``preprocess_fn`` view by view. Instead:

1. a dataset item is the document's *source image*: ``preprocess_fn.load_image(doc)``,
   uint8 ``(3, H, W)`` decoded once and then served from the bounded per-process cache;
2. collation pads the sources of a batch into one :class:`SourceBatch` (uint8: 4x less
   to move than float views);
3. :class:`BatchViews` makes every view of the batch with
   :class:`~finetuner_selfsup.augment.batched.BatchedSimCLRAugmentation` -- an
   independent random draw per view, the distribution of ``preprocess_fn`` itself -- and
   normalises and lays them out as ``preprocess_fn`` would. On the CPU this runs in the
   collation (a DataLoader worker, or the main process with ``num_workers=0``); on a GPU
   it runs on the device after a pinned, non-blocking copy of the uint8 sources.

The batch the model sees is what the per-view path would give: same shapes, dtype,
normalisation, channel axis and labels; same kind of random views.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, List, NamedTuple, Optional, Sequence, Tuple

import torch
from torch.utils.data import Dataset

from ..augment.batched import BatchedSimCLRAugmentation, SourceBatch
from ..augment.preprocessor import VisionPreprocessor
from .collate import Batch
from .data_kinds import DataKind
from .datasets import Unreadable, _content

if TYPE_CHECKING:
    from docarray import DocumentArray


def uses_batched_views(preprocess_fn: Optional[Callable], collate_fn: Optional[Callable], kind: DataKind) -> bool:
    """Whether the fast path applies: our training preprocessor, no custom collation, and
    self-supervised or class-labelled data."""
    return (
        isinstance(preprocess_fn, VisionPreprocessor)
        and preprocess_fn.phase == "train"
        and preprocess_fn.augmentation is not None
        and collate_fn is None
        and kind in (DataKind.INSTANCE, DataKind.CLASS)
    )


class SourceDataset(Dataset):
    """Item ``i``: ``(source image of document i, label, i)``; the source is uint8 or float
    ``(3, H, W)`` as :meth:`VisionPreprocessor.load_image` gives it, or
    :class:`Unreadable` with ``skip_unreadable=True``."""

    def __init__(
        self,
        docs: "DocumentArray",
        preprocessor: VisionPreprocessor,
        labels: Optional[Sequence[int]] = None,
        skip_unreadable: bool = False,
    ) -> None:
        self.docs = docs
        self.preprocessor = preprocessor
        self.labels = labels
        self.skip_unreadable = skip_unreadable

    def __len__(self) -> int:
        return len(self.docs)

    def __getitem__(self, index: int) -> Tuple[Any, int, int]:
        source = _content(self.docs[index], self.preprocessor.load_image, self.skip_unreadable)
        label = index if self.labels is None else self.labels[index]
        return source, label, index


class BatchViews:
    """Sources -> model inputs: ``views_per_image`` random views per source, float32,
    normalised and laid out (channel axis) as the preprocessor's own output."""

    def __init__(self, preprocessor: VisionPreprocessor, views_per_image: int) -> None:
        assert preprocessor.augmentation is not None
        self.preprocessor = preprocessor
        self.views_per_image = views_per_image
        self.augment = BatchedSimCLRAugmentation(preprocessor.augmentation)

    def __call__(self, sources: SourceBatch) -> torch.Tensor:
        p = self.preprocessor
        normalize = (p.mean, p.std) if p.normalize else None
        views = self.augment(sources, self.views_per_image, normalize=normalize)
        if p.target_channel_axis not in (0, -3):
            axis = p.target_channel_axis
            views = views.movedim(1, axis + 1 if axis >= 0 else axis).contiguous()
        return views


class PendingViews(NamedTuple):
    """A batch whose views are made on the training device (see :meth:`make`)."""

    sources: SourceBatch
    make_views: BatchViews

    def make(self, device: torch.device) -> torch.Tensor:
        """Copy the uint8 sources to ``device`` (non-blocking from pinned memory) and make the views there."""
        return self.make_views(self.sources.to(device, non_blocking=True))


class SourceCollate:
    """Items of :class:`SourceDataset` -> :class:`Batch` whose ``inputs`` are the finished
    views (``on_device=False``: made here, on the CPU) or :class:`PendingViews` (made later
    on the training device)."""

    def __init__(self, make_views: BatchViews, on_device: bool) -> None:
        self.make_views = make_views
        self.views_per_image = make_views.views_per_image
        self.on_device = on_device

    def __call__(self, items: List[Tuple[Any, int, int]]) -> Batch:
        skipped = [(c.document, c.reason) for c, _, _ in items if isinstance(c, Unreadable)]
        items = [item for item in items if not isinstance(item[0], Unreadable)]
        if not items:
            return Batch(None, torch.empty(0, dtype=torch.long), [], skipped)
        images = [source for source, _, _ in items]
        if len({image.dtype for image in images}) > 1:  # uint8 files beside float tensors
            images = [image.to(torch.float32) / 255 if image.dtype == torch.uint8 else image for image in images]
        sources = SourceBatch.from_images(images)
        indices = [index for _, _, index in items] * self.views_per_image
        labels = torch.tensor([label for _, label, _ in items] * self.views_per_image, dtype=torch.long)
        inputs: Any = PendingViews(sources, self.make_views) if self.on_device else self.make_views(sources)
        return Batch(inputs, labels, indices, skipped)
