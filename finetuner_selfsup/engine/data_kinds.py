"""Which kind of training a DocumentArray asks for, decided from its documents.

Finetuner 0.4.1 looked at the first document only; a set with labels on some documents
but not on others then failed deep inside the loss, or trained on wrong labels. Here every
document is checked and a mixed set is an error that names documents of each kind.
"""
from __future__ import annotations

import enum
from typing import TYPE_CHECKING, List

from ..documents import describe_document

if TYPE_CHECKING:
    from docarray import Document, DocumentArray

LABEL_TAG = "finetuner_label"  # finetuner.__default_tag_key__
_MAX_NAMED = 5


class DataKind(enum.Enum):
    """How the documents define positives and negatives."""

    #: no labels: each image is its own class, positives are two augmented views of it
    INSTANCE = "instance"
    #: ``tags['finetuner_label']`` on every document: same label = positive
    CLASS = "class"
    #: no labels, but ``matches`` tagged +1 / -1 relative to their root document
    SESSION = "session"


def _named(docs: List["Document"]) -> str:
    shown = ", ".join(describe_document(d) for d in docs[:_MAX_NAMED])
    more = len(docs) - _MAX_NAMED
    return shown + (f" and {more} more" if more > 0 else "")


def detect_data_kind(docs: "DocumentArray", argument: str = "train_data") -> DataKind:
    """Decide the training kind of ``docs``, or raise a ``ValueError`` that says why not."""
    if docs is None or len(docs) == 0:
        raise ValueError(
            f"`{argument}` is empty: pass a DocumentArray with at least two documents."
        )
    labelled = [d for d in docs if LABEL_TAG in d.tags]
    if len(labelled) == len(docs):
        return DataKind.CLASS
    if labelled:
        unlabelled = [d for d in docs if LABEL_TAG not in d.tags]
        raise ValueError(
            f"`{argument}` mixes labelled and unlabelled documents: {len(labelled)} carry "
            f"tags['{LABEL_TAG}'] (e.g. {_named(labelled)}), {len(unlabelled)} do not "
            f"(e.g. {_named(unlabelled)}). Label every document for supervised training, "
            f"or remove the tag from all of them for self-supervised training."
        )
    with_matches = [d for d in docs if len(d.matches) > 0]
    if not with_matches:
        return DataKind.INSTANCE
    if len(with_matches) != len(docs):
        without = [d for d in docs if len(d.matches) == 0]
        raise ValueError(
            f"`{argument}` mixes session documents (with labelled `matches`, e.g. "
            f"{_named(with_matches)}) and plain unlabelled documents (e.g. {_named(without)}). "
            f"Give every document its matches, or none of them."
        )
    return DataKind.SESSION
