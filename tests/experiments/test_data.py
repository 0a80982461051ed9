"""finetuner_selfsup.experiments.data: finding, unpacking, loading and splitting TLL, and the demo pairs."""
from __future__ import annotations

import hashlib
import logging
import stat
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from finetuner_selfsup.experiments.data import (
    DEMO_DESCRIPTION,
    UnsafeArchiveError,
    extract_tll_zips,
    load_tll,
    locate_tll,
    make_demo_pairs,
    split_self_supervised,
    split_self_supervised_with_chosen_labels,
    split_supervised,
)
from finetuner_selfsup.experiments.data.demo_pairs import MANIFEST_NAME

LABEL = "finetuner_label"


def make_layout(root: Path, left_names, right_names=None) -> Path:
    """Empty files named like TLL (loading never reads them)."""
    right_names = left_names if right_names is None else right_names
    for side, names in (("left", left_names), ("right", right_names)):
        (root / side).mkdir(parents=True, exist_ok=True)
        for name in names:
            (root / side / name).touch()
    return root


def names(n: int):
    return [f"{i:05d}.jpg" for i in range(n)]


def write_zip(path: Path, members: dict, symlinks: dict = None) -> None:
    """Zip with regular ``members`` (name -> bytes) and symlink members (name -> target)."""
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, target)


# --------------------------------------------------------------------------- locate / unpack


def test_locate_accepts_folder_and_unambiguous_parent(tmp_path):
    tll = make_layout(tmp_path / "tll", names(3))
    assert locate_tll(tll) == tll.resolve()
    assert locate_tll(tmp_path) == tll.resolve()
    make_layout(tmp_path / "other", names(3))
    with pytest.raises(ValueError, match="several"):
        locate_tll(tmp_path)


def test_locate_explains_expected_layout_and_download(tmp_path):
    (tmp_path / "left").mkdir()
    with pytest.raises(FileNotFoundError) as error:
        locate_tll(tmp_path)
    message = str(error.value)
    assert "left.zip" in message and "right/" in message and "gdown" in message
    assert "1jvkbTr_giSP3Ru8OwGNCg6B4PvVbcO34" in message


def test_zips_are_unpacked_once_skipping_junk(tmp_path, caplog):
    write_zip(tmp_path / "left.zip", {
        "left/00000.jpg": b"a", "left/00001.JPG": b"b",
        "__MACOSX/left/._00000.jpg": b"junk", "left/.DS_Store": b"junk", "left/notes.txt": b"x",
    })
    write_zip(tmp_path / "right.zip", {"TLL/right/00000.jpg": b"c", "00001.JPG": b"d"})
    with caplog.at_level(logging.WARNING):
        folder = locate_tll(tmp_path)
    assert folder == tmp_path.resolve()
    assert sorted(p.name for p in (tmp_path / "left").iterdir()) == ["00000.jpg", "00001.JPG"]
    assert sorted(p.name for p in (tmp_path / "right").iterdir()) == ["00000.jpg", "00001.JPG"]
    assert (tmp_path / "right" / "00001.JPG").read_bytes() == b"d"
    assert "ignored 3 zip members" in caplog.text
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging left

    mtime = (tmp_path / "left" / "00000.jpg").stat().st_mtime_ns
    report = extract_tll_zips(tmp_path)  # already unpacked: nothing happens
    assert report.extracted == {} and (tmp_path / "left" / "00000.jpg").stat().st_mtime_ns == mtime
    assert len(load_tll(tmp_path)) == 2


@pytest.mark.parametrize("member", ["/abs/left/00000.jpg", "left/../../00000.jpg", "..\\evil.jpg", "C:/x.jpg"])
def test_unsafe_member_paths_are_rejected(tmp_path, member):
    write_zip(tmp_path / "left.zip", {"left/00000.jpg": b"a", member: b"evil"})
    write_zip(tmp_path / "right.zip", {"right/00000.jpg": b"a"})
    with pytest.raises(UnsafeArchiveError) as error:
        locate_tll(tmp_path)
    assert repr(member) in str(error.value)
    assert not (tmp_path / "left").exists()


def test_escaping_symlink_rejected_inner_symlink_ignored(tmp_path):
    write_zip(tmp_path / "right.zip", {"right/00000.jpg": b"a"})
    write_zip(tmp_path / "left.zip", {"left/00000.jpg": b"a"}, symlinks={"left/link.jpg": "../../etc/passwd"})
    with pytest.raises(UnsafeArchiveError, match="left/link.jpg"):
        locate_tll(tmp_path)
    write_zip(tmp_path / "left.zip", {"left/00000.jpg": b"a"}, symlinks={"left/link.jpg": "00000.jpg"})
    report = extract_tll_zips(tmp_path)
    assert report.ignored == ["left.zip:left/link.jpg"]
    assert not (tmp_path / "left" / "link.jpg").exists()


@pytest.mark.parametrize("damage", ["truncated", "web page"])
def test_a_broken_zip_is_named_with_what_to_do(tmp_path, damage):
    write_zip(tmp_path / "left.zip", {"left/00000.jpg": b"a"})
    write_zip(tmp_path / "right.zip", {"right/00000.jpg": b"a" * 1000})
    data = (tmp_path / "right.zip").read_bytes()
    broken = data[: len(data) // 2] if damage == "truncated" else b"<html>Google Drive</html>"
    (tmp_path / "right.zip").write_bytes(broken)
    with pytest.raises(ValueError, match=r"right\.zip is not a complete zip file.*Delete it and download it again"):
        locate_tll(tmp_path)
    assert not (tmp_path / "left").exists() and not (tmp_path / "right").exists()


def test_zips_without_images_leave_no_folders_that_would_block_a_retry(tmp_path):
    write_zip(tmp_path / "left.zip", {"left/notes.txt": b"x"})
    write_zip(tmp_path / "right.zip", {"right/00000.jpg": b"a"})
    with pytest.raises(ValueError, match=r"left\.zip in .* held no images.*left\.zip:left/notes\.txt"):
        locate_tll(tmp_path)
    assert not (tmp_path / "left").exists() and not (tmp_path / "right").exists()
    write_zip(tmp_path / "left.zip", {"left/00000.jpg": b"a"})  # the right data: now it unpacks
    assert len(load_tll(tmp_path)) == 1


def test_errors_name_ignored_entries_that_explain_them(tmp_path):
    # images one level too deep (unzip left.zip -d left) and a broken link as a partner
    (tmp_path / "deep" / "left" / "left").mkdir(parents=True)
    (tmp_path / "deep" / "right" / "right").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"left/left \(a folder\)"):
        load_tll(tmp_path / "deep")
    make_layout(tmp_path / "link", names(2), names(3))
    (tmp_path / "link" / "left" / "00002.jpg").symlink_to(tmp_path / "gone.jpg")
    with pytest.raises(ValueError, match=r"right/00002\.jpg[\s\S]*left/00002\.jpg \(a broken link\)"):
        load_tll(tmp_path / "link")


# --------------------------------------------------------------------------- load


def test_load_sorted_lazy_absolute_uris(tmp_path, monkeypatch):
    make_layout(tmp_path, ["00002.jpg", "00000.jpg", "00001.PNG"], ["00001.PNG", "00002.jpg", "00000.jpg"])
    (tmp_path / "left" / "readme.txt").touch()
    monkeypatch.chdir(tmp_path)
    pairs = load_tll(".")
    assert pairs.names == ["00000.jpg", "00001.PNG", "00002.jpg"]
    assert [Path(d.uri).name for d in pairs.right] == pairs.names
    assert all(Path(d.uri).is_absolute() and d.tensor is None and not d.tags for d in pairs.left)
    assert pairs.root == tmp_path.resolve() and pairs.ignored == ["left/readme.txt"] and pairs.unpaired == []


def test_unpaired_images_raise_or_are_dropped_loudly(tmp_path, caplog):
    make_layout(tmp_path, names(30), names(3) + ["99999.jpg"])
    with pytest.raises(ValueError) as error:
        load_tll(tmp_path)
    message = str(error.value)
    assert "27 left images have no right partner" in message and "and 7 more" in message
    assert "right/99999.jpg" in message and "check_pairs=False" in message

    with caplog.at_level(logging.WARNING):
        pairs = load_tll(tmp_path, check_pairs=False)
    assert len(pairs) == 3 and len(pairs.unpaired) == 28
    assert "right/99999.jpg" in pairs.unpaired and "left/00029.jpg" in caplog.text


# --------------------------------------------------------------------------- splits


@pytest.fixture(scope="module")
def tll_pairs(tmp_path_factory):
    return load_tll(make_layout(tmp_path_factory.mktemp("tll"), names(6016)))


def test_self_supervised_split_sizes_and_labels(tll_pairs):
    split = split_self_supervised(tll_pairs)
    assert len(split.pretrain) == 2 * 4211 and len(split.finetune) == 2 * 601
    assert len(split.eval_left) == len(split.eval_right) == 1204
    assert all(LABEL not in d.tags for d in split.pretrain)
    assert [Path(d.uri).name for d in split.pretrain[:4211]] == tll_pairs.names[:4211]
    labels = [d.tags[LABEL] for d in split.finetune]
    assert labels[:601] == labels[601:] == tll_pairs.names[4211:4812]
    assert [d.tags[LABEL] for d in split.eval_right] == tll_pairs.names[4812:]
    assert [Path(d.uri).parent.name for d in split.eval_left] == ["left"] * 1204


def test_supervised_split_sizes_and_labels(tll_pairs):
    split = split_supervised(tll_pairs)
    assert len(split.train) == 2 * 4812 and len(split.eval_left) == len(split.eval_right) == 1204
    assert [d.tags[LABEL] for d in split.train] == tll_pairs.names[:4812] * 2


def test_chosen_labelled_pairs_replace_the_cut_and_the_rest_stay_unlabelled(tll_pairs):
    chosen = list(range(0, 4812, 8))[:601]  # 601 positions spread over the first 80 %
    split = split_self_supervised_with_chosen_labels(tll_pairs, chosen)
    names = tll_pairs.names
    assert [d.tags[LABEL] for d in split.finetune] == [names[i] for i in chosen] * 2
    assert [Path(d.uri).parent.name for d in split.finetune] == ["left"] * 601 + ["right"] * 601
    rest = [names[i] for i in range(4812) if i not in set(chosen)]
    assert [Path(d.uri).name for d in split.pretrain] == rest * 2 and len(rest) == 4211
    assert all(LABEL not in d.tags for d in split.pretrain)
    cut = split_self_supervised(tll_pairs)
    assert [d.uri for d in split.eval_left] == [d.uri for d in cut.eval_left]
    assert [d.uri for d in split.eval_right] == [d.uri for d in cut.eval_right]
    # the tutorial's own positions give the tutorial's split
    same = split_self_supervised_with_chosen_labels(tll_pairs, range(4211, 4812))
    assert [d.uri for d in same.finetune] == [d.uri for d in cut.finetune]
    assert [d.uri for d in same.pretrain] == [d.uri for d in cut.pretrain]


@pytest.mark.parametrize("chosen", [list(range(600)), [0] * 601, list(range(4212, 4813))])
def test_chosen_labelled_pairs_must_be_the_right_number_of_distinct_positions(tll_pairs, chosen):
    with pytest.raises(ValueError, match="601 distinct positions among the first 4812 pairs"):
        split_self_supervised_with_chosen_labels(tll_pairs, chosen)


def test_splits_copy_documents(tll_pairs):
    split = split_self_supervised(tll_pairs)
    original = tll_pairs.left[4211]
    copy = split.finetune[0]
    assert copy is not original and copy.uri == original.uri and not original.tags
    copy.tags["x"] = 1
    assert "x" not in original.tags
    assert not any(d.tags for d in tll_pairs.left) and not any(d.tags for d in tll_pairs.right)


def test_cut_points_match_tutorial_arithmetic(tmp_path):
    pairs = load_tll(make_layout(tmp_path, names(10)))
    split = split_self_supervised(pairs)  # int(0.7 * 10) = 7, int(0.8 * 10) = 8 (not 7.999...)
    assert (len(split.pretrain), len(split.finetune), len(split.eval_left)) == (14, 2, 2)
    with pytest.raises(ValueError):
        split_self_supervised(pairs, 0.8, 0.3)


# --------------------------------------------------------------------------- demo pairs


def digest(root: Path) -> str:
    files = sorted(p for p in root.rglob("*.jpg"))
    return hashlib.sha256(b"".join(p.relative_to(root).as_posix().encode() + p.read_bytes() for p in files)).hexdigest()


def test_demo_pairs_layout_deterministic_and_loadable(tmp_path):
    a = make_demo_pairs(tmp_path / "a", num_pairs=20, image_size=(48, 40), seed=3)
    b = make_demo_pairs(tmp_path / "b", num_pairs=20, image_size=(48, 40), seed=3)
    assert a == tmp_path / "a"
    assert sorted(p.name for p in (a / "left").iterdir()) == names(20)
    assert sorted(p.name for p in (a / "right").iterdir()) == names(20)
    assert digest(a) == digest(b)
    assert digest(make_demo_pairs(tmp_path / "c", num_pairs=20, image_size=(48, 40), seed=4)) != digest(a)

    with Image.open(a / "left" / "00000.jpg") as image:
        assert image.size == (48, 40) and image.mode == "RGB"
    for name in names(20):
        left = np.asarray(Image.open(a / "left" / name), dtype=np.float32)
        right = np.asarray(Image.open(a / "right" / name), dtype=np.float32)
        assert np.abs(left - right).mean() > 10  # a visible change of style, not just noise

    pairs = load_tll(a)
    split = split_self_supervised(pairs)
    assert len(pairs) == 20 and (len(split.pretrain), len(split.finetune), len(split.eval_left)) == (28, 4, 4)
    assert "synthetic" in DEMO_DESCRIPTION


def test_demo_pairs_idempotent_and_regenerated_on_change(tmp_path):
    root = make_demo_pairs(tmp_path, num_pairs=6)
    mtimes = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    make_demo_pairs(tmp_path, num_pairs=6)
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == mtimes

    make_demo_pairs(root, num_pairs=4, seed=1)  # other parameters: replaced, no stale pairs
    assert sorted(p.name for p in (root / "right").iterdir()) == names(4)
    assert '"seed": 1' in (root / MANIFEST_NAME).read_text()


def test_demo_pairs_refuse_foreign_folder(tmp_path):
    make_layout(tmp_path, names(2))
    with pytest.raises(FileExistsError, match="refusing"):
        make_demo_pairs(tmp_path, num_pairs=2)
    assert all(p.stat().st_size == 0 for p in tmp_path.rglob("*.jpg"))
