"""A real cross-style pair set from registry material: one character in two typefaces.

TLL pairs two images of one "thing" drawn in two very different styles. Here the thing is a
Unicode character and the styles are two typefaces that matplotlib's wheel (PyPI) ships in
``matplotlib/mpl-data/fonts/ttf``:

* ``left/NNNNN.jpg``: the character in **DejaVu Sans** (upright, sans-serif, even strokes);
* ``right/NNNNN.jpg``: the same character in **STIX General Italic** (slanted serif italic
  with contrasting strokes; many italic letter forms differ in shape, e.g. a, f, g, v).

The characters are every letter, number, punctuation mark and symbol both fonts map
(779 with matplotlib 3.11: Latin with diacritics, Greek, Cyrillic, arrows, mathematical
operators ...), shuffled with a fixed seed so that the tutorial's sorted 70/10/20 splits mix
all scripts. Near-duplicates (``a``, ``à``, ``á`` ...) make hard negatives, as in TLL.

Only the drawing is ours: each glyph is rendered black on white with Pillow at one font size,
centred by its ink. The glyph designs are the typographers': DejaVu fonts are under the
Bitstream Vera / Arev licence (free to use and redistribute), the STIX fonts under the STIX
Font License / SIL Open Font License 1.1; matplotlib ships both licences next to the fonts
(``LICENSE_DEJAVU``, ``LICENSE_STIX``) and this generator copies them into the data folder.
"""
from __future__ import annotations

import os
import random
import shutil
import unicodedata
from pathlib import Path
from typing import Any, Dict, List, Tuple, Union

from PIL import Image, ImageDraw, ImageFont

from . import pair_folders

MANIFEST_NAME = "font_pairs.json"
GENERATOR = "finetuner_selfsup.experiments.data.font_pairs"
GENERATOR_VERSION = 1
LEFT_FONT = "DejaVuSans.ttf"
RIGHT_FONT = "STIXGeneralItalic.ttf"
LICENCE_FILES = ("LICENSE_DEJAVU", "LICENSE_STIX")
#: Unicode major categories kept: letters, numbers, punctuation, symbols (no spaces,
#: controls, or combining marks, which draw nothing or nothing alone)
_KEPT_CATEGORIES = frozenset("LNPS")
_FILL = 0.72  # font size as a fraction of the image side
_MARGIN = 0.06  # glyphs larger than the image minus this margin are scaled down

FONT_DESCRIPTION = (
    "The font pairs are a real cross-style pair set built from registry material: each pair "
    "is one Unicode character drawn in two typefaces that matplotlib's wheel ships - DejaVu "
    "Sans on the left, STIX General Italic on the right (Bitstream Vera/Arev and STIX/SIL OFL "
    "licences, copied into the data folder). Only the rendering (black on white, centred) "
    "is done by finetuner-selfsup."
)


def font_folder() -> Path:
    """matplotlib's bundled TrueType folder (``pip install matplotlib`` provides it)."""
    try:
        import matplotlib
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RuntimeError(
            "the font pair set is drawn from the fonts in matplotlib's wheel; install it with "
            "`pip install matplotlib` (or `pip install finetuner-selfsup[test]`)."
        ) from exc
    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    missing = [name for name in (LEFT_FONT, RIGHT_FONT) if not (folder / name).is_file()]
    if missing:
        raise RuntimeError(f"{folder} lacks {', '.join(missing)}; reinstall matplotlib.")
    return folder


def shared_characters(folder: Path) -> List[str]:
    """Characters both fonts map, letters/numbers/punctuation/symbols only, by code point."""
    from fontTools.ttLib import TTFont

    left = set(TTFont(folder / LEFT_FONT).getBestCmap())
    right = set(TTFont(folder / RIGHT_FONT).getBestCmap())
    return [
        chr(code) for code in sorted(left & right)
        if unicodedata.category(chr(code))[0] in _KEPT_CATEGORIES
    ]


def render_glyph(character: str, font_path: Path, side: int) -> Image.Image:
    """``character`` black on white in an RGB ``side`` x ``side`` image, centred by its ink.

    One font size for all characters (so a comma stays small), reduced only for glyphs that
    would not fit.
    """
    size = max(4, round(side * _FILL))
    font = ImageFont.truetype(str(font_path), size)
    left, top, right, bottom = font.getbbox(character)
    room = side * (1 - 2 * _MARGIN)
    largest = max(right - left, bottom - top, 1)
    if largest > room:
        font = ImageFont.truetype(str(font_path), max(4, int(size * room / largest)))
        left, top, right, bottom = font.getbbox(character)
    image = Image.new("RGB", (side, side), "white")
    origin = ((side - (right - left)) / 2 - left, (side - (bottom - top)) / 2 - top)
    ImageDraw.Draw(image).text(origin, character, font=font, fill="black")
    return image


def _has_ink(image: Image.Image) -> bool:
    return image.convert("L").getextrema()[0] < 128


def _manifest(num_pairs: int, image_size: int, seed: int) -> Dict[str, Any]:
    import matplotlib

    return {
        "generator": GENERATOR,
        "version": GENERATOR_VERSION,
        "num_pairs": num_pairs,
        "image_size": image_size,
        "seed": seed,
        "left_font": LEFT_FONT,
        "right_font": RIGHT_FONT,
        "matplotlib": matplotlib.__version__,
    }


def choose_characters(num_pairs: int, seed: int, image_size: int) -> Tuple[Path, List[str]]:
    """The font folder and ``num_pairs`` characters (seeded shuffle) that draw ink in both fonts."""
    folder = font_folder()
    candidates = [
        ch for ch in shared_characters(folder)
        if _has_ink(render_glyph(ch, folder / LEFT_FONT, image_size))
        and _has_ink(render_glyph(ch, folder / RIGHT_FONT, image_size))
    ]
    if num_pairs > len(candidates):
        raise ValueError(
            f"the fonts share {len(candidates)} drawable characters; num_pairs={num_pairs} is "
            f"too many (use at most {len(candidates)})."
        )
    random.Random(seed).shuffle(candidates)
    return folder, candidates[:num_pairs]


def make_font_pairs(root: Union[str, "os.PathLike[str]"], num_pairs: int = 600, image_size: int = 96,
                    seed: int = 0) -> Path:
    """Write ``num_pairs`` font pairs as ``root/left/NNNNN.jpg`` and ``root/right/NNNNN.jpg``.

    Deterministic for given arguments and matplotlib version; idempotent (a complete set
    with the same parameters, recorded in ``root/font_pairs.json``, is kept). Also writes
    ``root/characters.tsv`` (file name, code point, character name) and the two font
    licences. See the module docstring for the source of the glyphs.
    """
    if num_pairs < 1:
        raise ValueError(f"num_pairs must be positive, got {num_pairs}")
    if image_size < 16:
        raise ValueError(f"image_size must be at least 16, got {image_size}")
    root = Path(root)
    manifest = _manifest(num_pairs, image_size, seed)
    names = pair_folders.file_names(num_pairs)
    if pair_folders.is_complete(root, MANIFEST_NAME, manifest, names):
        return root
    folder, characters = choose_characters(num_pairs, seed, image_size)
    with pair_folders.writing(root, MANIFEST_NAME, GENERATOR, manifest):
        rows = ["file\tcode_point\tname"]
        for name, character in zip(names, characters):
            render_glyph(character, folder / LEFT_FONT, image_size).save(root / "left" / name, quality=95)
            render_glyph(character, folder / RIGHT_FONT, image_size).save(root / "right" / name, quality=95)
            rows.append(f"{name}\tU+{ord(character):04X}\t{unicodedata.name(character, '?')}")
        (root / "characters.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
        for licence in LICENCE_FILES:
            if (folder / licence).is_file():
                shutil.copyfile(folder / licence, root / licence)
    return root
