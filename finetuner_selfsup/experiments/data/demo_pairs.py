"""A small synthetic pair set shaped like Totally-Looks-Like, for the ``demo`` command.

TLL's pairs are two images of one "thing" in two very different styles. This generator
makes a miniature, deterministic version that trains in minutes on a laptop CPU: each pair
is one random scene (a striped or blotchy background plus 3-6 coloured shapes), drawn twice:

* ``left/NNNNN.jpg``: the scene in its own colours, with light sensor noise;
* ``right/NNNNN.jpg``: the same scene in another style: hue rotated by 40-72 degrees
  (either way), saturation cut to 25-75 %, brightness and contrast changed by up to
  +-30 %; zoomed by 0.8-1.2, shifted by up to 12 % of the side and mirrored in half of
  the pairs; stronger noise and sometimes a slight blur.

Every change from left to right lies inside the distribution of SimCLR's augmentations
(random resized crop, horizontal flip, colour jitter of strength 1: hue +-0.2 turn = 72
degrees, saturation, brightness and contrast factors in [0.2, 1.8], grayscale, blur). A
network trained to be invariant to those augmentations on the unlabelled pairs should
match a left image to its right partner by its shapes and texture, to which a randomly
initialised network is not invariant. Neither colour statistics nor pixel-wise comparison
solve the task (the shapes are recoloured, and moved or mirrored).

Checked once while designing it (one seed, so a rough guide only): ResNet-18 from scratch
at 64 px, a plain SimCLR loop with this package's augmentation and projection head (batch
64 images, temperature 0.1, Adam 1e-3, 20 epochs on the 420 pre-training pairs), retrieval
of the 120 evaluation pairs: hit@1/5/10 went from 0.12/0.19/0.30 (random init) to
0.23/0.45/0.58; colour histograms gave 0.01/0.14/0.28 and raw pixels 0.25/0.33/0.40.
With smaller geometric changes (zoom 0.85-1.1, shift 6 %, no mirror) raw pixels matched
97 % of the pairs: a task that does not need learning.
"""
from __future__ import annotations

import colorsys
import math
import os
from pathlib import Path
from typing import Any, Dict, Tuple, Union

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from . import pair_folders

DEMO_DESCRIPTION = (
    "The demo data is synthetic, generated on the spot by finetuner-selfsup "
    "(finetuner_selfsup.experiments.data.demo_pairs, from a fixed seed): no image comes from TLL or any "
    "other data set. Each pair is one random scene - a striped or blotchy background with 3 to "
    "6 coloured shapes (ellipses, rectangles, triangles, thick lines) - drawn twice. "
    "The left image shows the scene in its own colours; the right image shows the same scene "
    "restyled: hue rotated by 40 to 72 degrees, less saturated, brighter or darker and of "
    "different contrast, zoomed, shifted and in half of the pairs mirrored, with more noise "
    "and sometimes a slight blur. All of these changes are within what SimCLR's augmentations "
    "produce, so self-supervised pre-training on the unlabelled pairs is expected to help "
    "match left to right, which neither colours nor pixel-wise comparison do well. The task is "
    "far simpler than TLL, whose pairs are linked by human judgement, so results on it say "
    "nothing about TLL."
)

MANIFEST_NAME = "demo_pairs.json"
GENERATOR = "finetuner_selfsup.experiments.data.demo_pairs"
GENERATOR_VERSION = 1
_SUPERSAMPLE = 2  # shapes are drawn at twice the size and reduced: cheap anti-aliasing
_SHAPES = ("ellipse", "rectangle", "triangle", "line")
# Textured backgrounds and several small shapes give every part of a scene something to
# recognise, so that two random crops of one image (SimCLR's positives) still share content;
# with plain backgrounds and a few large shapes short pre-training helped less.
_BACKGROUNDS = ("stripes", "blobs")
_NUM_SHAPES = (3, 6)  # inclusive range
_SHAPE_SIZE = (0.08, 0.22)  # half-extent, fraction of the side
# The right image's geometry: zoom about the centre, shift per axis (fraction of the
# side), probability of a mirror image.
_ZOOM = (0.8, 1.2)
_SHIFT = 0.12
_FLIP_P = 0.5

# RGB <-> YIQ: hue rotation is a rotation of the (I, Q) chroma plane.
_RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ_TO_RGB = np.linalg.inv(_RGB_TO_YIQ)

Size = Union[int, Tuple[int, int]]
Scene = Dict[str, Any]
Transform = Tuple[float, float, float]  # zoom, shift x, shift y (fractions of the side)


# --------------------------------------------------------------------------- scenes


def _colour(rng: np.random.Generator, saturation: Tuple[float, float], value: Tuple[float, float]) -> np.ndarray:
    """A random RGB colour in [0, 1] with any hue and the given saturation/value ranges."""
    return np.array(colorsys.hsv_to_rgb(rng.random(), rng.uniform(*saturation), rng.uniform(*value)))


def _random_scene(rng: np.random.Generator) -> Scene:
    """Draw one scene: a background and 3-6 shapes, all in coordinates of the unit square."""
    background = {
        "kind": _BACKGROUNDS[rng.integers(len(_BACKGROUNDS))],
        "colours": [_colour(rng, (0.0, 0.5), (0.2, 0.9)) for _ in range(2)],
        "angle": rng.uniform(0, math.pi),
        "period": rng.uniform(0.15, 0.4),
        "phase": rng.random(),
        "grid": rng.uniform(0.1, 0.9, size=(4, 4, 3)),
    }
    shapes = []
    for _ in range(rng.integers(_NUM_SHAPES[0], _NUM_SHAPES[1] + 1)):
        shapes.append({
            "kind": _SHAPES[rng.integers(len(_SHAPES))],
            "centre": rng.uniform(0.2, 0.8, size=2),
            "size": rng.uniform(*_SHAPE_SIZE, size=2),  # half-extents
            "angle": rng.uniform(0, math.pi),
            "colour": _colour(rng, (0.6, 1.0), (0.5, 1.0)),
            "width": rng.uniform(0.04, 0.08),
        })
    return {"background": background, "shapes": shapes}


def _render_background(background: Dict[str, Any], width: int, height: int, transform: Transform) -> np.ndarray:
    """Background pixels (height, width, 3) in [0, 1], evaluated at the scene coordinates
    that ``transform`` maps onto each pixel (so zoom and shift apply to it as to shapes)."""
    zoom, dx, dy = transform
    u = ((np.arange(width) + 0.5) / width - 0.5 - dx) / zoom + 0.5  # scene x of each column
    v = ((np.arange(height) + 0.5) / height - 0.5 - dy) / zoom + 0.5  # scene y of each row
    if background["kind"] == "blobs":
        return _bilinear(background["grid"], u, v)
    # soft stripes between two colours
    angle = background["angle"]
    along = (u[None, :] - 0.5) * math.cos(angle) + (v[:, None] - 0.5) * math.sin(angle)
    t = (0.5 + 0.5 * np.sin(2 * math.pi * (along / background["period"] + background["phase"])))[..., None]
    c0, c1 = background["colours"]
    return c0 * (1 - t) + c1 * t


def _interpolation_weights(coords: np.ndarray, k: int) -> np.ndarray:
    """(len(coords), k) linear-interpolation weights of ``k`` knots spread over [0, 1]
    (coordinates outside are clamped)."""
    x = np.clip(coords * (k - 1), 0, k - 1)
    lower = np.minimum(x.astype(int), k - 2)
    frac = x - lower
    weights = np.zeros((len(coords), k))
    rows = np.arange(len(coords))
    weights[rows, lower] = 1 - frac
    weights[rows, lower + 1] = frac
    return weights


def _bilinear(grid: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Colours of a coarse ``(k, k, 3)`` grid spread over the unit square, interpolated
    bilinearly at columns ``u`` and rows ``v``: smooth blobs. Bilinear interpolation on a
    grid is separable, so it is two small matrix products."""
    k = grid.shape[0]
    rows = np.tensordot(_interpolation_weights(v, k), grid, axes=1)  # (height, k, 3)
    return np.matmul(_interpolation_weights(u, k), rows)  # (width, k) @ (height, k, 3) -> (height, width, 3)


def _outline(shape: Dict[str, Any]) -> np.ndarray:
    """Vertices (k, 2) of a shape in scene coordinates (lines: its two end points)."""
    kind = shape["kind"]
    sx, sy = shape["size"]
    if kind == "ellipse":
        angles = np.linspace(0, 2 * math.pi, 32, endpoint=False)
        points = np.stack([sx * np.cos(angles), sy * np.sin(angles)], axis=1)
    elif kind == "rectangle":
        points = np.array([[-sx, -sy], [sx, -sy], [sx, sy], [-sx, sy]])
    elif kind == "triangle":
        points = np.array([[0.0, -sy], [sx, sy], [-sx, sy]])
    else:
        points = np.array([[-sx - sy, 0.0], [sx + sy, 0.0]])
    cos, sin = math.cos(shape["angle"]), math.sin(shape["angle"])
    rotated = points @ np.array([[cos, sin], [-sin, cos]])
    return rotated + shape["centre"]


def _render(scene: Scene, width: int, height: int, transform: Transform) -> np.ndarray:
    """Scene pixels (height, width, 3) as floats in [0, 1] under ``transform``."""
    zoom, dx, dy = transform
    big_w, big_h = width * _SUPERSAMPLE, height * _SUPERSAMPLE
    background = _render_background(scene["background"], big_w, big_h, transform)
    image = Image.fromarray((background * 255 + 0.5).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    scale = np.array([big_w, big_h])
    for shape in scene["shapes"]:
        points = ((_outline(shape) - 0.5) * zoom + 0.5 + (dx, dy)) * scale
        fill = tuple(int(c * 255 + 0.5) for c in shape["colour"])
        xy = [tuple(point) for point in points.tolist()]
        if shape["kind"] == "line":
            draw.line(xy, fill=fill, width=max(1, int(shape["width"] * zoom * big_w)))
        else:
            draw.polygon(xy, fill=fill)
    return np.asarray(image.reduce(_SUPERSAMPLE), dtype=np.float32) / 255.0


# --------------------------------------------------------------------------- styles


def _restyle(pixels: np.ndarray, hue: float, saturation: float, brightness: float, contrast: float) -> np.ndarray:
    """Rotate hue by ``hue`` radians, scale saturation, then brightness and contrast."""
    cos, sin = math.cos(hue), math.sin(hue)
    rotate = np.array([[1, 0, 0], [0, cos, -sin], [0, sin, cos]]) @ np.diag([1, saturation, saturation])
    matrix = _YIQ_TO_RGB @ rotate @ _RGB_TO_YIQ
    out = pixels @ matrix.T.astype(np.float32) * brightness
    grey_mean = float((out @ _RGB_TO_YIQ[0].astype(np.float32)).mean())
    return (out - grey_mean) * contrast + grey_mean


def _finish(pixels: np.ndarray, rng: np.random.Generator, noise: float, blur: float) -> Image.Image:
    """Add Gaussian noise of std ``noise`` (in 0-255 units), clip, optionally blur."""
    noisy = pixels * 255.0 + rng.normal(0.0, noise, size=pixels.shape)
    image = Image.fromarray(np.clip(noisy + 0.5, 0, 255).astype(np.uint8))
    return image.filter(ImageFilter.GaussianBlur(blur)) if blur > 0 else image


def render_pair(index: int, image_size: Size = (64, 64), seed: int = 0) -> Tuple[Image.Image, Image.Image]:
    """Render pair ``index`` as (left, right) PIL images of ``image_size`` (width, height).

    Each pair has its own random stream seeded by ``(seed, index)``, so a pair does not
    depend on how many pairs are generated.
    """
    width, height = _size(image_size)
    rng = np.random.default_rng([seed, index])
    scene = _random_scene(rng)
    left = _finish(_render(scene, width, height, (1.0, 0.0, 0.0)), rng, rng.uniform(2, 5), 0.0)

    transform = (rng.uniform(*_ZOOM), rng.uniform(-_SHIFT, _SHIFT), rng.uniform(-_SHIFT, _SHIFT))
    geometry = _render(scene, width, height, transform)
    if rng.random() < _FLIP_P:
        geometry = geometry[:, ::-1]
    hue = math.radians(rng.uniform(40, 72)) * rng.choice((-1, 1))
    restyled = _restyle(
        geometry,
        hue=hue,
        saturation=rng.uniform(0.25, 0.75),
        brightness=rng.uniform(0.7, 1.3),
        contrast=rng.uniform(0.7, 1.3),
    )
    blur = rng.uniform(0.3, 0.8) if rng.random() < 0.5 else 0.0
    right = _finish(restyled, rng, rng.uniform(4, 10), blur)
    return left, right


# --------------------------------------------------------------------------- files


def _size(image_size: Size) -> Tuple[int, int]:
    """(width, height) from an int or a pair; both at least 8 pixels."""
    width, height = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if width < 8 or height < 8:
        raise ValueError(f"image_size must be at least 8 x 8, got {image_size}")
    return int(width), int(height)


def _manifest(num_pairs: int, image_size: Size, seed: int) -> Dict[str, Any]:
    """The parameters that identify one generated set."""
    return {
        "generator": GENERATOR,
        "version": GENERATOR_VERSION,
        "num_pairs": num_pairs,
        "image_size": list(_size(image_size)),
        "seed": seed,
    }


def make_demo_pairs(root: Union[str, "os.PathLike[str]"], num_pairs: int = 600, image_size: Size = (64, 64),
                    seed: int = 0) -> Path:
    """Write ``num_pairs`` synthetic pairs as ``root/left/NNNNN.jpg`` and ``root/right/NNNNN.jpg``.

    Deterministic for given arguments (same pixels, same JPEG bytes with the same Pillow).
    Idempotent: when ``root`` already holds a complete set made with the same parameters
    (recorded in ``root/demo_pairs.json``), nothing is written. Returns ``root`` as a
    ``Path``. See :data:`DEMO_DESCRIPTION` and :func:`render_pair` for the content.
    """
    if num_pairs < 1:
        raise ValueError(f"num_pairs must be positive, got {num_pairs}")
    root = Path(root)
    manifest = _manifest(num_pairs, image_size, seed)
    names = pair_folders.file_names(num_pairs)
    if pair_folders.is_complete(root, MANIFEST_NAME, manifest, names):
        return root
    with pair_folders.writing(root, MANIFEST_NAME, GENERATOR, manifest):
        for index, name in enumerate(names):
            left, right = render_pair(index, image_size, seed)
            left.save(root / "left" / name, quality=92)
            right.save(root / "right" / name, quality=92)
    return root
