"""Settings of a reproduction run, and the presets the commands start from.

The tutorial preset is the seed tutorial's values (and, for the fully supervised column,
the recipe that produced its published numbers, see FACTS.md); the demo preset scales the
same pipeline down to a small CPU run on the built-in pair set.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple


#: the settings that do not change results, so not in the fingerprint (a resumed run may
#: change them; results.json records each run's under "invocations")
NOT_FINGERPRINTED = ("device", "num_workers", "eval_batch_size")
#: the values of ``RunSettings.label_selection``
LABEL_SELECTIONS = ("first", "typical")
#: the values of ``RunSettings.weights``
WEIGHTS = ("imagenet", "none")
#: the values of ``RunSettings.ssl_optimizer``
SSL_OPTIMIZERS = ("default", "adam", "adamw-cosine", "lars")
#: the self-supervised optimisers that train at ``RunSettings.ssl_learning_rate``; the
#: others set their own rate (what each does is under ``ssl_optimizer``)
SSL_OPTIMIZERS_WITH_LEARNING_RATE = ("adam", "adamw-cosine")


@dataclass
class RunSettings:
    """Everything that decides a run's numbers (the results file records all of it)."""

    #: torchvision architecture of the backbone
    model: str = "resnet50"
    #: 'imagenet' (torchvision's IMAGENET1K_V1, needs a download once) or 'none' (random init)
    weights: str = "imagenet"
    #: the tailor's cut: the backbone's embedding layer
    layer_name: str = "adaptiveavgpool2d_173"
    #: side of the square training crops (and the tailor's input_size)
    image_size: int = 224
    #: resize evaluation images to image_size (False = the tutorial's protocol: no resize)
    eval_resize: bool = False

    # self-supervised pre-training (the seed's first fit)
    ssl_epochs: int = 50
    ssl_batch_size: int = 512
    #: the learning rate of ssl_optimizer 'adam' and 'adamw-cosine'; 'default' and 'lars'
    #: have their own, so another value with them is refused rather than silently ignored
    ssl_learning_rate: float = 1e-3
    #: the self-supervised fit's optimiser: 'default' (what ``ft.fit`` does when the call
    #: names none, as in the tutorial: AdamW at 1e-3, weight decay 1e-4, warm-up then
    #: cosine), 'adam' (constant Adam at ssl_learning_rate, Finetuner 0.4.1's default),
    #: 'adamw-cosine' (the default's recipe at ssl_learning_rate) or 'lars' (SimCLR's LARS,
    #: 0.3 x images/256, warm-up then cosine); the warm-up is a tenth of the epochs
    ssl_optimizer: str = "default"
    #: the self-supervised views: 'default' (``vision_preprocessor(size, size)`` as the
    #: tutorial calls it: crops of 50-100 % of the image), 'simclr-crop' (SimCLR's crops
    #: of 8-100 %) or 'crop-<share>' (crops of share-100 %, e.g. 'crop-0.25')
    ssl_augmentation: str = "default"
    temperature: float = 0.1
    head_output_dim: int = 1024
    head_layers: int = 2

    # fine-tuning on the labelled 10 % (the seed's second fit)
    finetune_epochs: int = 10
    finetune_batch_size: int = 128
    finetune_learning_rate: float = 1e-5
    margin: float = 0.3
    num_items_per_class: int = 2

    #: how the fine-tune on the labelled 10 % runs (finetuner_selfsup.experiments.reproduce.recipes):
    #: 'tutorial' (the seed's call as written), another recipe, or recipes joined by '+'
    recipe: str = "tutorial"

    # full supervision on 80 % (the recipe behind the published 'fine-tuned' column)
    supervised_epochs: int = 6
    supervised_batch_size: int = 128
    supervised_learning_rate: float = 1e-5

    # splits (fractions of the pairs, in sorted order)
    pretrain_ratio: float = 0.7
    finetune_ratio: float = 0.1
    supervised_ratio: float = 0.8
    #: which pairs are the labelled ones: 'first' (the tutorial's cut: the pairs after the
    #: first pretrain_ratio) or 'typical' (of the first pretrain_ratio + finetune_ratio of
    #: the pairs, those whose left images are the most typical of the self-supervised
    #: model's clusters, :mod:`finetuner_selfsup.experiments.label_selection`; the rest of those pairs
    #: are the unlabelled part the fine-tune recipes use, while the self-supervised stage
    #: still trains on the tutorial's pre-training part)
    label_selection: str = "first"

    ks: Tuple[int, ...] = (1, 5, 10)
    device: str = "cpu"
    num_workers: int = 0
    eval_batch_size: int = 64
    seed: Optional[int] = 0
    #: seed of the labelled fits (fine-tune and full supervision) when it should differ
    #: from ``seed`` (which also draws the initial weights and the self-supervised stage):
    #: repeats of the cheap labelled stage on one self-supervised model measure its spread
    finetune_seed: Optional[int] = None

    @property
    def ssl_crop_scale(self) -> Tuple[float, float]:
        """The area range of the self-supervised crops that ``ssl_augmentation`` names."""
        name = self.ssl_augmentation
        if name == "default":
            from ...augment.preprocessor import DEFAULT_CROP_SCALE

            return tuple(DEFAULT_CROP_SCALE)  # type: ignore[return-value]
        if name == "simclr-crop":
            return (0.08, 1.0)
        if name.startswith("crop-"):
            try:
                low = float(name[len("crop-"):])
            except ValueError:
                low = -1.0
            if 0.0 < low <= 1.0:
                return (low, 1.0)
        raise ValueError(
            f"ssl_augmentation must be 'default', 'simclr-crop' or 'crop-<smallest share>' "
            f"(e.g. 'crop-0.25': crops of 25-100 % of the image), got {name!r}"
        )

    @property
    def chooses_labels(self) -> bool:
        """Whether ``label_selection`` chooses the labelled pairs (``'typical'``) rather
        than taking the tutorial's cut (``'first'``)."""
        if self.label_selection not in LABEL_SELECTIONS:
            raise ValueError(
                f"label_selection must be one of {', '.join(map(repr, LABEL_SELECTIONS))}, "
                f"got {self.label_selection!r}"
            )
        return self.label_selection == "typical"

    @property
    def labelled_seed(self) -> Optional[int]:
        """The seed of the labelled fits."""
        return self.seed if self.finetune_seed is None else self.finetune_seed

    def validate(self) -> "RunSettings":
        """Check every setting before any work, and return ``self``.

        A bad value used to pass until the stage that reads it -- often after hours of
        training (an unknown ``ssl_optimizer`` after the supervised column, ``ks=0`` or no
        evaluation pairs after every fit). :class:`~.runner.TableRun` and the command line
        call this first. Checks that need the data (enough pairs for each part of the
        split) are the runner's.

        :raises ValueError: listing every bad setting, with what it may be.
        """
        problems: List[str] = []

        def one_of(name: str, allowed: Tuple[str, ...]) -> None:
            value = getattr(self, name)
            if value not in allowed:
                problems.append(f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}")

        def integer(name: str, minimum: int, why: str = "") -> bool:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                problems.append(f"{name} must be an integer >= {minimum}{why}, got {value!r}")
                return False
            return True

        def number(name: str, *, positive: bool = True, at_most: Optional[float] = None) -> bool:
            value = getattr(self, name)
            ok = (not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
                  and (value > 0 if positive else value >= 0) and (at_most is None or value <= at_most))
            if not ok:
                kind = "a positive" if positive else "a non-negative"
                bound = f" at most {at_most}" if at_most is not None else ""
                problems.append(f"{name} must be {kind} finite number{bound}, got {value!r}")
            return ok

        from .backbones import ARCHITECTURES

        one_of("model", tuple(ARCHITECTURES))
        one_of("weights", WEIGHTS)
        if not isinstance(self.layer_name, str) or not self.layer_name:
            problems.append(f"layer_name must be a layer's name, got {self.layer_name!r}")
        integer("image_size", 1)
        if not isinstance(self.eval_resize, bool):
            problems.append(f"eval_resize must be true or false, got {self.eval_resize!r}")

        integer("ssl_epochs", 1)
        integer("ssl_batch_size", 2, " (the contrastive loss needs other images in a batch)")
        number("ssl_learning_rate")
        one_of("ssl_optimizer", SSL_OPTIMIZERS)
        own_rate = {"default": "ft.fit's own default: AdamW at 1e-3, warm-up then cosine",
                    "lars": "LARS at 0.3 x ssl_batch_size / 256, warm-up then cosine"}
        default_rate = RunSettings.ssl_learning_rate
        if self.ssl_optimizer in own_rate and self.ssl_learning_rate != default_rate:
            problems.append(
                f"ssl_learning_rate={self.ssl_learning_rate} is not used by ssl_optimizer="
                f"{self.ssl_optimizer!r} ({own_rate[self.ssl_optimizer]}); only "
                f"{' and '.join(map(repr, SSL_OPTIMIZERS_WITH_LEARNING_RATE))} train at "
                f"ssl_learning_rate ('adamw-cosine' is the default's schedule at that rate): "
                f"choose one of them, or leave ssl_learning_rate at {default_rate}"
            )
        try:
            self.ssl_crop_scale
        except ValueError as error:
            problems.append(str(error))
        number("temperature")
        integer("head_output_dim", 1)
        head_layers_ok = integer("head_layers", 1)

        integer("finetune_epochs", 1)
        number("finetune_learning_rate")
        number("margin", positive=False)
        items_ok = integer("num_items_per_class", 2, " (a batch needs both images of a pair)")
        for name in ("finetune_batch_size", "supervised_batch_size"):
            least = 2 * self.num_items_per_class if items_ok else 4
            integer(name, least, " (2 x num_items_per_class: a batch needs two classes)")
        integer("supervised_epochs", 1)
        number("supervised_learning_rate")

        from .recipes import get_recipe

        try:
            recipe = get_recipe(self.recipe)
        except (ValueError, TypeError, AttributeError) as error:
            problems.append(f"recipe: {error}")
        else:
            if head_layers_ok and recipe.head_blocks_kept > self.head_layers - 1:
                problems.append(
                    f"recipe {recipe.name!r} keeps {recipe.head_blocks_kept} block(s) of the projection "
                    f"head, which with head_layers={self.head_layers} has {self.head_layers - 1}; "
                    f"use head_layers >= {recipe.head_blocks_kept + 1}"
                )

        ratios_ok = all([number(name, at_most=1.0) for name in ("pretrain_ratio", "finetune_ratio", "supervised_ratio")])
        # where the evaluation pairs start (rounded: 0.7 + 0.1 is 0.7999999999999999)
        evaluation_start = round(self.pretrain_ratio + self.finetune_ratio, 12) if ratios_ok else None
        if ratios_ok and evaluation_start >= 1:
            problems.append(
                f"pretrain_ratio + finetune_ratio must be below 1, got {self.pretrain_ratio} + "
                f"{self.finetune_ratio}: every column is evaluated on the pairs after them"
            )
        if ratios_ok and round(self.supervised_ratio, 12) > evaluation_start:
            # the 'fine-tuned' column trains on the first supervised_ratio of the pairs and is
            # evaluated, like every column, on those after pretrain_ratio + finetune_ratio
            problems.append(
                f"supervised_ratio ({self.supervised_ratio}) must be at most pretrain_ratio + "
                f"finetune_ratio ({evaluation_start}): the "
                f"'fine-tuned' column trains on the first supervised_ratio of the pairs and every "
                f"column is evaluated on the pairs after the first pretrain_ratio + finetune_ratio, "
                f"so it would train on evaluation pairs; lower supervised_ratio"
            )
        one_of("label_selection", LABEL_SELECTIONS)

        if (not isinstance(self.ks, (tuple, list)) or not self.ks
                or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in self.ks)):
            problems.append(f"ks must be one or more integers >= 1 (the k of hit@k), got {self.ks!r}")
        try:
            from ...devices import resolve_device

            resolve_device(self.device)
        except (ValueError, RuntimeError, TypeError) as error:
            problems.append(f"device: {error}")
        integer("num_workers", 0)
        integer("eval_batch_size", 1)
        for name in ("seed", "finetune_seed"):  # any integer: seeding takes it modulo 2**32
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                problems.append(f"{name} must be an integer or none, got {value!r}")

        if problems:
            raise ValueError("invalid setting(s): " + "; ".join(problems))
        return self

    def to_dict(self) -> Dict[str, Any]:
        data = dataclasses.asdict(self)
        data["ks"] = list(self.ks)
        return data

    def fingerprint(self, data: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        """The settings that change results (not device, workers or batch of evaluation);
        with ``data``, under ``"data"``, the identity of the pair set they are computed on
        (:func:`~.results_file.data_identity`), so that results of other data are not mixed in."""
        fingerprint = self._settings_fingerprint()
        if data is not None:
            fingerprint["data"] = data
        return fingerprint

    def _settings_fingerprint(self) -> Dict[str, Any]:
        data = self.to_dict()
        for name in NOT_FINGERPRINTED:
            data.pop(name)
        # what 'default' stands for has changed between versions: record the crops made
        data["ssl_crop_scale"] = list(self.ssl_crop_scale)
        if data["label_selection"] == "first":
            # what runs did before the setting existed: their results files stay valid
            del data["label_selection"]
        return data

    def self_supervised_fingerprint(self, data: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        """The settings that decide the self-supervised stage's weights (so runs that differ
        only in the fine-tune or the supervised column can share its checkpoints), and with
        ``data`` the identity of the pair set, as in :meth:`fingerprint`."""
        names = ("model", "weights", "layer_name", "image_size", "ssl_epochs", "ssl_batch_size",
                 "ssl_learning_rate", "ssl_optimizer", "ssl_augmentation", "temperature", "head_output_dim", "head_layers",
                 "ssl_crop_scale", "pretrain_ratio", "seed")
        everything = self.fingerprint(data)
        return {name: everything[name] for name in names + (("data",) if data is not None else ())}

    def replace(self, **changes: Any) -> "RunSettings":
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **changes)


#: the seed tutorial's values
TUTORIAL = RunSettings()

#: the same pipeline at CPU scale: ResNet-18 from scratch on 64 px images
DEMO = RunSettings(
    model="resnet18",
    weights="none",
    layer_name="adaptiveavgpool2d_67",
    image_size=64,
    eval_resize=True,
    ssl_epochs=20,
    ssl_batch_size=128,
    head_output_dim=128,
    finetune_epochs=10,
    finetune_batch_size=32,
    finetune_learning_rate=1e-4,
    supervised_epochs=10,
    supervised_batch_size=32,
    supervised_learning_rate=1e-4,
    eval_batch_size=128,
)
