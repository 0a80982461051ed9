"""The batched SimCLR augmentation: each step against torchvision, the whole distribution
against the per-view :class:`SimCLRAugmentation`, and one random draw per view."""
from __future__ import annotations

import math
import os
import sys

import pytest
import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF


from torch_settings import seed_and_one_thread  # noqa: E402,F401  (autouse fixture)

from finetuner_selfsup.augment import batched as B  # noqa: E402
from finetuner_selfsup.augment.batched import BatchedSimCLRAugmentation, SourceBatch  # noqa: E402
from finetuner_selfsup.augment.simclr import SimCLRAugmentation  # noqa: E402


def smooth_image(h: int, w: int, seed: int = 0) -> torch.Tensor:
    """A uint8 RGB image with structure at several scales (so blur and crops matter)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand((1, 3, max(2, h // 8), max(2, w // 8)), generator=g)
    image = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)[0]
    image = 0.8 * image + 0.2 * torch.rand((3, h, w), generator=g)
    return (image * 255).round().to(torch.uint8)


def ks_statistic(a: torch.Tensor, b: torch.Tensor) -> float:
    """Two-sample Kolmogorov-Smirnov statistic: largest gap between the two empirical CDFs."""
    values = torch.cat([a, b]).sort().values
    cdf_a = torch.searchsorted(a.sort().values, values, right=True) / len(a)
    cdf_b = torch.searchsorted(b.sort().values, values, right=True) / len(b)
    return float((cdf_a - cdf_b).abs().max())


def ks_bound(n: int, m: int, alpha: float = 1e-3) -> float:
    """Critical KS value: a larger statistic rejects 'same distribution' at level alpha."""
    return math.sqrt(-0.5 * math.log(alpha / 2)) * math.sqrt((n + m) / (n * m))


# ------------------------------------------------------------------ single steps, exact


def test_resized_crop_equals_torchvision_uint8():
    image = smooth_image(245, 200)
    boxes = [(0, 0, 245, 200), (10, 20, 50, 70), (100, 3, 140, 190), (5, 5, 3, 4)]
    pixels = image[None]
    for top, left, h, w in boxes:
        ours = B.resized_crops(
            pixels, torch.tensor([0]), torch.tensor([top]), torch.tensor([left]),
            torch.tensor([h]), torch.tensor([w]), (64, 48),
        )[0]
        theirs = TF.resized_crop(image, top, left, h, w, [64, 48], antialias=True)
        assert torch.equal(ours, theirs.float() / 255), (top, left, h, w)


def test_resized_crop_of_padded_batch_ignores_padding():
    small, large = smooth_image(30, 40, seed=1), smooth_image(60, 50, seed=2)
    batch = SourceBatch.from_images([small, large])
    assert batch.pixels.shape == (2, 3, 60, 50)
    assert batch.heights.tolist() == [30, 60] and batch.widths.tolist() == [40, 50]
    ours = B.resized_crops(
        batch.pixels, torch.tensor([0]), torch.tensor([0]), torch.tensor([0]),
        torch.tensor([30]), torch.tensor([40]), (32, 32),
    )[0]
    assert torch.equal(ours, TF.resize(small, [32, 32], antialias=True).float() / 255)


@pytest.mark.parametrize(
    "op, reference, factor",
    [
        (B._brightness, TF.adjust_brightness, 1.7),
        (B._brightness, TF.adjust_brightness, 0.3),
        (B._contrast, TF.adjust_contrast, 1.6),
        (B._contrast, TF.adjust_contrast, 0.2),
        (B._saturation, TF.adjust_saturation, 1.8),
        (B._saturation, TF.adjust_saturation, 0.0),
        (B._hue, TF.adjust_hue, 0.2),
        (B._hue, TF.adjust_hue, -0.45),
    ],
)
def test_colour_operations_equal_torchvision_float(op, reference, factor):
    image = smooth_image(40, 30).float() / 255
    image[:, :5, :5] = 0.5  # a grey patch: the hue formula's flat (max == min) case
    ours = op(image[None], factor)[0]
    assert torch.allclose(ours, reference(image, factor), atol=2e-6)


@pytest.mark.parametrize("factor", [-0.5, -0.2, 0.0, 0.13, 0.5])
def test_hue_equals_torchvision_on_ties_and_extremes(factor):
    """The hue shift without an HSV image: the sector choice on tied channels (red before
    green before blue, as torchvision), black, white, grey, and shifts of half a turn."""
    image = torch.rand(3, 24, 24, generator=torch.Generator().manual_seed(3))
    image[1, 0:4] = image[0, 0:4]  # red == green
    image[2, 4:8] = image[1, 4:8]  # green == blue
    image[2, 8:12] = image[0, 8:12]  # red == blue
    image[:, 12:14] = 0.0
    image[:, 14:16] = 1.0
    image[:, 16:18] = 0.4
    ours = B._hue(image[None], factor)[0]
    assert torch.allclose(ours, TF.adjust_hue(image, factor), atol=2e-6)


def test_hue_takes_one_factor_per_view():
    views = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    factors = torch.tensor([-0.4, 0.0, 0.3])
    ours = B._hue(views, factors)
    for k in range(3):
        assert torch.allclose(ours[k], TF.adjust_hue(views[k], float(factors[k])), atol=2e-6)


def test_grayscale_equals_torchvision():
    image = smooth_image(20, 30).float() / 255
    ours = B._gray(image[None]).expand(-1, 3, -1, -1)[0]
    assert torch.allclose(ours, TF.rgb_to_grayscale(image, num_output_channels=3), atol=1e-6)


def test_blur_equals_torchvision_per_view_sigma():
    views = torch.stack([smooth_image(48, 40, seed=s).float() / 255 for s in range(3)])
    sigmas = torch.tensor([0.1, 0.9, 2.0])
    ours = B.gaussian_blur_per_view(views, (23, 23), sigmas)
    for k in range(3):
        theirs = TF.gaussian_blur(views[k], [23, 23], [float(sigmas[k])] * 2)
        assert torch.allclose(ours[k], theirs, atol=1e-5)


def test_deterministic_settings_equal_the_per_view_pipeline():
    """All randomness off and a full-image crop: batched and per-view give one image."""
    image = smooth_image(60, 48)
    aug = SimCLRAugmentation(
        32, 32, crop_scale=(1.0, 1.0), crop_ratio=(0.8, 0.8), hflip_p=0.0,
        color_jitter_p=0.0, grayscale_p=0.0, blur_p=0.0,
    )
    ours = BatchedSimCLRAugmentation(aug)(SourceBatch.from_images([image]), views_per_image=1)[0]
    assert torch.equal(ours, aug(image).float() / 255)


@pytest.mark.parametrize("as_float", [False, True])
def test_forced_flip_mirrors_the_resized_view_exactly(as_float):
    """The CPU uint8 path mirrors the crop before the resize: the same bytes as mirroring
    the resized view (and the float path mirrors after it)."""
    image = smooth_image(61, 47, seed=5)
    source = image.float() / 255 if as_float else image
    kwargs = dict(crop_scale=(1.0, 1.0), crop_ratio=(0.8, 0.8), color_jitter_p=0.0, grayscale_p=0.0, blur_p=0.0)
    flipped = SimCLRAugmentation(40, 40, hflip_p=1.0, **kwargs)
    plain = SimCLRAugmentation(40, 40, hflip_p=0.0, **kwargs)
    ours = BatchedSimCLRAugmentation(flipped)(SourceBatch.from_images([source]), views_per_image=1)[0]
    unflipped = BatchedSimCLRAugmentation(plain)(SourceBatch.from_images([source]), views_per_image=1)[0]
    assert torch.equal(ours, unflipped.flip(-1))
    reference = plain(image).float() / 255
    assert torch.equal(ours, reference.flip(-1)) if not as_float else torch.allclose(ours, reference.flip(-1), atol=1e-2)


def test_blur_after_normalisation_equals_blur_before_it():
    """Views are blurred last, on normalised values: the same image as blurring first."""
    images = [smooth_image(60, 48, seed=s) for s in range(3)]  # aspect 0.8: the whole image
    aug = SimCLRAugmentation(
        40, 40, crop_scale=(1.0, 1.0), crop_ratio=(0.8, 0.8), hflip_p=0.0, color_jitter_p=0.0,
        grayscale_p=0.0, blur_p=1.0, blur_sigma=(1.3, 1.3), blur_kernel_size=9,
    )
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    ours = BatchedSimCLRAugmentation(aug)(SourceBatch.from_images(images), views_per_image=1, normalize=(mean, std))
    for k, image in enumerate(images):
        plain = TF.resize(image, [40, 40], antialias=True).float() / 255
        blurred = TF.gaussian_blur(plain, [9, 9], [1.3, 1.3])
        expected = TF.normalize(blurred, list(mean), list(std))
        assert torch.allclose(ours[k], expected, atol=1e-5)


def test_cpu_blur_with_shortened_kernels_equals_torchvision_full_kernel():
    """The CPU blurs each group with the shortest kernel its sigmas need: the same image as
    torchvision's full 23-tap kernel, for sigmas over SimCLR's whole range."""
    images = [smooth_image(60, 48, seed=s) for s in range(20)]
    aug = SimCLRAugmentation(
        40, 40, crop_scale=(1.0, 1.0), crop_ratio=(0.8, 0.8), hflip_p=0.0, color_jitter_p=0.0,
        grayscale_p=0.0, blur_p=1.0, blur_sigma=(0.1, 2.0), blur_kernel_size=23,
    )
    batched = BatchedSimCLRAugmentation(aug)
    sources = SourceBatch.from_images(images)
    params = batched.sample(sources.heights, sources.widths, torch.Generator().manual_seed(0))
    ours = batched.apply(sources.pixels, torch.arange(len(images)), params)
    assert len(set(B.effective_blur_radius(params.blur_sigma).tolist())) > 3  # several kernel sizes
    for k, image in enumerate(images):
        plain = TF.resize(image, [40, 40], antialias=True).float() / 255
        sigma = float(params.blur_sigma[k])
        assert torch.allclose(ours[k], TF.gaussian_blur(plain, [23, 23], [sigma, sigma]), atol=2e-6)


# ------------------------------------------------------------------ random draws


def test_crop_boxes_follow_torchvision_get_params():
    """Area share and aspect ratio of the boxes: KS test against torchvision's own draws."""
    n = 3000
    for h, w in [(245, 200), (30, 300)]:  # (30, 300): most draws fail -> centre fallback
        g = torch.Generator().manual_seed(1)
        top, left, ch, cw = B._crop_boxes(
            torch.full((n,), h), torch.full((n,), w), (0.08, 1.0), (3 / 4, 4 / 3),
            lambda *shape: torch.rand(shape, generator=g, dtype=torch.float64),
        )
        torch.manual_seed(2)
        ref = torch.tensor(
            [v2.RandomResizedCrop.get_params(torch.empty(3, h, w), [0.08, 1.0], [3 / 4, 4 / 3]) for _ in range(n)],
            dtype=torch.float64,
        )
        assert bool(((top >= 0) & (left >= 0) & (top + ch <= h) & (left + cw <= w)).all())
        ours_area = (ch * cw).double() / (h * w)
        ref_area = ref[:, 2] * ref[:, 3] / (h * w)
        assert ks_statistic(ours_area, ref_area) < ks_bound(n, n)
        assert ks_statistic(cw.double() / ch.double(), ref[:, 3] / ref[:, 2]) < ks_bound(n, n)
        assert ks_statistic(top.double() / h, ref[:, 0] / h) < ks_bound(n, n)


def test_every_view_gets_its_own_draw():
    """The batched-v2 pitfall: 64 copies of one image must give 64 different views."""
    image = smooth_image(64, 64)
    aug = SimCLRAugmentation(32, 32)
    views = BatchedSimCLRAugmentation(aug)(SourceBatch.from_images([image] * 64), views_per_image=2)
    assert views.shape == (128, 3, 32, 32)
    flat = views.flatten(1)
    distinct = {tuple(row[:8].tolist()) for row in flat}
    assert len(distinct) == 128
    # the two views of one source differ too
    assert not torch.equal(views[0], views[64])


def test_probabilities_of_each_step():
    aug = SimCLRAugmentation(16, 16)
    n = 20000
    params = BatchedSimCLRAugmentation(aug).sample(torch.full((n,), 50), torch.full((n,), 60), torch.Generator().manual_seed(3))
    tolerance = 4 * math.sqrt(0.25 / n)
    assert abs(params.flip.double().mean() - 0.5) < tolerance
    assert abs(params.jitter.double().mean() - 0.8) < tolerance
    assert abs(params.grayscale.double().mean() - 0.2) < tolerance
    assert abs(params.blur.double().mean() - 0.5) < tolerance
    b, c, s, h = params.jitter_factors.unbind(1)
    assert float(b.min()) >= 0.2 and float(b.max()) <= 1.8
    assert float(h.min()) >= -0.2 and float(h.max()) <= 0.2
    assert abs(float(h.mean())) < 0.01
    assert float(params.blur_sigma.min()) >= 0.1 and float(params.blur_sigma.max()) <= 2.0
    # every one of the 24 orders of the four jitter operations appears, about equally often
    orders = torch.unique(params.jitter_order, dim=0, return_counts=True)[1]
    assert len(orders) == 24 and float(orders.min()) > n / 24 * 0.85


def test_view_statistics_match_the_per_view_pipeline():
    """Per-view brightness, contrast, colour and sharpness: KS test, batched vs torchvision.

    The reference runs torchvision on the float image: on uint8 it rounds (and truncates)
    after every colour step, which the batched float pipeline does on purpose not do.
    Statistics are compared at 1e-3 resolution (grey views are 0 up to float noise).
    """
    tint = torch.tensor([1.0, 0.55, 0.3])[:, None, None]  # a clear hue for the hue statistic
    image = (smooth_image(90, 70) * tint).round().to(torch.uint8)
    aug = SimCLRAugmentation(32, 32)
    n = 600
    torch.manual_seed(4)
    ours = BatchedSimCLRAugmentation(aug)(SourceBatch.from_images([image] * n), views_per_image=1)
    torch.manual_seed(5)
    theirs = torch.stack([aug(image.float() / 255) for _ in range(n)])

    def stats(views):
        gray = views.mean(1)
        return {
            "mean": views.mean((1, 2, 3)),
            "contrast": gray.std((1, 2)),
            "colour": (views - views.mean(1, keepdim=True)).abs().mean((1, 2, 3)),
            "red-blue": (views[:, 0] - views[:, 2]).mean((1, 2)),
            "sharpness": (views[..., 1:] - views[..., :-1]).abs().mean((1, 2, 3)),
            # mean hue angle of the view (opponent colour axes): spread by the hue jitter
            "hue": torch.atan2(
                (views[:, 1] - views[:, 2]).mean((1, 2)) * math.sqrt(3) / 2,
                (views[:, 0] - (views[:, 1] + views[:, 2]) / 2).mean((1, 2)),
            ),
        }

    a, b = stats(ours), stats(theirs)
    for name in a:
        rounded_a, rounded_b = (x.mul(1000).round() for x in (a[name], b[name]))
        assert ks_statistic(rounded_a, rounded_b) < ks_bound(n, n), name
    grey_ours = float((a["colour"] < 1e-6).double().mean())
    grey_theirs = float((b["colour"] < 1e-6).double().mean())
    assert abs(grey_ours - grey_theirs) < 0.06


def test_normalisation_matches_preprocessor_finish():
    from finetuner_selfsup.augment.preprocessor import IMAGENET_MEAN, IMAGENET_STD

    image = smooth_image(40, 40)
    aug = SimCLRAugmentation(
        24, 24, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), hflip_p=0.0,
        color_jitter_p=0.0, grayscale_p=0.0, blur_p=0.0,
    )
    batched = BatchedSimCLRAugmentation(aug)
    plain = batched(SourceBatch.from_images([image]), 1)[0]
    normalised = batched(SourceBatch.from_images([image]), 1, normalize=(IMAGENET_MEAN, IMAGENET_STD))[0]
    expected = (plain - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None]
    assert torch.allclose(normalised, expected, atol=1e-6)


def test_seeded_batches_repeat():
    image = smooth_image(50, 50)
    aug = BatchedSimCLRAugmentation(SimCLRAugmentation(24, 24))
    sources = SourceBatch.from_images([image] * 4)
    first = aug(sources, 2, torch.Generator().manual_seed(7))
    second = aug(sources, 2, torch.Generator().manual_seed(7))
    assert torch.equal(first, second)


def test_mixed_dtypes_in_one_batch_are_refused():
    with pytest.raises(ValueError, match="one dtype"):
        SourceBatch.from_images([smooth_image(8, 8), torch.rand(3, 8, 8)])


# ------------------------------------------- the CPU's fast paths give the general path's numbers


def test_view_by_view_jitter_in_place_equals_the_grouped_path():
    """The CPU's view-by-view jitter works in place on each view; the grouped path (GPU,
    small views) gathers views and builds new images. Same draws, same numbers."""
    g = torch.Generator().manual_seed(3)
    views = torch.rand((8, 3, 20, 24), generator=g)
    params = BatchedSimCLRAugmentation(SimCLRAugmentation(20, 24)).sample(
        torch.full((8,), 40), torch.full((8,), 40), g
    )
    apply = torch.tensor([True, False, True, True, False, True, True, True])
    grouped = B._color_jitter_grouped(views.clone(), apply, params.jitter_factors, params.jitter_order)
    in_place = B._color_jitter_view_by_view(views.clone(), apply, params.jitter_factors, params.jitter_order)
    assert torch.equal(in_place, grouped)
    assert torch.equal(in_place[~apply], views[~apply])
    assert not torch.equal(in_place[apply], views[apply])


def test_per_view_grayscale_in_place_equals_the_gathered_one():
    views = torch.rand((3, 3, 10, 12), generator=torch.Generator().manual_seed(0))
    expected = B._gray(views[1:2]).expand(-1, 3, -1, -1)
    B._gray_in_place(views[1])
    assert torch.equal(views[1:2], expected)


def test_cpu_normalisation_equals_one_broadcast_addcmul():
    """Per channel with scalar factors (the CPU's fast path) rounds like the broadcast
    ``addcmul`` it replaces: one fused multiply-add per value, bit for bit."""
    from finetuner_selfsup.augment.preprocessor import IMAGENET_MEAN, IMAGENET_STD

    views = torch.rand((5, 3, 33, 31), generator=torch.Generator().manual_seed(1))
    mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
    scale, shift = (1.0 / std).view(1, 3, 1, 1), (-mean / std).view(1, 3, 1, 1)
    out = torch.empty_like(views)
    B._normalise_into(out, views, scale.flatten().tolist(), list(shift.flatten().unbind()))
    assert torch.equal(out, torch.addcmul(shift, views, scale))
    stored = torch.empty_like(views)
    B._view_storer((IMAGENET_MEAN, IMAGENET_STD), torch.device("cpu"))(stored, views)
    assert torch.equal(stored, out)
    B._view_storer(None, torch.device("cpu"))(stored, views)
    assert torch.equal(stored, views)
