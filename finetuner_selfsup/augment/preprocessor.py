"""``vision_preprocessor``: Finetuner 0.4's image ``preprocess_fn``, without albumentations.

Same parameter names and order as upstream ``finetuner.tuner.augmentation``; the returned
callable maps a document to a float32 torch tensor ``(3, height, width)`` (channel axis at
``target_channel_axis``) in both phases:

* ``phase='train'``: a fresh random SimCLR view per call (:class:`SimCLRAugmentation`);
* ``phase='validation'``: a deterministic resize to ``(height, width)``.

Differences from upstream, on purpose:

* ``normalize`` defaults to ``True`` and normalises the *output* with the ImageNet
  mean/std exactly as docarray's ``set_image_tensor_normalization`` does. Upstream
  defaulted to ``False`` (training saw raw images while evaluation normalised them) and
  normalised ``doc.tensor`` in place (the second view of a document failed).
* The document is never modified; uri images are decoded into a per-process cache
  instead of into ``doc.tensor`` (see :mod:`.image_loading`).
* Images much larger than needed are decoded smaller (JPEGs in the decoder, so a
  10,000 x 10,000 photo never occupies 300 MB): see :func:`decode_min_side`.
* The random resized crop covers 50-100 % of the image by default, not SimCLR's 8-100 %
  (measured better for cross-style pair retrieval; ``crop_scale=(0.08, 1.0)`` restores it).
* The callable is a :class:`VisionPreprocessor`: picklable (DataLoader workers) and with
  its settings as attributes, so a training engine can recognise it and run the same
  steps itself (e.g. augmentation on GPU batches) via :meth:`~VisionPreprocessor.load_image`,
  :meth:`~VisionPreprocessor.transform` and :meth:`~VisionPreprocessor.finish`.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple, Union

import torch
from torchvision.transforms.v2 import functional as TF

from .image_loading import (
    DEFAULT_CACHE_BYTES,
    DecodedImageCache,
    load_document_image,
    shared_image_cache,
)
from .simclr import Range, SimCLRAugmentation

#: docarray's ``set_image_tensor_normalization`` defaults (ImageNet statistics)
IMAGENET_MEAN: Tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: Tuple[float, float, float] = (0.229, 0.224, 0.225)

PHASES = ("train", "validation")

#: decode at least this many times the larger output side (on the image's short side)
DECODE_SIDE_FACTOR = 4
#: ... and at least this many pixels: images with a short side under twice this are
#: never reduced, whatever the output size
MIN_DECODE_SIDE = 1024


def decode_min_side(height: int, width: int) -> int:
    """Decode-size hint for ``(height, width)`` outputs: ``max(4 * max(h, w), 1024)``.

    An image whose short side is at least twice the hint is decoded smaller, keeping a
    short side of at least the hint (see :func:`.image_loading.decode_image`). Why 4x: a
    SimCLR crop covers down to 8 % of the area, i.e. ``sqrt(0.08) = 0.28`` of the side,
    so a short side of ``4 * max(h, w)`` still gives such crops at full output
    resolution. Why the 1024 floor: images under 2048 px on the short side -- nearly all
    datasets (e.g. TLL's 200 x 245) -- decode exactly as without the hint, even for tiny
    outputs or a ``1 x 1`` preprocessor used only to load images at their own size.
    Train and validation preprocessors of one size get the same hint, so they share
    cache entries.
    """
    return max(DECODE_SIDE_FACTOR * max(int(height), int(width)), MIN_DECODE_SIDE)


#: the random resized crop's default area range (see :func:`vision_preprocessor`)
DEFAULT_CROP_SCALE: Range = (0.5, 1.0)


class VisionPreprocessor:
    """Document -> float32 image tensor; see :func:`vision_preprocessor`.

    ``__call__(doc) = finish(transform(load_image(doc)))``.
    """

    def __init__(
        self,
        height: int = 224,
        width: int = 224,
        default_channel_axis: int = -1,
        target_channel_axis: int = 0,
        normalize: bool = True,
        phase: str = "train",
        augmentation: Optional[SimCLRAugmentation] = None,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ) -> None:
        if phase not in PHASES:
            raise ValueError(f"phase must be 'train' or 'validation', got {phase!r}")
        if height < 1 or width < 1:
            raise ValueError(f"height and width must be positive, got {height}x{width}")
        for name, axis in (
            ("default_channel_axis", default_channel_axis),
            ("target_channel_axis", target_channel_axis),
        ):
            if not -3 <= axis <= 2:
                raise ValueError(
                    f"{name} must be an axis of a 3-d image (-3..2; -1 = channels last, "
                    f"0 = channels first), got {axis}"
                )
        if cache_bytes < 0:
            raise ValueError(f"cache_bytes must be >= 0, got {cache_bytes}")
        if phase == "train":
            if augmentation is None:  # the same default as vision_preprocessor()
                augmentation = SimCLRAugmentation(height, width, crop_scale=DEFAULT_CROP_SCALE)
            elif (augmentation.height, augmentation.width) != (height, width):
                raise ValueError(
                    f"augmentation output size {augmentation.height}x{augmentation.width} "
                    f"differs from height x width = {height}x{width}"
                )
        elif augmentation is not None:
            raise ValueError("augmentation is only applied in phase='train'; pass None")

        self.height = int(height)
        self.width = int(width)
        self.default_channel_axis = int(default_channel_axis)
        self.target_channel_axis = int(target_channel_axis)
        self.normalize = bool(normalize)
        self.phase = phase
        #: the SimCLR augmentation (``phase='train'``), ``None`` in validation
        self.augmentation = augmentation
        self.cache_bytes = int(cache_bytes)
        #: decode-size hint for uri/blob images, derived from the output size
        self.decode_min_side = decode_min_side(height, width)
        self.mean = IMAGENET_MEAN
        self.std = IMAGENET_STD
        self._cache = self._make_cache()

    # -------------------------------------------------------------- steps

    def __call__(self, doc: Any) -> torch.Tensor:
        source = self.load_image(doc)
        output = self.finish(self.transform(source))
        if _shares_memory(output, source):  # e.g. float input already at the target size
            output = output.clone()
        return output

    def load_image(self, doc: Any) -> torch.Tensor:
        """The document's image, ``(3, H, W)`` RGB, uint8 or float32 in [0, 1]; read-only.

        uri/blob images much larger than the output are decoded smaller
        (:attr:`decode_min_side`); ``doc.tensor`` is used at its own size.
        """
        return load_document_image(
            doc, self.default_channel_axis, self._cache, min_side=self.decode_min_side
        )

    def transform(self, image: torch.Tensor) -> torch.Tensor:
        """Random SimCLR view (train) or resize (validation) to ``(3, height, width)``."""
        if self.augmentation is not None:
            return self.augmentation(image)
        return TF.resize(image, [self.height, self.width], antialias=True)

    def finish(self, image: torch.Tensor) -> torch.Tensor:
        """float32 (``/255`` for uint8), optionally normalised, channel axis moved.

        May return ``image`` itself (float32, no normalisation, channels first).
        """
        if image.dtype == torch.uint8:
            output = image.to(torch.float32).div_(255.0)
        else:
            output = image.to(torch.float32)
        if self.normalize:
            if output is image:
                output = output.clone()
            mean = torch.tensor(self.mean, dtype=torch.float32, device=output.device)
            std = torch.tensor(self.std, dtype=torch.float32, device=output.device)
            output.sub_(mean[:, None, None]).div_(std[:, None, None])
        if self.target_channel_axis not in (0, -3):
            output = output.movedim(0, self.target_channel_axis).contiguous()
        return output

    # -------------------------------------------------------------- plumbing

    def _make_cache(self) -> Optional[DecodedImageCache]:
        return shared_image_cache(self.cache_bytes) if self.cache_bytes > 0 else None

    def settings(self) -> Dict[str, Any]:
        """The constructor arguments (the augmentation as its own settings)."""
        return {
            "height": self.height,
            "width": self.width,
            "default_channel_axis": self.default_channel_axis,
            "target_channel_axis": self.target_channel_axis,
            "normalize": self.normalize,
            "phase": self.phase,
            "augmentation": self.augmentation.settings() if self.augmentation else None,
            "cache_bytes": self.cache_bytes,
        }

    def __eq__(self, other: object) -> bool:
        return isinstance(other, VisionPreprocessor) and self.settings() == other.settings()

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.settings().items() if k != "augmentation")
        return f"{type(self).__name__}({args}, augmentation={self.augmentation!r})"

    def __getstate__(self) -> Dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_cache", None)  # each process uses its own cache
        return state

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.__dict__.update(state)
        if "decode_min_side" not in state:  # pickled before the hint existed
            self.decode_min_side = decode_min_side(self.height, self.width)
        self._cache = self._make_cache()


def vision_preprocessor(
    height: int = 224,
    width: int = 224,
    default_channel_axis: int = -1,
    target_channel_axis: int = 0,
    normalize: bool = True,
    phase: str = "train",
    *,
    crop_scale: Range = DEFAULT_CROP_SCALE,
    crop_ratio: Range = (3 / 4, 4 / 3),
    hflip_p: float = 0.5,
    color_jitter_strength: float = 1.0,
    color_jitter_p: float = 0.8,
    grayscale_p: float = 0.2,
    blur_p: float = 0.5,
    blur_sigma: Range = (0.1, 2.0),
    blur_kernel_size: Optional[Union[int, Sequence[int]]] = None,
    cache_bytes: int = DEFAULT_CACHE_BYTES,
) -> VisionPreprocessor:
    """A ``preprocess_fn(doc) -> torch.Tensor`` for images, as in Finetuner 0.4.

    :param height: output image height.
    :param width: output image width.
    :param default_channel_axis: colour axis of ``doc.tensor``; -1 means (H, W, C), the
        layout docarray loads images in. Images decoded from ``doc.uri`` ignore it.
    :param target_channel_axis: colour axis of the output; 0 gives (C, H, W).
    :param normalize: normalise with the ImageNet mean/std as docarray's
        ``set_image_tensor_normalization`` does; ``False`` gives float32 in [0, 1].
        Pass documents *unnormalised* (uint8, or float in [0, 1]) either way.
    :param phase: ``'train'`` (a random SimCLR view per call) or ``'validation'``
        (deterministic resize).
    :param crop_scale: random resized crop: range of the cropped share of the area.
        Default ``(0.5, 1.0)``: on this project's cross-style pair proxies the
        self-supervised backbone got better with every step from SimCLR's ``(0.08, 1.0)``
        over ``(0.25, 1.0)`` to ``(0.5, 1.0)`` (docs page "Label efficiency"; small crops
        often share nothing with the other view). Pass ``(0.08, 1.0)`` for SimCLR's, e.g.
        for classification-style pre-training on natural images.
    :param crop_ratio: random resized crop: range of the aspect ratio.
    :param hflip_p: probability of a horizontal flip.
    :param color_jitter_strength: SimCLR colour strength ``s`` (brightness, contrast,
        saturation ``0.8 s``, hue ``0.2 s``); 0.5 is SimCLR's choice for 32 px images.
    :param color_jitter_p: probability of applying the colour jitter.
    :param grayscale_p: probability of converting to grayscale.
    :param blur_p: probability of a Gaussian blur (SimCLR uses 0 for 32 px images).
    :param blur_sigma: range of the blur's sigma.
    :param blur_kernel_size: odd kernel size (or (h, w)); default about 10 % of the side.
    :param cache_bytes: byte budget of the per-process cache of images decoded from
        ``doc.uri`` (0 disables it).
    :return: a picklable :class:`VisionPreprocessor`.
    """
    augmentation = None
    if phase == "train":
        augmentation = SimCLRAugmentation(
            height,
            width,
            crop_scale=crop_scale,
            crop_ratio=crop_ratio,
            hflip_p=hflip_p,
            color_jitter_strength=color_jitter_strength,
            color_jitter_p=color_jitter_p,
            grayscale_p=grayscale_p,
            blur_p=blur_p,
            blur_sigma=blur_sigma,
            blur_kernel_size=blur_kernel_size,
        )
    return VisionPreprocessor(
        height=height,
        width=width,
        default_channel_axis=default_channel_axis,
        target_channel_axis=target_channel_axis,
        normalize=normalize,
        phase=phase,
        augmentation=augmentation,
        cache_bytes=cache_bytes,
    )


def _shares_memory(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()
