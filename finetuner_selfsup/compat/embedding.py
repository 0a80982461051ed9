"""Let Finetuner 0.4.1's ``ft.embed`` (and its ``Evaluator``/``EvaluationCallback``, which
embed through it) take this package's preprocessed inputs.

Upstream's PyTorch path collates a batch with ``torch.tensor(list_of_contents)``. Its own
``vision_preprocessor`` returned numpy arrays, which that accepts (slowly); this package's
returns ``torch.Tensor`` views (no copy back to numpy), and ``torch.tensor`` refuses a list
of tensors ("only one element tensors can be converted"). So ``ft.embed(docs, model,
preprocess_fn=vision_preprocessor(phase='validation'))`` crashed. Only the default
collation changes: a ``collate_fn`` the caller passes is used as it is, and batching,
devices and ``inference_mode`` stay upstream's.
"""
from __future__ import annotations

from types import ModuleType
from typing import Any, Callable, Optional


def stack_contents(contents: Any) -> Any:
    """One batch tensor from a batch's contents: tensors and arrays of one shape are
    stacked (as ``ft.fit`` does); anything else goes to ``torch.tensor`` as upstream."""
    import numpy as np
    import torch

    if isinstance(contents, (list, tuple)) and contents:
        if all(isinstance(c, torch.Tensor) for c in contents):
            return torch.stack(list(contents))
        if all(isinstance(c, np.ndarray) for c in contents):
            return torch.from_numpy(np.stack(contents))
    return torch.tensor(contents)


def _with_stacking(set_embeddings: Callable[..., None]) -> Callable[..., None]:
    def set_embeddings_torch(
        docs: Any,
        embed_model: Any,
        device: str = "cpu",
        batch_size: int = 64,
        preprocess_fn: Optional[Callable[[Any], Any]] = None,
        collate_fn: Optional[Callable[[Any], Any]] = None,
    ) -> None:
        """Upstream ``_set_embeddings_torch`` with :func:`stack_contents` as the default collation."""
        set_embeddings(docs, embed_model, device, batch_size, preprocess_fn, collate_fn or stack_contents)

    set_embeddings_torch.__wrapped_upstream__ = set_embeddings  # type: ignore[attr-defined]
    return set_embeddings_torch


def patch_embedding_module(module: ModuleType) -> None:
    """Give ``finetuner.embedding``'s PyTorch path :func:`stack_contents` (idempotent).

    ``embed`` looks ``_set_embeddings_torch`` up in the module's globals on every call, so
    replacing it there covers ``ft.embed`` and the evaluator's ``from ..embedding import
    embed`` alike.
    """
    current = getattr(module, "_set_embeddings_torch", None)
    if current is None or hasattr(current, "__wrapped_upstream__"):
        return
    module._set_embeddings_torch = _with_stacking(current)
