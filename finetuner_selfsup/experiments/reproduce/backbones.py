"""The embedding models the table's columns start from."""
from __future__ import annotations

from typing import Dict, Tuple

from torch import nn

#: architecture -> (torchvision builder name, weights enum name, embedding width)
ARCHITECTURES: Dict[str, Tuple[str, str, int]] = {
    "resnet18": ("resnet18", "ResNet18_Weights", 512),
    "resnet34": ("resnet34", "ResNet34_Weights", 512),
    "resnet50": ("resnet50", "ResNet50_Weights", 2048),
}


def embedding_width(model: str) -> int:
    return _architecture(model)[2]


def _architecture(model: str) -> Tuple[str, str, int]:
    if model not in ARCHITECTURES:
        raise ValueError(f"unknown model {model!r}; choose one of {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[model]


def build_backbone(model: str, weights: str) -> nn.Module:
    """A fresh torchvision classifier: ImageNet weights (``'imagenet'``) or random (``'none'``).

    ImageNet weights are downloaded by torchvision on first use (and cached in
    ``~/.cache/torch``); without internet access, use ``weights='none'``.
    """
    import torchvision.models as models

    builder_name, weights_enum, _ = _architecture(model)
    builder = getattr(models, builder_name)
    if weights == "none":
        return builder(weights=None)
    if weights == "imagenet":
        try:
            return builder(weights=getattr(models, weights_enum).IMAGENET1K_V1)
        except Exception as exc:  # download failures come in many types
            raise RuntimeError(
                f"could not load the ImageNet weights of {model} ({exc}). They are downloaded "
                f"once from download.pytorch.org; without internet access pass --weights none "
                f"(random initialisation) and say so when you report the numbers."
            ) from exc
    raise ValueError(f"weights must be 'imagenet' or 'none', got {weights!r}")
