"""Early stopping for the labelled fine-tune: hold out some labelled pairs, keep the best epoch.

With few labels a fine-tune can end below where it started (measured on the proxies: the
triplet fine-tune sometimes lowered hit@5/10 below the self-supervised model alone).
Selecting the epoch on held-out labelled pairs -- the starting model counted as epoch 0 --
rules that out on those pairs, at the price of training on fewer labels.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import nn

from ..data.tll import LABEL_TAG
from ...engine.callback_base import Callback
from ...evaluation import evaluate_pairs
from .pseudo_pairs import is_pseudo_label
from .settings import RunSettings

logger = logging.getLogger("finetuner_selfsup")


def split_validation(labelled, share: float) -> Tuple[Any, Optional[Tuple[Any, Any]]]:
    """Hold out the last ``share`` of the labelled pairs (by label, in sorted order).

    Pseudo-pairs (:mod:`.pseudo_pairs`) are never held out: they are the model's guesses,
    not labels to judge it by; they all stay in ``train``, and ``share`` counts real pairs.

    :return: ``(train, (validation_left, validation_right))``, or ``(labelled, None)`` for
        ``share == 0``. The two images of a pair are the documents sharing a label, the
        first one seen being the query side.
    """
    from docarray import DocumentArray

    if share <= 0:
        return labelled, None
    labels = sorted({doc.tags[LABEL_TAG] for doc in labelled if not is_pseudo_label(doc.tags[LABEL_TAG])})
    held = max(2, round(share * len(labels)))
    if len(labels) - held < 2:
        raise ValueError(
            f"holding out {held} of {len(labels)} labelled pairs for early stopping leaves "
            f"fewer than 2 to train on; label more pairs or use a recipe without early stopping."
        )
    held_labels = set(labels[-held:])
    train = DocumentArray([doc for doc in labelled if doc.tags[LABEL_TAG] not in held_labels])
    first: Dict[Any, Any] = {}
    second: Dict[Any, Any] = {}
    for doc in labelled:
        label = doc.tags[LABEL_TAG]
        if label in held_labels:
            (second if label in first else first)[label] = doc
    incomplete = sorted(str(label) for label in held_labels if label not in second)
    if incomplete:
        raise ValueError(f"labelled pairs without a second image: {', '.join(incomplete[:10])}")
    order = sorted(held_labels)
    return train, (DocumentArray([first[l] for l in order]), DocumentArray([second[l] for l in order]))


class BestEpochKeeper(Callback):
    """Early stopping by selection: after every epoch, pair retrieval on held-out labelled
    pairs (mean reciprocal rank, both directions); the best state -- the starting model
    counts as epoch 0 -- is put back by :meth:`restore_best`."""

    def __init__(self, validation: Tuple[Any, Any], preprocess_fn, settings: RunSettings) -> None:
        self.left, self.right = validation
        self.preprocess_fn = preprocess_fn
        self.settings = settings
        self.best_score = float("-inf")
        self.best_epoch = 0
        self.best_state: Optional[Dict[str, torch.Tensor]] = None
        self.scores: List[float] = []

    def score(self, model: nn.Module) -> float:
        s = self.settings
        result = evaluate_pairs(
            model, self.left, self.right, preprocess_fn=self.preprocess_fn, ks=(1,),
            batch_size=s.eval_batch_size, device=s.device, both_directions=True, progress=False,
            num_workers=s.num_workers,
        )
        return float(result.mean_metrics["mrr"])

    def consider(self, model: nn.Module, epoch: int) -> None:
        """Score ``model`` as the state after ``epoch`` and keep it if it is the best."""
        score = self.score(model)
        self.scores.append(score)
        if score > self.best_score:
            self.best_score, self.best_epoch = score, epoch
            self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def on_fit_begin(self, tuner: Any) -> None:
        if self.best_state is None:
            self.consider(tuner.embed_model, 0)

    def on_train_epoch_end(self, tuner: Any) -> None:
        self.consider(tuner.embed_model, tuner.state.epoch + 1)

    def restore_best(self, model: nn.Module) -> int:
        """Load the best state into ``model``; returns its epoch (0: the starting model)."""
        if self.best_state is not None:
            model.load_state_dict(self.best_state)
        logger.info("early stopping: kept epoch %d (validation MRR %s)", self.best_epoch,
                    ", ".join(f"{v:.3f}" for v in self.scores))
        return self.best_epoch
