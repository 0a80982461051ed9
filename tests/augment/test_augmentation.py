"""Tests of ``finetuner_selfsup.augment`` (the SimCLR ``vision_preprocessor``)."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from docarray import Document
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from finetuner_selfsup.augment import (
    DecodedImageCache,
    DocumentImageError,
    SimCLRAugmentation,
    VisionPreprocessor,
    image_loading,
    load_document_image,
    simclr_blur_kernel_size,
    vision_preprocessor,
)
from finetuner_selfsup.augment.simclr import gaussian_blur_separable

H, W = 24, 32  # non-square output, so that swapped axes are caught


from torch_settings import seed_and_one_thread  # noqa: E402,F401  (autouse fixture)


def noise_image(h: int = 40, w: int = 50, seed: int = 0) -> np.ndarray:
    """A colourful uint8 (h, w, 3) image."""
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def write_image(path, array: np.ndarray, **save_kwargs) -> str:
    Image.fromarray(array).save(path, **save_kwargs)
    return str(path)


def docarray_normalised_chw(hwc_uint8: np.ndarray) -> np.ndarray:
    doc = Document(tensor=hwc_uint8.copy())
    doc.set_image_tensor_normalization().set_image_tensor_channel_axis(-1, 0)
    return doc.tensor


# ------------------------------------------------------------------ shapes and dtypes

INPUTS = {
    "hwc_uint8": (lambda: noise_image(), -1),
    "chw_uint8": (lambda: np.ascontiguousarray(noise_image().transpose(2, 0, 1)), 0),
    "gray_hw": (lambda: noise_image()[..., 0].copy(), -1),
    "gray_hw1": (lambda: noise_image()[..., :1].copy(), -1),
    "rgba_hwc": (lambda: np.concatenate([noise_image(), np.full((40, 50, 1), 7, np.uint8)], -1), -1),
    "float_hwc": (lambda: noise_image().astype(np.float32) / 255, -1),
    "float64_hwc": (lambda: noise_image().astype(np.float64) / 255, -1),
    "torch_hwc_uint8": (lambda: torch.from_numpy(noise_image()), -1),
    "int64_hwc": (lambda: noise_image().astype(np.int64), -1),
}


@pytest.mark.parametrize("phase", ["train", "validation"])
@pytest.mark.parametrize("kind", sorted(INPUTS))
def test_output_dtype_shape_channel_axis(kind, phase):
    make, axis = INPUTS[kind]
    doc = Document(tensor=make())
    out = vision_preprocessor(H, W, default_channel_axis=axis, phase=phase)(doc)
    assert isinstance(out, torch.Tensor)
    assert out.dtype == torch.float32
    assert out.shape == (3, H, W)
    assert torch.isfinite(out).all()

    raw = vision_preprocessor(H, W, axis, target_channel_axis=-1, normalize=False, phase=phase)(doc)
    assert raw.shape == (H, W, 3)
    assert raw.min() >= 0 and raw.max() <= 1


def test_grayscale_and_rgba_become_rgb():
    gray = noise_image()[..., 0].copy()
    out = vision_preprocessor(40, 50, normalize=False, phase="validation")(Document(tensor=gray))
    expected = torch.from_numpy(gray).float() / 255
    for c in range(3):
        assert torch.equal(out[c], expected)

    rgb = noise_image()
    rgba = np.concatenate([rgb, np.zeros((40, 50, 1), np.uint8)], -1)
    out = vision_preprocessor(40, 50, normalize=False, phase="validation")(Document(tensor=rgba))
    assert torch.equal(out, torch.from_numpy(rgb).permute(2, 0, 1).float() / 255)


# ------------------------------------------------------------------ normalisation


def test_validation_normalisation_equals_docarray():
    img = noise_image(H, W)
    out = vision_preprocessor(H, W, phase="validation")(Document(tensor=img))
    np.testing.assert_allclose(out.numpy(), docarray_normalised_chw(img), atol=1e-5, rtol=0)


def test_validation_resize_then_docarray_normalisation():
    img = noise_image(40, 50)
    out = vision_preprocessor(H, W, phase="validation")(Document(tensor=img))
    resized = TF.resize(torch.from_numpy(img).permute(2, 0, 1), [H, W], antialias=True)
    expected = docarray_normalised_chw(resized.permute(1, 2, 0).numpy().copy())
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-5, rtol=0)


def test_normalize_false_is_unit_range_float():
    img = noise_image(H, W)
    out = vision_preprocessor(H, W, normalize=False, phase="validation")(Document(tensor=img))
    expected = torch.from_numpy(img).permute(2, 0, 1).float() / 255
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)


def test_float_input_normalises_like_uint8():
    img = noise_image(H, W)
    from_uint8 = vision_preprocessor(H, W, phase="validation")(Document(tensor=img))
    from_float = vision_preprocessor(H, W, phase="validation")(Document(tensor=img / 255.0))
    torch.testing.assert_close(from_float, from_uint8, atol=1e-5, rtol=0)


# ------------------------------------------------------------------ randomness


def test_train_views_differ_validation_identical():
    doc = Document(tensor=noise_image())
    train = vision_preprocessor(H, W, phase="train")
    assert not torch.equal(train(doc), train(doc))
    val = vision_preprocessor(H, W, phase="validation")
    assert torch.equal(val(doc), val(doc))


def test_seeded_views_are_reproducible():
    doc = Document(tensor=noise_image())
    pre = vision_preprocessor(H, W)
    torch.manual_seed(123)
    a = pre(doc)
    torch.manual_seed(123)
    assert torch.equal(a, pre(doc))


# ------------------------------------------------------------------ the document is untouched


@pytest.mark.parametrize("phase", ["train", "validation"])
@pytest.mark.parametrize("normalize", [True, False])
def test_document_tensor_not_modified(phase, normalize):
    img = noise_image()
    doc = Document(tensor=img)
    before = img.copy()
    pre = vision_preprocessor(H, W, normalize=normalize, phase=phase)
    first, second = pre(doc), pre(doc)
    assert doc.tensor is img
    assert doc.tensor.dtype == np.uint8
    np.testing.assert_array_equal(doc.tensor, before)
    for out in (first, second):
        assert out.shape == (3, H, W) and out.dtype == torch.float32


def test_output_never_aliases_document_tensor():
    img = noise_image(H, W).transpose(2, 0, 1).astype(np.float32) / 255  # already the output
    doc = Document(tensor=img)
    before = img.copy()
    out = vision_preprocessor(H, W, 0, normalize=False, phase="validation")(doc)
    out.fill_(5.0)
    np.testing.assert_array_equal(doc.tensor, before)


def test_uri_document_stays_without_tensor(tmp_path):
    uri = write_image(tmp_path / "a.jpg", noise_image(), quality=95)
    doc = Document(uri=uri)
    for phase in ("train", "validation"):
        pre = vision_preprocessor(H, W, phase=phase)
        assert pre(doc).shape == (3, H, W)
        assert pre(doc).shape == (3, H, W)
        assert doc.tensor is None
        assert doc.uri == uri


def test_uri_image_matches_docarray_loading(tmp_path):
    uri = write_image(tmp_path / "a.png", noise_image(H, W))
    loaded = Document(uri=uri).load_uri_to_image_tensor()
    pre = vision_preprocessor(H, W, phase="validation")
    torch.testing.assert_close(pre(Document(uri=uri)), pre(loaded), atol=0, rtol=0)
    np.testing.assert_allclose(
        pre(Document(uri=uri)).numpy(), docarray_normalised_chw(loaded.tensor), atol=1e-5, rtol=0
    )


def test_uri_decoding_applies_exif_orientation_and_converts_to_rgb(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    rotated = write_image(tmp_path / "r.jpg", noise_image(20, 30), exif=exif)
    assert load_document_image(Document(uri=rotated)).shape == (3, 30, 20)

    gray = write_image(tmp_path / "g.png", noise_image(20, 30)[..., 0].copy())
    rgba = tmp_path / "rgba.png"
    Image.fromarray(noise_image(20, 30)).convert("RGBA").save(rgba)
    palette = tmp_path / "p.gif"
    Image.fromarray(noise_image(20, 30)).convert("P").save(palette)
    for uri in (gray, str(rgba), str(palette)):
        image = load_document_image(Document(uri=uri))
        assert image.shape == (3, 20, 30) and image.dtype == torch.uint8
    image = load_document_image(Document(uri=gray))
    assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])


# ------------------------------------------------------------------ decode cache


@pytest.fixture
def count_decodes(monkeypatch):
    calls = []
    real = image_loading.decode_image

    def counting(data):
        calls.append(len(data))
        return real(data)

    monkeypatch.setattr(image_loading, "decode_image", counting)
    return calls


def test_uri_decoded_once_for_repeated_views(tmp_path, count_decodes):
    uri = write_image(tmp_path / "a.jpg", noise_image())
    budget = 10 * 2**20 + 17  # a budget no other test uses: its own shared cache
    train = vision_preprocessor(H, W, cache_bytes=budget)
    val = vision_preprocessor(H, W, phase="validation", cache_bytes=budget)
    doc = Document(uri=uri)
    views = [train(doc) for _ in range(4)] + [val(Document(uri=uri))]
    assert len(count_decodes) == 1
    assert all(v.shape == (3, H, W) for v in views)
    assert doc.tensor is None


def test_cache_disabled_decodes_every_time(tmp_path, count_decodes):
    uri = write_image(tmp_path / "a.jpg", noise_image())
    pre = vision_preprocessor(H, W, cache_bytes=0)
    for _ in range(3):
        pre(Document(uri=uri))
    assert len(count_decodes) == 3


def test_cache_is_lru_within_byte_budget():
    one = torch.zeros(3, 10, 10, dtype=torch.uint8)  # 300 bytes
    cache = DecodedImageCache(max_bytes=700)
    cache.put("a", one.clone())
    cache.put("b", one.clone())
    assert cache.get("a") is not None  # "a" is now the most recently used
    cache.put("c", one.clone())
    assert "b" not in cache and "a" in cache and "c" in cache
    assert cache.nbytes == 600 <= cache.max_bytes
    cache.put("big", torch.zeros(3, 20, 20, dtype=torch.uint8))  # 1200 bytes > budget
    assert "big" not in cache and len(cache) == 2
    cache.clear()
    assert len(cache) == 0 and cache.nbytes == 0


# ------------------------------------------------------------------ augmentation statistics

N_DRAWS = 300


def test_defaults_are_simclr_reference_values_but_a_milder_crop():
    aug = vision_preprocessor().augmentation
    assert isinstance(aug, SimCLRAugmentation)
    assert aug.crop_scale == (0.5, 1.0)  # ours (SimCLR: 0.08), measured on the proxies
    assert vision_preprocessor(crop_scale=(0.08, 1.0)).augmentation.crop_scale == (0.08, 1.0)
    assert aug.crop_ratio == pytest.approx((3 / 4, 4 / 3))
    assert aug.hflip_p == 0.5
    assert aug.color_jitter == pytest.approx(
        {"brightness": 0.8, "contrast": 0.8, "saturation": 0.8, "hue": 0.2}
    )
    assert (aug.color_jitter_p, aug.grayscale_p, aug.blur_p) == (0.8, 0.2, 0.5)
    assert aug.blur_sigma == (0.1, 2.0)
    assert aug.blur_kernel_size == (23, 23)
    assert simclr_blur_kernel_size(32) == 3 and simclr_blur_kernel_size(96) == 9
    assert vision_preprocessor(phase="validation").augmentation is None


def test_the_class_and_the_factory_share_the_default_augmentation():
    from finetuner_selfsup.augment import VisionPreprocessor

    assert VisionPreprocessor() == vision_preprocessor()
    assert VisionPreprocessor(64, 48).augmentation == vision_preprocessor(64, 48).augmentation


def test_grayscale_fraction_about_0_2():
    doc = Document(tensor=noise_image(48, 48))
    pre = vision_preprocessor(32, 32, normalize=False)
    gray = 0
    for _ in range(N_DRAWS):
        out = pre(doc)
        gray += bool(torch.equal(out[0], out[1]) and torch.equal(out[1], out[2]))
    assert 0.12 <= gray / N_DRAWS <= 0.28


def test_horizontal_flip_fraction_about_0_5():
    # A horizontal gray ramp: crops, jitter and blur keep it increasing; a flip reverses it.
    ramp = np.tile(np.linspace(0, 127, 64).astype(np.uint8), (48, 1))
    doc = Document(tensor=ramp)
    pre = vision_preprocessor(32, 32, normalize=False)
    flipped = ties = 0
    for _ in range(N_DRAWS):
        out = pre(doc)
        left, right = out[:, :, :16].mean().item(), out[:, :, 16:].mean().item()
        flipped += left > right
        ties += left == right
    assert ties <= 0.02 * N_DRAWS
    assert 0.4 <= flipped / N_DRAWS <= 0.6


def test_crop_area_and_ratio_within_simclr_ranges():
    # Pixel values encode coordinates (R = 2x, G = 2y): an output's value range is its crop box.
    side = 128
    coords = np.arange(side, dtype=np.uint8) * 2
    img = np.zeros((side, side, 3), np.uint8)
    img[..., 0] = coords[None, :]
    img[..., 1] = coords[:, None]
    pre = vision_preprocessor(
        64, 64, normalize=False, hflip_p=0, color_jitter_p=0, grayscale_p=0, blur_p=0,
        crop_scale=(0.08, 1.0),
    )
    areas, ratios = [], []
    for _ in range(200):
        out = (pre(Document(tensor=img)) * 255).round()
        w = (out[0].max() - out[0].min()).item() / 2 + 1
        h = (out[1].max() - out[1].min()).item() / 2 + 1
        areas.append(w * h / side**2)
        ratios.append(w / h)
    areas, ratios = np.array(areas), np.array(ratios)
    # interpolation pulls the measured box in by about a pixel: allow for it
    assert areas.min() >= 0.08 * 0.85 and areas.max() <= 1.0
    assert ratios.min() >= 0.75 * 0.9 and ratios.max() <= (4 / 3) / 0.9
    assert areas.min() < 0.2 and areas.max() > 0.8  # the whole range is used
    assert 0.4 <= areas.mean() <= 0.65  # uniform on (0.08, 1): 0.54


def test_color_jitter_probability_about_0_8():
    img = noise_image(32, 32)
    doc = Document(tensor=img)
    # full-image crop at the same size is the identity: only the jitter changes pixels
    pre = vision_preprocessor(
        32, 32, normalize=False, crop_scale=(1, 1), crop_ratio=(1, 1),
        hflip_p=0, grayscale_p=0, blur_p=0,
    )
    identity = torch.from_numpy(img).permute(2, 0, 1).float() / 255
    changed = sum(not torch.equal(pre(doc), identity) for _ in range(N_DRAWS))
    assert 0.72 <= changed / N_DRAWS <= 0.88


@pytest.mark.parametrize("sigma", [0.3, 1.0, 2.0])
def test_separable_blur_equals_torchvision_blur(sigma):
    image = torch.rand(3, 30, 40)
    ours = gaussian_blur_separable(image, (5, 9), sigma)  # (kernel h, kernel w)
    reference = TF.gaussian_blur(image, [9, 5], [sigma, sigma])  # torchvision: (x, y)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=0)
    as_uint8 = (image * 255).round().to(torch.uint8)
    diff = gaussian_blur_separable(as_uint8, (5, 9), sigma).int() - TF.gaussian_blur(
        as_uint8, [9, 5], [sigma, sigma]
    ).int()
    assert diff.abs().max() <= 1  # rounding only


def test_augmentation_rejects_batches():
    with pytest.raises(ValueError, match="one"):
        SimCLRAugmentation(8, 8)(torch.zeros(2, 3, 16, 16, dtype=torch.uint8))


# ------------------------------------------------------------------ errors


def test_normalised_float_tensor_is_rejected_with_document_named():
    doc = Document(id="doc-7", uri="left/00001.jpg")
    doc.tensor = noise_image()
    doc.set_image_tensor_normalization()
    with pytest.raises(DocumentImageError) as info:
        vision_preprocessor(H, W)(doc)
    message = str(info.value)
    assert "doc-7" in message and "left/00001.jpg" in message
    assert "normalize" in message
    assert isinstance(info.value, ValueError)


def test_document_without_image_is_named():
    with pytest.raises(DocumentImageError, match="doc-empty"):
        vision_preprocessor(H, W)(Document(id="doc-empty"))


def test_missing_file_names_uri_and_document(tmp_path):
    uri = str(tmp_path / "nope.jpg")
    with pytest.raises(DocumentImageError) as info:
        vision_preprocessor(H, W)(Document(id="doc-missing", uri=uri))
    assert uri in str(info.value) and "doc-missing" in str(info.value)


@pytest.mark.parametrize("content", [b"not an image at all", "truncated"])
def test_corrupt_file_names_uri_and_document(tmp_path, content):
    path = tmp_path / "bad.jpg"
    if content == "truncated":
        write_image(path, noise_image(64, 64), quality=90)
        path.write_bytes(path.read_bytes()[:300])
    else:
        path.write_bytes(content)
    with pytest.raises(DocumentImageError) as info:
        vision_preprocessor(H, W, cache_bytes=0)(Document(id="doc-bad", uri=str(path)))
    assert str(path) in str(info.value) and "doc-bad" in str(info.value)


def test_wrong_channel_axis_is_explained():
    chw = np.ascontiguousarray(noise_image().transpose(2, 0, 1))  # (3, 40, 50) read as HWC
    with pytest.raises(DocumentImageError, match="default_channel_axis") as info:
        vision_preprocessor(H, W)(Document(id="doc-chw", tensor=chw))
    assert "doc-chw" in str(info.value)


def test_bad_phase_and_options_are_rejected():
    with pytest.raises(ValueError, match="'train' or 'validation'"):
        vision_preprocessor(phase="test")
    with pytest.raises(ValueError, match="grayscale_p"):
        vision_preprocessor(grayscale_p=1.5)
    with pytest.raises(ValueError, match="crop_scale"):
        vision_preprocessor(crop_scale=(0.5, 0.1))


# ------------------------------------------------------------------ pickling and mirror


@pytest.mark.parametrize("phase", ["train", "validation"])
def test_pickle_round_trip(tmp_path, phase):
    uri = write_image(tmp_path / "a.jpg", noise_image())
    pre = vision_preprocessor(H, W, normalize=True, phase=phase, grayscale_p=0.3)
    pre(Document(uri=uri))  # fill the cache: it must not travel
    data = pickle.dumps(pre)
    assert len(data) < 10_000
    clone = pickle.loads(data)
    assert isinstance(clone, VisionPreprocessor) and clone == pre
    assert (clone.height, clone.width, clone.phase, clone.normalize) == (H, W, phase, True)
    doc = Document(tensor=noise_image())
    torch.manual_seed(5)
    expected = pre(doc)
    torch.manual_seed(5)
    assert torch.equal(clone(doc), expected)


def test_mirror_module_exports_vision_preprocessor():
    from finetuner_selfsup.tuner import augmentation

    assert augmentation.vision_preprocessor is vision_preprocessor
    assert augmentation.__all__ == ["vision_preprocessor"]
