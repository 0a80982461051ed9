"""Fine-tuning recipes: what the second stage does with the few labels.

The tutorial's recipe is the seed's second ``ft.fit`` call as written: the self-supervised
model goes back into ``fit`` with ``to_embedding_model=True``, which drops the projection
head, and the backbone is tuned with a triplet loss (hard negatives, margin 0.3) on the
labelled 10 %. The other recipes change that stage only (the self-supervised pre-training
and the fully supervised column stay the tutorial's), each with one idea from the
literature, so that each can be measured against the tutorial's recipe on the same
pre-trained backbone:

* ``head-layer`` -- SimCLR v2 (Chen et al. 2020, https://arxiv.org/abs/2006.10029): keep
  the first block of the projection head (Linear, BatchNorm, ReLU) on the backbone and
  fine-tune from that middle layer instead of discarding the whole head;
* ``contrastive`` -- fine-tune with NT-Xent on the labelled pairs (the two images of a pair
  are each other's positive, every other image of the batch a negative: the supervised
  contrastive loss of Khosla et al. 2020 when every class is one pair) instead of a triplet
  loss with one mined negative;
* ``frozen-stem`` -- freeze the stem and the first two stages of the ResNet while
  fine-tuning (the lowest layers are generic; few labels then only move the upper ones).
  Their weights are frozen; their BatchNorm running statistics still follow the
  fine-tuning images (the recipe was measured that way);
* ``early-stopping`` -- hold out a fifth of the labelled pairs and keep the epoch (the
  pre-trained backbone itself included, as "epoch 0") with the best pair-retrieval MRR on
  them, so fine-tuning can never end below its starting point on held-out labels;
* ``augmented`` -- fine-tune on a fresh random crop and flip of every labelled image
  each epoch (the self-supervised stage's crop range, no colour changes) instead of the
  same plain image every epoch: SimCLR v2 fine-tunes on crops and flips, and 60 pairs
  seen unchanged for ten epochs are memorised;
* ``interpolated`` -- WiSE-FT (Wortsman et al. 2022, https://arxiv.org/abs/2109.01903):
  after the fine-tune, move the weights back a quarter of the way to where the fine-tune
  started (``0.25 * start + 0.75 * fine-tuned``), keeping most of what the labels taught
  and some of what the few labels would otherwise overwrite;
* ``semi-supervised`` -- keep the contrastive loss on the unlabelled 70 % while
  fine-tuning: rounds of one self-supervised epoch (model with its head, NT-Xent) and one
  labelled epoch (the embedding model sharing that backbone), as semi-supervised
  methods train both objectives together instead of one after the other;
* ``pseudo-pairs`` -- self-training (:mod:`.pseudo_pairs`): the fine-tuned model pairs up
  unlabelled left and right images (mutual nearest neighbours, the surest by margin
  first), and the self-supervised model is fine-tuned afresh on the real and the pseudo
  pairs together;
* ``assigned-pairs`` -- ``pseudo-pairs`` with every unlabelled left image paired: the
  one-to-one pairing of left and right images with the largest total similarity (the
  linear assignment problem) instead of mutual nearest neighbours only -- about twice the
  pairs at a lower share of true ones;
* combinations of these, named by joining the names with ``+``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple


@dataclass(frozen=True)
class Recipe:
    """How the labelled fine-tuning stage runs (see the module docstring)."""

    name: str
    #: 'triplet' (the tutorial's TripletLoss with hard negatives) or 'contrastive' (NT-Xent
    #: on the labelled pairs)
    finetune_loss: str = "triplet"
    #: Linear-BatchNorm-ReLU blocks of the projection head kept on the backbone (SimCLR v2)
    head_blocks_kept: int = 0
    #: top-level modules of the backbone whose parameters are frozen while fine-tuning
    frozen_modules: Tuple[str, ...] = ()
    #: share of the labelled pairs held out to choose the best fine-tuning epoch (0: off)
    validation_share: float = 0.0
    #: keep training NT-Xent on the unlabelled images while fine-tuning (one epoch of each
    #: per round; the self-supervision column only)
    semi_supervised: bool = False
    #: fine-tune on random crops and flips of the labelled images instead of plain images
    augmented_labels: bool = False
    #: weight of the fine-tuned weights in the final model, the rest from the weights the
    #: fine-tune started from (WiSE-FT); 1.0 keeps the fine-tuned model as it is
    interpolation: float = 1.0
    #: self-training: after a first fine-tune, pair up unlabelled images (mutual nearest
    #: neighbours, at most this share of the unlabelled left images) and fine-tune afresh
    #: on real and pseudo-pairs; 0.0 is off
    pseudo_pairs: float = 0.0
    #: how pseudo-pairs are matched: 'mutual' (mutual nearest neighbours) or 'assignment'
    #: (the one-to-one pairing of largest total similarity)
    pseudo_pair_matching: str = "mutual"

    def __post_init__(self) -> None:
        if self.finetune_loss not in ("triplet", "contrastive"):
            raise ValueError(f"finetune_loss must be 'triplet' or 'contrastive', got {self.finetune_loss!r}")
        if self.head_blocks_kept < 0:
            raise ValueError(f"head_blocks_kept must be >= 0, got {self.head_blocks_kept}")
        if not 0.0 <= self.validation_share < 1.0:
            raise ValueError(f"validation_share must be in [0, 1), got {self.validation_share}")
        if not 0.0 < self.interpolation <= 1.0:
            raise ValueError(f"interpolation must be in (0, 1], got {self.interpolation}")
        if not 0.0 <= self.pseudo_pairs <= 1.0:
            raise ValueError(f"pseudo_pairs must be in [0, 1], got {self.pseudo_pairs}")
        if self.pseudo_pair_matching not in ("mutual", "assignment"):
            raise ValueError(
                f"pseudo_pair_matching must be 'mutual' or 'assignment', got {self.pseudo_pair_matching!r}"
            )


_PARTS: Dict[str, Dict[str, object]] = {
    "head-layer": {"head_blocks_kept": 1},
    "contrastive": {"finetune_loss": "contrastive"},
    "frozen-stem": {"frozen_modules": ("conv1", "bn1", "layer1", "layer2")},
    "early-stopping": {"validation_share": 0.2},
    "semi-supervised": {"semi_supervised": True},
    "augmented": {"augmented_labels": True},
    "interpolated": {"interpolation": 0.75},
    "pseudo-pairs": {"pseudo_pairs": 1.0},
    "assigned-pairs": {"pseudo_pairs": 1.0, "pseudo_pair_matching": "assignment"},
}

TUTORIAL_RECIPE = Recipe("tutorial")

#: the recipe ``--recipe best`` stands for: the best measured on this project's proxies
#: (docs page "Label efficiency"); recorded under its own name in results
BEST_RECIPE = "semi-supervised"


def recipe_names() -> Tuple[str, ...]:
    """The single recipes (combinations are written ``a+b``)."""
    return ("tutorial", *_PARTS)


def resolve_recipe_name(name: str) -> str:
    """``'best'`` -> :data:`BEST_RECIPE`; any other name unchanged."""
    return BEST_RECIPE if name == "best" else name


def checked_recipe_name(name: str) -> str:
    """The name a run records for ``name`` (``'best'`` resolved); raises ``ValueError``
    for an unknown recipe, so callers can fail before any training."""
    name = resolve_recipe_name(name)
    get_recipe(name)
    return name


def get_recipe(name: str) -> Recipe:
    """The recipe called ``name``: ``'tutorial'``, ``'best'``, one of :func:`recipe_names`
    or ``a+b+...``."""
    name = resolve_recipe_name(name)
    if name == "tutorial":
        return TUTORIAL_RECIPE
    fields: Dict[str, object] = {}
    for part in name.split("+"):
        if part not in _PARTS:
            raise ValueError(
                f"unknown recipe {part!r} in {name!r}; choose 'tutorial' or a '+'-joined "
                f"combination of: {', '.join(_PARTS)}"
            )
        fields.update(_PARTS[part])
    return Recipe(name, **fields)  # type: ignore[arg-type]
