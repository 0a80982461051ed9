"""Turn a list of dataset items into one batch: inputs, labels and document positions.

Inputs of different shapes cannot be stacked; instead of torch's bare "stack expects each
tensor to be equal size", the error names the documents and their shapes.
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Callable, List, NamedTuple, Optional, Sequence, Tuple, Union

import torch

from .data_kinds import DataKind
from .datasets import Unreadable

Labels = Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]


class Batch(NamedTuple):
    """One training batch. ``indices`` are the dataset positions of the items (for
    self-supervised batches, each image appears twice: once per view). ``skipped`` lists
    ``(document, reason)`` of items left out because their image could not be read
    (only with ``skip_unreadable=True``)."""

    inputs: Any
    labels: Labels
    indices: List[int]
    skipped: List[Tuple[str, str]] = []


def _is_unreadable(content: Any) -> bool:
    if isinstance(content, tuple) and not isinstance(content, Unreadable):
        return any(isinstance(c, Unreadable) for c in content)
    return isinstance(content, Unreadable)


def _reasons(content: Any) -> List[Tuple[str, str]]:
    parts = content if isinstance(content, tuple) and not isinstance(content, Unreadable) else (content,)
    return [(p.document, p.reason) for p in parts if isinstance(p, Unreadable)][:1]


def _as_tensor(content: Any) -> torch.Tensor:
    return content if isinstance(content, torch.Tensor) else torch.as_tensor(content)


class Collate:
    """Collation for one :class:`DataKind`.

    :param kind: the data kind the items come from.
    :param names: ``names[i]`` describes dataset item ``i`` for error messages.
    :param user_collate_fn: Finetuner's ``collate_fn``: called with the list of contents,
        returns the model input. Labels are collated here either way.
    """

    def __init__(
        self,
        kind: DataKind,
        names: Sequence[str],
        user_collate_fn: Optional[Callable[[List[Any]], Any]] = None,
    ) -> None:
        self.kind = kind
        self.names = names
        self.user_collate_fn = user_collate_fn

    def __call__(self, items: List[Tuple[Any, Any, int]]) -> Batch:
        skipped = [reason for content, _, _ in items if _is_unreadable(content) for reason in _reasons(content)]
        if skipped:
            items = [item for item in items if not _is_unreadable(item[0])]
            if not items:
                return Batch(None, torch.empty(0, dtype=torch.long), [], skipped)
        if self.kind is DataKind.INSTANCE:
            contents = [views[0] for views, _, _ in items] + [views[1] for views, _, _ in items]
            indices = [index for _, _, index in items] * 2
            labels: Labels = torch.tensor(indices, dtype=torch.long)
        else:
            contents = [content for content, _, _ in items]
            indices = [index for _, _, index in items]
            if self.kind is DataKind.SESSION:
                sessions, types = zip(*(label for _, label, _ in items))
                labels = (torch.tensor(sessions), torch.tensor(types))
            else:
                labels = torch.tensor([label for _, label, _ in items], dtype=torch.long)
        if self.user_collate_fn is not None:
            inputs = self.user_collate_fn(contents)
        else:
            inputs = self.stack(contents, indices)
        return Batch(inputs, labels, indices, skipped)

    def stack(self, contents: List[Any], indices: List[int]) -> torch.Tensor:
        """Stack equally-shaped inputs; otherwise name the documents whose shape differs."""
        tensors = [_as_tensor(c) for c in contents]
        shapes = [tuple(t.shape) for t in tensors]
        if len(set(shapes)) > 1:
            common, _ = Counter(shapes).most_common(1)[0]
            odd = sorted({(indices[i], shapes[i]) for i in range(len(shapes)) if shapes[i] != common})
            listed = "; ".join(f"{self.names[i]} has shape {s}" for i, s in odd[:5])
            raise ValueError(
                f"inputs of one batch must have the same shape; most have {common}, but "
                f"{listed}{' ...' if len(odd) > 5 else ''}. Resize the images to one size "
                f"(e.g. preprocess_fn=vision_preprocessor(height=..., width=...)) or pass "
                f"a collate_fn that handles varying shapes."
            )
        return torch.stack(tensors)
