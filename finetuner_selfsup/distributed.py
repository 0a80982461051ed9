"""Data-parallel training under ``torchrun``: process group, ranks, batch shards, gathering.

``ft.fit`` needs no new argument to run on several processes: started by ``torchrun``
(which sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``),
it joins the process group (NCCL on GPUs, gloo on CPUs; one already initialised by the
caller is used as it is) and trains with ``DistributedDataParallel``.

Meaning of ``batch_size`` under data parallelism: it stays the **global** batch, as on
one process. Every rank plans the same global batches (the batch order is seeded
identically on all ranks) and trains on its own contiguous share of each, so one epoch
still shows every item exactly once, across ranks, and the NT-Xent loss over gathered
embeddings equals the single-process loss on the same global batch.
"""
from __future__ import annotations

import atexit
import logging
import os
from dataclasses import dataclass
from typing import Any, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in the process group."""

    rank: int
    world_size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def current() -> Optional[DistributedContext]:
    """The context of an initialised process group of more than one process, else None."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return None
    local_rank = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
    return DistributedContext(dist.get_rank(), dist.get_world_size(), local_rank)


def launched_by_torchrun() -> bool:
    """Whether the environment asks for several processes (``WORLD_SIZE`` > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device: torch.device) -> Tuple[Optional[DistributedContext], torch.device]:
    """Join the process group if launched for it; return the context and this rank's device.

    ``device='cuda'`` becomes ``cuda:LOCAL_RANK`` (one GPU per process, as torchrun starts
    them); an explicit ``cuda:N`` is kept.
    """
    if launched_by_torchrun() and dist.is_available() and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
        # We opened it, so we close it at exit: a process group left to the interpreter's
        # teardown can abort the process (gloo: "terminate called without an active
        # exception") after the script has finished.
        atexit.register(_close_process_group)
    context = current()
    if context is not None and not context.is_main:
        # one voice: the other processes report only warnings and errors
        logging.getLogger("finetuner_selfsup").setLevel(logging.WARNING)
    if context is not None and device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", context.local_rank)
        torch.cuda.set_device(device)
    return context, device


def _close_process_group() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_seed(context: DistributedContext) -> int:
    """A random seed drawn on rank 0 and shared with every rank (one batch plan for all)."""
    seed = [int(torch.randint(0, 2**62, (1,)).item())]
    dist.broadcast_object_list(seed, src=0)
    return int(seed[0])


def split_contiguous(items: Sequence[Any], parts: int) -> List[List[Any]]:
    """``items`` cut into ``parts`` contiguous pieces whose sizes differ by at most one."""
    base, extra = divmod(len(items), parts)
    pieces, start = [], 0
    for part in range(parts):
        size = base + (1 if part < extra else 0)
        pieces.append(list(items[start : start + size]))
        start += size
    return pieces


def split_by_groups(items: Sequence[int], labels: Sequence[Any], parts: int) -> List[List[int]]:
    """Cut a class batch into ``parts`` contiguous pieces without splitting a class's run of
    items (mining needs an anchor's positives on its own rank); runs are balanced by count."""
    runs: List[List[int]] = []
    for item in items:
        if runs and labels[runs[-1][-1]] == labels[item]:
            runs[-1].append(item)
        else:
            runs.append([item])
    return [sum(piece, []) for piece in split_contiguous(runs, parts)]


class ShardedBatchSampler:
    """This rank's share of each global batch of ``sampler`` (a planned batch sampler).

    Every rank runs the same sampler with the same seed, so the global batches agree; rank
    ``r`` takes the ``r``-th contiguous piece of each. A global batch too small to give every
    rank at least ``min_per_rank`` items joins the batch before it, so that no rank idles
    in a step the others take (the ranks must take the same steps) and nothing is dropped.
    """

    def __init__(
        self,
        sampler: Any,
        context: DistributedContext,
        labels: Optional[Sequence[Any]] = None,
        min_per_rank: int = 1,
    ) -> None:
        self.sampler = sampler
        self.context = context
        self.labels = labels
        self.min_per_rank = min_per_rank
        self._plan: Optional[List[List[int]]] = None

    def _split(self, batch: List[int]) -> List[List[int]]:
        world = self.context.world_size
        if self.labels is None:
            return split_contiguous(batch, world)
        return split_by_groups(batch, self.labels, world)

    def _plan_epoch(self) -> List[List[int]]:
        batches = [list(batch) for batch in self.sampler]
        merged: List[List[int]] = []
        for batch in batches:
            if merged and min(len(piece) for piece in self._split(batch)) < self.min_per_rank:
                merged[-1].extend(batch)
            else:
                merged.append(batch)
        if merged and min(len(piece) for piece in self._split(merged[0])) < self.min_per_rank:
            raise ValueError(
                f"a global batch of {len(merged[0])} items cannot give each of the "
                f"{self.context.world_size} processes {self.min_per_rank} or more; use a "
                f"larger batch_size or fewer processes."
            )
        return [self._split(batch)[self.context.rank] for batch in merged]

    def __len__(self) -> int:
        if self._plan is None:
            self._plan = self._plan_epoch()
        return len(self._plan)

    def __iter__(self) -> Iterator[List[int]]:
        if self._plan is None:
            self._plan = self._plan_epoch()
        plan, self._plan = self._plan, None
        yield from plan

    def forget_plan(self) -> None:
        self._plan = None
        self.sampler.forget_plan()


def all_gather_with_grad(tensor: torch.Tensor) -> Tuple[torch.Tensor, int]:
    """Rows of ``tensor`` from every rank, in rank order, and the offset of this rank's rows.

    Gradients flow back to every rank's own rows (:class:`_GatherPieces`). Ranks may hold
    different numbers of rows: pieces are padded to the largest for the collective and
    trimmed after it.
    """
    rows = torch.tensor([tensor.shape[0]], device=tensor.device)
    sizes = [torch.zeros_like(rows) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, rows)
    counts = [int(size.item()) for size in sizes]
    longest = max(counts)
    padded = tensor
    if tensor.shape[0] < longest:
        padding = tensor.new_zeros((longest - tensor.shape[0], *tensor.shape[1:]))
        padded = torch.cat([tensor, padding])
    pieces = _GatherPieces.apply(padded)
    gathered = torch.cat([piece[:count] for piece, count in zip(pieces, counts)])
    return gathered, sum(counts[: dist.get_rank()])


class _GatherPieces(torch.autograd.Function):
    """``dist.all_gather`` of equal-shaped pieces that gradients can flow back through.

    Every rank's loss depends on every piece, so the gradient of this rank's piece is the
    sum over ranks of their gradients for it: an ``all_reduce`` of the stacked gradients,
    of which each rank keeps its own row (a few kilobytes of embeddings per step, so the
    simplest collective that every backend has, gloo included). The same result as
    ``torch.distributed.nn.functional.all_gather``, which torch 2.14 deprecates in favour
    of a private module.
    """

    @staticmethod
    def forward(ctx: Any, piece: torch.Tensor) -> Tuple[torch.Tensor, ...]:  # type: ignore[override]
        piece = piece.contiguous()
        pieces = [torch.empty_like(piece) for _ in range(dist.get_world_size())]
        dist.all_gather(pieces, piece)
        return tuple(pieces)

    @staticmethod
    def backward(ctx: Any, *piece_gradients: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        summed = torch.stack(piece_gradients).contiguous()
        dist.all_reduce(summed)
        return summed[dist.get_rank()]


def all_reduce_mean(value: float, device: torch.device) -> float:
    """The mean of a number over all ranks."""
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return float(tensor.item()) / dist.get_world_size()


def broadcast_flag(flag: bool, device: torch.device) -> bool:
    """Rank 0's value of ``flag`` on every rank."""
    tensor = torch.tensor([1 if flag else 0], device=device)
    dist.broadcast(tensor, src=0)
    return bool(tensor.item())


def broadcast_module(module: torch.nn.Module) -> None:
    """Copy rank 0's parameters and buffers to every rank, in place."""
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src=0)


def convert_sync_batchnorm(model: torch.nn.Module) -> List[Tuple[str, type]]:
    """Replace every batch-norm layer of ``model`` (in place) by ``nn.SyncBatchNorm``, which
    normalises over the whole global batch instead of each process's share (SimCLR's
    "global BN"). Returns what :func:`revert_sync_batchnorm` needs to undo it."""
    originals = [
        (name, type(module))
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and name
    ]
    if isinstance(model, torch.nn.modules.batchnorm._BatchNorm):
        raise ValueError("the model itself is a batch-norm layer; wrap it in a module first")
    torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)  # replaces the layers in place
    return originals


def revert_sync_batchnorm(model: torch.nn.Module, originals: List[Tuple[str, type]]) -> None:
    """Put the original batch-norm classes back (same parameters and running statistics),
    so the trained model is the user's architecture again, usable on one process."""
    for name, cls in originals:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        sync = getattr(parent, child)
        plain = cls(sync.num_features, sync.eps, sync.momentum, sync.affine, sync.track_running_stats)
        plain.load_state_dict(sync.state_dict())
        plain.train(sync.training)
        state = sync.state_dict()
        if state:
            plain.to(next(iter(state.values())).device)
        setattr(parent, child, plain)
