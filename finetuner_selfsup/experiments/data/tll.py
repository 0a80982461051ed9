"""Find, unpack, load and split the Totally-Looks-Like (TLL) data set.

TLL is 6016 pairs of images that people found to look alike: ``left/NNNNN.jpg`` and
``right/NNNNN.jpg`` with the same file name form a pair. It is distributed as ``left.zip``
and ``right.zip``. This module turns a folder holding either the two folders or the two
zips into docarray ``DocumentArray`` objects, sorted by file name as the tutorial sorts them
by uri, and cuts them into the tutorial's splits by pair position, so pairs never straddle
two splits.

Documents are created without loading pixels (like ``DocumentArray.from_files``): their
``uri`` is the absolute path of the image. Labels are always the file name
(``Path(uri).name``), never derived from how the path is spelled.
"""
from __future__ import annotations

import logging
import os
import posixpath
import shutil
import stat
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PureWindowsPath
from typing import TYPE_CHECKING, Iterable, List, Optional, Sequence, Tuple, Union

if TYPE_CHECKING:  # docarray is imported lazily: importing this module stays cheap.
    from docarray import Document, DocumentArray

logger = logging.getLogger(__name__)

SIDES: Tuple[str, str] = ("left", "right")
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png"})
LABEL_TAG = "finetuner_label"
MAX_LISTED = 20

DOWNLOAD_HINT = (
    "Expected layout: a folder holding 'left/' and 'right/' with images paired by file name "
    "(left/00001.jpg <-> right/00001.jpg), or a folder holding 'left.zip' and 'right.zip'. "
    "Download TLL (https://sites.google.com/view/totally-looks-like-dataset) with:\n"
    "    pip install gdown\n"
    "    gdown https://drive.google.com/uc?id=1jvkbTr_giSP3Ru8OwGNCg6B4PvVbcO34\n"
    "    gdown https://drive.google.com/uc?id=1EzBZUb_mh_Dp_FKD0P4XiYYSd0QBH5zW\n"
    "and pass the folder holding left.zip and right.zip (they are unpacked next to the zips)."
)

PathLike = Union[str, "os.PathLike[str]"]


class UnsafeArchiveError(ValueError):
    """A zip member would be written outside the target folder (absolute path, ``..``,
    or a symlink pointing outside)."""


# --------------------------------------------------------------------------- locating


def _is_image_name(name: str) -> bool:
    """True for a visible file name with an image extension (case-insensitive).

    Dotfiles such as macOS's ``._00001.jpg`` resource forks are not images.
    """
    return not name.startswith(".") and Path(name).suffix.lower() in IMAGE_EXTENSIONS


def _has_folders(folder: Path) -> bool:
    """True when ``folder`` holds both ``left/`` and ``right/`` folders."""
    return all((folder / side).is_dir() for side in SIDES)


def _has_zips(folder: Path) -> bool:
    """True when ``folder`` holds both ``left.zip`` and ``right.zip``."""
    return all((folder / f"{side}.zip").is_file() for side in SIDES)


def _is_tll_shaped(folder: Path) -> bool:
    """True when ``folder`` holds TLL's two folders or its two zips."""
    return folder.is_dir() and (_has_folders(folder) or _has_zips(folder))


def _format_list(items: Sequence[str], limit: int = MAX_LISTED) -> str:
    """Comma-separated ``items``, cut after ``limit`` with a count of the rest."""
    shown = ", ".join(items[:limit])
    rest = len(items) - limit
    return f"{shown}, ... and {rest} more" if rest > 0 else shown


def locate_tll(path: PathLike) -> Path:
    """Return the folder that holds TLL's ``left/`` and ``right/`` image folders.

    ``path`` may be that folder; a folder holding ``left.zip`` and ``right.zip`` (they are
    extracted next to the zips the first time, safely, see :func:`extract_tll_zips`); or
    the parent of exactly one such folder. Raises ``FileNotFoundError`` explaining the
    expected layout and how to download TLL when nothing TLL-shaped is found, and
    ``ValueError`` when the parent holds several candidates.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"No such folder: {path}. {DOWNLOAD_HINT}")
    if not path.is_dir():
        raise NotADirectoryError(f"Not a folder: {path}. {DOWNLOAD_HINT}")

    folder = path
    if not _is_tll_shaped(path):
        candidates = sorted(child for child in path.iterdir() if _is_tll_shaped(child))
        if not candidates:
            parts = [name for name in ("left", "right", "left.zip", "right.zip") if (path / name).exists()]
            found = f" (it holds only {', '.join(parts)})" if parts else ""
            raise FileNotFoundError(
                f"No Totally-Looks-Like data found in {path}{found} nor in its sub-folders. {DOWNLOAD_HINT}"
            )
        if len(candidates) > 1:
            names = [str(candidate) for candidate in candidates]
            raise ValueError(
                f"{path} holds several TLL-shaped folders ({_format_list(names)}); pass one of them."
            )
        folder = candidates[0]

    if not _has_folders(folder):
        extract_tll_zips(folder)
    return folder.resolve()


# --------------------------------------------------------------------------- extracting


@dataclass
class ExtractionReport:
    """What :func:`extract_tll_zips` did: images written per side and members skipped."""

    folder: Path
    extracted: dict = field(default_factory=dict)  # side -> number of images written
    ignored: List[str] = field(default_factory=list)  # "zip:member" of every skipped file


def _member_parts(name: str) -> List[str]:
    """Split a zip member name into path components, or raise if it is unsafe.

    Backslashes count as separators (zips made on Windows). Absolute paths, drive letters
    and ``..`` components are rejected: such a member could write outside the target.
    """
    normalised = name.replace("\\", "/")
    if normalised.startswith("/") or PureWindowsPath(name).drive or PureWindowsPath(name).root:
        raise UnsafeArchiveError(f"Refusing to extract zip member with an absolute path: {name!r}")
    parts = [part for part in normalised.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveError(f"Refusing to extract zip member with a '..' component: {name!r}")
    return parts


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    """True when the member was stored as a symbolic link (Unix mode in ``external_attr``)."""
    return stat.S_ISLNK(info.external_attr >> 16)


def _check_symlink(archive: zipfile.ZipFile, info: zipfile.ZipInfo, parts: List[str]) -> None:
    """Raise when a symlink member points outside the archive's own tree.

    Symlinks are never created (only image files are written); one that escapes the target
    is treated as a sign of a malicious archive.
    """
    target = archive.read(info).decode("utf-8", errors="replace").replace("\\", "/")
    if target.startswith("/") or PureWindowsPath(target).drive:
        raise UnsafeArchiveError(f"Refusing zip member {info.filename!r}: symlink to absolute path {target!r}")
    resolved = posixpath.normpath(posixpath.join(*(parts[:-1] or ["."]), target))
    if resolved == ".." or resolved.startswith("../"):
        raise UnsafeArchiveError(f"Refusing zip member {info.filename!r}: symlink {target!r} escapes the target")


def _destination(parts: List[str], default_side: str) -> Optional[Tuple[str, str]]:
    """Map a member's path components to ``(side, file name)``, or None to skip it.

    Skips ``__MACOSX`` trees, dotfiles, hidden folders and non-images. The side is the last
    ``left``/``right`` folder on the path (so ``left.zip`` holding ``left/00001.jpg``, as
    TLL's do, or ``TLL/left/00001.jpg`` both land in ``left/``); a file with no such folder
    goes to the side the zip is named after.
    """
    if any(part == "__MACOSX" or part.startswith(".") for part in parts):
        return None
    if not _is_image_name(parts[-1]):
        return None
    sides = [part for part in parts[:-1] if part in SIDES]
    return (sides[-1] if sides else default_side), parts[-1]


def _extract_zip(zip_path: Path, side: str, staging: Path, written: dict, report: ExtractionReport) -> None:
    """Copy the image members of one zip into ``staging/<side>/``, checking every member.

    ``written`` maps ``(side, name)`` to the member that produced it, to reject two members
    landing on the same file.
    """
    with zipfile.ZipFile(zip_path) as archive:
        members = archive.infolist()
        for info in members:  # check everything before writing anything
            parts = _member_parts(info.filename)
            if parts and _is_symlink(info):
                _check_symlink(archive, info, parts)
        for info in members:
            parts = _member_parts(info.filename)
            if not parts or info.is_dir():
                continue
            target = None if _is_symlink(info) else _destination(parts, side)
            if target is None:
                report.ignored.append(f"{zip_path.name}:{info.filename}")
                continue
            if target in written:
                raise ValueError(
                    f"Zip members {written[target]!r} and {zip_path.name}:{info.filename!r} "
                    f"both unpack to {target[0]}/{target[1]}"
                )
            written[target] = f"{zip_path.name}:{info.filename}"
            out_path = staging / target[0] / target[1]
            with archive.open(info) as source, open(out_path, "wb") as sink:
                shutil.copyfileobj(source, sink)
            report.extracted[target[0]] = report.extracted.get(target[0], 0) + 1


def extract_tll_zips(folder: PathLike) -> ExtractionReport:
    """Unpack ``folder/left.zip`` and ``folder/right.zip`` into ``folder/left/``, ``folder/right/``.

    Only image files are written, flattened into the side folder; ``__MACOSX`` entries,
    dotfiles and other files are skipped and counted in the report (and a logged warning).
    Every member is checked first: absolute paths, ``..`` components and symlinks pointing
    outside raise :class:`UnsafeArchiveError` naming the member, before anything is written.
    The images are unpacked into a hidden staging folder and moved into place at the end,
    so an interrupted run leaves no half-filled ``left/``/``right/`` behind; a folder that
    already holds both is left alone (extraction happens once).
    """
    folder = Path(folder)
    report = ExtractionReport(folder=folder)
    if _has_folders(folder):
        return report
    present = [side for side in SIDES if (folder / side).exists()]
    if present:
        raise FileExistsError(
            f"{folder} holds {present[0]}/ but not both left/ and right/; remove it to unpack "
            "left.zip and right.zip again."
        )
    staging = Path(tempfile.mkdtemp(prefix=".tll-extract-", dir=folder))
    try:
        for side in SIDES:
            (staging / side).mkdir()
        written: dict = {}
        for side in SIDES:
            zip_path = folder / f"{side}.zip"
            try:
                _extract_zip(zip_path, side, staging, written, report)
            except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
                # a truncated download, or a saved web page: name the file and the way out
                raise ValueError(
                    f"{zip_path} is not a complete zip file ({type(exc).__name__}: {exc}). "
                    f"Delete it and download it again. {DOWNLOAD_HINT}"
                ) from exc
        empty = [side for side in SIDES if not report.extracted.get(side)]
        if empty:
            # moving empty folders into place would make every later run skip extraction
            raise ValueError(
                f"{', '.join(f'{side}.zip' for side in empty)} in {folder} held no images "
                f"under left/ or right/ (ignored members: {_format_list(report.ignored) or 'none'}); "
                f"nothing was unpacked. Replace the zip(s) with the data set's. {DOWNLOAD_HINT}"
            )
        for side in SIDES:
            os.replace(staging / side, folder / side)
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    counts = ", ".join(f"{report.extracted.get(side, 0)} {side}" for side in SIDES)
    message = f"Unpacked TLL zips in {folder}: {counts} images"
    if report.ignored:
        logger.warning(
            "%s; ignored %d zip members that are not images under left/ or right/ "
            "(__MACOSX, dotfiles, other files): %s",
            message, len(report.ignored), _format_list(report.ignored),
        )
    else:
        logger.info(message)
    return report


# --------------------------------------------------------------------------- loading


@dataclass
class TLLPairs:
    """TLL images as two documents arrays, aligned by position: ``left[i]`` and ``right[i]``
    share a file name. Documents hold only ``uri`` (absolute path); nothing is loaded.

    ``unpaired`` lists the files (``left/NAME``, ``right/NAME``) dropped for lacking a
    partner (only with ``check_pairs=False``); ``ignored`` the files in ``left/``/``right/``
    that are not images.
    """

    left: "DocumentArray"
    right: "DocumentArray"
    root: Path
    unpaired: List[str] = field(default_factory=list)
    ignored: List[str] = field(default_factory=list)

    def __len__(self) -> int:
        """Number of pairs."""
        return len(self.left)

    @property
    def names(self) -> List[str]:
        """The pairs' file names, in order (the label of each pair)."""
        return [pair_name(doc) for doc in self.left]


def pair_name(doc: "Document") -> str:
    """The file name of a document's image: the key that pairs left with right."""
    return Path(doc.uri).name


def _list_images(side_dir: Path) -> Tuple[dict, List[str]]:
    """Map file name -> path for the images directly in ``side_dir``; also the ignored
    entries, each with why (a folder, a broken link, not an image name)."""
    images, ignored = {}, []
    for entry in side_dir.iterdir():
        if entry.is_file() and _is_image_name(entry.name):
            images[entry.name] = entry
        elif entry.is_symlink() and not entry.exists():
            ignored.append(f"{side_dir.name}/{entry.name} (a broken link)")
        elif entry.is_dir():
            ignored.append(f"{side_dir.name}/{entry.name} (a folder)")
        else:
            ignored.append(f"{side_dir.name}/{entry.name}")
    return images, sorted(ignored)


def _unpaired_error(
    missing_right: List[str], missing_left: List[str], root: Path, ignored: List[str]
) -> ValueError:
    """The error raised by :func:`load_tll` when some images have no partner."""
    lines = [f"TLL images in {root} are not all paired by file name."]
    if missing_right:
        lines.append(f"{len(missing_right)} left images have no right partner: {_format_list(missing_right)}")
    if missing_left:
        lines.append(f"{len(missing_left)} right images have no left partner: {_format_list(missing_left)}")
    if ignored:  # e.g. a broken link where the partner should be
        lines.append(f"Ignored entries (not images): {_format_list(ignored)}")
    lines.append(
        "Restore the missing files or remove the unpaired ones (finetuner-selfsup reproduce "
        "uses complete pairs only); in Python, load_tll(..., check_pairs=False) keeps only "
        "the complete pairs (the dropped files are then logged and listed in TLLPairs.unpaired)."
    )
    return ValueError("\n".join(lines))


def load_tll(path: PathLike, check_pairs: bool = True) -> TLLPairs:
    """Load TLL from ``path`` (anything :func:`locate_tll` accepts) as paired documents.

    Only ``.jpg``/``.jpeg``/``.png`` files (any case) count; other entries are logged and
    listed in ``TLLPairs.ignored``. Every left image needs a right image of the same file
    name and vice versa: otherwise ``ValueError`` lists the missing partners, unless
    ``check_pairs=False``, which keeps the complete pairs and reports each dropped file in
    a logged warning and in ``TLLPairs.unpaired``. Pairs are sorted by file name.
    """
    from docarray import Document, DocumentArray

    root = locate_tll(path)
    (left, left_ignored), (right, right_ignored) = (_list_images(root / side) for side in SIDES)
    ignored = left_ignored + right_ignored
    if ignored:
        logger.warning("Ignored %d entries of %s that are not images: %s", len(ignored), root, _format_list(ignored))

    missing_right = sorted(f"left/{name}" for name in left.keys() - right.keys())
    missing_left = sorted(f"right/{name}" for name in right.keys() - left.keys())
    unpaired = missing_right + missing_left
    if unpaired:
        if check_pairs:
            raise _unpaired_error(missing_right, missing_left, root, ignored)
        logger.warning(
            "Dropped %d TLL images without a partner (check_pairs=False): %s",
            len(unpaired), ", ".join(unpaired),
        )

    names = sorted(left.keys() & right.keys())
    if not names:
        seen = f" Ignored entries: {_format_list(ignored)}." if ignored else ""  # e.g. left/left (a folder)
        raise FileNotFoundError(f"No image pairs found in {root}.{seen} {DOWNLOAD_HINT}")
    return TLLPairs(
        left=DocumentArray(Document(uri=str(left[name])) for name in names),
        right=DocumentArray(Document(uri=str(right[name])) for name in names),
        root=root,
        unpaired=unpaired,
        ignored=ignored,
    )


# --------------------------------------------------------------------------- splitting


@dataclass
class SelfSupervisedSplit:
    """The tutorial's self-supervised protocol: unlabelled pre-training images, a small
    labelled fine-tuning set, and labelled left (queries) / right (index) for evaluation."""

    pretrain: "DocumentArray"
    finetune: "DocumentArray"
    eval_left: "DocumentArray"
    eval_right: "DocumentArray"


@dataclass
class SupervisedSplit:
    """The supervised tutorial's protocol: labelled training pairs and labelled evaluation."""

    train: "DocumentArray"
    eval_left: "DocumentArray"
    eval_right: "DocumentArray"


def _cut(ratio: float, n: int) -> int:
    """``int(ratio * n)`` as the tutorial computes it; the ratio is rounded to 12 digits
    first so that a sum such as 0.7 + 0.1 behaves as the tutorial's literal 0.8."""
    return int(round(ratio, 12) * n)


def _copies(docs: Iterable["Document"], labelled: bool) -> "DocumentArray":
    """New documents with the same ``id`` and ``uri``; labelled ones get the file name as
    ``finetuner_label``. Copies keep the loaded pairs untouched (no tags, tensors or
    embeddings written back), so one :class:`TLLPairs` can feed several splits."""
    from docarray import Document, DocumentArray

    def copy(doc: "Document") -> "Document":
        tags = {LABEL_TAG: pair_name(doc)} if labelled else {}
        return Document(id=doc.id, uri=doc.uri, tags=tags)

    return DocumentArray(copy(doc) for doc in docs)


def _check_ratios(**ratios: float) -> None:
    """Raise unless every ratio is in [0, 1], the first is positive, and they sum to <= 1."""
    values = list(ratios.values())
    if values[0] <= 0 or any(value < 0 for value in values) or round(sum(values), 12) > 1:
        given = ", ".join(f"{name}={value}" for name, value in ratios.items())
        raise ValueError(f"Split ratios must be non-negative, the first positive, summing to at most 1; got {given}")


def split_self_supervised(
    pairs: TLLPairs, pretrain_ratio: float = 0.7, finetune_ratio: float = 0.1
) -> SelfSupervisedSplit:
    """Cut pairs by position as the self-supervised tutorial does.

    With ``n`` pairs, ``a = int(pretrain_ratio * n)`` and ``b = int((pretrain_ratio +
    finetune_ratio) * n)``: ``pretrain = left[:a] + right[:a]`` without labels (2a images),
    ``finetune = left[a:b] + right[a:b]`` labelled with the file name, and ``eval_left``,
    ``eval_right`` the remaining pairs, labelled too (for ``Evaluator``). All documents are
    new objects; ``pairs`` is not modified.
    """
    _check_ratios(pretrain_ratio=pretrain_ratio, finetune_ratio=finetune_ratio)
    n = len(pairs)
    a, b = _cut(pretrain_ratio, n), _cut(pretrain_ratio + finetune_ratio, n)
    return _split_with_labelled(pairs, range(a, b), b)


def split_self_supervised_with_chosen_labels(
    pairs: TLLPairs, labelled: Sequence[int], pretrain_ratio: float = 0.7, finetune_ratio: float = 0.1
) -> SelfSupervisedSplit:
    """:func:`split_self_supervised` with the labelled pairs chosen instead of cut: of the
    first ``b = int((pretrain_ratio + finetune_ratio) * n)`` pairs, those at the positions
    ``labelled`` (exactly ``b - a`` of them, e.g. from
    :func:`finetuner_selfsup.experiments.label_selection.choose_for_labelling`) are the labelled
    fine-tuning pairs, the others the unlabelled part; evaluation is the same last pairs.

    :raises ValueError: ``labelled`` has the wrong number of positions, repeats one, or
        names one outside the first ``b`` pairs.
    """
    _check_ratios(pretrain_ratio=pretrain_ratio, finetune_ratio=finetune_ratio)
    n = len(pairs)
    a, b = _cut(pretrain_ratio, n), _cut(pretrain_ratio + finetune_ratio, n)
    chosen = list(labelled)
    if len(chosen) != b - a or len(set(chosen)) != len(chosen) or not all(0 <= i < b for i in chosen):
        raise ValueError(
            f"the labelled pairs must be {b - a} distinct positions among the first {b} pairs "
            f"(pretrain_ratio + finetune_ratio of {n}); got {len(chosen)} positions, "
            f"{len(set(chosen))} distinct, between {min(chosen, default=None)} and {max(chosen, default=None)}"
        )
    return _split_with_labelled(pairs, chosen, b)


def _split_with_labelled(pairs: TLLPairs, labelled: Sequence[int], b: int) -> SelfSupervisedSplit:
    """Of the first ``b`` pairs, those at the positions ``labelled`` labelled and in that
    order, the others unlabelled and in file order; the pairs from ``b`` on for evaluation."""
    taken = set(labelled)
    rest = [i for i in range(b) if i not in taken]
    left, right = pairs.left, pairs.right
    return SelfSupervisedSplit(
        pretrain=_copies([left[i] for i in rest] + [right[i] for i in rest], labelled=False),
        finetune=_copies([left[i] for i in labelled] + [right[i] for i in labelled], labelled=True),
        eval_left=_copies(left[b:], labelled=True),
        eval_right=_copies(right[b:], labelled=True),
    )


def split_supervised(pairs: TLLPairs, train_ratio: float = 0.8) -> SupervisedSplit:
    """Cut pairs by position as the supervised tutorial does: ``b = int(train_ratio * n)``,
    ``train = left[:b] + right[:b]`` labelled with the file name, evaluation the rest."""
    _check_ratios(train_ratio=train_ratio)
    n = len(pairs)
    b = _cut(train_ratio, n)
    left, right = pairs.left, pairs.right
    return SupervisedSplit(
        train=_copies(list(left[:b]) + list(right[:b]), labelled=True),
        eval_left=_copies(left[b:], labelled=True),
        eval_right=_copies(right[b:], labelled=True),
    )
