"""The table's columns, each a chain of ``ft.fit`` calls with the tutorial's arguments.

=====================  ===========================================================
column                 what it trains (all start from the same backbone weights)
=====================  ===========================================================
``pre-trained``        nothing: the backbone cut at ``layer_name``
``fine-tuned``         full supervision: triplet loss on the first 80 % of the pairs
``self-supervision``   SimCLR on the first 70 % without labels, then the triplet
                       fine-tune on the next 10 % (the seed tutorial's two fits)
``10% labels only``    the same 10 % fine-tune, without the self-supervised stage
=====================  ===========================================================
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
from torch import nn

from ..augment.preprocessor import VisionPreprocessor, vision_preprocessor
from ..engine.callback_base import Callback
from ..engine.checkpoint import TrainingCheckpoint
from ..fit import fit
from ..heads import ProjectionHead
from ..losses import NTXentLoss, TripletLoss
from ..miners import TripletEasyHardMiner
from ..tailoring import to_embedding_model
from .backbones import build_backbone, embedding_width
from .settings import RunSettings

logger = logging.getLogger("finetuner_selfsup")

PRETRAINED = "pre-trained"
SUPERVISED = "fine-tuned"
SELF_SUPERVISED = "self-supervision"
LABELS_ONLY = "10% labels only"
COLUMNS = (PRETRAINED, SUPERVISED, SELF_SUPERVISED, LABELS_ONLY)


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

    :param checkpoint_dir: where stage checkpoints go (resume after an interruption).
    :param recorders: filled with one :class:`LossRecorder` per fit, keyed
        ``"<column>/<stage>"``, for the loss curves.
    """

    def __init__(self, settings: RunSettings, checkpoint_dir: Path) -> None:
        self.settings = settings
        self.checkpoint_dir = Path(checkpoint_dir)
        self.recorders: Dict[str, LossRecorder] = {}
        size = settings.image_size
        self.input_size = (3, size, size)
        self.plain_images = PlainImage(size if settings.eval_resize else None)

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
        tuned = self.self_supervised_pretraining(pretrain_unlabelled)
        return self._finetune(tuned, finetune_labelled, SELF_SUPERVISED)

    # -- stages ----------------------------------------------------------------------
    def self_supervised_pretraining(self, pretrain_unlabelled) -> nn.Module:
        """The seed's first fit, resumable epoch by epoch."""
        s = self.settings
        head = ProjectionHead(
            in_features=embedding_width(s.model), output_dim=s.head_output_dim,
            num_layers=s.head_layers,
        )
        model = to_embedding_model(
            self.backbone(), layer_name=s.layer_name, input_size=self.input_size,
            projection_head=head, device=s.device,
        )
        # The engine's own checkpoints: a killed run continues after its last finished
        # epoch, with the random states and batch order of an uninterrupted run.
        save_dir = str(self.checkpoint_dir / "self-supervised-pretraining")
        recorder = self.recorders.setdefault(f"{SELF_SUPERVISED}/pre-training", LossRecorder())
        fit(
            model, pretrain_unlabelled, epochs=s.ssl_epochs, batch_size=s.ssl_batch_size,
            loss=NTXentLoss(temperature=s.temperature), learning_rate=s.ssl_learning_rate,
            device=s.device, preprocess_fn=vision_preprocessor(s.image_size, s.image_size),
            num_workers=s.num_workers, callbacks=[recorder, TrainingCheckpoint(save_dir)],
            seed=s.seed, resume_from=save_dir,
        )
        return model

    def _finetune(self, model: nn.Module, finetune_labelled, column: str) -> nn.Module:
        s = self.settings
        return self._triplet_fit(
            model, finetune_labelled, f"{column}/fine-tuning", s.finetune_epochs,
            s.finetune_batch_size, s.finetune_learning_rate,
        )

    def _triplet_fit(self, model, labelled, key: str, epochs: int, batch_size: int, lr: float):
        s = self.settings
        recorder = self.recorders.setdefault(key, LossRecorder())
        return fit(
            model, labelled, epochs=epochs, batch_size=batch_size,
            loss=TripletLoss(miner=TripletEasyHardMiner(neg_strategy="hard"), margin=s.margin),
            learning_rate=lr, device=s.device, preprocess_fn=self.plain_images,
            num_items_per_class=s.num_items_per_class, num_workers=s.num_workers,
            callbacks=[recorder], to_embedding_model=True, input_size=self.input_size,
            layer_name=s.layer_name, seed=s.seed,
        )
