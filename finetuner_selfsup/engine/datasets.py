"""Map-style datasets over a DocumentArray, one per :class:`DataKind`.

Every item carries its position in the DocumentArray, so that an error found later (in
collation, say) can name the documents involved. Documents are never modified: the
pre-processing function gets the document and returns the model input.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Dict, Hashable, List, NamedTuple, Optional, Tuple

from torch.utils.data import Dataset

from ..documents import describe_document
from .data_kinds import LABEL_TAG

if TYPE_CHECKING:
    from docarray import Document, DocumentArray

PreprocessFn = Optional[Callable[["Document"], Any]]


class Unreadable(NamedTuple):
    """Stands in for the content of a document whose image could not be read
    (``skip_unreadable=True``); collation drops the item and reports it."""

    document: str
    reason: str


def _content(doc: "Document", preprocess_fn: PreprocessFn, skip_unreadable: bool = False) -> Any:
    if preprocess_fn is None:
        return doc.content
    if not skip_unreadable:
        return preprocess_fn(doc)
    from ..augment.image_loading import DocumentImageError

    try:
        return preprocess_fn(doc)
    except DocumentImageError as exc:
        return Unreadable(describe_document(doc), str(exc))


class _DocumentDataset(Dataset):
    """Common part: documents, the pre-processing function and the skip option."""

    def __init__(
        self, docs: "DocumentArray", preprocess_fn: PreprocessFn, skip_unreadable: bool = False
    ) -> None:
        self.docs = docs
        self.preprocess_fn = preprocess_fn
        self.skip_unreadable = skip_unreadable

    def _content(self, doc: "Document") -> Any:
        return _content(doc, self.preprocess_fn, self.skip_unreadable)


class TwoViewDataset(_DocumentDataset):
    """Self-supervised items: two independent draws of ``preprocess_fn`` on one document.

    With a random ``preprocess_fn`` (e.g. ``vision_preprocessor()``) the two draws are the
    two augmented views SimCLR contrasts; item ``i`` has label ``i``.
    """

    def __len__(self) -> int:
        return len(self.docs)

    def __getitem__(self, index: int) -> Tuple[Tuple[Any, Any], int, int]:
        doc = self.docs[index]
        views = (self._content(doc), self._content(doc))
        return views, index, index


class LabelledDataset(_DocumentDataset):
    """Supervised items: the document's content and an integer id of its class label."""

    def __init__(
        self, docs: "DocumentArray", preprocess_fn: PreprocessFn, skip_unreadable: bool = False
    ) -> None:
        super().__init__(docs, preprocess_fn, skip_unreadable)
        self.label_ids: Dict[Hashable, int] = {}
        self.labels: List[int] = []
        for doc in docs:
            tag = doc.tags[LABEL_TAG]
            self.labels.append(self.label_ids.setdefault(tag, len(self.label_ids)))

    def __len__(self) -> int:
        return len(self.docs)

    def __getitem__(self, index: int) -> Tuple[Any, int, int]:
        return self._content(self.docs[index]), self.labels[index], index


class SessionDataset(_DocumentDataset):
    """Session items: a root document (type 0) and its matches tagged +1 (positive) or -1.

    The label of an item is ``(session id, match type)`` as in Finetuner 0.4.1.
    """

    def __init__(
        self, docs: "DocumentArray", preprocess_fn: PreprocessFn, skip_unreadable: bool = False
    ) -> None:
        super().__init__(docs, preprocess_fn, skip_unreadable)
        self.locations: List[Tuple[int, int]] = []
        self.labels: List[Tuple[int, int]] = []
        for session, doc in enumerate(docs):
            self.locations.append((session, -1))
            self.labels.append((session, 0))
            for match_index, match in enumerate(doc.matches):
                if LABEL_TAG not in match.tags or int(match.tags[LABEL_TAG]) not in (1, -1):
                    raise ValueError(
                        f"match {match.id} of document {doc.id} needs "
                        f"tags['{LABEL_TAG}'] = 1 (positive) or -1 (negative)."
                    )
                self.locations.append((session, match_index))
                self.labels.append((session, int(match.tags[LABEL_TAG])))

    def __len__(self) -> int:
        return len(self.locations)

    def document(self, index: int) -> "Document":
        session, match_index = self.locations[index]
        doc = self.docs[session]
        return doc if match_index == -1 else doc.matches[match_index]

    def __getitem__(self, index: int) -> Tuple[Any, Tuple[int, int], int]:
        return self._content(self.document(index)), self.labels[index], index
