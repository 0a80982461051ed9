"""SimCLR views of a whole batch at once, with an independent random draw per view.

:class:`~.simclr.SimCLRAugmentation` transforms one image per call (torchvision v2 draws
ONE set of parameters for a batched tensor, which would give every view of a batch the
same augmentation). This module draws the parameters of every view as tensors and
applies them with batched tensor operations, so the same distribution costs a handful of
kernel calls per batch -- on the CPU or on the training device (GPU), where the images
then travel as compact uint8 and the augmentation never waits on Python.

The distribution is the one of :class:`SimCLRAugmentation` with the same settings, step
by step (tested statistically in ``tests/test_batched_augmentation.py``):

* crop: torchvision's ``RandomResizedCrop.get_params`` (10 tries of a random area and
  log-uniform aspect ratio, else a centre crop of clamped ratio), vectorised; resized with
  antialiased bilinear interpolation, the kernel torchvision uses;
* horizontal flip per view with probability ``hflip_p``;
* colour jitter with probability ``color_jitter_p``: brightness, contrast, saturation and
  hue factors drawn as ``ColorJitter`` does, applied in a random order per view (as
  ``ColorJitter`` permutes them per call), with torchvision's formulas;
* grayscale with probability ``grayscale_p``;
* Gaussian blur with probability ``blur_p``, sigma uniform per view, separable.

One documented difference: torchvision on uint8 images rounds back to uint8 after each
colour operation; here the colour steps run in float32, so values differ by at most a
few 1/255 steps -- far below the spread of the augmentation itself.
"""
from __future__ import annotations

import functools
import math
from typing import Callable, List, NamedTuple, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from .compiled import CompiledKernel
from .simclr import SimCLRAugmentation

#: ITU-R 601-2 luma weights, as torchvision's ``rgb_to_grayscale``
_LUMA = (0.2989, 0.587, 0.114)
#: a colour operation's strength: one number, or one per view as an ``(n, 1, 1, 1)`` tensor
Factor = Union[float, torch.Tensor]
#: how many random (area, ratio) draws torchvision tries before its centre-crop fallback
_CROP_TRIES = 10


class SourceBatch(NamedTuple):
    """Images of different sizes in one tensor: ``pixels[i, :, :heights[i], :widths[i]]``
    is image ``i`` (``(3, H, W)`` uint8 or float in [0, 1]); the rest is padding."""

    pixels: torch.Tensor
    heights: torch.Tensor
    widths: torch.Tensor

    @classmethod
    def from_images(cls, images: Sequence[torch.Tensor]) -> "SourceBatch":
        """Pad ``(3, H, W)`` images into one batch (no copy of the pixels beyond one stack)."""
        if not images:
            raise ValueError("SourceBatch.from_images needs at least one image")
        height = max(int(image.shape[-2]) for image in images)
        width = max(int(image.shape[-1]) for image in images)
        dtype = images[0].dtype
        if any(image.dtype != dtype for image in images):
            raise ValueError("all images of a batch must have one dtype (uint8 or float)")
        same_size = all(tuple(image.shape[-2:]) == (height, width) for image in images)
        if same_size:
            pixels = torch.stack(list(images))
        else:
            pixels = torch.zeros((len(images), 3, height, width), dtype=dtype)
            for index, image in enumerate(images):
                pixels[index, :, : image.shape[-2], : image.shape[-1]] = image
        heights = torch.tensor([int(image.shape[-2]) for image in images], dtype=torch.long)
        widths = torch.tensor([int(image.shape[-1]) for image in images], dtype=torch.long)
        return cls(pixels, heights, widths)

    def pin_memory(self) -> "SourceBatch":
        return SourceBatch(self.pixels.pin_memory(), self.heights, self.widths)

    def to(self, device: torch.device, non_blocking: bool = False) -> "SourceBatch":
        return SourceBatch(self.pixels.to(device, non_blocking=non_blocking), self.heights, self.widths)

    def __len__(self) -> int:
        return int(self.pixels.shape[0])


class ViewParameters(NamedTuple):
    """Every random choice of a batch of views, one row per view (CPU tensors)."""

    crop_top: torch.Tensor
    crop_left: torch.Tensor
    crop_height: torch.Tensor
    crop_width: torch.Tensor
    flip: torch.Tensor  # bool
    jitter: torch.Tensor  # bool: colour jitter applied
    jitter_factors: torch.Tensor  # (n, 4): brightness, contrast, saturation, hue
    jitter_order: torch.Tensor  # (n, 4): permutation of 0..3 (the order above)
    grayscale: torch.Tensor  # bool
    blur: torch.Tensor  # bool
    blur_sigma: torch.Tensor


class BatchedSimCLRAugmentation:
    """The random view of :class:`SimCLRAugmentation`, for a batch, one draw per view.

    ``augment(sources, views_per_image=2)`` returns ``(views_per_image * N, 3, h, w)``
    float32 in [0, 1]: first view of every image, then the second view of every image
    (the layout of self-supervised batches). Random numbers come from ``generator`` (a CPU
    ``torch.Generator``) or torch's global RNG, so runs are repeatable under a seed
    whatever the device.
    """

    def __init__(self, augmentation: SimCLRAugmentation) -> None:
        self.augmentation = augmentation

    # ------------------------------------------------------------------ parameters

    def sample(
        self, heights: torch.Tensor, widths: torch.Tensor, generator: Optional[torch.Generator] = None
    ) -> ViewParameters:
        """Draw the parameters of one view for each (height, width) source."""
        aug = self.augmentation
        n = int(heights.shape[0])

        def uniform(*shape: int) -> torch.Tensor:
            return torch.rand(shape, generator=generator, dtype=torch.float64)

        top, left, crop_h, crop_w = _crop_boxes(heights, widths, aug.crop_scale, aug.crop_ratio, uniform)
        strength = aug.color_jitter
        factors = torch.stack(
            [
                _jitter_factor(uniform(n), strength["brightness"], center=1.0),
                _jitter_factor(uniform(n), strength["contrast"], center=1.0),
                _jitter_factor(uniform(n), strength["saturation"], center=1.0),
                _jitter_factor(uniform(n), strength["hue"], center=0.0),
            ],
            dim=1,
        ).to(torch.float32)
        order = torch.argsort(uniform(n, 4), dim=1)
        low, high = aug.blur_sigma
        sigma = (low + (high - low) * uniform(n)).to(torch.float32)
        jitter_on = aug.color_jitter_p > 0 and aug.color_jitter_strength > 0
        return ViewParameters(
            crop_top=top,
            crop_left=left,
            crop_height=crop_h,
            crop_width=crop_w,
            flip=uniform(n) < aug.hflip_p,
            jitter=(uniform(n) < aug.color_jitter_p) & jitter_on,
            jitter_factors=factors,
            jitter_order=order,
            grayscale=uniform(n) < aug.grayscale_p,
            blur=uniform(n) < aug.blur_p,
            blur_sigma=sigma,
        )

    # ------------------------------------------------------------------ applying

    def __call__(
        self,
        sources: SourceBatch,
        views_per_image: int = 2,
        generator: Optional[torch.Generator] = None,
        normalize: Optional[Tuple[Sequence[float], Sequence[float]]] = None,
    ) -> torch.Tensor:
        """``views_per_image`` random views of every source: all first views, then all second ones.

        :param normalize: ``(mean, std)`` per channel, applied to the [0, 1] views.
        """
        heights = sources.heights.repeat(views_per_image)
        widths = sources.widths.repeat(views_per_image)
        params = self.sample(heights, widths, generator)
        source_index = torch.arange(len(sources)).repeat(views_per_image)
        return self.apply(sources.pixels, source_index, params, normalize)

    def apply(
        self,
        pixels: torch.Tensor,
        source_index: torch.Tensor,
        params: ViewParameters,
        normalize: Optional[Tuple[Sequence[float], Sequence[float]]] = None,
    ) -> torch.Tensor:
        """Views ``(n, 3, h, w)`` float32; view ``k`` is cut from ``pixels[source_index[k]]``.

        On the CPU the views are made a few at a time (:func:`cpu_chunk_size`), so the
        intermediate images stay in cache and small allocations are reused; on a GPU the
        whole batch is one chunk.
        """
        aug = self.augmentation
        n = int(source_index.shape[0])
        out = torch.empty((n, 3, aug.height, aug.width), dtype=torch.float32, device=pixels.device)
        chunk = cpu_chunk_size(aug.height, aug.width) if pixels.device.type == "cpu" else max(n, 1)
        if pixels.dtype == torch.uint8 and pixels.device.type == "cpu":
            pixels = pixels.contiguous(memory_format=torch.channels_last)
        store = _view_storer(normalize, pixels.device)
        for start in range(0, n, chunk):
            rows = slice(start, min(start + chunk, n))
            views = resized_crops(
                pixels, source_index[rows], params.crop_top[rows], params.crop_left[rows],
                params.crop_height[rows], params.crop_width[rows], (aug.height, aug.width),
                flip=params.flip[rows],
            )
            views = self._recolour(views, _slice_params(params, rows))
            store(out[rows], views)  # normalised as it is stored
        self._blur(out, params)
        return out

    def _recolour(self, views: torch.Tensor, params: ViewParameters) -> torch.Tensor:
        device = views.device
        if bool(params.jitter.any()):
            views = _color_jitter(views, params.jitter, params.jitter_factors, params.jitter_order)
        if bool(params.grayscale.any()):
            if device.type == "cpu":
                for k in params.grayscale.nonzero().squeeze(1).tolist():
                    _gray_in_place(views[k])
            else:
                chosen = params.grayscale.nonzero().squeeze(1).to(device)
                views[chosen] = _gray(views[chosen]).expand(-1, 3, -1, -1)
        return views

    def _blur(self, views: torch.Tensor, params: ViewParameters) -> None:
        """Blur the chosen views in place, :data:`CPU_BLUR_GROUP` at a time on the CPU (all at
        once elsewhere, where kernel launches are the cost). The views may already be
        normalised: a blur whose weights sum to one commutes with the per-channel
        ``(x - mean) / std``, so blurring last is the same image, and it lets the CPU blur
        larger groups than a chunk holds. The views are grouped in order of the taps their
        sigma needs, and each group convolves with the shortest kernel that gives the same
        image (:func:`effective_blur_radius`)."""
        if not bool(params.blur.any()):
            return
        chosen = params.blur.nonzero().squeeze(1)
        sigma = params.blur_sigma[chosen]
        kernel_h, kernel_w = self.augmentation.blur_kernel_size
        radius = effective_blur_radius(sigma)
        group = CPU_BLUR_GROUP if views.device.type == "cpu" else len(chosen)
        for part in torch.argsort(radius, stable=True).split(group):
            reach = int(radius[part].max())
            size = (min(kernel_h, 2 * reach + 1), min(kernel_w, 2 * reach + 1))
            index = chosen[part].to(views.device)
            views[index] = gaussian_blur_per_view(views[index], size, sigma[part])


def _view_storer(
    normalize: Optional[Tuple[Sequence[float], Sequence[float]]], device: torch.device
) -> Callable[[torch.Tensor, torch.Tensor], None]:
    """``store(out, views)``: writes ``views`` into ``out``, normalised per channel as
    ``(x - mean) / std = x * scale + shift`` when ``normalize`` is given.

    On a GPU one broadcast ``addcmul``. On the CPU the same fused multiply-add per channel
    plane, with a 0-dim ``shift`` and a scalar ``alpha`` (:func:`_normalise_into`): the same
    bits, in one pass at 3x the speed of the broadcast, which takes torch's slow path there.
    """
    if normalize is None:
        return lambda out, views: out.copy_(views)
    mean, std = (torch.tensor(v, dtype=torch.float32, device=device) for v in normalize)
    scale = (1.0 / std).view(1, 3, 1, 1)
    shift = (-mean / std).view(1, 3, 1, 1)
    if device.type == "cpu":
        return functools.partial(
            _normalise_into, scale=scale.flatten().tolist(), shift=list(shift.flatten().unbind())
        )
    return lambda out, views: torch.addcmul(shift, views, scale, out=out)


def _normalise_into(
    out: torch.Tensor, views: torch.Tensor, scale: List[float], shift: List[torch.Tensor]
) -> None:
    """``out = views * scale + shift`` per channel plane (see :func:`_view_storer`)."""
    for channel in range(3):
        torch.add(shift[channel], views[:, channel], alpha=scale[channel], out=out[:, channel])


def effective_blur_radius(sigma: torch.Tensor) -> torch.Tensor:
    """Taps each side beyond which a Gaussian of ``sigma`` has weights below 1e-8 of its
    centre (``exp(-r^2 / 2 sigma^2) < 1e-8`` at ``r > 6.07 sigma``): dropping them changes
    the normalised kernel, and so the blurred image, by less than float32 resolution."""
    return torch.ceil(6.07 * sigma.to(torch.float64)).to(torch.long).clamp(min=1)


#: bytes of float32 views made at a time on the CPU: about a core's L2 cache
CPU_CHUNK_BYTES = 2_500_000
#: views blurred by one grouped convolution on the CPU
CPU_BLUR_GROUP = 16


def cpu_chunk_size(height: int, width: int) -> int:
    """Views made at a time on the CPU: 4 at 224 px, more for small images (where the
    cost per call, not memory, dominates), at most 64."""
    return max(1, min(64, CPU_CHUNK_BYTES // (3 * 4 * height * width)))


def _slice_params(params: ViewParameters, rows: slice) -> ViewParameters:
    return ViewParameters(*(field[rows] for field in params))


# ---------------------------------------------------------------------- crops


def _crop_boxes(heights, widths, scale, ratio, uniform):
    """torchvision ``RandomResizedCrop.get_params``, for every source at once."""
    n = int(heights.shape[0])
    h = heights.to(torch.float64)
    w = widths.to(torch.float64)
    area = h * w
    log_low, log_high = math.log(ratio[0]), math.log(ratio[1])
    target_area = area[:, None] * (scale[0] + (scale[1] - scale[0]) * uniform(n, _CROP_TRIES))
    aspect = torch.exp(log_low + (log_high - log_low) * uniform(n, _CROP_TRIES))
    crop_w = torch.round(torch.sqrt(target_area * aspect))
    crop_h = torch.round(torch.sqrt(target_area / aspect))
    fits = (crop_w > 0) & (crop_h > 0) & (crop_w <= w[:, None]) & (crop_h <= h[:, None])
    first = torch.where(fits.any(1), fits.to(torch.int8).argmax(1), torch.full((n,), -1))
    found = first >= 0
    pick = first.clamp(min=0)[:, None]
    crop_w = crop_w.gather(1, pick).squeeze(1)
    crop_h = crop_h.gather(1, pick).squeeze(1)
    # torchvision's fallback: the whole image, its aspect ratio clamped to the range
    in_ratio = w / h
    fallback_w = torch.where(in_ratio > ratio[1], torch.round(h * ratio[1]), w)
    fallback_h = torch.where(in_ratio < ratio[0], torch.round(w / ratio[0]), h)
    crop_w = torch.where(found, crop_w, fallback_w)
    crop_h = torch.where(found, crop_h, fallback_h)
    # random offset for a found box (randint(0, H - h + 1)), centred for the fallback
    top = torch.where(
        found, torch.floor(uniform(n) * (h - crop_h + 1)), torch.floor((h - crop_h) / 2)
    )
    left = torch.where(
        found, torch.floor(uniform(n) * (w - crop_w + 1)), torch.floor((w - crop_w) / 2)
    )
    return top.long(), left.long(), crop_h.long(), crop_w.long()


def resized_crops(
    pixels: torch.Tensor,
    source_index: torch.Tensor,
    top: torch.Tensor,
    left: torch.Tensor,
    height: torch.Tensor,
    width: torch.Tensor,
    size: Tuple[int, int],
    flip: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Crop box ``k`` of ``pixels[source_index[k]]`` resized to ``size``: float32 in [0, 1],
    mirrored left-right where ``flip[k]``.

    Each crop goes through ``F.interpolate(bilinear, antialias=True)`` -- torchvision's
    own resize kernel, so the result equals ``v2.functional.resized_crop`` (uint8 input is
    resized in uint8 as torchvision does, on its fast path, then scaled to [0, 1]). On
    that path the small uint8 crop is mirrored before the resize, which gives the same
    bytes as mirroring the float view after it (the kernel is symmetric) for a fraction
    of the memory traffic.
    """
    out = torch.empty((len(source_index), 3, *size), dtype=torch.float32, device=pixels.device)
    if pixels.dtype == torch.uint8 and pixels.device.type == "cpu":
        # torch's uint8 antialiased kernel works on channels-last data: convert once here
        # (a no-op for a batch already converted) rather than once per crop
        pixels = pixels.contiguous(memory_format=torch.channels_last)
    mirrored = flip.tolist() if flip is not None else [False] * len(source_index)
    rows = zip(source_index.tolist(), top.tolist(), left.tolist(), height.tolist(), width.tolist(), mirrored)
    is_uint8 = pixels.dtype == torch.uint8
    for k, (s, t, l, h, w, mirror) in enumerate(rows):
        crop = pixels[s : s + 1, :, t : t + h, l : l + w]
        if is_uint8 and pixels.device.type == "cpu":
            if mirror:
                crop = crop.flip(-1).contiguous(memory_format=torch.channels_last)
            resized = F.interpolate(crop, size=size, mode="bilinear", antialias=True, align_corners=False)
            # widen first (a layout-changing copy), then divide in place on planar floats:
            # the same numbers as ``torch.div(resized[0], 255.0, out=out[k])``, which divides
            # while it gathers the channels-last bytes and costs twice as much
            view = out[k]
            view.copy_(resized[0])
            view.div_(255.0)
        else:
            crop = crop.to(torch.float32)
            resized = F.interpolate(crop, size=size, mode="bilinear", antialias=True, align_corners=False)
            if is_uint8:
                resized = resized.round_().clamp_(0, 255).div_(255.0)
            out[k] = resized[0].flip(-1) if mirror else resized[0]
    return out


# ---------------------------------------------------------------------- colour


def _jitter_factor(u: torch.Tensor, magnitude: float, center: float) -> torch.Tensor:
    """``ColorJitter``'s factor: uniform in ``[max(0, c - m), c + m]`` (hue: ``[-m, m]``)."""
    low = max(0.0, center - magnitude) if center == 1.0 else -magnitude
    high = center + magnitude
    if magnitude == 0:
        return torch.full_like(u, center)
    return low + (high - low) * u


def _gray(views: torch.Tensor) -> torch.Tensor:
    r, g, b = views.unbind(1)
    return (_LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b).unsqueeze(1)


def _gray_in_place(view: torch.Tensor) -> None:
    """One ``(3, h, w)`` view made grayscale in place (all three channels the luma):
    :func:`_gray` without gathering and scattering the view."""
    view.copy_(_gray(view.unsqueeze(0))[0].expand_as(view))


# The colour operations take an optional ``out``: the view-by-view CPU path passes the view
# itself (``out=view``), so each step works in place, with no new image per step and no copy
# back at the end; the grouped path gets new images. The same arithmetic either way.


def _blend(a: torch.Tensor, b: torch.Tensor, factor: Factor, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """torchvision's ``_blend``: ``factor * a + (1 - factor) * b``, clamped to [0, 1]
    (as one ``lerp``: the same value to float32 rounding, one pass instead of three)."""
    if not isinstance(factor, torch.Tensor):
        factor = float(factor)
    return torch.lerp(b.expand_as(a), a, factor, out=out).clamp_(0.0, 1.0)


def _brightness(views: torch.Tensor, factor: Factor, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    return torch.mul(views, factor, out=out).clamp_(0.0, 1.0)


def _contrast(views: torch.Tensor, factor: Factor, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    # the mean of the grayscale image, from the channel means (the same number, one pass)
    channel_means = views.mean(dim=(-2, -1))
    mean = (channel_means * channel_means.new_tensor(_LUMA)).sum(dim=1).view(-1, 1, 1, 1)
    return _blend(views, mean, factor, out=out)


def _saturation(views: torch.Tensor, factor: Factor, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    return _blend(views, _gray(views), factor, out=out)


#: per output channel (R, G, B): the fully saturated colour of hue ``h6`` (in sixths of a
#: turn) is ``clamp(sign * |h6 - centre| + offset, 0, 1)`` -- torchvision's sector table of
#: ``_hsv_to_rgb`` written as three tent functions
_HUE_CENTRE = (3.0, 2.0, 4.0)
_HUE_SIGN = (1.0, -1.0, -1.0)
_HUE_OFFSET = (-1.0, 2.0, 2.0)


@functools.lru_cache(maxsize=None)
def _hue_tents(device: torch.device, dtype: torch.dtype) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(centre, sign, offset)`` as ``(1, 3, 1, 1)`` tensors, made once per device and dtype
    (the hue runs once per view on the CPU)."""
    return tuple(  # type: ignore[return-value]
        torch.tensor(values, dtype=dtype, device=device).view(1, 3, 1, 1)
        for values in (_HUE_CENTRE, _HUE_SIGN, _HUE_OFFSET)
    )


def _hue(views: torch.Tensor, factor: Factor, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """torchvision's ``adjust_hue``: to HSV, shift the hue by ``factor`` turns, back to RGB.

    The same numbers as torchvision's ``_rgb_to_hsv`` -> shift -> ``_hsv_to_rgb`` (to
    float32 rounding), in fewer passes over the image: value and saturation are kept, so
    channel ``c`` of the result is ``min + (max - min) * tent_c(h6)`` with the shifted hue
    ``h6`` in sixths of a turn; no HSV image is built, and the wrap-around is a ``floor``
    (``torch.remainder`` and the saturation's division cost several times more per pixel
    on the CPU).
    """
    shifted = _shift_hue(views, factor, *_hue_tents(views.device, views.dtype))
    return shifted if out is None else out.copy_(shifted)


def _shift_hue(
    views: torch.Tensor, factor: torch.Tensor, centre: torch.Tensor, sign: torch.Tensor, offset: torch.Tensor
) -> torch.Tensor:
    """:func:`_hue`'s arithmetic, the tent tables passed in (so that ``torch.compile`` sees
    a pure function of tensors)."""
    r, g, b = views[:, 0:1], views[:, 1:2], views[:, 2:3]
    maxc = torch.maximum(torch.maximum(r, g), b)
    minc = torch.minimum(torch.minimum(r, g), b)
    spread = maxc - minc
    inverse = 1.0 / spread.clamp(min=1e-30)  # grey pixels: spread 0, the hue is irrelevant
    # torchvision's sector choice: red if it is the maximum, else green, else blue
    hue6 = torch.where(
        maxc == r, (g - b) * inverse,
        torch.where(maxc == g, (b - r) * inverse + 2.0, (r - g) * inverse + 4.0),
    )
    shift = factor.view(-1, 1, 1, 1) if isinstance(factor, torch.Tensor) else factor
    hue6 = hue6.add_(6.0 * shift)
    hue6 = hue6.sub_(torch.floor(hue6 * (1.0 / 6.0)).mul_(6.0))  # into [0, 6)
    saturated = torch.addcmul(offset, (hue6 - centre).abs_(), sign).clamp_(0.0, 1.0)
    return torch.addcmul(minc, spread, saturated)


_JITTER_OPS = (_brightness, _contrast, _saturation, _hue)
_HUE_OP = 3

#: the hue shift fused into one pass for single CPU views (:mod:`.compiled`): the most
#: expensive step of the CPU pipeline in eager mode
_compiled_hue = CompiledKernel(_shift_hue, "hue")
#: views of at least this many pixels use :data:`_compiled_hue` (about 160 px square and up,
#: e.g. the tutorial's 224 px): there the hue costs hundreds of microseconds a view in
#: eager mode; smaller views are cheap, and a short run at a small size would spend more
#: on the first compilation than it saves
COMPILED_HUE_MIN_PIXELS = 160 * 160


def _color_jitter(
    views: torch.Tensor, apply: torch.Tensor, factors: torch.Tensor, order: torch.Tensor
) -> torch.Tensor:
    """Apply the four jitter operations to the chosen views, each view in its own order."""
    if views.device.type == "cpu" and views.shape[0] <= 8:
        return _color_jitter_view_by_view(views, apply, factors, order)
    return _color_jitter_grouped(views, apply, factors, order)


def _color_jitter_view_by_view(views, apply, factors, order):
    """CPU, large views: one view at a time -- slicing a view is free, gathering a group is a copy,
    and one 224 px view stays in cache through its four operations. On views of at least
    :data:`COMPILED_HUE_MIN_PIXELS` the hue runs compiled (:data:`_compiled_hue`; its
    factor passed as a tensor, so one compilation serves every value)."""
    factor_rows = factors.tolist()
    order_rows = order.tolist()
    compiled_hue = views.shape[-2] * views.shape[-1] >= COMPILED_HUE_MIN_PIXELS
    for k in apply.nonzero().squeeze(1).tolist():
        view = views[k : k + 1]
        for op_index in order_rows[k]:
            if op_index == _HUE_OP and compiled_hue:
                tents = _hue_tents(view.device, view.dtype)
                view.copy_(_compiled_hue(view, factors[k, _HUE_OP].clone(), *tents))
            else:
                _JITTER_OPS[op_index](view, factor_rows[k][op_index], out=view)
    return views


def _color_jitter_grouped(views, apply, factors, order):
    """GPU, or many small views: step ``k`` applies every view's ``order[:, k]``-th operation, the views grouped
    by operation -- 16 batched calls instead of four per view (kernel launches are the cost)."""
    device = views.device
    for step in range(4):
        for op_index, op in enumerate(_JITTER_OPS):
            chosen = (apply & (order[:, step] == op_index)).nonzero().squeeze(1)
            if chosen.numel() == 0:
                continue
            factor = factors[chosen, op_index].to(device).view(-1, 1, 1, 1)
            index = chosen.to(device)
            views[index] = op(views[index], factor)
    return views


# ---------------------------------------------------------------------- blur


def gaussian_blur_per_view(
    views: torch.Tensor, kernel_size: Tuple[int, int], sigma: torch.Tensor
) -> torch.Tensor:
    """Blur view ``k`` with an isotropic Gaussian of ``sigma[k]``; separable, reflect padding.

    One grouped convolution per axis for the whole batch (a kernel per view and channel).
    """
    n, channels, height, width = views.shape
    kernel_h = min(kernel_size[0], 2 * height - 1)
    kernel_w = min(kernel_size[1], 2 * width - 1)
    sigma = sigma.to(device=views.device, dtype=views.dtype)

    def kernels(size: int) -> torch.Tensor:
        offsets = torch.arange(size, dtype=views.dtype, device=views.device) - (size - 1) / 2
        weights = torch.exp(-0.5 * (offsets[None, :] / sigma[:, None]) ** 2)
        weights = weights / weights.sum(dim=1, keepdim=True)
        return weights.repeat_interleave(channels, dim=0)  # (n * channels, size)

    x = views.reshape(1, n * channels, height, width)
    x = F.pad(x, (kernel_w // 2, kernel_w // 2, 0, 0), mode="reflect")
    x = F.conv2d(x, kernels(kernel_w)[:, None, None, :], groups=n * channels)
    x = F.pad(x, (0, 0, kernel_h // 2, kernel_h // 2), mode="reflect")
    x = F.conv2d(x, kernels(kernel_h)[:, None, :, None], groups=n * channels)
    return x.reshape(n, channels, height, width)
