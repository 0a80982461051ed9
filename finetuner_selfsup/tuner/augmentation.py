"""Mirror of ``finetuner.tuner.augmentation`` (Finetuner 0.4.1).

With the plugin active, ``from finetuner.tuner.augmentation import vision_preprocessor``
resolves here (see :mod:`finetuner_selfsup._bootstrap`), so upstream's albumentations
import never runs. The implementation is :mod:`finetuner_selfsup.augment.preprocessor`:
same parameter names and order, a SimCLR augmentation on torchvision v2, float32 torch
output, ``normalize=True`` by default, and the document is never modified.
"""
from ..augment.preprocessor import vision_preprocessor

__all__ = ["vision_preprocessor"]
