"""Light entry points of the tailor: ``finetuner.display`` and ``to_embedding_model``.

``import finetuner`` imports this module (the plugin routes ``finetuner.display`` here), so
it must not import torch: the implementation in :mod:`finetuner_selfsup.tailoring` is
imported on the first call. Signatures are those of ``finetuner.tailor`` in Finetuner 0.4.1.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, List, Optional, Tuple, Union

if TYPE_CHECKING:
    from torch import nn

__all__ = ["display", "to_embedding_model"]


def to_embedding_model(
    model: "nn.Module",
    layer_name: Optional[str] = None,
    input_size: Optional[Tuple[int, ...]] = None,
    input_dtype: str = "float32",
    freeze: Union[bool, List[str]] = False,
    projection_head: Optional["nn.Module"] = None,
    device: Optional[str] = "cpu",
    **kwargs: Any,
) -> "nn.Module":
    """Cut a copy of ``model`` into an embedding model that outputs ``layer_name``.

    See :func:`finetuner_selfsup.tailoring.to_embedding_model` for the parameters; extra
    keyword arguments are ignored, as upstream.
    """
    from .tailoring import to_embedding_model as _impl

    return _impl(
        model,
        layer_name=layer_name,
        input_size=input_size,
        input_dtype=input_dtype,
        freeze=freeze,
        projection_head=projection_head,
        device=device,
        **kwargs,
    )


def display(
    model: "nn.Module",
    input_size: Optional[Tuple[int, ...]] = None,
    input_dtype: str = "float32",
) -> None:
    """Print a table of the model's layers, with the names ``layer_name``/``freeze`` accept.

    See :func:`finetuner_selfsup.tailoring.display`.
    """
    from .tailoring import display as _impl

    _impl(model, input_size=input_size, input_dtype=input_dtype)
