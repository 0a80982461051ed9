"""A document's image as a ``(3, H, W)`` RGB torch tensor, without modifying the document.

Two sources, in this order:

* ``doc.tensor`` -- uint8 (or any integer type holding 0-255) or float in ``[0, 1]``;
  channel axis at ``default_channel_axis``; grayscale ``(H, W)``, 1-, 3- or 4-channel.
  It is wrapped without copying where possible and never written to.
* ``doc.uri`` (or ``doc.blob`` bytes) -- decoded with PIL (EXIF orientation applied,
  converted to RGB). Decoded uri images are kept in a per-process LRU cache with a byte
  budget, so the second SimCLR view and later epochs do not decode the JPEG again.
  ``doc.tensor`` is never set: the document stays exactly as the user gave it.

Upstream Finetuner 0.4.1 instead loaded the uri *into* ``doc.tensor`` and normalised it in
place, so the second view of a document saw an already-normalised image.

Decoding policy (each point is tested in ``tests/test_bad_images.py`` and listed in
``RELIABILITY.md``):

* every failure is a :class:`DocumentImageError` naming the document and what to do;
  truncated files are errors (``PIL.ImageFile.LOAD_TRUNCATED_IMAGES`` is left as the user
  set it -- ``False`` by default -- and the image is decoded inside the error handling);
* alpha is dropped, not composited (as PIL's ``convert('RGB')`` and the ``doc.tensor``
  path do); 16-bit greyscale is scaled ``0..65535 -> 0..255``, not clipped;
* a *decode-size hint* ``min_side`` (given by :class:`~.preprocessor.VisionPreprocessor`)
  lets a much larger image be decoded smaller: with ``min_side`` set, an image whose
  short side is at least ``2 * min_side`` is reduced by an integer factor whose result
  keeps a short side of at least ``min_side`` -- JPEGs in the decoder (PIL draft mode,
  1/2 to 1/8 scale, so the full-size image is never in memory), other formats after
  decoding. Smaller images are decoded exactly as without the hint;
* images whose decoded size exceeds :func:`max_decoded_pixels` (PIL's decompression-bomb
  limit, ``2 * PIL.Image.MAX_IMAGE_PIXELS``, about 179 Mpx by default) are refused before
  decoding; a JPEG counts at its draft-reduced size, so large JPEGs pass.
"""
from __future__ import annotations

import io
import os
import threading
import urllib.parse
import urllib.request
import warnings
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Dict, Hashable, Iterable, Optional, Tuple

import numpy as np
import torch

from ..documents import describe_document

if TYPE_CHECKING:  # PIL is imported on first decode, keeping this module light
    from PIL.Image import Image as PILImage

#: default byte budget of the decoded-image cache (per process)
DEFAULT_CACHE_BYTES = 2 * 1024**3


class DocumentImageError(ValueError):
    """A document's image cannot be used (missing, unreadable, or of an unsupported form)."""


# --------------------------------------------------------------------------- decoding


def read_uri_bytes(uri: str) -> bytes:
    """The raw bytes behind ``uri``: a local path, ``file://``, ``data:`` or ``http(s)://``."""
    scheme = urllib.parse.urlparse(uri).scheme
    if scheme in {"http", "https", "data"}:
        request = urllib.request.Request(uri, headers={"User-Agent": "Mozilla/5.0"})
        with urllib.request.urlopen(request) as response:
            return response.read()
    if scheme == "file":
        uri = urllib.request.url2pathname(urllib.parse.urlparse(uri).path)
    with open(os.path.expanduser(uri), "rb") as fp:
        return fp.read()


#: the first bytes of every JPEG (SOI marker and the next marker's 0xFF)
_JPEG_MAGIC = b"\xff\xd8\xff"
#: greyscale modes holding 16-bit values: PNG/TIFF ``I;16*``, and ``I`` (PIL's 32-bit
#: integer mode, which 16-bit PNGs may also open as); ``I`` is read as 16-bit too
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
#: unsigned integer dtypes wider than a byte, for which torch lacks min/max
_WIDE_UNSIGNED = frozenset({torch.uint16, torch.uint32, torch.uint64})
#: EXIF tag of the orientation (1 = stored upright)
_EXIF_ORIENTATION = 0x0112


class ImageTooLargeError(ValueError):
    """The image would decode to more than :func:`max_decoded_pixels` pixels."""


def max_decoded_pixels() -> Optional[int]:
    """The most pixels an image may decode to: ``2 * PIL.Image.MAX_IMAGE_PIXELS``.

    That is PIL's own ``DecompressionBombError`` threshold (about 179 Mpx by default), so
    one setting governs both; ``PIL.Image.MAX_IMAGE_PIXELS = None`` removes the bound.
    Read at every decode, so changing PIL's setting takes effect at once.
    """
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS
    return None if limit is None else 2 * int(limit)


def open_image(data: bytes) -> "PILImage":
    """Open encoded bytes lazily (header only) under this module's size policy.

    PIL's ``DecompressionBombWarning`` is silenced (:func:`max_decoded_pixels` is enforced
    on the size actually decoded instead) and its ``DecompressionBombError`` becomes
    :class:`ImageTooLargeError` -- except for JPEGs, which are opened past PIL's check
    because :func:`decode_image` can decode them at 1/2 to 1/8 scale.

    :raises ValueError: for empty data; PIL's errors for data it cannot identify.
    """
    from PIL import Image

    if not data:
        raise ValueError("the file is empty (0 bytes)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            return Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as exc:
            if not data.startswith(_JPEG_MAGIC):
                raise ImageTooLargeError(str(exc)) from exc
    from PIL.JpegImagePlugin import JpegImageFile

    return JpegImageFile(io.BytesIO(data))


def decode_image(data: bytes, min_side: Optional[int] = None) -> torch.Tensor:
    """Decode encoded image bytes to a uint8 ``(3, H, W)`` RGB tensor.

    EXIF orientation is applied (phone photos are stored rotated) and every mode is
    converted to RGB (:func:`to_rgb`). With ``min_side``, an image whose short side is at
    least ``2 * min_side`` is decoded smaller, keeping a short side of at least
    ``min_side`` (JPEGs in the decoder, see the module docstring). The tensor is a
    channel-first *view* of an ``(H, W, 3)`` buffer: torchvision's uint8 resize is
    fastest on that layout.

    :raises ImageTooLargeError: above :func:`max_decoded_pixels`.
    :raises OSError: for truncated or corrupt data (raised here, at decode time, because
        the image is loaded explicitly).
    """
    from PIL import ImageOps

    with open_image(data) as image:
        if min_side:
            _draft(image, min_side)
        _check_pixel_bound(image.size)
        image.load()
        if image.getexif().get(_EXIF_ORIENTATION, 1) != 1:
            image = ImageOps.exif_transpose(image)
        image = to_rgb(image)
        if min_side:
            image = _reduce(image, min_side)
        array = np.array(image, dtype=np.uint8)  # one writable copy, owned by the tensor
    return torch.from_numpy(array).permute(2, 0, 1)



def _draft(image: "PILImage", min_side: int) -> None:
    """Let a JPEG decode at 1/2, 1/4 or 1/8 scale, keeping the short side >= ``min_side``.

    PIL picks the largest such scale; ``draft`` is a no-op for other formats. Mode
    ``'RGB'`` asks for no colour change (only L/YCbCr requests change a JPEG's mode).
    """
    if min(image.size) >= 2 * min_side:
        image.draft("RGB", (min_side, min_side))


def _reduce(image: "PILImage", min_side: int) -> "PILImage":
    """Box-reduce by the integer factor ``short side // min_side`` if that is >= 2.

    Non-JPEG formats are reduced only here; JPEGs only when they exceed 8x ``min_side``
    (beyond what draft mode can do). Keeps cached images and per-view resizes small.
    """
    factor = min(image.size) // min_side
    return image.reduce(factor) if factor >= 2 else image


def _check_pixel_bound(size: Tuple[int, int]) -> None:
    """Refuse, before decoding, an image of more than :func:`max_decoded_pixels` pixels."""
    bound = max_decoded_pixels()
    pixels = size[0] * size[1]
    if bound is not None and pixels > bound:
        raise ImageTooLargeError(f"it would decode to {size[0]} x {size[1]} = {pixels:,} pixels")


def to_rgb(image: "PILImage") -> "PILImage":
    """``image`` as mode RGB: alpha dropped (not composited), 16-bit greyscale rescaled,
    float greyscale in ``[0, 1]`` scaled (0-255 kept, other float ranges refused).

    Palette images with transparency go through RGBA (the same colours, without PIL's
    warning about converting them to RGB directly); every other mode (L, LA, 1, CMYK,
    YCbCr, ...) uses PIL's ``convert('RGB')``.
    """
    if image.mode == "RGB":
        return image
    if image.mode in _SIXTEEN_BIT_MODES:
        return _sixteen_bit_to_rgb(image)
    if image.mode == "F":
        return _float_to_rgb(image)
    if image.mode in {"P", "PA"} and ("transparency" in image.info or image.mode == "PA"):
        image = image.convert("RGBA")
    return image.convert("RGB")


def _float_to_rgb(image: "PILImage") -> "PILImage":
    """A float (mode ``F``, e.g. a float TIFF) greyscale image as RGB.

    Values within ``[0, 1]`` are taken as that range and scaled to ``0..255`` (PIL's
    ``convert`` would truncate them to 0 and 1: a black image, without a word). Values
    within ``[0, 255]`` with some above 1 are taken as 8-bit levels and converted by PIL,
    as before. Anything outside ``[0, 255]``, or NaN, is refused rather than clipped.
    """
    from PIL import Image

    values = np.asarray(image, dtype=np.float32)
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if not (0.0 <= lo and hi <= 255.0):  # also rejects NaN
        raise ValueError(
            f"it is a float (mode F) image with values in [{lo:.4g}, {hi:.4g}]; a float "
            "image must hold values in [0, 1] or 0-255. Save it as 8- or 16-bit, or scale it."
        )
    if hi > 1.0:
        return image.convert("RGB")
    grey = np.round(values * 255).astype(np.uint8)
    return Image.fromarray(grey).convert("RGB")


def _sixteen_bit_to_rgb(image: "PILImage") -> "PILImage":
    """Scale 16-bit greyscale ``0..65535`` to ``0..255`` with rounding (32768 -> 128).

    PIL's ``convert`` would clip instead, turning everything above 255 white. Values of
    mode ``I`` outside ``0..65535`` are clipped to it.
    """
    from PIL import Image

    values = np.clip(np.asarray(image), 0, 65535).astype(np.uint32)
    grey = ((values * 255 + 32767) // 65535).astype(np.uint8)
    return Image.fromarray(grey).convert("RGB")


# --------------------------------------------------------------------------- cache


class DecodedImageCache:
    """Least-recently-used map ``key -> decoded uint8 tensor`` bounded by total bytes.

    Keys are the uri, or ``(uri, min_side)`` for an image reduced under a decode-size
    hint (see :func:`load_document_image`).

    ``max_bytes=0`` disables caching; an image larger than the budget is not cached.
    Cached tensors are shared by every caller and must be treated as read-only
    (all transforms here are out of place).
    """

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        if max_bytes < 0:
            raise ValueError(f"cache_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self.nbytes = 0
        self._items: "OrderedDict[Hashable, torch.Tensor]" = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._items

    def get(self, key: Hashable) -> Optional[torch.Tensor]:
        """The cached tensor for ``key`` (marking it recently used), or ``None``."""
        with self._lock:
            tensor = self._items.get(key)
            if tensor is not None:
                self._items.move_to_end(key)
            return tensor

    def put(self, key: Hashable, tensor: torch.Tensor) -> None:
        """Cache ``tensor`` under ``key``, evicting least-recently-used entries to fit."""
        size = _tensor_nbytes(tensor)
        if size > self.max_bytes:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self.nbytes -= _tensor_nbytes(old)
            while self._items and self.nbytes + size > self.max_bytes:
                _, evicted = self._items.popitem(last=False)
                self.nbytes -= _tensor_nbytes(evicted)
            self._items[key] = tensor
            self.nbytes += size

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.nbytes = 0


def _tensor_nbytes(tensor: torch.Tensor) -> int:
    return tensor.untyped_storage().nbytes()


_SHARED_CACHES: Dict[int, DecodedImageCache] = {}
_SHARED_LOCK = threading.Lock()


def shared_image_cache(max_bytes: int = DEFAULT_CACHE_BYTES) -> DecodedImageCache:
    """The process-wide cache with budget ``max_bytes``.

    Preprocessors with the same budget (e.g. the train and the validation one) share it,
    so an image is held once per process. DataLoader workers are separate processes and
    each builds its own.
    """
    with _SHARED_LOCK:
        cache = _SHARED_CACHES.get(max_bytes)
        if cache is None:
            cache = _SHARED_CACHES[max_bytes] = DecodedImageCache(max_bytes)
        return cache


# --------------------------------------------------------------------------- documents


def load_document_image(
    doc: Any,
    default_channel_axis: int = -1,
    cache: Optional[DecodedImageCache] = None,
    min_side: Optional[int] = None,
) -> torch.Tensor:
    """The document's image as a ``(3, H, W)`` RGB tensor (uint8, or float32 in ``[0, 1]``).

    The result may share memory with ``doc.tensor`` or with the cache: callers must not
    modify it in place.

    :param min_side: decode-size hint for ``uri``/``blob`` images: one whose short side is
        at least ``2 * min_side`` may be decoded smaller, keeping a short side of at least
        ``min_side`` (see :func:`decode_image`); ``None`` decodes at full size.
        ``doc.tensor`` is never resized.
    :raises DocumentImageError: naming the document, if it has no usable image.
    """
    tensor = getattr(doc, "tensor", None)
    if tensor is not None:
        return tensor_to_chw_rgb(tensor, default_channel_axis, doc)
    uri = getattr(doc, "uri", None)
    if uri:
        return _load_uri_image(doc, uri, cache, min_side)
    blob = getattr(doc, "blob", None)
    if blob:
        return _decode_or_raise(doc, blob, "`blob` bytes", min_side)[0]
    raise DocumentImageError(
        f"{describe_document(doc)} has no image: its `tensor` is None and it has no `uri` "
        "(or `blob`) to load one from. Give it a `uri` of an image file, or set "
        "`doc.tensor` to a uint8 image (H, W, 3)."
    )


def _load_uri_image(
    doc: Any, uri: str, cache: Optional[DecodedImageCache], min_side: Optional[int]
) -> torch.Tensor:
    """Decode ``uri`` through the cache.

    An image decoded at full size is cached under ``uri`` (the same for every hint); one
    reduced under the hint under ``(uri, min_side)``, since its pixels depend on the hint.
    Lookups try ``(uri, min_side)`` first, then ``uri``: a full-size decode also serves a
    hint (the hint is a lower bound on the size, never an exact size).
    """
    reduced_key = (uri, min_side)
    if cache is not None:
        cached = _first_cached(cache, [uri] if min_side is None else [reduced_key, uri])
        if cached is not None:
            return cached
    try:
        data = read_uri_bytes(uri)
    except Exception as exc:  # noqa: BLE001 - any failure is reported with the document
        raise DocumentImageError(
            f"{describe_document(doc)}: cannot read the image at its uri "
            f"({type(exc).__name__}: {exc}). Check that the path exists and is readable "
            "(relative paths are resolved from the current working directory), or drop "
            "this document."
        ) from exc
    image, reduced = _decode_or_raise(doc, data, "file at its uri", min_side)
    if cache is not None:
        cache.put(reduced_key if reduced else uri, image)
    return image


def _first_cached(cache: DecodedImageCache, keys: Iterable[Hashable]) -> Optional[torch.Tensor]:
    """The cached tensor of the first of ``keys`` that is cached, or ``None``."""
    for key in keys:
        cached = cache.get(key)
        if cached is not None:
            return cached
    return None


def _decode_or_raise(
    doc: Any, data: bytes, source: str, min_side: Optional[int]
) -> Tuple[torch.Tensor, bool]:
    """Decode ``data``; return the image and whether the hint reduced it.

    ``decode_image`` gets the hint only when the header shows it will reduce the image,
    so every image of ordinary size takes the plain ``decode_image(data)`` path.

    :raises DocumentImageError: naming the document, for any decoding failure.
    """
    reduced = min_side is not None and _larger_than_needed(data, min_side)
    try:
        image = decode_image(data, min_side) if reduced else decode_image(data)
    except ImageTooLargeError as exc:
        raise DocumentImageError(
            f"{describe_document(doc)}: the {source} is too large to decode ({exc}). Images "
            f"above {max_decoded_pixels() or 0:,} pixels (2 x PIL.Image.MAX_IMAGE_PIXELS, "
            "PIL's decompression-bomb limit) are refused; a JPEG counts at its reduced "
            "decoding size, other formats at full size. Shrink the image or save it as JPEG, "
            "drop this document, or raise PIL.Image.MAX_IMAGE_PIXELS if you trust the file."
        ) from exc
    except Exception as exc:  # noqa: BLE001
        raise DocumentImageError(
            f"{describe_document(doc)}: the {source} is not a readable image "
            f"({type(exc).__name__}: {exc}). It may be empty, corrupt, truncated or not an "
            "image format PIL can open; replace the file or drop this document."
        ) from exc
    return image, reduced


def _larger_than_needed(data: bytes, min_side: int) -> bool:
    """Whether the image's short side (read from its header) is at least ``2 * min_side``.

    ``False`` if the header cannot be read: ``decode_image`` then reports the problem.
    """
    try:
        with open_image(data) as image:
            return min(image.size) >= 2 * min_side
    except Exception:  # noqa: BLE001
        return False


def tensor_to_chw_rgb(tensor: Any, default_channel_axis: int, doc: Any = None) -> torch.Tensor:
    """``doc.tensor`` (numpy or torch) as a ``(3, H, W)`` RGB tensor, without modifying it.

    uint8 stays uint8 (other integer types holding 0-255 are converted to it); floats must
    lie in ``[0, 1]`` and become float32. Grayscale and 1-channel images are repeated to 3
    channels; the alpha channel of 4-channel images is dropped (as PIL's RGBA -> RGB does).
    """
    where = describe_document(doc)
    image = _as_torch(tensor, where)
    shape = tuple(image.shape)

    if image.ndim == 2:
        image = image.unsqueeze(0)
    elif image.ndim == 3:
        if not -3 <= default_channel_axis <= 2:
            raise DocumentImageError(
                f"{where}: default_channel_axis={default_channel_axis} is not an axis of a "
                "3-d image tensor; use -1 for (H, W, C) or 0 for (C, H, W)."
            )
        image = image.movedim(default_channel_axis, 0)
    else:
        raise DocumentImageError(
            f"{where}: `tensor` has shape {shape}; expected an image of shape "
            "(H, W), (H, W, C) or (C, H, W)."
        )

    channels = image.shape[0]
    if channels == 1:
        image = image.repeat(3, 1, 1)
    elif channels == 4:
        image = image[:3]
    elif channels != 3:
        raise DocumentImageError(
            f"{where}: `tensor` has shape {shape}, so with "
            f"default_channel_axis={default_channel_axis} it would have {channels} colour "
            "channels (1, 3 or 4 expected). Pass default_channel_axis=-1 for (H, W, C) images "
            "or default_channel_axis=0 for (C, H, W) images."
        )

    return _checked_dtype(image, where)


def _as_torch(tensor: Any, where: str) -> torch.Tensor:
    if torch.is_tensor(tensor):
        return tensor.detach()
    if not isinstance(tensor, np.ndarray):
        try:
            tensor = np.asarray(tensor)
        except Exception as exc:  # noqa: BLE001
            raise DocumentImageError(
                f"{where}: `tensor` of type {type(tensor).__name__} is not an array."
            ) from exc
    if any(stride < 0 for stride in tensor.strides):  # torch rejects negative strides
        tensor = np.ascontiguousarray(tensor)
    if not tensor.dtype.isnative:  # e.g. '>u2' read from a big-endian file; torch refuses it
        tensor = tensor.astype(tensor.dtype.newbyteorder("="))
    try:
        with warnings.catch_warnings():
            # Read-only arrays: torch warns that writes would be undefined; we never write.
            warnings.simplefilter("ignore", UserWarning)
            return torch.from_numpy(tensor)
    except (TypeError, ValueError) as exc:  # e.g. object or string arrays
        raise DocumentImageError(
            f"{where}: `tensor` of dtype {tensor.dtype} cannot be used as an image ({exc}); "
            "pass a uint8 (0-255) or float ([0, 1]) array."
        ) from exc


def _checked_dtype(image: torch.Tensor, where: str) -> torch.Tensor:
    if image.dtype == torch.uint8:
        return image
    if image.dtype == torch.bool or image.dtype.is_complex:
        raise DocumentImageError(f"{where}: `tensor` has unsupported dtype {image.dtype}.")
    # torch has no min/max for uint16/32/64; float64 holds every value a check needs
    probe = image.to(torch.float64) if image.dtype in _WIDE_UNSIGNED else image
    lo, hi = (probe.min().item(), probe.max().item()) if image.numel() else (0, 0)
    if image.dtype in _WIDE_UNSIGNED:
        lo, hi = int(lo), int(hi)
    if image.is_floating_point():
        if not (0.0 <= lo and hi <= 1.0):  # also rejects NaN
            raise DocumentImageError(
                f"{where}: `tensor` is {image.dtype} with values in [{lo:.4g}, {hi:.4g}], but "
                "vision_preprocessor expects a uint8 image (0-255) or a float image in [0, 1]. "
                "It looks already normalised (e.g. by set_image_tensor_normalization): pass "
                "the unnormalised image (only load_uri_to_image_tensor, or just the uri) and "
                "let vision_preprocessor(normalize=True) normalise it."
            )
        return image.to(torch.float32)
    if lo < 0 or hi > 255:
        raise DocumentImageError(
            f"{where}: `tensor` is {image.dtype} with values in [{lo}, {hi}]; an integer "
            "image must hold values 0-255 (uint8). Scale 16-bit data to 0-255 first, e.g. "
            "(tensor / 257).round() as uint8."
        )
    return image.to(torch.uint8)
