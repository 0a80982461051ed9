"""Bad and unusual image inputs: each gets a clear, tested behaviour (see RELIABILITY.md).

Every case goes through ``vision_preprocessor(...)(doc)`` in both phases. Errors must be a
:class:`DocumentImageError` naming the document (id and uri) and saying what to do;
handled inputs must come out as the right RGB pixels. Files are written with PIL/numpy
into ``tmp_path``; the one large image (10,000 x 10,000 JPEG) is written once per module
by a separate interpreter, so this process never holds it.
"""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from docarray import Document
from PIL import Image

from finetuner_selfsup.augment import DecodedImageCache, DocumentImageError, vision_preprocessor
from finetuner_selfsup.augment.image_loading import decode_image, load_document_image
from finetuner_selfsup.augment.preprocessor import decode_min_side

REPO = Path(__file__).resolve().parents[2]
H, W = 24, 32  # non-square output, so that swapped axes are caught
PHASES = ["train", "validation"]
BIG_SIDE = 10_000
BIG_COLOUR = (200, 30, 60)


from torch_settings import seed_and_one_thread  # noqa: E402,F401  (autouse fixture)


# --------------------------------------------------------------------------- helpers


def noise(h: int, w: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    """A random uint8 ``(h, w, channels)`` image (``(h, w)`` for one channel)."""
    shape = (h, w) if channels == 1 else (h, w, channels)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def save(image: Image.Image, path: Path, **kwargs: Any) -> Document:
    """Save ``image`` at ``path`` and return a document pointing at it (id = file stem)."""
    image.save(path, **kwargs)
    return Document(id=f"doc-{path.stem}", uri=str(path))


def encoded(image: Image.Image, fmt: str, **kwargs: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def assert_document_error(doc: Document, phase: str, *fragments: str) -> str:
    """``doc`` fails with a DocumentImageError naming its id and uri plus ``fragments``."""
    pre = vision_preprocessor(H, W, phase=phase, cache_bytes=0)
    with pytest.raises(DocumentImageError) as info:
        pre(doc)
    message = str(info.value)
    for part in (doc.id, doc.uri or doc.id, *fragments):
        assert part in message, f"{part!r} not in {message!r}"
    return message


def rgb_pixels(doc: Document, phase: str) -> np.ndarray:
    """``doc`` as uint8 ``(h, w, 3)`` pixels through ``vision_preprocessor``.

    ``validation`` at the image's own size without normalisation gives the loaded pixels
    exactly (resizing to the same size is the identity), so those are returned. ``train``
    views are random: checked to be finite ``(3, H, W)`` views, at the image's own size
    when both sides are >= 2 (the SimCLR blur needs 2 px) and at ``(H, W)`` always.
    """
    h, w = load_document_image(doc).shape[1:]
    if phase == "train":
        for size in [(H, W)] + ([(h, w)] if min(h, w) >= 2 else []):
            view = vision_preprocessor(*size, phase="train", normalize=False, cache_bytes=0)(doc)
            assert view.shape == (3, *size) and torch.isfinite(view).all()
    pre = vision_preprocessor(h, w, phase="validation", normalize=False, cache_bytes=0)
    out = pre(doc)
    assert out.shape == (3, h, w) and out.dtype == torch.float32
    return (out * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("phase", PHASES)
def test_zero_byte_file_is_an_error(tmp_path, phase):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    doc = Document(id="doc-empty", uri=str(path))
    assert_document_error(doc, phase, "empty (0 bytes)", "drop this document")


@pytest.mark.parametrize("phase", PHASES)
def test_truncated_jpeg_is_an_error(tmp_path, phase):
    data = encoded(Image.fromarray(noise(64, 64)), "JPEG", quality=90)
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    doc = Document(id="doc-cut-jpeg", uri=str(path))
    assert_document_error(doc, phase, "truncated", "replace the file or drop this document")
    # ... even when only the end-of-image marker is missing
    path.write_bytes(data[:-2])
    assert_document_error(doc, phase, "truncated")


@pytest.mark.parametrize("phase", PHASES)
def test_truncated_png_is_an_error(tmp_path, phase):
    data = encoded(Image.fromarray(noise(64, 64)), "PNG")
    path = tmp_path / "cut.png"
    path.write_bytes(data[: len(data) // 2])
    doc = Document(id="doc-cut-png", uri=str(path))
    assert_document_error(doc, phase, "truncated", "drop this document")


@pytest.mark.parametrize("phase", PHASES)
def test_corrupt_bytes_are_an_error(tmp_path, phase):
    path = tmp_path / "random.jpg"
    path.write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    assert_document_error(Document(id="doc-random", uri=str(path)), phase, "not a readable image")
    # a PNG whose compressed data is damaged (its header still identifies it)
    data = bytearray(encoded(Image.fromarray(noise(64, 64)), "PNG"))
    data[len(data) // 2 : len(data) // 2 + 16] = bytes(16)
    path = tmp_path / "damaged.png"
    path.write_bytes(bytes(data))
    assert_document_error(Document(id="doc-damaged", uri=str(path)), phase, "not a readable image")


@pytest.mark.parametrize("phase", PHASES)
def test_text_file_named_jpg_is_an_error(tmp_path, phase):
    path = tmp_path / "notes.jpg"
    path.write_text("these are my holiday notes, not a photo\n")
    doc = Document(id="doc-text", uri=str(path))
    assert_document_error(doc, phase, "cannot identify image file", "not an image format")


@pytest.mark.parametrize("phase", PHASES)
def test_missing_file_is_an_error(tmp_path, phase):
    doc = Document(id="doc-missing", uri=str(tmp_path / "nope.jpg"))
    assert_document_error(doc, phase, "No such file", "Check that the path exists")


@pytest.mark.skipif(
    hasattr(os, "geteuid") and os.geteuid() == 0,
    reason="running as root: root can read a file whatever its permissions",
)
@pytest.mark.parametrize("phase", PHASES)
def test_unreadable_file_is_an_error(tmp_path, phase):
    path = tmp_path / "locked.png"
    doc = save(Image.fromarray(noise(8, 8)), path)
    path.chmod(0)
    try:
        assert_document_error(doc, phase, "Permission denied", "readable")
    finally:
        path.chmod(0o644)


@pytest.mark.parametrize("phase", PHASES)
def test_document_without_tensor_or_uri_is_an_error(phase):
    doc = Document(id="doc-nothing")
    assert_document_error(doc, phase, "has no image", "Give it a `uri`")


@pytest.mark.parametrize("phase", PHASES)
def test_non_jpeg_above_pixel_bound_is_an_error(tmp_path, monkeypatch, phase):
    # A small bound stands in for the default 2 x 89.5 Mpx: a PNG cannot be draft-decoded,
    # so above the bound it is refused before decoding, with the bound named.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000)
    doc = save(Image.new("RGB", (100, 100), (1, 2, 3)), tmp_path / "wide.png")
    assert_document_error(doc, phase, "too large", "2,000 pixels", "MAX_IMAGE_PIXELS")
    # between PIL's warning (1,000) and error (2,000) thresholds: decoded, silently
    doc = save(Image.new("RGB", (50, 30), (1, 2, 3)), tmp_path / "medium.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        assert vision_preprocessor(H, W, phase=phase, cache_bytes=0)(doc).shape == (3, H, W)


# --------------------------------------------------------------------------- handled


@pytest.mark.parametrize("phase", PHASES)
def test_grayscale_l_is_repeated_to_three_channels(tmp_path, phase):
    grey = noise(12, 10, channels=1)
    out = rgb_pixels(save(Image.fromarray(grey, "L"), tmp_path / "l.png"), phase)
    np.testing.assert_array_equal(out, np.repeat(grey[..., None], 3, axis=2))


@pytest.mark.parametrize("phase", PHASES)
def test_la_drops_alpha(tmp_path, phase):
    la = np.stack([noise(12, 10, 1, seed=1), noise(12, 10, 1, seed=2)], axis=2)
    out = rgb_pixels(save(Image.fromarray(la, "LA"), tmp_path / "la.png"), phase)
    np.testing.assert_array_equal(out, np.repeat(la[..., :1], 3, axis=2))


@pytest.mark.parametrize("phase", PHASES)
def test_rgba_drops_alpha_without_compositing(tmp_path, phase):
    rgba = noise(12, 10, channels=4)
    rgba[0, 0] = (10, 20, 30, 0)  # fully transparent: keeps its colour, no white
    out = rgb_pixels(save(Image.fromarray(rgba, "RGBA"), tmp_path / "rgba.png"), phase)
    np.testing.assert_array_equal(out, rgba[..., :3])
    assert tuple(out[0, 0]) == (10, 20, 30)


PALETTE = [255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (768 - 9)


def palette_image() -> Image.Image:
    """A 3 x 1 palette image: red, green, blue."""
    image = Image.new("P", (3, 1))
    image.putpalette(PALETTE)
    for x in range(3):
        image.putpixel((x, 0), x)
    return image


@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.parametrize("transparency", [None, 1, bytes([255, 0, 128])], ids=["opaque", "index", "bytes"])
def test_palette_image_with_and_without_transparency(tmp_path, phase, transparency):
    image = palette_image()
    kwargs = {} if transparency is None else {"transparency": transparency}
    doc = save(image, tmp_path / "p.png", **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "should be converted to RGBA" warning
        out = load_document_image(doc)
    assert out.permute(1, 2, 0).tolist() == [[[255, 0, 0], [0, 255, 0], [0, 0, 255]]]
    assert rgb_pixels(doc, phase).tolist() == [[[255, 0, 0], [0, 255, 0], [0, 0, 255]]]


@pytest.mark.parametrize("phase", PHASES)
def test_cmyk_jpeg_converts_to_rgb(tmp_path, phase):
    cmyk = Image.new("CMYK", (32, 16), (0, 255, 255, 0))  # red
    cmyk.paste((255, 255, 0, 0), (16, 0, 32, 16))  # blue
    doc = save(cmyk, tmp_path / "cmyk.jpg", quality=95)
    assert Image.open(doc.uri).mode == "CMYK"
    out = rgb_pixels(doc, phase).astype(int)
    np.testing.assert_allclose(out[4:12, 2:12], np.broadcast_to([255, 0, 0], (8, 10, 3)), atol=3)
    np.testing.assert_allclose(out[4:12, 20:30], np.broadcast_to([0, 0, 255], (8, 10, 3)), atol=3)


@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.parametrize("fmt, mode", [("png", "I;16"), ("tiff", "I")])
def test_sixteen_bit_grayscale_is_scaled_not_clipped(tmp_path, phase, fmt, mode):
    values = np.array([[0, 32768, 65535, 257, 1000]])
    dtype = np.uint16 if mode == "I;16" else np.int32
    doc = save(Image.fromarray(values.astype(dtype)), tmp_path / f"deep.{fmt}")
    assert Image.open(doc.uri).mode == mode
    out = rgb_pixels(doc, phase)
    assert out[..., 0].tolist() == [[0, 128, 255, 1, 4]]  # round(v * 255 / 65535)
    assert (out == out[..., :1]).all()


@pytest.mark.parametrize("phase", PHASES)
def test_float_image_in_unit_range_is_scaled(tmp_path, phase):
    # PIL's convert('RGB') truncates mode F floats: a [0, 1] TIFF would come out black
    values = np.array([[0.0, 0.5, 1.0, 0.2, 1 / 255]], np.float32)
    doc = save(Image.fromarray(values), tmp_path / "float.tiff")
    assert Image.open(doc.uri).mode == "F"
    out = rgb_pixels(doc, phase)
    assert out[..., 0].tolist() == [[0, 128, 255, 51, 1]]  # round(v * 255)
    assert (out == out[..., :1]).all()


@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.parametrize("values", [[[0.0, 300.0]], [[-0.5, 0.5]], [[0.0, float("nan")]]])
def test_float_image_outside_unit_range_is_an_error(tmp_path, phase, values):
    doc = save(Image.fromarray(np.array(values, np.float32)), tmp_path / "wide.tiff")
    assert_document_error(doc, phase, "mode F", "[0, 1] or 0-255")


@pytest.mark.parametrize("phase", PHASES)
def test_float_image_of_8_bit_levels_is_read_as_before(tmp_path, phase):
    values = np.array([[0.0, 100.0, 255.0, 2.0, 1.5]], np.float32)
    doc = save(Image.fromarray(values), tmp_path / "levels.tiff")
    assert rgb_pixels(doc, phase)[..., 0].tolist() == [[0, 100, 255, 2, 1]]  # PIL's conversion


@pytest.mark.parametrize("phase", PHASES)
def test_one_bit_image(tmp_path, phase):
    bits = noise(9, 7, channels=1) > 127
    doc = save(Image.fromarray(bits), tmp_path / "bits.png")
    assert Image.open(doc.uri).mode == "1"
    np.testing.assert_array_equal(rgb_pixels(doc, phase), np.repeat(bits[..., None] * 255, 3, axis=2))


@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.parametrize("orientation, corner", [(6, (0, -1)), (8, (-1, 0))])
def test_exif_rotated_jpeg_is_turned_upright(tmp_path, phase, orientation, corner):
    # Stored 48 high x 32 wide, red 16 x 16 block at the stored top-left. Orientation 6
    # ("rotate 90 clockwise to display") moves it to the top-right; 8 to the bottom-left.
    stored = np.zeros((48, 32, 3), np.uint8)
    stored[:16, :16] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = orientation
    doc = save(Image.fromarray(stored), tmp_path / f"o{orientation}.jpg", exif=exif, quality=95)
    out = rgb_pixels(doc, phase).astype(int)
    assert out.shape == (32, 48, 3)
    row = slice(4, 12) if corner[0] == 0 else slice(-12, -4)
    col = slice(4, 12) if corner[1] == 0 else slice(-12, -4)
    assert np.abs(out[row, col] - [255, 0, 0]).max() < 12
    assert out[12:20, 20:28].max() < 12  # away from the block: black


@pytest.mark.parametrize("phase", PHASES)
def test_one_pixel_image(tmp_path, phase):
    doc = save(Image.new("RGB", (1, 1), (10, 200, 30)), tmp_path / "dot.png")
    assert rgb_pixels(doc, phase).tolist() == [[[10, 200, 30]]]
    # and up-scaled to a normal output size, from a file and from a tensor
    for source in (doc, Document(id="doc-dot-tensor", tensor=np.array([[[10, 200, 30]]], np.uint8))):
        out = vision_preprocessor(H, W, phase=phase, normalize=False, cache_bytes=0)(source)
        assert out.shape == (3, H, W) and torch.isfinite(out).all()
        if phase == "validation":
            expected = torch.tensor([10, 200, 30]).div(255).view(3, 1, 1).expand(3, H, W)
            torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("phase", PHASES)
def test_float32_tensor_values(phase):
    image = noise(12, 10).astype(np.float32) / 255
    doc = Document(id="doc-float", tensor=image)
    pre = vision_preprocessor(12, 10, phase=phase, normalize=False, cache_bytes=0)
    out = pre(doc)
    assert out.shape == (3, 12, 10) and out.dtype == torch.float32
    if phase == "validation":
        np.testing.assert_array_equal(out.permute(1, 2, 0).numpy(), image)
    assert doc.tensor.dtype == np.float32 and out.data_ptr() != doc.tensor.ctypes.data


@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.parametrize("dtype", ["<u2", ">u2", "<u4", "<u8", ">i4", ">f4"])
def test_wide_and_big_endian_tensors_are_read(phase, dtype):
    # torch has no min/max for uint16/32/64 and refuses non-native byte order
    image = noise(6, 5).astype(dtype)
    if image.dtype.kind == "f":
        image = (image / 255).astype(dtype)
    doc = Document(id=f"doc-{dtype}", tensor=image)
    out = vision_preprocessor(6, 5, phase=phase, normalize=False, cache_bytes=0)(doc)
    assert out.shape == (3, 6, 5) and torch.isfinite(out).all()
    if phase == "validation":
        expected = noise(6, 5).astype(np.float32) / 255
        np.testing.assert_allclose(out.permute(1, 2, 0).numpy(), expected, atol=1e-6)
    assert doc.tensor.dtype == np.dtype(dtype)  # the document is left as it was


@pytest.mark.parametrize("phase", PHASES)
def test_sixteen_bit_tensor_beyond_255_is_named(phase):
    doc = Document(id="doc-deep", tensor=np.full((4, 4), 40000, np.uint16))
    pre = vision_preprocessor(4, 4, phase=phase, cache_bytes=0)
    with pytest.raises(DocumentImageError, match=r"doc-deep.*\[40000, 40000\].*0-255"):
        pre(doc)


@pytest.mark.parametrize("phase", PHASES)
def test_object_tensor_is_named(phase):
    doc = Document(id="doc-objects", tensor=np.array([["a", None]], dtype=object))
    pre = vision_preprocessor(4, 4, phase=phase, cache_bytes=0)
    with pytest.raises(DocumentImageError, match="doc-objects.*object"):
        pre(doc)


# --------------------------------------------------------------------------- large images


@pytest.fixture(scope="module")
def big_jpeg(tmp_path_factory) -> str:
    """A solid-colour 10,000 x 10,000 JPEG (about 1.5 MB), written by another interpreter
    so that its 400 MB raster never lives in this process."""
    path = tmp_path_factory.mktemp("big") / "big.jpg"
    code = (
        "import sys; from PIL import Image; "
        f"Image.new('RGB', ({BIG_SIDE}, {BIG_SIDE}), {BIG_COLOUR}).save(sys.argv[1], quality=50)"
    )
    subprocess.run([sys.executable, "-c", code, str(path)], check=True, timeout=120)
    return str(path)


def test_decode_min_side_rule():
    # max(4 * max(h, w), 1024): images under 2048 px on the short side are never reduced
    assert decode_min_side(224, 224) == 1024
    assert decode_min_side(1, 1) == 1024
    assert decode_min_side(300, 500) == 2000
    assert vision_preprocessor(224, 224, phase="validation").decode_min_side == 1024


@pytest.mark.parametrize("size", [(224, 224), (1, 1), (24, 32)])
def test_normal_size_images_are_not_changed_by_the_hint(tmp_path, size):
    # TLL's images are 200 x 245; any image under 2048 px on the short side is decoded
    # exactly as without a hint, for every output size.
    data = encoded(Image.fromarray(noise(245, 200)), "JPEG", quality=90)
    (tmp_path / "tll.jpg").write_bytes(data)
    doc = Document(id="doc-tll", uri=str(tmp_path / "tll.jpg"))
    pre = vision_preprocessor(*size, phase="validation", cache_bytes=0)
    assert torch.equal(pre.load_image(doc), decode_image(data))


@pytest.mark.parametrize("phase", PHASES)
def test_large_jpeg_is_drafted_without_bomb_warning(big_jpeg, phase):
    pre = vision_preprocessor(224, 224, phase=phase, cache_bytes=0)
    doc = Document(id="doc-big", uri=big_jpeg)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        image = pre.load_image(doc)
        out = pre(doc)
    # decoded at 1/8 scale (the draft, not a full decode and resize): short side 1250 >= the hint 1024
    assert image.shape == (3, BIG_SIDE // 8, BIG_SIDE // 8) and image.dtype == torch.uint8
    assert np.abs(image[:, 600, 600].numpy().astype(int) - BIG_COLOUR).max() < 8
    assert out.shape == (3, 224, 224) and torch.isfinite(out).all()


def test_large_jpeg_decode_memory_is_bounded(big_jpeg):
    # PIL's rasters are C allocations (invisible to tracemalloc): measure the peak
    # resident size of a fresh interpreter instead. A full decode would add >= 600 MB
    # (PIL's 10k x 10k RGBX raster plus the 300 MB array).
    code = """
import json, resource, sys
from types import SimpleNamespace
from finetuner_selfsup.augment import vision_preprocessor
pre = vision_preprocessor(224, 224, phase="train", cache_bytes=0)
doc = SimpleNamespace(id="doc-big", uri=sys.argv[1], tensor=None)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out = pre(doc)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"growth_kib": after - before, "shape": list(out.shape)}))
"""
    env = {**os.environ, "PYTHONPATH": str(REPO), "FINETUNER_SELFSUP_DISABLE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", code, big_jpeg], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["shape"] == [3, 224, 224]
    assert report["growth_kib"] < 100 * 1024, report  # measured: about 20-30 MB


def test_jpeg_above_pil_bomb_limit_is_drafted_not_refused(big_jpeg, monkeypatch):
    # With MAX_IMAGE_PIXELS = 40 Mpx, PIL's Image.open raises DecompressionBombError for
    # the 100 Mpx JPEG; it is opened past that check, drafted to 1.6 Mpx and accepted.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 40_000_000)
    with pytest.raises(Image.DecompressionBombError):
        Image.open(big_jpeg)
    doc = Document(id="doc-big", uri=big_jpeg)
    for phase in PHASES:
        assert vision_preprocessor(224, 224, phase=phase, cache_bytes=0)(doc).shape == (3, 224, 224)
    # without a decode-size hint it would decode at full size: refused, bound named
    with pytest.raises(DocumentImageError, match=r"doc-big.*100,000,000 pixels.*80,000,000"):
        load_document_image(doc)


@pytest.mark.parametrize("phase", PHASES)
def test_large_non_jpeg_is_reduced_after_decoding(tmp_path, phase):
    # A PNG cannot be drafted: it is decoded at full size (within the pixel bound) and
    # then box-reduced by an integer factor, keeping the short side >= the hint.
    doc = save(Image.new("RGB", (3000, 2048), (9, 99, 199)), tmp_path / "wide.png")
    pre = vision_preprocessor(224, 224, phase=phase, cache_bytes=0)
    image = pre.load_image(doc)
    assert image.shape == (3, 1024, 1500)
    assert image[:, 500, 700].tolist() == [9, 99, 199]
    assert pre(doc).shape == (3, 224, 224)


def test_cache_key_includes_the_hint(tmp_path):
    cache = DecodedImageCache(10 * 2**20)
    big = save(Image.fromarray(noise(48, 64)), tmp_path / "big.png")
    reduced_8 = load_document_image(big, cache=cache, min_side=8)
    reduced_16 = load_document_image(big, cache=cache, min_side=16)
    full = load_document_image(big, cache=cache)
    assert reduced_8.shape == (3, 8, 11) and reduced_16.shape == (3, 16, 22)
    assert full.shape == (3, 48, 64)
    assert (big.uri, 8) in cache and (big.uri, 16) in cache and big.uri in cache
    assert load_document_image(big, cache=cache, min_side=8) is reduced_8
    # an image the hint does not reduce is cached once, under its uri, for every hint
    small = save(Image.fromarray(noise(10, 12)), tmp_path / "small.png")
    first = load_document_image(small, cache=cache, min_side=8)
    assert small.uri in cache and (small.uri, 8) not in cache
    assert load_document_image(small, cache=cache, min_side=6) is first


def test_train_views_of_one_pixel_output_size():
    """A 1x1 output (blur kernel larger than the image) shrinks the blur instead of failing."""
    import numpy as np
    import torch
    from docarray import Document

    from finetuner_selfsup.augment.preprocessor import vision_preprocessor

    preprocess = vision_preprocessor(1, 1, blur_p=1.0)
    doc = Document(tensor=np.full((5, 5, 3), 100, dtype=np.uint8))
    for _ in range(5):
        view = preprocess(doc)
        assert view.shape == (3, 1, 1) and torch.isfinite(view).all()
