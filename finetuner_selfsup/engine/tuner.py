"""The training loop.

One loop serves all three data kinds. It keeps the attributes that Finetuner 0.4.1's
callbacks read (``state``, ``_progress_bar``, ``embed_model``, ``_optimizer``,
``_scheduler``, ``_batch_size``, ``_device_name``, ``_preprocess_fn``, ``_collate_fn``,
``stop_training``, ``save``), so upstream callbacks (ProgressBar, EarlyStopping,
BestModelCheckpoint, TrainingCheckpoint, WandBLogger, EvaluationCallback) and users' own
callbacks work unchanged.

Differences from upstream that a user can notice: the DataLoader is built once per fit
(upstream rebuilt it each epoch, which restarts worker processes); a non-finite loss
stops training with an error naming the epoch and batch instead of returning a NaN model;
impossible batch settings are errors instead of zero training steps.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .. import distributed
from ..devices import resolve_device
from .messages import batch_documents, blame_eval_data, non_finite_items
from .batched_views import BatchViews, PendingViews, SourceCollate, SourceDataset, uses_batched_views
from .collate import Batch, Collate
from .prefetch import prefetch
from .data_kinds import DataKind, describe_document, detect_data_kind
from .host_memory import keep_freed_host_memory
from .datasets import LabelledDataset, SessionDataset, TwoViewDataset
from .samplers import ClassBatchSampler, InstanceBatchSampler, SessionBatchSampler

if TYPE_CHECKING:
    from docarray import DocumentArray

logger = logging.getLogger("finetuner_selfsup")

OptimizerFactory = Callable[[nn.Module], Union[torch.optim.Optimizer, Tuple[Any, Any]]]


def resolve_loss(loss: Union[str, nn.Module]) -> nn.Module:
    """A loss instance from a loss object or the name of one of this package's losses."""
    from .. import losses

    if isinstance(loss, nn.Module):
        return loss
    if isinstance(loss, str):
        cls = getattr(losses, loss, None)
        if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
            raise ValueError(
                f"unknown loss {loss!r}; use one of 'NTXentLoss', 'SiameseLoss', "
                f"'TripletLoss', or pass a loss module instance."
            )
        return cls()
    raise TypeError(f"`loss` must be a loss name or an nn.Module, got {type(loss).__name__}.")


PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def resolve_precision(precision: str, device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype for ``precision`` on ``device`` (None = plain float32).

    ``'auto'``: bfloat16 on a GPU that supports it (the weights, optimiser and loss stay
    float32), float32 elsewhere. ``'bf16'`` also works on CPUs (fast where they have
    AVX-512-BF16/AMX); ``'fp16'`` is for GPUs only and uses gradient scaling.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(map(repr, PRECISIONS))}, got {precision!r}")
    if precision == "auto":
        cuda_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if cuda_bf16 else None
    if precision == "fp16":
        if device.type != "cuda":
            raise ValueError("precision='fp16' needs a CUDA device; on the CPU use 'bf16' or 'fp32'.")
        return torch.float16
    return torch.bfloat16 if precision == "bf16" else None


def _is_image_batch(inputs: Any) -> bool:
    return isinstance(inputs, torch.Tensor) and inputs.ndim == 4 and inputs.is_floating_point()


class Tuner:
    """Trains an embedding model on a DocumentArray (see :func:`finetuner_selfsup.fit.fit`)."""

    def __init__(
        self,
        embed_model: nn.Module,
        loss: Union[str, nn.Module] = "SiameseLoss",
        configure_optimizer: Optional[OptimizerFactory] = None,
        learning_rate: float = 1e-3,
        scheduler_step: str = "batch",
        callbacks: Optional[Sequence[Any]] = None,
        device: str = "cpu",
        generator: Optional[torch.Generator] = None,
        precision: str = "auto",
        channels_last: Optional[bool] = None,
        sync_batchnorm: bool = False,
    ) -> None:
        from finetuner.tuner.callback import ProgressBarCallback
        from rich.progress import Progress

        if scheduler_step not in ("batch", "epoch"):
            raise ValueError(f"scheduler_step must be 'batch' or 'epoch', got {scheduler_step!r}.")
        if scheduler_step == "epoch" and callable(getattr(configure_optimizer, "plan", None)):
            # its warm-up and decay are planned in batches: stepped per epoch, the rate
            # would stay in the warm-up and never reach its base value
            raise ValueError(
                f"configure_optimizer={configure_optimizer!r} plans its learning-rate "
                f"schedule in batches (warm-up, then decay, one step per batch), but "
                f"scheduler_step='epoch' would step it once per epoch, so the rate would "
                f"stay in the warm-up and never reach its peak (base_lr). Pass "
                f"scheduler_step='batch' (the default) with it."
            )
        self.device = resolve_device(device)
        self._device_name = device
        #: rank and world size when running data-parallel (under torchrun), else None
        self.distributed = distributed.current()
        self._embed_model = embed_model.to(self.device)
        #: autocast dtype of the forward pass (None: float32), see :func:`resolve_precision`
        self.autocast_dtype = resolve_precision(precision, self.device)
        self._grad_scaler = (
            torch.amp.GradScaler("cuda") if self.autocast_dtype == torch.float16 else None
        )
        #: image batches and conv weights in channels-last layout (faster convolutions on
        #: GPUs; measured no faster on this project's CPU, so off there by default);
        #: switched off by itself if the model's forward rejects that layout
        if channels_last is None:
            channels_last = self.device.type == "cuda"
        self.channels_last = bool(channels_last)
        self._layout_checked = False
        self._loss = resolve_loss(loss)
        self._learning_rate = learning_rate
        self._scheduler_step = scheduler_step
        self._scheduler = None
        #: draws the batch order; saved in checkpoints so a resumed run sees the same order
        if generator is None:
            seed = (
                distributed.broadcast_seed(self.distributed)  # one batch plan on every rank
                if self.distributed is not None
                else int(torch.randint(0, 2**62, (1,)).item())
            )
            generator = torch.Generator().manual_seed(seed)
        self.batch_order_generator = generator
        #: the checkpoint this fit resumed from (None: it started from scratch)
        self.resumed_from: Optional[Path] = None
        #: ``(document, reason)`` of every item left out because its image was unreadable
        self.skipped_documents: List[Tuple[str, str]] = []
        self._progress_bar = Progress()
        self._preprocess_fn = None
        self._collate_fn = None
        self._batch_size: Optional[int] = None
        self._num_items_per_class: Optional[int] = None
        self._num_workers = 0
        self.stop_training = False

        self._configure_optimizer = configure_optimizer
        if configure_optimizer is not None:
            configured = configure_optimizer(self._embed_model)
            if isinstance(configured, tuple):
                self._optimizer, self._scheduler = configured
            else:
                self._optimizer = configured
        else:
            # fused: one kernel for all parameters on the GPU (same update as the default)
            fused = {"fused": True} if self.device.type == "cuda" else {}
            self._optimizer = torch.optim.Adam(self._embed_model.parameters(), lr=learning_rate, **fused)
        # Data-parallel: only rank 0 shows progress, logs and writes checkpoints; its
        # decisions (early stopping) and final weights are shared with the other ranks.
        if self.distributed is not None and not self.distributed.is_main:
            self._callbacks: List[Any] = []
        else:
            self._callbacks = [ProgressBarCallback(), *(callbacks or [])]
        self._train_module: nn.Module = self._embed_model
        self._told_batch = False  # data-parallel: the batch's meaning is logged once
        if sync_batchnorm and self.device.type != "cuda":
            raise ValueError(
                "sync_batchnorm=True synchronises batch-norm statistics between GPU "
                "processes (torch's SyncBatchNorm is GPU-only); on the CPU leave it False."
            )
        self.sync_batchnorm = sync_batchnorm
        self._batchnorm_originals: List[Tuple[str, type]] = []

        from finetuner.tuner.state import TunerState

        self.state = TunerState()

    # -- the attributes upstream callbacks use ---------------------------------------
    @property
    def embed_model(self) -> nn.Module:
        return self._embed_model

    def save(self, *args: Any, **kwargs: Any) -> None:
        """Save the model's ``state_dict`` with ``torch.save`` (upstream's contract)."""
        torch.save(self._embed_model.state_dict(), *args, **kwargs)

    def _trigger_callbacks(self, method: str, **kwargs: Any) -> None:
        for callback in self._callbacks:
            getattr(callback, method)(self, **kwargs)

    # -- data -----------------------------------------------------------------------
    def _data_loader(
        self,
        docs: "DocumentArray",
        argument: str,
        batch_size: int,
        num_items_per_class: Optional[int],
        preprocess_fn: Optional[Callable],
        collate_fn: Optional[Callable],
        num_workers: int,
        skip_unreadable: bool = False,
    ) -> Tuple[DataLoader, DataKind]:
        kind = detect_data_kind(docs, argument)
        generator = self.batch_order_generator
        dataset: Dataset
        if kind is DataKind.INSTANCE:
            if batch_size % 2:
                raise ValueError(
                    f"self-supervised batches hold two views of each image, so batch_size "
                    f"(the number of views) must be even; got {batch_size}. Use "
                    f"batch_size={batch_size - 1} or {batch_size + 1}."
                )
            if preprocess_fn is None and collate_fn is None:
                raise ValueError(
                    f"`{argument}` has no labels, so ft.fit trains self-supervised: the two "
                    f"views of an image come from two calls of a random preprocess_fn. "
                    f"Without one both views are identical and nothing is learned; pass "
                    f"e.g. preprocess_fn=vision_preprocessor() (from "
                    f"finetuner.tuner.augmentation), or label the documents."
                )
        if uses_batched_views(preprocess_fn, collate_fn, kind):
            return self._batched_views_loader(
                docs, kind, batch_size, num_items_per_class, preprocess_fn, num_workers, skip_unreadable
            ), kind
        if kind is DataKind.INSTANCE:
            dataset = TwoViewDataset(docs, preprocess_fn, skip_unreadable)
            sampler = InstanceBatchSampler(len(dataset), batch_size // 2, generator)
            names = [describe_document(d) for d in docs]
        elif kind is DataKind.CLASS:
            dataset = LabelledDataset(docs, preprocess_fn, skip_unreadable)
            sampler = ClassBatchSampler(dataset.labels, batch_size, num_items_per_class, generator)
            names = [describe_document(d) for d in docs]
        else:
            dataset = SessionDataset(docs, preprocess_fn, skip_unreadable)
            sampler = SessionBatchSampler(dataset.labels, batch_size, generator)
            names = [describe_document(dataset.document(i)) for i in range(len(dataset))]
        sampler = self._shard(sampler, kind, getattr(dataset, "labels", None))
        return self._loader(dataset, sampler, Collate(kind, names, collate_fn), num_workers), kind

    def _loader(self, dataset: Dataset, sampler: Any, collate: Callable, num_workers: int) -> DataLoader:
        """The DataLoader for one fit: built once (workers persist across epochs), pinned
        memory when training on CUDA."""
        return DataLoader(
            dataset,
            batch_sampler=sampler,
            collate_fn=collate,
            num_workers=num_workers,
            persistent_workers=num_workers > 0,
            pin_memory=self.device.type == "cuda",
        )

    def _batched_views_loader(
        self,
        docs: "DocumentArray",
        kind: DataKind,
        batch_size: int,
        num_items_per_class: Optional[int],
        preprocessor: Any,
        num_workers: int,
        skip_unreadable: bool,
    ) -> DataLoader:
        """The fast path of :mod:`.batched_views`: sources decoded once, views per batch."""
        generator = self.batch_order_generator
        if kind is DataKind.INSTANCE:
            dataset = SourceDataset(docs, preprocessor, None, skip_unreadable)
            sampler: Any = InstanceBatchSampler(len(dataset), batch_size // 2, generator)
            make_views = BatchViews(preprocessor, views_per_image=2)
        else:
            labels = LabelledDataset(docs, None).labels
            dataset = SourceDataset(docs, preprocessor, labels, skip_unreadable)
            sampler = ClassBatchSampler(labels, batch_size, num_items_per_class, generator)
            make_views = BatchViews(preprocessor, views_per_image=1)
        sampler = self._shard(sampler, kind, None if kind is DataKind.INSTANCE else labels)
        on_device = self.device.type != "cpu"
        return self._loader(dataset, sampler, SourceCollate(make_views, on_device=on_device), num_workers)

    def _shard(self, sampler: Any, kind: DataKind, labels: Optional[Sequence[Any]]) -> Any:
        """Data-parallel: this rank's share of each global batch (see :mod:`..distributed`)."""
        if self.distributed is None:
            return sampler
        if kind is DataKind.SESSION:
            raise ValueError(
                "session data (documents with labelled matches) cannot be trained on "
                "several processes yet; run it on one process."
            )
        per_rank = 2  # two images (NT-Xent) or two items (a positive pair) on every rank
        world = self.distributed.world_size
        if self.distributed.is_main and not self._told_batch:
            self._told_batch = True
            items = sampler.images_per_batch if kind is DataKind.INSTANCE else sampler.batch_size
            what = "images" if kind is DataKind.INSTANCE else "items"
            if items % world:
                logger.warning(
                    "batch_size is the global batch: %d %s a step shared by %d processes, so "
                    "the shares differ by one (%d or %d); the loss is still the global batch's, "
                    "but the larger shares set the pace. A batch of a multiple of %d %s "
                    "splits evenly.", items, what, world, items // world, items // world + 1,
                    world, what,
                )
            else:
                logger.info(
                    "data-parallel on %d processes: batch_size is the global batch, %d %s a "
                    "step, %d per process.", world, items, what, items // world,
                )
        return distributed.ShardedBatchSampler(sampler, self.distributed, labels, min_per_rank=per_rank)

    def _wrap_for_data_parallel(self) -> None:
        """DistributedDataParallel around the model (after its layout is fixed)."""
        if self.distributed is None:
            return
        from torch.nn.parallel import DistributedDataParallel

        if self.sync_batchnorm:
            self._batchnorm_originals = distributed.convert_sync_batchnorm(self._embed_model)
            self._embed_model.to(self.device)
        if self.channels_last:
            self._embed_model.to(memory_format=torch.channels_last)
        self._layout_checked = True  # no fallback probe under DDP: the layout is fixed now
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        self._train_module = DistributedDataParallel(self._embed_model, device_ids=device_ids)

    def _to_device(self, inputs: Any) -> Any:
        if isinstance(inputs, PendingViews):
            return inputs.make(self.device)
        if isinstance(inputs, torch.Tensor):
            return inputs.to(self.device, non_blocking=True)
        if isinstance(inputs, dict):
            return {k: self._to_device(v) for k, v in inputs.items()}
        if isinstance(inputs, (list, tuple)):
            return type(inputs)(self._to_device(v) for v in inputs)
        return inputs

    # -- the loop -------------------------------------------------------------------
    def fit(
        self,
        train_data: "DocumentArray",
        eval_data: Optional["DocumentArray"] = None,
        preprocess_fn: Optional[Callable] = None,
        collate_fn: Optional[Callable] = None,
        epochs: int = 10,
        batch_size: int = 256,
        num_items_per_class: Optional[int] = None,
        num_workers: int = 0,
        resume_from: Optional[str] = None,
        skip_unreadable: bool = False,
    ) -> None:
        """Train for ``epochs`` epochs, evaluating the loss on ``eval_data`` after each.

        :param resume_from: a checkpoint of :class:`~.checkpoint.TrainingCheckpoint`, or its
            folder (the newest one is used; none yet = start from scratch): model,
            optimiser, scheduler, random states and batch order are restored and training
            continues with the epoch after the saved one, up to ``epochs`` in total.
        :param skip_unreadable: leave out documents whose image cannot be read instead of
            stopping; every one is listed in a warning at the end of the fit.
        """
        if epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {epochs}.")
        if batch_size < 2:
            raise ValueError(f"batch_size must be at least 2, got {batch_size}.")
        self._preprocess_fn = preprocess_fn
        self._collate_fn = collate_fn
        self._batch_size = batch_size
        self._num_items_per_class = num_items_per_class
        self._num_workers = num_workers
        if self.device.type == "cpu":
            # every batch frees and allocates the same large buffers: keep them for reuse
            # instead of paging them in anew (see host_memory's docstring for the numbers)
            keep_freed_host_memory()

        train_loader, kind = self._data_loader(
            train_data, "train_data", batch_size, num_items_per_class, preprocess_fn,
            collate_fn, num_workers, skip_unreadable,
        )
        eval_loader, eval_kind = None, kind
        if eval_data is not None and len(eval_data) > 0:
            with blame_eval_data():
                eval_loader, eval_kind = self._data_loader(
                    eval_data, "eval_data", batch_size, num_items_per_class, preprocess_fn,
                    collate_fn, num_workers, skip_unreadable,
                )
        logger.info("training on %d documents (%s data)", len(train_data), kind.value)

        from finetuner.tuner.state import TunerState

        self.state = TunerState(num_epochs=epochs)
        reset_loss = getattr(self._loss, "reset_memory_bank", None)
        if callable(reset_loss):  # NT-Xent's queue belongs to one run (a resume restores it)
            reset_loss()
        self._plan_optimizer(kind, batch_size, train_loader, epochs)
        self.resumed_from = None
        start_epoch = self._resume(resume_from) if resume_from is not None else 0
        self._wrap_for_data_parallel()
        try:
            self._trigger_callbacks("on_fit_begin")
            for epoch in range(start_epoch, epochs):
                self.state.epoch = epoch
                self.state.num_batches_train = len(train_loader.batch_sampler)
                self.state.batch_index = 0
                self._trigger_callbacks("on_epoch_begin")
                self._trigger_callbacks("on_train_epoch_begin")
                self._train_epoch(train_loader, kind)
                if self._scheduler_step == "epoch" and self._scheduler is not None:
                    self._scheduler.step()
                self._trigger_callbacks("on_train_epoch_end")
                if eval_loader is not None:
                    self.state.num_batches_val = len(eval_loader.batch_sampler)
                    self.state.batch_index = 0
                    self._trigger_callbacks("on_val_begin")
                    with blame_eval_data():
                        self._eval_epoch(eval_loader, eval_kind)
                    self._trigger_callbacks("on_val_end")
                self._trigger_callbacks("on_epoch_end")
                if self.distributed is not None:
                    self.stop_training = distributed.broadcast_flag(self.stop_training, self.device)
                if self.stop_training:
                    break
            self._trigger_callbacks("on_fit_end")
            self._revert_sync_batchnorm()
            if self.distributed is not None:
                # e.g. BestModelCheckpoint restored the best weights on rank 0 only
                distributed.broadcast_module(self._embed_model)
        except KeyboardInterrupt:
            # Upstream's behaviour: stop, and hand back the model trained so far.
            self._trigger_callbacks("on_keyboard_interrupt")
            logger.warning(
                "training interrupted at epoch %d, batch %d; the model is returned as "
                "trained so far.", self.state.epoch + 1, self.state.batch_index + 1,
            )
        except BaseException as exc:
            self._trigger_callbacks("on_exception", exception=exc)
            raise
        finally:
            # also after an interruption or error: the model handed back (or still held by
            # the caller) is the user's architecture, not one with SyncBatchNorm layers
            self._revert_sync_batchnorm()
            self._report_skipped()

    def _revert_sync_batchnorm(self) -> None:
        """Put the model's own batch-norm layers back if ``sync_batchnorm`` replaced them."""
        if self._batchnorm_originals:
            distributed.revert_sync_batchnorm(self._embed_model, self._batchnorm_originals)
            self._batchnorm_originals = []

    def _plan_optimizer(self, kind: DataKind, batch_size: int, loader: DataLoader, epochs: int) -> None:
        """Tell a ``configure_optimizer`` with a ``plan`` method (e.g.
        :class:`~finetuner_selfsup.optim.LargeBatchRecipe`) the batch and the run's length.

        Counting the steps plans an epoch; that plan is dropped and the batch-order
        generator put back, so the epochs (and a resumed run's restored order) are
        exactly what they would be without the count.
        """
        plan = getattr(self._configure_optimizer, "plan", None)
        if plan is None:
            return
        sampler = loader.batch_sampler
        generator_state = self.batch_order_generator.get_state()
        steps_per_epoch = len(sampler)
        sampler.forget_plan()
        self.batch_order_generator.set_state(generator_state)
        images_per_batch = batch_size // 2 if kind is DataKind.INSTANCE else batch_size
        plan(images_per_batch=images_per_batch, steps_per_epoch=steps_per_epoch, epochs=epochs)

    def _resume(self, resume_from: str) -> int:
        from .checkpoint import find_checkpoint, load_checkpoint, restore_tuner

        path = find_checkpoint(resume_from)
        self.resumed_from = path
        if path is None:
            logger.info("no checkpoint in %s yet: training starts from scratch", resume_from)
            return 0
        epochs_done = restore_tuner(self, load_checkpoint(path), path)
        logger.info("resumed from %s: %d epoch(s) already done", path, epochs_done)
        return epochs_done

    def _note_skipped(self, batch: Batch, kind: Optional[DataKind] = None) -> bool:
        """Record the batch's unreadable documents; False if too little is left to train on.

        A self-supervised batch (``kind`` INSTANCE) lists each image twice (one entry per
        view), so it needs 2 *distinct* images -- one image's two views have no negative,
        and NT-Xent would raise. Other batches need 2 items, as before.
        """
        self.skipped_documents.extend(batch.skipped)
        instance = kind is DataKind.INSTANCE
        readable = len(set(batch.indices)) if instance else len(batch.indices)
        enough = readable >= 2
        if not enough and self.distributed is not None:
            # Skipping the step on one process would leave the others waiting in DDP's
            # gradient exchange; stop instead (torchrun then ends every process).
            listed = "; ".join(f"{doc}: {reason}" for doc, reason in batch.skipped)
            what = "images" if instance else "items"
            raise RuntimeError(
                f"process {self.distributed.rank}'s share of batch {self.state.batch_index + 1} "
                f"has fewer than 2 readable {what} after skipping unreadable images ({listed}). "
                f"Remove those documents, or train on one process."
            )
        return enough

    def _report_skipped(self) -> None:
        if not self.skipped_documents:
            return
        unique = dict(self.skipped_documents)
        listed = "\n".join(f"  {doc}: {reason}" for doc, reason in unique.items())
        logger.warning(
            "%d document(s) were skipped because their image could not be read "
            "(skip_unreadable=True):\n%s", len(unique), listed,
        )

    def _loss_of(self, batch: Batch) -> Tuple[torch.Tensor, Any]:
        """The batch's loss, and the model inputs it was computed from."""
        inputs = self._to_device(batch.inputs)
        labels = self._to_device(batch.labels)
        return self._loss(self._forward(inputs), labels), inputs

    def _forward(self, inputs: Any) -> Any:
        """The model's embeddings (float32) under the chosen precision and layout."""
        if self.channels_last and _is_image_batch(inputs):
            if not self._layout_checked:
                return self._first_forward(inputs)
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        return self._autocast_forward(inputs)

    def _autocast_forward(self, inputs: Any) -> Any:
        dtype = self.autocast_dtype
        module = self._train_module if self._embed_model.training else self._embed_model
        with torch.autocast(self.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            embeddings = module(inputs)
        if dtype is not None and isinstance(embeddings, torch.Tensor):
            embeddings = embeddings.float()  # losses compute in float32
        return embeddings

    def _first_forward(self, inputs: torch.Tensor) -> Any:
        """Try channels-last once; a model whose forward needs contiguous tensors (e.g. it
        calls ``.view`` on a conv output) gets the plain layout back, with a warning.

        The failed attempt may already have updated buffers (batch-norm running statistics
        and batch counts); they are put back before the retry, so that the batch counts once.
        """
        self._layout_checked = True
        buffers = {name: b.detach().clone() for name, b in self._embed_model.named_buffers()}
        self._embed_model.to(memory_format=torch.channels_last)
        try:
            return self._autocast_forward(inputs.contiguous(memory_format=torch.channels_last))
        except RuntimeError as exc:
            self._embed_model.to(memory_format=torch.contiguous_format)
            with torch.no_grad():
                for name, buffer in self._embed_model.named_buffers():
                    if name in buffers:
                        buffer.copy_(buffers[name])
            self.channels_last = False
            embeddings = self._autocast_forward(inputs)
            logger.warning(
                "the model failed in channels-last layout (%s); training continues in the "
                "default layout (pass channels_last=False to skip this attempt).",
                str(exc).splitlines()[0],
            )
            return embeddings

    def _check_finite(
        self, loss: torch.Tensor, phase: str, batch: Batch, inputs: Any, dataset: Dataset
    ) -> float:
        """The loss as a float; a non-finite one stops training with an error that names
        the batch's documents (and those whose inputs hold NaN/inf, if any)."""
        value = float(loss.detach())
        if self.distributed is not None:  # the global batch's loss, the same on every rank
            value = distributed.all_reduce_mean(value, self.device)
        if not math.isfinite(value):
            documents = batch_documents(dataset, batch.indices)
            bad = non_finite_items(inputs, batch.indices)
            culprits = f"The inputs of {batch_documents(dataset, bad)} hold NaN/inf values. " if bad else ""
            raise FloatingPointError(
                f"the {phase} loss became {value} at epoch {self.state.epoch + 1}, batch "
                f"{self.state.batch_index + 1} (documents: {documents or 'unknown'}). "
                f"{culprits}Training stopped so that no broken model is returned. Try a "
                f"lower learning_rate, check the inputs for NaN/inf values, or (NT-Xent) a "
                f"higher temperature."
            )
        return value

    def _batches(self, loader: DataLoader) -> Iterable[Batch]:
        """The loader's batches; loaded a few ahead in a thread when the views are made on
        the GPU and there are no worker processes (see :mod:`.prefetch`)."""
        if loader.num_workers == 0 and isinstance(loader.collate_fn, SourceCollate) and loader.collate_fn.on_device:
            return prefetch(loader)
        return loader

    def _train_epoch(self, loader: DataLoader, kind: DataKind) -> None:
        self._embed_model.train()
        self._loss.train()  # e.g. NT-Xent's memory bank is used and filled in training only
        for index, batch in enumerate(self._batches(loader)):
            self.state.batch_index = index
            for group_index, group in enumerate(self._optimizer.param_groups):
                self.state.learning_rates[f"group_{group_index}"] = group["lr"]
            if not self._note_skipped(batch, kind):
                continue
            self._trigger_callbacks("on_train_batch_begin")
            loss, inputs = self._loss_of(batch)
            value = self._check_finite(loss, "training", batch, inputs, loader.dataset)
            del inputs
            self._optimizer.zero_grad(set_to_none=True)
            if self._grad_scaler is not None:
                self._grad_scaler.scale(loss).backward()
                self._grad_scaler.step(self._optimizer)
                self._grad_scaler.update()
            else:
                loss.backward()
                self._optimizer.step()
            if self._scheduler_step == "batch" and self._scheduler is not None:
                self._scheduler.step()
            self.state.current_loss = value
            self._trigger_callbacks("on_train_batch_end")

    def _eval_epoch(self, loader: DataLoader, kind: DataKind) -> None:
        self._embed_model.eval()
        self._loss.eval()
        with torch.no_grad():
            for index, batch in enumerate(self._batches(loader)):
                self.state.batch_index = index
                if not self._note_skipped(batch, kind):
                    continue
                self._trigger_callbacks("on_val_batch_begin")
                loss, inputs = self._loss_of(batch)
                self.state.current_loss = self._check_finite(loss, "validation", batch, inputs, loader.dataset)
                self._trigger_callbacks("on_val_batch_end")
