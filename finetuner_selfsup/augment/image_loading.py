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
"""
from __future__ import annotations

import io
import os
import threading
import urllib.parse
import urllib.request
import warnings
from collections import OrderedDict
from typing import Any, Dict, Optional

import numpy as np
import torch

from ..documents import describe_document

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


def decode_image(data: bytes) -> torch.Tensor:
    """Decode encoded image bytes to a uint8 ``(3, H, W)`` RGB tensor.

    EXIF orientation is applied (phone photos are stored rotated) and every mode
    (L, P, RGBA, CMYK, ...) is converted to RGB. The tensor is a channel-first *view* of
    an ``(H, W, 3)`` buffer: torchvision's uint8 resize is fastest on that layout.
    """
    from PIL import Image, ImageOps

    with Image.open(io.BytesIO(data)) as img:
        img = ImageOps.exif_transpose(img)
        if img.mode != "RGB":
            img = img.convert("RGB")
        array = np.array(img, dtype=np.uint8)  # one writable copy, owned by the tensor
    return torch.from_numpy(array).permute(2, 0, 1)


# --------------------------------------------------------------------------- cache


class DecodedImageCache:
    """Least-recently-used map ``uri -> decoded uint8 tensor`` bounded by total bytes.

    ``max_bytes=0`` disables caching; an image larger than the budget is not cached.
    Cached tensors are shared by every caller and must be treated as read-only
    (all transforms here are out of place).
    """

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        if max_bytes < 0:
            raise ValueError(f"cache_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self.nbytes = 0
        self._items: "OrderedDict[str, torch.Tensor]" = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: str) -> bool:
        return key in self._items

    def get(self, key: str) -> Optional[torch.Tensor]:
        """The cached tensor for ``key`` (marking it recently used), or ``None``."""
        with self._lock:
            tensor = self._items.get(key)
            if tensor is not None:
                self._items.move_to_end(key)
            return tensor

    def put(self, key: str, tensor: torch.Tensor) -> None:
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
) -> torch.Tensor:
    """The document's image as a ``(3, H, W)`` RGB tensor (uint8, or float32 in ``[0, 1]``).

    The result may share memory with ``doc.tensor`` or with the cache: callers must not
    modify it in place.

    :raises DocumentImageError: naming the document, if it has no usable image.
    """
    tensor = getattr(doc, "tensor", None)
    if tensor is not None:
        return tensor_to_chw_rgb(tensor, default_channel_axis, doc)
    uri = getattr(doc, "uri", None)
    if uri:
        return _load_uri_image(doc, uri, cache)
    blob = getattr(doc, "blob", None)
    if blob:
        return _decode_or_raise(doc, blob, source="`blob` bytes")
    raise DocumentImageError(
        f"{describe_document(doc)} has no image: its `tensor` is None and it has no `uri` "
        "(or `blob`) to load one from. Give it a `uri` of an image file, or set "
        "`doc.tensor` to a uint8 image (H, W, 3)."
    )


def _load_uri_image(doc: Any, uri: str, cache: Optional[DecodedImageCache]) -> torch.Tensor:
    if cache is not None:
        cached = cache.get(uri)
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
    image = _decode_or_raise(doc, data, source="file at its uri")
    if cache is not None:
        cache.put(uri, image)
    return image


def _decode_or_raise(doc: Any, data: bytes, source: str) -> torch.Tensor:
    try:
        return decode_image(data)
    except Exception as exc:  # noqa: BLE001
        raise DocumentImageError(
            f"{describe_document(doc)}: the {source} is not a readable image "
            f"({type(exc).__name__}: {exc}). It may be corrupt, truncated or not an image "
            "format PIL can open; replace the file or drop this document."
        ) from exc


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
    with warnings.catch_warnings():
        # Read-only arrays: torch warns that writes would be undefined; we never write.
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(tensor)


def _checked_dtype(image: torch.Tensor, where: str) -> torch.Tensor:
    if image.dtype == torch.uint8:
        return image
    if image.dtype == torch.bool or image.dtype.is_complex:
        raise DocumentImageError(f"{where}: `tensor` has unsupported dtype {image.dtype}.")
    lo, hi = (image.min().item(), image.max().item()) if image.numel() else (0, 0)
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
            "image must hold values 0-255 (uint8)."
        )
    return image.to(torch.uint8)
