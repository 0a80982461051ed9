"""``ft.fit``: Finetuner 0.4.1's entry point, on this package's engine.

Importing this module is cheap (torch is imported on the first call), because the plugin
installs :func:`fit` as ``finetuner.fit`` while ``import finetuner`` runs.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable, List, Optional, Sequence, Tuple, Union

if TYPE_CHECKING:
    import torch
    from docarray import DocumentArray
    from torch import nn

logger = logging.getLogger("finetuner_selfsup")


def fit(
    model: "nn.Module",
    train_data: "DocumentArray",
    eval_data: Optional["DocumentArray"] = None,
    epochs: int = 10,
    batch_size: int = 256,
    loss: Union[str, "nn.Module"] = "SiameseLoss",
    configure_optimizer: Optional[Callable[["nn.Module"], Any]] = None,
    learning_rate: Optional[float] = None,
    scheduler_step: str = "batch",
    device: str = "cpu",
    preprocess_fn: Optional[Callable[[Any], Any]] = None,
    collate_fn: Optional[Callable[[List[Any]], Any]] = None,
    num_items_per_class: Optional[int] = None,
    callbacks: Optional[Sequence[Any]] = None,
    num_workers: int = 0,
    to_embedding_model: bool = False,
    input_size: Optional[Tuple[int, ...]] = None,
    input_dtype: str = "float32",
    layer_name: Optional[str] = None,
    freeze: Union[bool, List[str]] = False,
    projection_head: Optional["nn.Module"] = None,
    *,
    seed: Optional[int] = None,
    resume_from: Optional[str] = None,
    skip_unreadable: bool = False,
    precision: str = "auto",
    channels_last: Optional[bool] = None,
    sync_batchnorm: bool = False,
) -> "nn.Module":
    """Fine-tune ``model`` on ``train_data`` and return the trained model.

    Finetuner 0.4.1's signature and meaning, argument for argument. What kind of training
    runs depends on the documents:

    * no ``tags['finetuner_label']`` on any document -> **self-supervised** (SimCLR): each
      image of a batch is seen as two views, two independent calls of the random
      ``preprocess_fn``; ``batch_size`` counts views, so a batch holds
      ``batch_size // 2`` images. Use ``loss=NTXentLoss(...)`` and
      ``preprocess_fn=vision_preprocessor()``.
    * a label on every document -> **supervised**: batches of ``num_items_per_class``
      items from each of ``batch_size // num_items_per_class`` classes.
    * no labels but labelled ``matches`` -> session training, as upstream.

    Tailoring (with ``to_embedding_model=True``): the model is cut after ``layer_name``
    (a name from ``finetuner.display(model, input_size=...)``), layers named in
    ``freeze`` (or all, with ``freeze=True``) stop training, and a ``projection_head`` is
    put on top (the module you pass itself, not a copy, as upstream: a second fit with the
    same head object continues from its trained weights). The model returned then keeps
    the head, as upstream: it is an
    ``nn.Sequential`` with ``.embed_model`` (the backbone, for feature extraction) and
    ``.projection_head``. Passing it back to ``fit`` with ``to_embedding_model=True`` and a
    ``layer_name`` inside the backbone removes the head and fine-tunes the backbone.

    Without ``to_embedding_model`` the given model itself is trained (in place) and returned.

    Started by ``torchrun --nproc_per_node=N`` (any number of machines), the same call
    trains data-parallel (DDP): ``batch_size`` stays the global batch, each process takes
    its share of every batch, NT-Xent contrasts with the views of all processes, and
    only process 0 shows progress and runs callbacks; every process returns the same
    model. See the docs page on several GPUs.

    :param seed: (not in Finetuner 0.4.1) seeds torch, Python's ``random`` and numpy and the
        batch order, for repeatable runs on CPU.
    :param resume_from: (not in 0.4.1) a checkpoint written by ``TrainingCheckpoint``, or its
        ``save_dir``: continue that run (model, optimiser, scheduler, random states, batch
        order) from the epoch after the saved one. A folder without checkpoints yet means
        "start from scratch", so a script can always pass it and be re-run after a crash.
    :param skip_unreadable: (not in 0.4.1) leave out documents whose image cannot be read
        (corrupt, truncated, missing file) instead of stopping; each one is listed in a
        warning at the end.
    :param precision: (not in 0.4.1) ``'auto'`` (default: bfloat16 autocast on GPUs that
        support it, float32 otherwise), ``'fp32'``, ``'bf16'`` (also on CPUs) or ``'fp16'``
        (GPU, with gradient scaling). Weights, optimiser state and the loss stay float32.
    :param channels_last: (not in 0.4.1) image batches and conv weights in channels-last
        layout, faster for convolutions on GPUs. ``None`` (default) = on for CUDA devices,
        off on the CPU; when on, it is switched off with a warning if the model's forward
        rejects that layout.
    :param sync_batchnorm: (not in 0.4.1) on several GPU processes, normalise batch-norm
        layers over the whole global batch (``nn.SyncBatchNorm``, SimCLR's global BN)
        instead of each process's share; the returned model has its original batch-norm
        layers again. GPU only; no effect on a single process.
    :param learning_rate: Adam's learning rate, as in Finetuner 0.4.1 (default 1e-3). When
        the call names neither ``learning_rate`` nor ``configure_optimizer`` and the data is
        self-supervised (the tutorial's first fit), the optimiser is
        :func:`~finetuner_selfsup.optim.self_supervised_default` instead: AdamW at 1e-3,
        weight decay 1e-4, warm-up then cosine decay -- measured better than constant Adam
        for SimCLR on this project's proxies. Supervised and session data keep Adam at 1e-3.
    :param epochs, batch_size, loss, ...: as in Finetuner 0.4.1. ``configure_optimizer(model)``
        may return an optimiser or ``(optimiser, scheduler)``, the scheduler being
        stepped every ``scheduler_step`` ('batch' or 'epoch').
    """
    import torch

    from .devices import resolve_device
    from . import distributed
    from .engine.tuner import Tuner, resolve_precision

    # fail before any work if e.g. CUDA is missing or the precision is unknown
    resolve_precision(precision, resolve_device(device))
    # under torchrun: join the process group; 'cuda' becomes this process's GPU
    _, rank_device = distributed.setup(resolve_device(device))
    device = str(rank_device) if rank_device.type == "cuda" else device
    generator = None
    if seed is not None:
        _seed_everything(seed)
        generator = torch.Generator().manual_seed(seed)

    if to_embedding_model:
        from .tailoring import to_embedding_model as tailor

        model = tailor(
            model,
            layer_name=layer_name,
            input_size=input_size,
            input_dtype=input_dtype,
            freeze=freeze,
            projection_head=projection_head,
            device=device,
        )
    else:
        ignored = {
            "projection_head": projection_head is not None,
            "layer_name": layer_name is not None,
            "freeze": freeze is not False,
        }
        given = [name for name, is_given in ignored.items() if is_given]
        if given:
            raise ValueError(
                f"{', '.join(given)} only take effect when the model is tailored; pass "
                f"to_embedding_model=True (and input_size=...) as well."
            )
        unused = [name for name, is_given in (("input_size", input_size is not None),
                                              ("input_dtype", input_dtype != "float32")) if is_given]
        if unused:  # harmless (upstream ignored them too), but not silently
            logger.warning(
                "%s only describe(s) the model for tailoring and is ignored without "
                "to_embedding_model=True; the model is trained as given.", " and ".join(unused),
            )

    configure_optimizer, learning_rate = _default_optimizer(
        train_data, epochs, configure_optimizer, learning_rate, scheduler_step
    )
    Tuner(
        model,
        loss=loss,
        configure_optimizer=configure_optimizer,
        learning_rate=learning_rate,
        scheduler_step=scheduler_step,
        callbacks=callbacks,
        device=device,
        generator=generator,
        precision=precision,
        channels_last=channels_last,
        sync_batchnorm=sync_batchnorm,
    ).fit(
        train_data,
        eval_data,
        preprocess_fn=preprocess_fn,
        collate_fn=collate_fn,
        epochs=epochs,
        batch_size=batch_size,
        num_items_per_class=num_items_per_class,
        num_workers=num_workers,
        resume_from=resume_from,
        skip_unreadable=skip_unreadable,
    )
    return model


def _default_optimizer(
    train_data: "DocumentArray",
    epochs: int,
    configure_optimizer: Optional[Callable[["nn.Module"], Any]],
    learning_rate: Optional[float],
    scheduler_step: str,
) -> Tuple[Optional[Callable[["nn.Module"], Any]], float]:
    """``(configure_optimizer, learning_rate)`` after the defaults: the self-supervised
    recipe when the call names no optimiser for self-supervised data (its schedule is
    stepped per batch, so only with ``scheduler_step='batch'``), else Adam at 1e-3."""
    from .optim import DEFAULT_LEARNING_RATE, self_supervised_default

    if (
        configure_optimizer is None and learning_rate is None and scheduler_step == "batch"
        and _is_self_supervised(train_data)
    ):
        logger.info(
            "self-supervised data and no optimiser named: AdamW 1e-3, weight decay 1e-4, "
            "warm-up then cosine (pass learning_rate=... for a constant Adam)"
        )
        return self_supervised_default(epochs), DEFAULT_LEARNING_RATE
    return configure_optimizer, DEFAULT_LEARNING_RATE if learning_rate is None else learning_rate


def _is_self_supervised(train_data: "DocumentArray") -> bool:
    """True for unlabelled data without matches; False also for data the engine will
    refuse (it reports that, after the other argument checks)."""
    from .engine.data_kinds import DataKind, detect_data_kind

    try:
        return detect_data_kind(train_data) is DataKind.INSTANCE
    except ValueError:
        return False


def _seed_everything(seed: int) -> None:
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
