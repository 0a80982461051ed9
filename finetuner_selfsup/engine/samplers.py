"""Batch samplers: which dataset items form each batch, reshuffled every epoch.

Each sampler plans one epoch at a time with its own ``torch.Generator`` (so a seed makes
the order reproducible), knows the number of batches of the epoch it is about to yield
(progress bars need it), and never drops data silently.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from typing import Dict, Hashable, Iterator, List, Optional, Sequence, Tuple

import torch

logger = logging.getLogger("finetuner_selfsup")


class _PlannedSampler:
    """Base: plans an epoch's batches on demand; iterating consumes the plan."""

    def __init__(self, generator: Optional[torch.Generator] = None) -> None:
        self.generator = generator if generator is not None else torch.Generator()
        if generator is None:
            self.generator.manual_seed(int(torch.randint(0, 2**62, (1,)).item()))
        self._plan: Optional[List[List[int]]] = None

    def _plan_epoch(self) -> List[List[int]]:
        raise NotImplementedError

    def _randperm(self, n: int) -> List[int]:
        return torch.randperm(n, generator=self.generator).tolist()

    def __len__(self) -> int:
        if self._plan is None:
            self._plan = self._plan_epoch()
        return len(self._plan)

    def forget_plan(self) -> None:
        """Drop a plan made by ``len()`` (the caller restores the generator's state)."""
        self._plan = None

    def __iter__(self) -> Iterator[List[int]]:
        if self._plan is None:
            self._plan = self._plan_epoch()
        plan, self._plan = self._plan, None
        yield from plan


class InstanceBatchSampler(_PlannedSampler):
    """Batches of ``images_per_batch`` distinct images for self-supervised training.

    Each image is used once per epoch. A final batch of a single image (it would have no
    negatives) joins the batch before it instead of being dropped.
    """

    def __init__(
        self, num_items: int, images_per_batch: int, generator: Optional[torch.Generator] = None
    ) -> None:
        super().__init__(generator)
        if num_items < 2:
            raise ValueError(
                f"self-supervised training needs at least 2 images (one positive pair and a "
                f"negative), got {num_items}."
            )
        if images_per_batch < 2:
            raise ValueError(
                f"a self-supervised batch needs at least 2 images (batch_size >= 4 views), "
                f"got {images_per_batch} image(s) per batch."
            )
        self.num_items = num_items
        self.images_per_batch = images_per_batch

    def _plan_epoch(self) -> List[List[int]]:
        order = self._randperm(self.num_items)
        step = self.images_per_batch
        batches = [order[i : i + step] for i in range(0, len(order), step)]
        if len(batches) > 1 and len(batches[-1]) == 1:
            batches[-2].extend(batches.pop())
        return batches


class ClassBatchSampler(_PlannedSampler):
    """Batches of ``num_items_per_class`` items from each of ``batch_size // num_items_per_class``
    distinct classes (what triplet and siamese mining need: positives and negatives in
    every batch). ``num_items_per_class=None`` means ``max(2, batch_size // num_classes)``.

    Each epoch, the items of every class are shuffled and cut into groups of
    ``num_items_per_class`` (a short last group is topped up with other items of the same
    class). Classes are drawn for each batch with probability proportional to the groups
    they have left, so that all classes run out at about the same time. When fewer
    classes than a full batch needs are left, the rest form smaller batches as long as
    they hold at least two classes; only groups of one single remaining class can be left
    over, and their number is logged.
    """

    def __init__(
        self,
        labels: Sequence[Hashable],
        batch_size: int,
        num_items_per_class: Optional[int] = None,
        generator: Optional[torch.Generator] = None,
    ) -> None:
        super().__init__(generator)
        self.items_by_class: Dict[Hashable, List[int]] = defaultdict(list)
        for index, label in enumerate(labels):
            self.items_by_class[label].append(index)
        num_classes = len(self.items_by_class)
        if batch_size < 2:
            raise ValueError(f"batch_size must be at least 2, got {batch_size}.")
        if num_items_per_class is None:
            # Upstream used max(1, batch_size // num_classes): with more classes than the
            # batch holds, that is 1 item per class, so no batch has a positive pair.
            num_items_per_class = max(2, batch_size // num_classes)
        if num_items_per_class < 1:
            raise ValueError(f"num_items_per_class must be >= 1, got {num_items_per_class}.")
        classes_per_batch = batch_size // num_items_per_class
        if classes_per_batch < 2:
            raise ValueError(
                f"batch_size={batch_size} with num_items_per_class={num_items_per_class} "
                f"puts a single class in each batch, so no batch has a negative. Use "
                f"batch_size >= 2 * num_items_per_class."
            )
        if num_classes < classes_per_batch:
            raise ValueError(
                f"the labelled data has {num_classes} classes, but batch_size={batch_size} "
                f"with num_items_per_class={num_items_per_class} needs "
                f"{classes_per_batch} distinct classes per batch, so not one batch can be "
                f"filled. Lower batch_size to at most {num_classes * num_items_per_class}, "
                f"or raise num_items_per_class."
            )
        if batch_size % num_items_per_class:
            logger.warning(
                "batch_size=%d is not a multiple of num_items_per_class=%d: batches hold "
                "%d items (%d classes x %d).",
                batch_size, num_items_per_class, classes_per_batch * num_items_per_class,
                classes_per_batch, num_items_per_class,
            )
        self.num_items_per_class = num_items_per_class
        self.classes_per_batch = classes_per_batch
        self.batch_size = batch_size
        self.left_over_last_epoch = 0

    def _groups_of(self, items: List[int]) -> List[List[int]]:
        k = self.num_items_per_class
        shuffled = [items[i] for i in self._randperm(len(items))]
        groups = [shuffled[i : i + k] for i in range(0, len(shuffled), k)]
        short = k - len(groups[-1])
        if short:
            picks = torch.randint(len(items), (short,), generator=self.generator).tolist()
            groups[-1].extend(items[p] for p in picks)
        return groups

    def _plan_epoch(self) -> List[List[int]]:
        classes = list(self.items_by_class)
        groups = [self._groups_of(self.items_by_class[c]) for c in classes]
        batches: List[List[int]] = []
        while True:
            remaining = torch.tensor([len(g) for g in groups], dtype=torch.float64)
            available = int((remaining > 0).sum())
            if available < 2:
                break
            take = min(self.classes_per_batch, available)
            chosen = torch.multinomial(remaining, take, replacement=False, generator=self.generator)
            batch: List[int] = []
            for class_index in chosen.tolist():
                batch.extend(groups[class_index].pop())
            batches.append(batch)
        self.left_over_last_epoch = sum(len(g) for g in groups)
        if self.left_over_last_epoch:
            logger.info(
                "%d group(s) of one class could not be paired with another class this "
                "epoch; they are reshuffled into the next one.",
                self.left_over_last_epoch,
            )
        order = self._randperm(len(batches))
        return [batches[i] for i in order]


class SessionBatchSampler(_PlannedSampler):
    """Batches made of whole sessions (a root document and its matches), as in Finetuner 0.4.1.

    Sessions are added in random order until ``batch_size`` items; a session that does
    not fit starts the next batch. A session larger than a batch is cut into pieces of at
    most ``batch_size - 1`` of its (shuffled) matches, each batch holding the root again.
    When the session has positive and negative matches, every piece keeps at least one of
    each (a root with only negatives, or only positives, gives a triplet miner nothing):
    if the plain cut leaves a piece without, the pieces are dealt a positive and a
    negative first -- re-using one when there are fewer than pieces -- and then filled
    with the rest in shuffled order.
    """

    def __init__(
        self,
        labels: Sequence[Tuple[int, int]],
        batch_size: int,
        generator: Optional[torch.Generator] = None,
    ) -> None:
        super().__init__(generator)
        if batch_size < 2:
            raise ValueError(f"batch_size must be at least 2, got {batch_size}.")
        self.batch_size = batch_size
        self.sessions: Dict[int, List[int]] = defaultdict(list)
        #: match type of every item: 0 root, 1 positive, -1 negative
        self.match_types: List[int] = []
        for index, (session, match_type) in enumerate(labels):
            self.sessions[session].append(index)
            self.match_types.append(match_type)

    def _plan_epoch(self) -> List[List[int]]:
        session_ids = list(self.sessions)
        batches: List[List[int]] = []
        current: List[int] = []
        for position in self._randperm(len(session_ids)):
            root, *matches = self.sessions[session_ids[position]]
            matches = [matches[i] for i in self._randperm(len(matches))]
            if 1 + len(matches) <= self.batch_size:
                if len(current) + 1 + len(matches) > self.batch_size:
                    batches.append(current)
                    current = []
                current += [root, *matches]
                continue
            if current:
                batches.append(current)
            *full, last = self._cut(matches)
            batches.extend([root, *piece] for piece in full)
            current = [root, *last]  # the last piece may share its batch with the next sessions
        if current:
            batches.append(current)
        return batches

    def _cut(self, matches: List[int]) -> List[List[int]]:
        """Shuffled matches of a session too large for one batch -> pieces of at most
        ``batch_size - 1``, each with a positive and a negative when the session has both."""
        fit = self.batch_size - 1
        pieces = [matches[i : i + fit] for i in range(0, len(matches), fit)]
        positives = [m for m in matches if self.match_types[m] > 0]
        negatives = [m for m in matches if self.match_types[m] < 0]
        if fit < 2 or not positives or not negatives or all(self._has_both(p) for p in pieces):
            return pieces
        count = len(pieces)
        # a piece holds one positive and one negative (re-used when too few) plus the rest
        while 2 * count + max(0, len(positives) - count) + max(0, len(negatives) - count) > count * fit:
            count += 1
        pieces = [[positives[k % len(positives)], negatives[k % len(negatives)]] for k in range(count)]
        dealt = set(positives[:count]) | set(negatives[:count])
        rest = iter([m for m in matches if m not in dealt])
        for piece in pieces:
            piece.extend(m for _, m in zip(range(fit - len(piece)), rest))
        return pieces

    def _has_both(self, piece: List[int]) -> bool:
        types = {self.match_types[m] > 0 for m in piece}
        return types == {True, False}
