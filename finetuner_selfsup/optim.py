"""The large-batch recipe of SimCLR: LARS, learning rate scaled with the batch, warm-up then cosine.

Use it through ``ft.fit``'s ``configure_optimizer``::

    ft.fit(..., configure_optimizer=LargeBatchRecipe(base_lr=0.3, scaling="linear", warmup_epochs=10))

The recipe learns the batch size, the number of steps per epoch and the number of epochs
from the engine when training starts (:meth:`LargeBatchRecipe.plan`), so the same object
works for any data and any number of processes (the batch is the global one).

References: You et al. 2017 (LARS), Chen et al. 2020 (SimCLR: LARS, lr = 0.3 x B/256 or
0.075 x sqrt(B), 10 warm-up epochs, cosine decay, weight decay 1e-6; biases and batch-norm
parameters excluded from LARS adaptation and weight decay).
"""
from __future__ import annotations

import math
from typing import Any, Dict, Iterable, List, Optional, Tuple

import torch
from torch import nn

SCALINGS = ("linear", "sqrt", "none")


class LARS(torch.optim.Optimizer):
    """SGD with momentum and layer-wise adaptive rate scaling (LARS).

    For a parameter ``w`` with gradient ``g``: ``g <- g + weight_decay * w``, then the
    update is scaled by the trust ratio ``trust_coefficient * |w| / |g|`` (1 where either
    norm is 0), and momentum SGD applies it with ``lr``. Parameter groups with
    ``lars_exclude=True`` (biases and normalisation weights, see :func:`lars_param_groups`)
    get neither weight decay nor the trust ratio: plain momentum SGD.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 1e-6,
        trust_coefficient: float = 0.001,
    ) -> None:
        if lr < 0 or momentum < 0 or weight_decay < 0 or trust_coefficient <= 0:
            raise ValueError(
                f"LARS needs lr, momentum, weight_decay >= 0 and trust_coefficient > 0; got "
                f"lr={lr}, momentum={momentum}, weight_decay={weight_decay}, "
                f"trust_coefficient={trust_coefficient}."
            )
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay,
                        trust_coefficient=trust_coefficient, lars_exclude=False)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Optional[Any] = None) -> Optional[torch.Tensor]:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                update = p.grad
                if not group["lars_exclude"]:
                    if group["weight_decay"]:
                        update = update.add(p, alpha=group["weight_decay"])
                    weight_norm = torch.linalg.vector_norm(p)
                    update_norm = torch.linalg.vector_norm(update)
                    trust = torch.where(
                        (weight_norm > 0) & (update_norm > 0),
                        group["trust_coefficient"] * weight_norm / update_norm,
                        torch.ones_like(weight_norm),
                    )
                    update = update * trust
                state = self.state[p]
                if group["momentum"]:
                    buffer = state.get("momentum_buffer")
                    if buffer is None:
                        buffer = state["momentum_buffer"] = update.clone()
                    else:
                        buffer.mul_(group["momentum"]).add_(update)
                    update = buffer
                p.add_(update, alpha=-group["lr"])
        return loss


def lars_param_groups(model: nn.Module) -> List[Dict[str, Any]]:
    """Two groups: weights of linear/conv layers (adapted, decayed), and biases plus all
    normalisation-layer parameters (``lars_exclude=True``), as SimCLR does."""
    norm_types = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)
    excluded_ids = set()
    for module in model.modules():
        if isinstance(module, norm_types):
            excluded_ids.update(id(p) for p in module.parameters(recurse=False))
    adapted, excluded = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if id(p) in excluded_ids or name.endswith("bias") or p.ndim == 1:
            excluded.append(p)
        else:
            adapted.append(p)
    return [{"params": adapted}, {"params": excluded, "lars_exclude": True}]


def scaled_learning_rate(base_lr: float, images_per_batch: int, scaling: str) -> float:
    """``base_lr x B / 256`` (linear), ``base_lr x sqrt(B)`` (sqrt) or ``base_lr`` (none)."""
    if scaling not in SCALINGS:
        raise ValueError(f"scaling must be one of {', '.join(map(repr, SCALINGS))}, got {scaling!r}")
    if scaling == "linear":
        return base_lr * images_per_batch / 256
    if scaling == "sqrt":
        return base_lr * math.sqrt(images_per_batch)
    return base_lr


def warmup_cosine_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """Learning-rate multiplier: linear from ``1/warmup_steps`` to 1, then cosine to 0."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


class LargeBatchRecipe:
    """``configure_optimizer`` for ``ft.fit``: LARS (or Adam/SGD), batch-scaled learning
    rate, warm-up then cosine decay stepped every batch.

    :param base_lr: learning rate before scaling (SimCLR: 0.3 linear, 0.075 sqrt).
    :param scaling: ``'linear'`` (``base_lr x B/256``), ``'sqrt'`` (``base_lr x sqrt(B)``)
        or ``'none'``; ``B`` is the number of images per (global) batch -- for
        self-supervised data ``batch_size / 2``, as each image gives two views.
    :param warmup_epochs: epochs of linear warm-up (SimCLR: 10 of 100+; capped at the run).
    :param optimizer: ``'lars'`` (SimCLR), ``'sgd'`` (momentum SGD) or ``'adamw'``.
    :param weight_decay: SimCLR uses 1e-6 with LARS; not applied to biases and norms.
    :param momentum: for LARS and SGD.
    """

    def __init__(
        self,
        base_lr: float = 0.3,
        scaling: str = "linear",
        warmup_epochs: float = 10,
        optimizer: str = "lars",
        weight_decay: float = 1e-6,
        momentum: float = 0.9,
    ) -> None:
        if optimizer not in ("lars", "sgd", "adamw"):
            raise ValueError(f"optimizer must be 'lars', 'sgd' or 'adamw', got {optimizer!r}")
        scaled_learning_rate(base_lr, 256, scaling)  # validates scaling
        if warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be >= 0, got {warmup_epochs}")
        self.base_lr = base_lr
        self.scaling = scaling
        self.warmup_epochs = warmup_epochs
        self.optimizer_name = optimizer
        self.weight_decay = weight_decay
        self.momentum = momentum
        self.warmup_steps = 0
        self.total_steps = 1
        self.learning_rate: Optional[float] = None
        self._optimizer: Optional[torch.optim.Optimizer] = None
        self._scheduler: Optional[torch.optim.lr_scheduler.LambdaLR] = None

    def __call__(self, model: nn.Module) -> Tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
        adapted, excluded = lars_param_groups(model)
        excluded["weight_decay"] = 0.0  # biases and norms: no decay with any optimiser
        optimizer: torch.optim.Optimizer
        if self.optimizer_name == "lars":
            optimizer = LARS([adapted, excluded], lr=self.base_lr, momentum=self.momentum,
                             weight_decay=self.weight_decay)
        else:
            del excluded["lars_exclude"]  # a LARS-only key
            adapted["weight_decay"] = self.weight_decay
            if self.optimizer_name == "sgd":
                optimizer = torch.optim.SGD([adapted, excluded], lr=self.base_lr, momentum=self.momentum)
            else:
                # fused on the GPU: one kernel for all parameters, the same update (as
                # the plain Adam default); on the CPU unfused, so CPU results stay as recorded
                on_gpu = all(p.is_cuda for group in (adapted, excluded) for p in group["params"])
                fused = {"fused": True} if on_gpu and adapted["params"] else {}
                optimizer = torch.optim.AdamW([adapted, excluded], lr=self.base_lr, **fused)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: warmup_cosine_factor(step, self.warmup_steps, self.total_steps)
        )
        self._optimizer, self._scheduler = optimizer, scheduler
        return optimizer, scheduler

    def plan(self, images_per_batch: int, steps_per_epoch: int, epochs: int) -> None:
        """Called by the engine when training starts: set the learning rate for the batch
        and the schedule's length. The scheduler must be stepped every batch (``ft.fit``
        refuses ``scheduler_step='epoch'`` with an optimiser that has ``plan``)."""
        self.learning_rate = scaled_learning_rate(self.base_lr, images_per_batch, self.scaling)
        self.total_steps = max(1, steps_per_epoch * epochs)
        self.warmup_steps = min(self.total_steps, round(self.warmup_epochs * steps_per_epoch))
        if self._optimizer is not None and self._scheduler is not None:
            self._scheduler.base_lrs = [self.learning_rate] * len(self._optimizer.param_groups)
            first = self.learning_rate * warmup_cosine_factor(0, self.warmup_steps, self.total_steps)
            for group in self._optimizer.param_groups:
                group["initial_lr"] = self.learning_rate
                group["lr"] = first

    def __repr__(self) -> str:
        return (f"LargeBatchRecipe(base_lr={self.base_lr}, scaling={self.scaling!r}, "
                f"warmup_epochs={self.warmup_epochs}, optimizer={self.optimizer_name!r}, "
                f"weight_decay={self.weight_decay}, momentum={self.momentum})")


#: Adam's learning rate when ``ft.fit`` is given none (Finetuner 0.4.1's default)
DEFAULT_LEARNING_RATE = 1e-3


def self_supervised_default(epochs: int, base_lr: float = DEFAULT_LEARNING_RATE) -> LargeBatchRecipe:
    """The optimiser ``ft.fit`` uses for self-supervised data when the call names neither
    ``learning_rate`` nor ``configure_optimizer`` (as the tutorial's first fit does).

    AdamW at 1e-3 with weight decay 1e-4 (not on biases and normalisation parameters),
    linear warm-up over the first tenth of the epochs (at least one), then cosine decay to 0,
    stepped every batch. Finetuner 0.4.1 used constant Adam at 1e-3; on this project's
    proxies the schedule gave a clearly better self-supervised backbone (see the docs page
    on label efficiency). Pass ``learning_rate=1e-3`` to get Finetuner's constant Adam back.
    ``base_lr`` replaces the 1e-3 (e.g. to compare learning rates with the same schedule).
    """
    return LargeBatchRecipe(
        base_lr=base_lr, scaling="none", warmup_epochs=max(1, epochs // 10),
        optimizer="adamw", weight_decay=1e-4,
    )
