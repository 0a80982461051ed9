"""How messages name a document: one format everywhere (errors, warnings, reports)."""
from __future__ import annotations

from typing import Any


def describe_document(doc: Any) -> str:
    """``Document(id='…', uri='…')`` (the uri only when there is one): enough for a user to
    find the document or file an error is about."""
    doc_id = getattr(doc, "id", None)
    uri = getattr(doc, "uri", None)
    return f"Document(id={doc_id!r}, uri={uri!r})" if uri else f"Document(id={doc_id!r})"
