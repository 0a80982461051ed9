"""Pairwise distances between embeddings, computed in full precision.

Every loss here reduces to a matrix of pairwise (dis)similarities. These are computed in
at least float32 and with autocast switched off: under mixed precision, embeddings arrive
as float16/bfloat16 and a reduced-precision matmul loses most of the resolution a loss
needs near ``cos = 1`` (and ``exp`` of a logit overflows float16 quickly). Gradients flow
back to the low-precision inputs unchanged in meaning, cast to their dtype by autograd.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Optional, Tuple

import torch
import torch.nn.functional as F

#: Names accepted for ``distance`` by the tuple losses and :func:`get_distance`.
DISTANCES: Tuple[str, ...] = ("cosine", "euclidean", "sqeuclidean")

#: Added to vector norms before dividing by them, so zero vectors do not give NaN.
NORM_EPS = 1e-8

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def check_distance(distance: str) -> str:
    """Return ``distance`` if it is a known distance name, else raise ``ValueError``."""
    if distance not in DISTANCES:
        raise ValueError(
            f"Unknown distance {distance!r}; choose one of {', '.join(map(repr, DISTANCES))}."
        )
    return distance


def upcast(tensor: torch.Tensor) -> torch.Tensor:
    """Cast float16/bfloat16 to float32; leave float32/float64 (and others) as they are."""
    return tensor.float() if tensor.dtype in _LOW_PRECISION else tensor


@contextlib.contextmanager
def autocast_disabled(device: torch.device) -> Iterator[None]:
    """Switch autocast off for ``device``'s type, so matmuls run in the inputs' dtype."""
    if torch.amp.is_autocast_available(device.type):
        with torch.autocast(device_type=device.type, enabled=False):
            yield
    else:
        yield


def cosine_similarity_matrix(
    a: torch.Tensor, b: Optional[torch.Tensor] = None, eps: float = NORM_EPS
) -> torch.Tensor:
    """``[n, m]`` cosine similarities between the rows of ``a`` and of ``b`` (default ``a``).

    Inputs are upcast (see :func:`upcast`); call it under :func:`autocast_disabled`.
    """
    a_unit = F.normalize(upcast(a), p=2.0, dim=1, eps=eps)
    b_unit = a_unit if b is None else F.normalize(upcast(b), p=2.0, dim=1, eps=eps)
    return a_unit @ b_unit.transpose(0, 1)


def get_distance(embeddings: torch.Tensor, distance: str) -> torch.Tensor:
    """Return the ``[N, N]`` matrix of pairwise distances between the rows of ``embeddings``.

    :param embeddings: ``[N, d]`` tensor.
    :param distance: ``'cosine'`` (``1 - cos``, in ``[0, 2]``), ``'euclidean'`` (L2) or
        ``'sqeuclidean'`` (squared L2).
    :return: a float32 (float64 for float64 inputs) tensor, differentiable w.r.t.
        ``embeddings``.
    """
    check_distance(distance)
    if embeddings.ndim != 2:
        raise ValueError(
            f"Expected embeddings of shape [batch, dim], got shape {tuple(embeddings.shape)}."
        )
    with autocast_disabled(embeddings.device):
        if distance == "cosine":
            return 1.0 - cosine_similarity_matrix(embeddings)
        full = upcast(embeddings)
        # cdist's backward is finite at zero distance (the diagonal, duplicates).
        euclidean = torch.cdist(full, full, p=2.0)
        return euclidean if distance == "euclidean" else euclidean.pow(2)
