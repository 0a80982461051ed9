"""The SimCLR view augmentation (Chen et al. 2020), on ``torchvision.transforms.v2``.

One call turns a ``(3, H, W)`` image into one random view of size ``(height, width)``:

1. random resized crop, area ``crop_scale`` of the image, aspect ratio ``crop_ratio``;
2. horizontal flip with probability ``hflip_p``;
3. with probability ``color_jitter_p``: colour jitter of strength ``s``
   (brightness, contrast, saturation ``0.8 s``, hue ``0.2 s``, in random order);
4. grayscale with probability ``grayscale_p`` (3 equal channels);
5. with probability ``blur_p``: Gaussian blur, kernel about 10 % of the side (odd),
   sigma uniform in ``blur_sigma`` (a separable blur equal to ``v2.GaussianBlur`` but
   about 10x cheaper at SimCLR's 23 x 23 kernel; everything else is torchvision v2).

Defaults are the reference values of google-research/simclr (and lightly's
``SimCLRTransform``) for ImageNet-size images; for 32 px images SimCLR uses
``color_jitter_strength=0.5, blur_p=0``.

Every call draws fresh parameters from torch's global RNG (so ``torch.manual_seed`` and
DataLoader worker seeding apply). The transform is meant for ONE image per call:
torchvision v2 draws a single set of parameters for a batched ``(N, C, H, W)`` tensor,
which would give every view of a batch the same augmentation.

uint8 in -> uint8 out (the fast path), float in ``[0, 1]`` in -> float out.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple, Union

import torch
from torchvision.transforms import v2

Range = Tuple[float, float]


def simclr_blur_kernel_size(side: int) -> int:
    """Odd kernel size of about 10 % of ``side`` (SimCLR: radius ``side // 20``), at least 3."""
    return max(3, 2 * (int(side) // 20) + 1)


class SimCLRAugmentation:
    """Random SimCLR view of an image tensor ``(3, H, W)`` -> ``(3, height, width)``.

    The settings are plain attributes (read them, e.g. to re-implement the same
    distribution on GPU batches); the torchvision pipeline is built from them and rebuilt
    after unpickling.
    """

    def __init__(
        self,
        height: int = 224,
        width: int = 224,
        *,
        crop_scale: Range = (0.08, 1.0),
        crop_ratio: Range = (3 / 4, 4 / 3),
        hflip_p: float = 0.5,
        color_jitter_strength: float = 1.0,
        color_jitter_p: float = 0.8,
        grayscale_p: float = 0.2,
        blur_p: float = 0.5,
        blur_sigma: Range = (0.1, 2.0),
        blur_kernel_size: Optional[Union[int, Sequence[int]]] = None,
    ) -> None:
        if height < 1 or width < 1:
            raise ValueError(f"height and width must be positive, got {height}x{width}")
        self.height = int(height)
        self.width = int(width)
        self.crop_scale = _range("crop_scale", crop_scale, low=0.0, high=1.0)
        self.crop_ratio = _range("crop_ratio", crop_ratio, low=0.0)
        self.hflip_p = _probability("hflip_p", hflip_p)
        if not 0.0 <= color_jitter_strength <= 2.5:
            raise ValueError(
                "color_jitter_strength must be in [0, 2.5] (hue = 0.2 * strength <= 0.5), "
                f"got {color_jitter_strength}"
            )
        self.color_jitter_strength = float(color_jitter_strength)
        self.color_jitter_p = _probability("color_jitter_p", color_jitter_p)
        self.grayscale_p = _probability("grayscale_p", grayscale_p)
        self.blur_p = _probability("blur_p", blur_p)
        self.blur_sigma = _range("blur_sigma", blur_sigma, low=0.0)
        #: (kernel height, kernel width), both odd
        self.blur_kernel_size = _kernel_size(blur_kernel_size, self.height, self.width)
        self._pipeline = self._build_pipeline()

    # -------------------------------------------------------------- settings

    @property
    def color_jitter(self) -> Dict[str, float]:
        """ColorJitter magnitudes for strength ``s``: 0.8 s for b/c/s, 0.2 s for hue."""
        s = self.color_jitter_strength
        return {"brightness": 0.8 * s, "contrast": 0.8 * s, "saturation": 0.8 * s, "hue": 0.2 * s}

    def settings(self) -> Dict[str, Any]:
        """All settings, as keyword arguments that rebuild an equal augmentation."""
        return {
            "height": self.height,
            "width": self.width,
            "crop_scale": self.crop_scale,
            "crop_ratio": self.crop_ratio,
            "hflip_p": self.hflip_p,
            "color_jitter_strength": self.color_jitter_strength,
            "color_jitter_p": self.color_jitter_p,
            "grayscale_p": self.grayscale_p,
            "blur_p": self.blur_p,
            "blur_sigma": self.blur_sigma,
            "blur_kernel_size": self.blur_kernel_size,
        }

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SimCLRAugmentation) and self.settings() == other.settings()

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.settings().items())
        return f"{type(self).__name__}({args})"

    # -------------------------------------------------------------- transform

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        """One random view of ``image`` (``(3, H, W)``, uint8 or float in [0, 1]).

        Out of place: ``image`` (possibly a cached or user-owned tensor) is never modified.
        """
        if image.ndim != 3:
            raise ValueError(
                f"SimCLRAugmentation takes one (C, H, W) image per call, got shape "
                f"{tuple(image.shape)} (a batch would share one random draw)"
            )
        return self._pipeline(image)

    def _build_pipeline(self) -> v2.Compose:
        steps = [
            v2.RandomResizedCrop(
                (self.height, self.width),
                scale=self.crop_scale,
                ratio=self.crop_ratio,
                antialias=True,
            )
        ]
        if self.hflip_p > 0:
            steps.append(v2.RandomHorizontalFlip(p=self.hflip_p))
        if self.color_jitter_p > 0 and self.color_jitter_strength > 0:
            steps.append(v2.RandomApply([v2.ColorJitter(**self.color_jitter)], p=self.color_jitter_p))
        if self.grayscale_p > 0:
            steps.append(v2.RandomGrayscale(p=self.grayscale_p))
        if self.blur_p > 0:
            blur = RandomSigmaGaussianBlur(self.blur_kernel_size, self.blur_sigma)
            steps.append(v2.RandomApply([blur], p=self.blur_p))
        return v2.Compose(steps)

    # -------------------------------------------------------------- pickling

    def __getstate__(self) -> Dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_pipeline", None)  # rebuilt from the settings: small, version-proof pickles
        return state

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._pipeline = self._build_pipeline()


class RandomSigmaGaussianBlur:
    """Gaussian blur with sigma drawn uniformly from ``sigma_range`` per call; separable.

    Same result as ``v2.GaussianBlur`` (same kernel, reflect padding; uint8 rounded back)
    up to rounding, but as a row pass and a column pass: ``2k`` instead of ``k * k``
    multiply-adds per pixel -- with SimCLR's 23 x 23 kernel at 224 px about 10x faster.
    """

    def __init__(self, kernel_size: Tuple[int, int], sigma_range: Range) -> None:
        self.kernel_size = kernel_size  # (height, width)
        self.sigma_range = sigma_range

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        sigma = torch.empty(1).uniform_(*self.sigma_range).item()
        return gaussian_blur_separable(image, self.kernel_size, sigma)


def gaussian_blur_separable(
    image: torch.Tensor, kernel_size: Tuple[int, int], sigma: float
) -> torch.Tensor:
    """Blur a ``(C, H, W)`` image with an isotropic Gaussian, kernel ``(kh, kw)``, out of place."""
    channels = image.shape[0]
    dtype = image.dtype if image.is_floating_point() else torch.float32
    x = image.to(dtype).unsqueeze(0)
    # Reflect padding needs pad < side: on images smaller than the kernel, shrink the kernel
    # (on a 1-pixel side it becomes 1, i.e. no blur along that axis).
    kernel_h = min(kernel_size[0], 2 * image.shape[-2] - 1)
    kernel_w = min(kernel_size[1], 2 * image.shape[-1] - 1)
    k_w = _gaussian_kernel1d(kernel_w, sigma, dtype).expand(channels, 1, 1, kernel_w)
    x = torch.nn.functional.pad(x, (kernel_w // 2, kernel_w // 2, 0, 0), mode="reflect")
    x = torch.nn.functional.conv2d(x, k_w, groups=channels)
    k_h = _gaussian_kernel1d(kernel_h, sigma, dtype)[:, None].expand(channels, 1, kernel_h, 1)
    x = torch.nn.functional.pad(x, (0, 0, kernel_h // 2, kernel_h // 2), mode="reflect")
    x = torch.nn.functional.conv2d(x, k_h, groups=channels).squeeze(0)
    if not image.is_floating_point():
        x = x.round_().clamp_(0, 255).to(image.dtype)
    return x


def _gaussian_kernel1d(size: int, sigma: float, dtype: torch.dtype) -> torch.Tensor:
    offsets = torch.arange(size, dtype=dtype) - (size - 1) / 2
    weights = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return weights / weights.sum()


def _probability(name: str, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value}")
    return float(value)


def _range(name: str, value: Sequence[float], low: float, high: Optional[float] = None) -> Range:
    try:
        a, b = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a (min, max) pair, got {value!r}") from None
    if not (low < a <= b and (high is None or b <= high)):
        bound = f"{low} < min <= max" + (f" <= {high}" if high is not None else "")
        raise ValueError(f"{name} must satisfy {bound}, got {value!r}")
    return (a, b)


def _kernel_size(
    value: Optional[Union[int, Sequence[int]]], height: int, width: int
) -> Tuple[int, int]:
    if value is None:
        return (simclr_blur_kernel_size(height), simclr_blur_kernel_size(width))
    sizes = (value, value) if isinstance(value, int) else tuple(value)
    if len(sizes) != 2 or any(int(k) != k or k < 1 or k % 2 == 0 for k in sizes):
        raise ValueError(f"blur_kernel_size must be an odd positive int or (h, w) pair, got {value!r}")
    return (int(sizes[0]), int(sizes[1]))
