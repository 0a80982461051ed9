"""The font pair set: one character in DejaVu Sans and STIX General Italic, TLL layout."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("matplotlib", reason="the font pair set needs matplotlib's fonts")

from finetuner_selfsup.experiments.data import load_tll, split_self_supervised  # noqa: E402
from finetuner_selfsup.experiments.data.font_pairs import (  # noqa: E402
    LEFT_FONT,
    RIGHT_FONT,
    font_folder,
    make_font_pairs,
    render_glyph,
    shared_characters,
)


@pytest.fixture(scope="module")
def fonts(tmp_path_factory):
    return make_font_pairs(tmp_path_factory.mktemp("fonts"), num_pairs=40, image_size=48, seed=0)


def _ink(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("L")) < 128


def test_layout_is_tll_and_loads_as_pairs(fonts):
    pairs = load_tll(fonts)
    assert len(pairs.left) == len(pairs.right) == 40
    split = split_self_supervised(pairs, 0.7, 0.1)
    assert len(split.pretrain) == 56 and len(split.finetune) == 8 and len(split.eval_left) == 8
    with Image.open(fonts / "left" / "00000.jpg") as image:
        assert image.size == (48, 48) and image.mode == "RGB"


def test_each_pair_is_one_character_in_the_two_fonts(fonts):
    rows = (fonts / "characters.tsv").read_text(encoding="utf-8").splitlines()
    assert rows[0] == "file\tcode_point\tname" and len(rows) == 41
    name, code_point, _ = rows[1].split("\t")
    character = chr(int(code_point[2:], 16))
    folder = font_folder()
    for side, font in (("left", LEFT_FONT), ("right", RIGHT_FONT)):
        expected = np.asarray(render_glyph(character, folder / font, 48).convert("L")) < 128
        saved = _ink(fonts / side / name)
        assert (expected == saved).mean() > 0.97  # JPEG at quality 95
    # the two styles differ: a sans glyph is not its italic serif partner
    assert (_ink(fonts / "left" / name) != _ink(fonts / "right" / name)).sum() > 10
    # every image has ink, characters are distinct
    assert len({row.split("\t")[1] for row in rows[1:]}) == 40
    for side in ("left", "right"):
        assert all(_ink(path).any() for path in (fonts / side).glob("*.jpg"))


def test_source_and_licences_are_recorded(fonts):
    manifest = json.loads((fonts / "font_pairs.json").read_text())
    assert manifest["complete"] and manifest["left_font"] == LEFT_FONT and manifest["right_font"] == RIGHT_FONT
    assert "Bitstream" in (fonts / "LICENSE_DEJAVU").read_text()
    assert "STIX" in (fonts / "LICENSE_STIX").read_text()


def test_deterministic_and_idempotent(fonts, tmp_path):
    again = make_font_pairs(tmp_path, num_pairs=40, image_size=48, seed=0)
    for side in ("left", "right"):
        for path in (fonts / side).glob("*.jpg"):
            assert path.read_bytes() == (again / side / path.name).read_bytes()
    stamp = (again / "left" / "00000.jpg").stat().st_mtime_ns
    make_font_pairs(tmp_path, num_pairs=40, image_size=48, seed=0)
    assert (again / "left" / "00000.jpg").stat().st_mtime_ns == stamp
    other = make_font_pairs(tmp_path / "other", num_pairs=40, image_size=48, seed=1)
    assert (other / "characters.tsv").read_text() != (fonts / "characters.tsv").read_text()


def test_characters_are_drawable_letters_numbers_punctuation_symbols():
    characters = shared_characters(font_folder())
    assert len(characters) > 500
    assert "a" in characters and "Ω" in characters and " " not in characters


def test_bad_arguments_and_foreign_folders_are_refused(tmp_path):
    with pytest.raises(ValueError, match="too many"):
        make_font_pairs(tmp_path / "a", num_pairs=100_000)
    (tmp_path / "tll" / "left").mkdir(parents=True)
    (tmp_path / "tll" / "left" / "00001.jpg").write_bytes(b"not ours")
    with pytest.raises(FileExistsError, match="refusing"):
        make_font_pairs(tmp_path / "tll", num_pairs=5, image_size=32)
    assert (tmp_path / "tll" / "left" / "00001.jpg").read_bytes() == b"not ours"
