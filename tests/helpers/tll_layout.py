"""Generate a small folder shaped like Totally-Looks-Like: ``left/NNNNN.jpg`` and
``right/NNNNN.jpg``, JPEGs of TLL's size (200 x 245), paired by file name."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

TLL_SIZE = (200, 245)  # width, height


def make_tll_folder(root: Path, num_pairs: int, size=TLL_SIZE, seed: int = 0) -> Path:
    """Write ``num_pairs`` image pairs under ``root`` and return ``root``.

    The two images of a pair share a random colour layout (so a pair has something in
    common) but differ in noise and brightness (so they are not identical).
    """
    rng = np.random.default_rng(seed)
    width, height = size
    for side in ("left", "right"):
        (root / side).mkdir(parents=True, exist_ok=True)
    for index in range(num_pairs):
        coarse = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
        base = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BILINEAR), dtype=np.float32)
        for side, gain in (("left", 1.0), ("right", 0.8)):
            noise = rng.normal(0, 20, size=base.shape)
            pixels = np.clip(base * gain + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / side / f"{index:05d}.jpg", quality=90)
    return root
