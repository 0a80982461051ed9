"""Image preprocessing for self-supervised training: SimCLR views of documents.

* :func:`vision_preprocessor` / :class:`VisionPreprocessor` -- Finetuner 0.4's
  ``preprocess_fn`` for images (document -> normalised float32 tensor);
* :class:`SimCLRAugmentation` -- the random view transform on ``torchvision.transforms.v2``;
* :mod:`.image_loading` -- a document's image as a tensor (``doc.tensor`` or decoded
  ``doc.uri``, cached per process), never modifying the document.
"""
from .image_loading import (
    DEFAULT_CACHE_BYTES,
    DecodedImageCache,
    DocumentImageError,
    load_document_image,
    shared_image_cache,
)
from .preprocessor import IMAGENET_MEAN, IMAGENET_STD, VisionPreprocessor, vision_preprocessor
from .simclr import SimCLRAugmentation, simclr_blur_kernel_size

__all__ = [
    "DEFAULT_CACHE_BYTES",
    "DecodedImageCache",
    "DocumentImageError",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SimCLRAugmentation",
    "VisionPreprocessor",
    "load_document_image",
    "shared_image_cache",
    "simclr_blur_kernel_size",
    "vision_preprocessor",
]
