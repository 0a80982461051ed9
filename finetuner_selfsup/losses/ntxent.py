"""NT-Xent, the normalised temperature-scaled cross-entropy loss of SimCLR.

For a batch of ``N`` instances with two augmented views each (``2N`` embeddings), every
view is a query whose positive is the other view of its instance and whose negatives are
the remaining ``2N - 2`` views. With ``s(u, v)`` the cosine similarity and ``t`` the
temperature, the loss of query ``i`` with positive ``j`` is::

    -log( exp(s(i, j) / t) / sum_{k != i} exp(s(i, k) / t) )

(the positive is part of the denominator), and the loss is the mean over all ``2N``
queries, so both views play both roles (Chen et al. 2020, https://arxiv.org/abs/2002.05709).

Numerics: similarities are computed in float32 (float64 stays float64) with autocast
off, the query's similarity to itself is masked with the dtype's most negative finite
value rather than a constant such as ``-1e9`` (which is ``-inf`` in float16), and the
cross-entropy is taken through ``log_softmax``, which is stable for any temperature.
"""
from __future__ import annotations

import math
import numbers
from typing import Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from .distances import autocast_disabled, cosine_similarity_matrix

__all__ = ["NTXentLoss", "nt_xent_loss", "views_from_labels"]


def _check_temperature(temperature: float) -> None:
    if not (isinstance(temperature, numbers.Real) and math.isfinite(temperature)):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}.")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}.")


def _check_views(z1: torch.Tensor, z2: torch.Tensor, what: str) -> None:
    if z1.ndim != 2 or z1.shape != z2.shape:
        raise ValueError(
            f"{what} must be two [n, dim] tensors of the same shape (one row per "
            f"instance, view 1 and view 2), got {tuple(z1.shape)} and {tuple(z2.shape)}."
        )


def nt_xent_loss(
    z1: torch.Tensor,
    z2: torch.Tensor,
    temperature: float = 0.1,
    *,
    all_z1: Optional[torch.Tensor] = None,
    all_z2: Optional[torch.Tensor] = None,
    offset: int = 0,
    extra_negatives: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """NT-Xent loss of the views ``z1[i] <-> z2[i]``, averaged over all ``2n`` queries.

    :param z1: ``[n, d]`` first views; row ``i`` is instance ``i``.
    :param z2: ``[n, d]`` second views, aligned with ``z1``.
    :param temperature: softmax temperature, > 0.
    :param all_z1: optional ``[m, d]`` first views of a larger batch that contains
        ``z1`` as rows ``offset .. offset + n - 1`` (e.g. gathered from all processes in
        data-parallel training, with gradients kept for the local rows). Queries stay
        the local ``2n`` views; candidates become all ``2m`` views. Defaults to ``z1``.
    :param all_z2: the second views of that larger batch, aligned with ``all_z1``.
    :param offset: row of ``z1[0]`` in ``all_z1`` (and of ``z2[0]`` in ``all_z2``).
    :param extra_negatives: optional ``[k, d]`` embeddings that are negatives of every
        query (e.g. a queue of earlier batches' views, see :class:`NTXentLoss`); they join
        every denominator, and no gradient flows into them if they are detached.
    :return: scalar loss (float32, or float64 for float64 inputs).

    Averaging the per-process results of a split batch (equal shards, each with the
    gathered ``all_z1``/``all_z2`` and its own ``offset``) gives the full-batch loss.
    """
    _check_temperature(temperature)
    _check_views(z1, z2, "z1 and z2")
    if (all_z1 is None) != (all_z2 is None):
        raise ValueError("Pass both all_z1 and all_z2, or neither.")
    local_only = all_z1 is None
    if local_only:
        if offset != 0:
            raise ValueError("offset is only meaningful together with all_z1/all_z2.")
        all_z1, all_z2 = z1, z2
    else:
        _check_views(all_z1, all_z2, "all_z1 and all_z2")
        if all_z1.shape[1] != z1.shape[1]:
            raise ValueError(
                f"all_z1/all_z2 have dim {all_z1.shape[1]}, z1/z2 have dim {z1.shape[1]}."
            )
    n, m = z1.shape[0], all_z1.shape[0]
    if not 0 <= offset <= m - n:
        raise ValueError(f"offset={offset} puts the {n} local rows outside the {m} rows.")
    if m < 2:
        raise ValueError(
            f"NT-Xent needs at least 2 instances (2 views each) in the batch to have "
            f"negatives, got {m}."
        )

    with autocast_disabled(z1.device):
        queries = torch.cat([z1, z2])
        candidates = queries if local_only else torch.cat([all_z1, all_z2])
        if extra_negatives is not None and extra_negatives.shape[0] > 0:
            # columns 2m.. : never the query itself, never its positive
            candidates = torch.cat([candidates, extra_negatives.to(candidates.dtype)])
        logits = cosine_similarity_matrix(queries, candidates) / temperature  # [2n, 2m (+ k)]

        rows = torch.arange(2 * n, device=logits.device)
        instance = rows % n + offset  # row of the query's instance in all_z1/all_z2
        view = torch.div(rows, n, rounding_mode="floor")  # 0: from z1, 1: from z2
        self_col = view * m + instance
        positive_col = (1 - view) * m + instance

        is_self = torch.zeros_like(logits, dtype=torch.bool)
        is_self[rows, self_col] = True
        logits = logits.masked_fill(is_self, torch.finfo(logits.dtype).min)
        return F.cross_entropy(logits, positive_col)


def views_from_labels(labels: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Split a batch into its two views by instance label.

    :param labels: ``[2N]`` integer tensor in which every value appears exactly twice.
    :return: two ``[N]`` index tensors ``(first, second)``: ``first[i]`` and
        ``second[i]`` are the positions of the two views of the ``i``-th instance
        (instances in ascending label order, views in batch order).
    :raises ValueError: if some label does not appear exactly twice.
    """
    if not isinstance(labels, torch.Tensor):
        raise ValueError(
            "NTXentLoss expects instance labels as a 1-D tensor (two views per "
            f"instance), got {type(labels).__name__}; session labels are not supported."
        )
    if labels.ndim != 1:
        raise ValueError(f"Expected 1-D labels, got shape {tuple(labels.shape)}.")
    values, counts = torch.unique(labels, return_counts=True)
    wrong = counts != 2
    if bool(wrong.any()):
        shown = [f"{v} (x{c})" for v, c in zip(values[wrong].tolist(), counts[wrong].tolist())]
        more = f" and {len(shown) - 10} more" if len(shown) > 10 else ""
        raise ValueError(
            "NTXentLoss expects exactly two views of every instance, i.e. every label "
            f"exactly twice in the batch; these labels do not: {', '.join(shown[:10])}{more}."
        )
    order = torch.argsort(labels, stable=True)
    return order[0::2], order[1::2]


class NTXentLoss(nn.Module):
    """NT-Xent (SimCLR) loss over a batch holding two views of each instance.

    ``forward(embeddings, labels)`` with ``embeddings`` ``[2N, d]`` and either

    * ``labels`` ``[2N]``: an instance id per row, every id exactly twice, in any order;
    * ``labels=None``: rows ``0..N-1`` are view 1 and rows ``N..2N-1`` view 2 of the
      instances ``0..N-1``.

    See :mod:`finetuner_selfsup.losses.ntxent` for the formula and numerics.
    """

    def __init__(
        self, temperature: float = 0.1, gather_distributed: bool = True, memory_bank_size: int = 0
    ) -> None:
        """:param temperature: softmax temperature, > 0 (SimCLR uses 0.1 to 0.5).
        :param gather_distributed: in data-parallel training (an initialised process
            group of several processes), contrast every view with the views of *all*
            processes, gathered with gradients; the loss is scaled so that the gradient
            DDP averages is the gradient of the global batch's loss. ``False`` keeps the
            negatives local to each process.
        :param memory_bank_size: keep the views of the last batches in a first-in,
            first-out queue of this many embeddings (0: off) and use them as extra
            negatives of every query -- many negatives for the memory of a small batch.
            The trade-off: queued embeddings come from earlier versions of the model and
            carry no gradient, so they are slightly stale negatives (MoCo's momentum
            encoder exists to keep them consistent); a queue much larger than the number
            of views seen in a few hundred steps mostly adds stale ones. It is not the
            exact NT-Xent of a larger batch.
        """
        super().__init__()
        _check_temperature(temperature)
        if not isinstance(memory_bank_size, int) or memory_bank_size < 0:
            raise ValueError(f"memory_bank_size must be an int >= 0, got {memory_bank_size!r}.")
        self.temperature = temperature
        self.gather_distributed = gather_distributed
        self.memory_bank_size = memory_bank_size
        #: the queued embeddings (normalised, detached), newest last
        self.memory_bank: Optional[torch.Tensor] = None

    def reset_memory_bank(self) -> None:
        """Empty the queue. The engine calls this when a fit starts, so that a loss object
        used for a second fit does not contrast with the first model's embeddings (which
        may not even have the same width); a resumed fit then restores the checkpoint's."""
        self.memory_bank = None

    def extra_repr(self) -> str:
        return (
            f"temperature={self.temperature}, gather_distributed={self.gather_distributed}, "
            f"memory_bank_size={self.memory_bank_size}"
        )

    def forward(
        self,
        embeddings: torch.Tensor,
        labels: Optional[Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]] = None,
    ) -> torch.Tensor:
        if embeddings.ndim != 2:
            raise ValueError(
                f"Expected embeddings of shape [2N, dim], got {tuple(embeddings.shape)}."
            )
        size = embeddings.shape[0]
        if size % 2 or size < 4:
            raise ValueError(
                "NTXentLoss needs two views of at least 2 instances, i.e. an even batch "
                f"of at least 4 embeddings; got {size}."
            )
        if labels is None:
            z1, z2 = embeddings[: size // 2], embeddings[size // 2 :]
        else:
            if isinstance(labels, torch.Tensor) and labels.shape[:1] != (size,):
                raise ValueError(
                    f"Got {size} embeddings but labels of shape {tuple(labels.shape)}."
                )
            first, second = views_from_labels(labels)
            z1 = embeddings[first.to(embeddings.device)]
            z2 = embeddings[second.to(embeddings.device)]
        from .. import distributed

        context = distributed.current() if self.gather_distributed else None
        if context is None:
            loss = nt_xent_loss(z1, z2, self.temperature, extra_negatives=self._queued(z1))
            self._enqueue(z1, z2)
            return loss
        return self._gathered_loss(z1, z2, context.world_size)

    def _queued(self, like: torch.Tensor) -> Optional[torch.Tensor]:
        if self.memory_bank is None or not self.training:
            return None
        return self.memory_bank.to(like.device)

    def _enqueue(self, z1: torch.Tensor, z2: torch.Tensor) -> None:
        """Add this batch's views (all processes' when gathered) to the queue, oldest out.
        Only in training mode: evaluation batches neither use nor change the queue."""
        if self.memory_bank_size == 0 or not self.training:
            return
        fresh = F.normalize(torch.cat([z1, z2]).detach().float(), dim=1)
        bank = fresh if self.memory_bank is None else torch.cat([self.memory_bank.to(fresh.device), fresh])
        self.memory_bank = bank[-self.memory_bank_size :]

    def _gathered_loss(self, z1: torch.Tensor, z2: torch.Tensor, world_size: int) -> torch.Tensor:
        """Local queries against the views of all processes (rows in rank order).

        The mean over this process's ``2n`` queries is rescaled by ``n * W / N`` (``N``
        instances in all): DDP's gradient average over the ``W`` processes then equals the
        gradient of the mean over all ``2N`` queries, also when shards differ in size.
        """
        from ..distributed import all_gather_with_grad

        all_z1, offset = all_gather_with_grad(z1)
        all_z2, _ = all_gather_with_grad(z2)
        loss = nt_xent_loss(
            z1, z2, self.temperature, all_z1=all_z1, all_z2=all_z2, offset=offset,
            extra_negatives=self._queued(z1),
        )
        self._enqueue(all_z1, all_z2)  # the same queue on every process
        return loss * (z1.shape[0] * world_size / all_z1.shape[0])
