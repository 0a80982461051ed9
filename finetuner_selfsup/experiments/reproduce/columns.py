"""The table's columns, each a chain of ``ft.fit`` calls with the tutorial's arguments.

=====================  ===========================================================
column                 what it trains (all start from the same backbone weights)
=====================  ===========================================================
``pre-trained``        nothing: the backbone cut at ``layer_name``
``fine-tuned``         full supervision: triplet loss on the first 80 % of the pairs
``self-supervision``   SimCLR on the first 70 % without labels, then the triplet
                       fine-tune on the next 10 % (the seed tutorial's two fits)
``10% labels only``    the same 10 % fine-tune, without the self-supervised stage
``self-supervised``    the self-supervised backbone alone, before the fine-tune
``only``
=====================  ===========================================================

How the fine-tune runs is a :class:`~.recipes.Recipe`; the default is the tutorial's.
"""
from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ...augment.preprocessor import VisionPreprocessor, vision_preprocessor
from ...augment.simclr import SimCLRAugmentation
from ...engine.callback_base import Callback
from ...engine.checkpoint import TrainingCheckpoint
from ...fit import fit
from ...heads import ProjectionHead, is_model_with_head
from ...losses import NTXentLoss, TripletLoss
from ...miners import TripletEasyHardMiner
from ...optim import LargeBatchRecipe, self_supervised_default
from ...tailoring import to_embedding_model
from .backbones import build_backbone, embedding_width
from .early_stopping import BestEpochKeeper, split_validation
from .pseudo_pairs import check_sides, make_pseudo_pairs
from .recipes import Recipe, get_recipe
from .settings import SSL_OPTIMIZERS, RunSettings

logger = logging.getLogger("finetuner_selfsup")

PRETRAINED = "pre-trained"
SUPERVISED = "fine-tuned"
SELF_SUPERVISED = "self-supervision"
LABELS_ONLY = "10% labels only"
SELF_SUPERVISED_ONLY = "self-supervised only"
COLUMNS = (PRETRAINED, SUPERVISED, SELF_SUPERVISED, LABELS_ONLY, SELF_SUPERVISED_ONLY)
#: the first fine-tune of a pseudo-pair recipe (the one that pairs up unlabelled images)
PSEUDO_PAIRING = f"{SELF_SUPERVISED} pairing"


class PlainImage:
    """Document -> normalised float32 CHW image without augmentation.

    What the tutorial's ``assign_label_and_preprocess`` gives its labelled documents (and
    what evaluation sees), computed per batch instead of stored on every document.
    ``size=None`` keeps the image's own size (the tutorial's protocol).
    """

    def __init__(self, size: Optional[int]) -> None:
        self.size = size
        self._pre = VisionPreprocessor(height=size or 1, width=size or 1, phase="validation")

    def __call__(self, doc: Any) -> torch.Tensor:
        if self.size is not None:
            return self._pre(doc)
        return self._pre.finish(self._pre.load_image(doc))


class LossRecorder(Callback):
    """A Finetuner callback that keeps the training losses of one fit (for the curves)."""

    def __init__(self) -> None:
        self.losses: List[float] = []
        self.epoch_ends: List[int] = []

    def on_train_batch_end(self, tuner: Any) -> None:
        self.losses.append(tuner.state.current_loss)

    def on_train_epoch_end(self, tuner: Any) -> None:
        self.epoch_ends.append(len(self.losses))


class ColumnRunner:
    """Trains the models of the columns from one :class:`RunSettings` and the data splits.

    :param checkpoint_dir: where stage checkpoints go (resume after an interruption). The
        self-supervised stage's folder is named after a digest of its settings and of
        ``data_identity``, so runs with other fine-tune settings can share it and runs on
        other data do not.
    :param data_identity: the pair set's identity (:func:`~.results_file.data_identity`); None
        names the folder after the settings alone, as earlier versions did.
    :param recorders: filled with one :class:`LossRecorder` per fit, keyed
        ``"<column>/<stage>"``, for the loss curves.
    :param chosen_epochs: with an early-stopping recipe, the fine-tuning epoch kept per
        column (0 = the starting model).
    """

    def __init__(
        self, settings: RunSettings, checkpoint_dir: Path, data_identity: Optional[Dict[str, Any]] = None
    ) -> None:
        self.settings = settings
        self.checkpoint_dir = Path(checkpoint_dir)
        self.data_identity = data_identity
        self.recipe: Recipe = get_recipe(settings.recipe)
        self.recorders: Dict[str, LossRecorder] = {}
        self.chosen_epochs: Dict[str, int] = {}
        #: with a pseudo-pair recipe, per column the pairs it made: (left uri, right uri,
        #: margin over the runners-up), surest first
        self.pseudo_pairs: Dict[str, List[Tuple[str, str, float]]] = {}
        self._self_supervised_model: Optional[nn.Module] = None
        size = settings.image_size
        self.input_size = (3, size, size)
        self.plain_images = PlainImage(size if settings.eval_resize else None)
        #: what the fine-tune's labelled fits see: plain images (the tutorial), or random
        #: crops and flips with the ``augmented`` recipe
        self.finetune_images: Any = (
            labelled_views(settings) if self.recipe.augmented_labels else self.plain_images
        )

    def backbone(self) -> nn.Module:
        """A fresh backbone. With ``weights='none'`` its random initialisation is drawn
        after seeding with ``settings.seed``, so every column starts from the same weights
        and a rerun reproduces them (torch's default seed differs in every process)."""
        if self.settings.seed is not None:
            torch.manual_seed(self.settings.seed)
        return build_backbone(self.settings.model, self.settings.weights)

    def cut(self, model: nn.Module) -> nn.Module:
        return to_embedding_model(
            model, layer_name=self.settings.layer_name, input_size=self.input_size,
            device=self.settings.device,
        )

    # -- columns ---------------------------------------------------------------------
    def pretrained(self) -> nn.Module:
        return self.cut(self.backbone())

    def supervised(self, train_labelled) -> nn.Module:
        s = self.settings
        return self._triplet_fit(
            self.backbone(), train_labelled, f"{SUPERVISED}/triplet", s.supervised_epochs,
            s.supervised_batch_size, s.supervised_learning_rate,
        )

    def labels_only(self, finetune_labelled) -> nn.Module:
        return self._finetune(self.backbone(), finetune_labelled, LABELS_ONLY)

    def self_supervised(self, pretrain_unlabelled, finetune_labelled) -> nn.Module:
        if self.recipe.pseudo_pairs:
            check_sides(pretrain_unlabelled)  # before any training, not after the first fine-tune
        tuned = copy.deepcopy(self.self_supervised_pretraining(pretrain_unlabelled))
        if self.recipe.pseudo_pairs:
            return self._pseudo_paired_finetune(tuned, pretrain_unlabelled, finetune_labelled)
        return self._self_supervised_finetune(tuned, pretrain_unlabelled, finetune_labelled, SELF_SUPERVISED)

    def self_supervised_only(self, pretrain_unlabelled) -> nn.Module:
        """The self-supervised model where the fine-tune would start: the backbone (the
        tutorial's "use ``tuned_model`` as the embedding model"), plus the head blocks the
        recipe keeps."""
        tuned = copy.deepcopy(self.self_supervised_pretraining(pretrain_unlabelled))
        return self._starting_model(tuned)

    # -- stages ----------------------------------------------------------------------
    def self_supervised_pretraining(self, pretrain_unlabelled) -> nn.Module:
        """The seed's first fit, resumable epoch by epoch; trained once per runner (the
        columns that start from it get copies)."""
        if self._self_supervised_model is None:
            self._self_supervised_model = self._pretrain(pretrain_unlabelled)
        return self._self_supervised_model

    def _with_head(self) -> nn.Module:
        """A fresh backbone cut at ``layer_name`` with a fresh projection head: the seed's
        first fit's model."""
        s = self.settings
        # The backbone first: it seeds torch, so the head's initialisation that follows is
        # the same whatever ran before in this process (column order, other runs).
        backbone = self.backbone()
        head = ProjectionHead(
            in_features=embedding_width(s.model), output_dim=s.head_output_dim,
            num_layers=s.head_layers,
        )
        return to_embedding_model(
            backbone, layer_name=s.layer_name, input_size=self.input_size,
            projection_head=head, device=s.device,
        )

    def skeleton(self, column: str) -> nn.Module:
        """An untrained model of the architecture ``column`` ends with (to load saved weights)."""
        if column in (SELF_SUPERVISED, SELF_SUPERVISED_ONLY):
            return self._starting_model(self._with_head())
        return self.cut(self.backbone())

    def self_supervised_checkpoints(self, without_data: bool = False) -> Path:
        """The self-supervised stage's checkpoint folder: named after a digest of
        :meth:`RunSettings.self_supervised_fingerprint` with the data's identity, or with
        ``without_data`` of the settings alone (the name earlier versions gave it)."""
        data = None if without_data else self.data_identity
        digest = hashlib.sha256(
            json.dumps(self.settings.self_supervised_fingerprint(data), sort_keys=True).encode()
        ).hexdigest()[:12]
        return self.checkpoint_dir / f"self-supervised-pretraining-{digest}"

    def adopt_checkpoints_without_data(self) -> bool:
        """Rename a checkpoint folder an earlier version named after the settings alone to
        the name with the data's identity, so that its finished epochs are resumed. Only for
        a caller that has checked the folder's results were made on the same data (a shared
        checkpoint folder cannot tell). Returns whether a folder was renamed."""
        if self.data_identity is None:
            return False
        old, new = self.self_supervised_checkpoints(without_data=True), self.self_supervised_checkpoints()
        if not old.is_dir() or new.exists():
            return False
        os.replace(old, new)
        logger.info("self-supervised checkpoints of an earlier version: %s renamed to %s (the data's "
                    "identity is now part of the name)", old.name, new.name)
        return True

    def _pretrain(self, pretrain_unlabelled) -> nn.Module:
        s = self.settings
        model = self._with_head()
        # The engine's own checkpoints: a killed run continues after its last finished
        # epoch, with the random states and batch order of an uninterrupted run.
        save_dir = str(self.self_supervised_checkpoints())
        recorder = self.recorders.setdefault(f"{SELF_SUPERVISED}/pre-training", LossRecorder())
        fit(
            model, pretrain_unlabelled, epochs=s.ssl_epochs, batch_size=s.ssl_batch_size,
            loss=NTXentLoss(temperature=s.temperature), **self_supervised_optimizer(s),
            device=s.device, preprocess_fn=self_supervised_views(s),
            num_workers=s.num_workers, callbacks=[recorder, TrainingCheckpoint(save_dir)],
            seed=s.seed, resume_from=save_dir,
        )
        return model

    def _starting_model(self, model: nn.Module) -> nn.Module:
        """What the fine-tune trains: the tutorial passes the self-supervised model back
        to ``fit`` (the tailor drops the head); with ``head_blocks_kept`` the backbone and
        that many Linear-BatchNorm-ReLU blocks of the head are one embedding model."""
        kept = self.recipe.head_blocks_kept
        if not is_model_with_head(model):
            return self.cut(model)
        if kept == 0:
            return model.embed_model
        head = model.projection_head
        blocks = getattr(head, "num_layers", 1) - 1
        if kept > blocks:
            raise ValueError(
                f"recipe {self.recipe.name!r} keeps {kept} head block(s), but the projection "
                f"head has {blocks} (num_layers={blocks + 1}); use head_layers >= {kept + 1}."
            )
        return nn.Sequential(model.embed_model, *list(head.head_layers)[: 3 * kept])

    def _finetune(self, model: nn.Module, finetune_labelled, column: str) -> nn.Module:
        s, recipe = self.settings, self.recipe
        key = f"{column}/fine-tuning"
        train, validation = split_validation(finetune_labelled, recipe.validation_share)
        start = self._starting_model(model) if recipe.head_blocks_kept else model
        _freeze_modules(start, recipe.frozen_modules)
        starting_weights = self._starting_weights(model)
        callbacks: List[Callback] = [self.recorders.setdefault(key, LossRecorder())]
        keeper = None
        if validation is not None:
            keeper = BestEpochKeeper(validation, self.plain_images, s)
            callbacks.append(keeper)
        # The tutorial's second call; a model we assembled (head blocks kept) is already an
        # embedding model, so it is trained as it is.
        tuned = self._labelled_fit(
            start, train, epochs=s.finetune_epochs, batch_size=s.finetune_batch_size,
            learning_rate=s.finetune_learning_rate, loss=self._finetune_loss(),
            callbacks=callbacks, tailor=recipe.head_blocks_kept == 0, seed=s.labelled_seed,
            images=self.finetune_images,
        )
        if keeper is not None:
            self.chosen_epochs[column] = keeper.restore_best(tuned)
        self._interpolate(tuned, starting_weights)
        return tuned

    def _self_supervised_finetune(self, model: nn.Module, pretrain_unlabelled, labelled, column: str) -> nn.Module:
        if self.recipe.semi_supervised:
            return self._semi_supervised_finetune(model, pretrain_unlabelled, labelled, column)
        return self._finetune(model, labelled, column)

    def _pseudo_paired_finetune(self, model: nn.Module, pretrain_unlabelled, finetune_labelled) -> nn.Module:
        """Self-training (:mod:`.pseudo_pairs`): a copy of the self-supervised model is
        fine-tuned as the rest of the recipe says; it pairs up unlabelled left and right
        images (mutual nearest neighbours, or a one-to-one assignment); the
        self-supervised model is then fine-tuned afresh, the same way, on the real and
        the pseudo-pairs together. The kept pairs are recorded in :attr:`pseudo_pairs`."""
        from docarray import DocumentArray

        s = self.settings
        pairing = self._self_supervised_finetune(
            copy.deepcopy(model), pretrain_unlabelled, finetune_labelled, PSEUDO_PAIRING
        )
        documents, matches = make_pseudo_pairs(
            pairing, pretrain_unlabelled, self.plain_images, self.recipe.pseudo_pairs,
            matching=self.recipe.pseudo_pair_matching, batch_size=s.eval_batch_size, device=s.device,
            num_workers=s.num_workers,
        )
        self.pseudo_pairs[SELF_SUPERVISED] = [(left.uri, right.uri, margin) for left, right, margin in matches]
        logger.info("pseudo-pairs: %d pairs (%s matching) made of %d unlabelled images",
                    len(matches), self.recipe.pseudo_pair_matching, len(pretrain_unlabelled))
        labelled = DocumentArray(list(finetune_labelled) + list(documents))
        return self._self_supervised_finetune(model, pretrain_unlabelled, labelled, SELF_SUPERVISED)

    def _starting_weights(self, model: nn.Module) -> Optional[Dict[str, torch.Tensor]]:
        """With an ``interpolated`` recipe, a copy of the weights the fine-tune starts from
        (those of the embedding model it will return); else None."""
        if self.recipe.interpolation == 1.0:
            return None
        start = self._starting_model(copy.deepcopy(model))
        return {key: value.detach().clone() for key, value in start.state_dict().items()}

    def _interpolate(self, tuned: nn.Module, starting_weights: Optional[Dict[str, torch.Tensor]]) -> None:
        """WiSE-FT: ``tuned``'s weights (and batch-norm statistics) become
        ``start + interpolation * (tuned - start)``, in place."""
        if starting_weights is None:
            return
        weights = tuned.state_dict()
        if set(weights) != set(starting_weights):
            raise RuntimeError(
                "cannot interpolate: the fine-tuned model's weights are not those of the model "
                f"it started from ({sorted(set(weights) ^ set(starting_weights))[:3]} ...)"
            )
        with torch.no_grad():
            for key, value in weights.items():
                if value.is_floating_point():
                    start = starting_weights[key].to(value.device)
                    value.copy_(torch.lerp(start, value, self.recipe.interpolation))

    def _finetune_loss(self) -> nn.Module:
        s = self.settings
        if self.recipe.finetune_loss == "contrastive":
            return NTXentLoss(temperature=s.temperature)
        return TripletLoss(miner=TripletEasyHardMiner(neg_strategy="hard"), margin=s.margin)

    def _semi_supervised_finetune(
        self, model: nn.Module, pretrain_unlabelled, finetune_labelled, column: str = SELF_SUPERVISED
    ) -> nn.Module:
        """Fine-tune on the labels while the contrastive loss keeps training on the
        unlabelled images: every round is one self-supervised epoch of the model with its
        head (NT-Xent, the fine-tune's learning rate) and one labelled epoch of the
        embedding model, which shares the backbone. Each round is two ``ft.fit`` calls on
        the models in place, seeded per round (an optimiser's state starts afresh each call)."""
        s, recipe = self.settings, self.recipe
        train, validation = split_validation(finetune_labelled, recipe.validation_share)
        embedding = self._starting_model(model)  # shares its modules with ``model``
        _freeze_modules(embedding, recipe.frozen_modules)
        starting_weights = self._starting_weights(model)
        keeper = BestEpochKeeper(validation, self.plain_images, s) if validation is not None else None
        if keeper is not None:
            keeper.consider(embedding, 0)
        labelled_recorder = self.recorders.setdefault(f"{column}/fine-tuning", LossRecorder())
        unlabelled_recorder = self.recorders.setdefault(f"{column}/fine-tuning-contrastive", LossRecorder())
        seed = s.labelled_seed if s.labelled_seed is not None else 0
        for round_index in range(s.finetune_epochs):
            fit(
                model, pretrain_unlabelled, epochs=1, batch_size=s.ssl_batch_size,
                loss=NTXentLoss(temperature=s.temperature), learning_rate=s.finetune_learning_rate,
                device=s.device, preprocess_fn=self_supervised_views(s), num_workers=s.num_workers,
                callbacks=[unlabelled_recorder], seed=seed + 1000 + round_index,
            )
            self._labelled_fit(
                embedding, train, epochs=1, batch_size=s.finetune_batch_size,
                learning_rate=s.finetune_learning_rate, loss=self._finetune_loss(),
                callbacks=[labelled_recorder], tailor=False, seed=seed + round_index,
                images=self.finetune_images,
            )
            if keeper is not None:
                keeper.consider(embedding, round_index + 1)
        if keeper is not None:
            self.chosen_epochs[column] = keeper.restore_best(embedding)
        self._interpolate(embedding, starting_weights)
        return embedding

    def _triplet_fit(self, model, labelled, key: str, epochs: int, batch_size: int, lr: float):
        s = self.settings
        return self._labelled_fit(
            model, labelled, epochs=epochs, batch_size=batch_size, learning_rate=lr,
            loss=TripletLoss(miner=TripletEasyHardMiner(neg_strategy="hard"), margin=s.margin),
            callbacks=[self.recorders.setdefault(key, LossRecorder())], tailor=True,
            seed=s.labelled_seed,
        )

    def _labelled_fit(
        self, model: nn.Module, labelled, *, epochs: int, batch_size: int, learning_rate: float,
        loss: nn.Module, callbacks: List[Callback], tailor: bool, seed: Optional[int],
        images: Optional[Any] = None,
    ) -> nn.Module:
        """One ``ft.fit`` on labelled pairs with the tutorial's arguments: plain images
        (or ``images``, another ``preprocess_fn``), ``num_items_per_class``, and with
        ``tailor`` the cut at ``layer_name`` (which also drops a projection head); without
        it the model is trained as it is, in place."""
        s = self.settings
        return fit(
            model, labelled, epochs=epochs, batch_size=batch_size, loss=loss,
            learning_rate=learning_rate, device=s.device,
            preprocess_fn=images if images is not None else self.plain_images,
            num_items_per_class=s.num_items_per_class, num_workers=s.num_workers,
            callbacks=callbacks, to_embedding_model=tailor,
            input_size=self.input_size if tailor else None,
            layer_name=s.layer_name if tailor else None, seed=seed,
        )


def self_supervised_optimizer(settings: RunSettings) -> Dict[str, Any]:
    """The optimiser arguments of the self-supervised fit for ``settings.ssl_optimizer``."""
    name, lr = settings.ssl_optimizer, settings.ssl_learning_rate
    if name == "default":
        return {}  # the tutorial names no optimiser: ft.fit's own default
    if name == "adam":
        return {"learning_rate": lr, "configure_optimizer": lambda model: torch.optim.Adam(model.parameters(), lr=lr)}
    if name == "adamw-cosine":
        return {"configure_optimizer": self_supervised_default(settings.ssl_epochs, base_lr=lr)}
    if name == "lars":
        warmup = max(1, settings.ssl_epochs // 10)
        return {"configure_optimizer": LargeBatchRecipe(base_lr=0.3, scaling="linear", warmup_epochs=warmup)}
    raise ValueError(f"ssl_optimizer must be one of {', '.join(map(repr, SSL_OPTIMIZERS))}, got {name!r}")


def self_supervised_views(settings: RunSettings) -> VisionPreprocessor:
    """The self-supervised fit's ``preprocess_fn`` for ``settings.ssl_augmentation``: the
    tutorial's ``vision_preprocessor(size, size)`` with the crop range the name stands for
    ('default' is the preprocessor's own default, so exactly the tutorial's call)."""
    size = settings.image_size
    return vision_preprocessor(size, size, crop_scale=settings.ssl_crop_scale)


def labelled_views(settings: RunSettings) -> VisionPreprocessor:
    """The ``augmented`` recipe's ``preprocess_fn`` for labelled images: a random resized
    crop over the self-supervised stage's crop range and a horizontal flip (p = 0.5), no
    colour jitter, grayscale or blur -- the crop-and-flip augmentation SimCLR v2 fine-tunes
    with -- normalised as the plain images are. A fresh draw every time an image is read,
    i.e. every epoch."""
    size = settings.image_size
    geometry_only = SimCLRAugmentation(
        size, size, crop_scale=settings.ssl_crop_scale, color_jitter_p=0.0,
        grayscale_p=0.0, blur_p=0.0,
    )
    return VisionPreprocessor(size, size, phase="train", augmentation=geometry_only)


def _freeze_modules(model: nn.Module, names: Sequence[str]) -> None:
    """Stop training the parameters of ``model``'s top-level modules ``names`` (searched in
    the backbone of a model we assembled, ``model[0]``)."""
    if not names:
        return
    if is_model_with_head(model):
        backbone = model.embed_model
    elif isinstance(model, nn.Sequential) and not hasattr(model, names[0]):
        backbone = model[0]  # (backbone, head blocks...) assembled by _starting_model
    else:
        backbone = model
    missing = [name for name in names if not isinstance(getattr(backbone, name, None), nn.Module)]
    if missing:
        raise ValueError(
            f"cannot freeze {', '.join(missing)}: the backbone has no such top-level module "
            f"(it has {', '.join(n for n, _ in backbone.named_children())})."
        )
    for name in names:
        for param in getattr(backbone, name).parameters():
            param.requires_grad = False
