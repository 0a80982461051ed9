"""Writing a generated pair set as a TLL-shaped folder, safely and idempotently.

Shared by the pair sets this package builds (:mod:`.demo_pairs`, :mod:`.font_pairs`):
``root/left/NNNNN.jpg`` and ``root/right/NNNNN.jpg`` paired by file name, plus a JSON
manifest that records what was generated. The manifest is marked complete only after every
image is written, so an interrupted run is redone rather than used half-finished, and a
folder with images but no manifest of the same generator (perhaps the real TLL) is never
written over.
"""
from __future__ import annotations

import json
import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, List, Sequence

SIDES = ("left", "right")


def file_names(num_pairs: int) -> List[str]:
    """``00000.jpg`` ... (at least 5 digits, as TLL's names)."""
    digits = max(5, len(str(num_pairs - 1)))
    return [f"{index:0{digits}d}.jpg" for index in range(num_pairs)]


def is_generated_file(name: str) -> bool:
    """True for a file name the generators write (digits + ``.jpg``)."""
    return re.fullmatch(r"\d{5,}\.jpg", name) is not None


def read_manifest(root: Path, manifest_name: str) -> Dict[str, Any]:
    """The manifest in ``root``, or {} when missing or unreadable."""
    try:
        return json.loads((root / manifest_name).read_text())
    except (OSError, ValueError):
        return {}


def is_complete(root: Path, manifest_name: str, expected: Dict[str, Any], names: Sequence[str]) -> bool:
    """True when ``root`` holds a finished set generated with exactly ``expected``."""
    manifest = read_manifest(root, manifest_name)
    if not manifest.pop("complete", False) or manifest != expected:
        return False
    wanted = set(names)
    return all(
        (root / side).is_dir() and wanted <= set(os.listdir(root / side))
        and sum(is_generated_file(name) for name in os.listdir(root / side)) == len(wanted)
        for side in SIDES
    )


def prepare(root: Path, manifest_name: str, generator: str) -> None:
    """Make ``root/left`` and ``root/right`` ready for a fresh set.

    Refuses to touch folders that hold files but no manifest of ``generator`` (they may
    be the real TLL); otherwise deletes the images of an earlier, different set.
    """
    ours = read_manifest(root, manifest_name).get("generator") == generator
    for side in SIDES:
        folder = root / side
        folder.mkdir(parents=True, exist_ok=True)
        existing = os.listdir(folder)
        if existing and not ours:
            raise FileExistsError(
                f"{folder} already holds files and {root} has no {manifest_name}: refusing to "
                "write generated pairs over data this generator did not make; choose an empty folder."
            )
        for name in existing:
            if is_generated_file(name):
                (folder / name).unlink()


def write_manifest(root: Path, manifest_name: str, manifest: Dict[str, Any], complete: bool) -> None:
    """Write the manifest; ``complete`` is set only after every image is written."""
    (root / manifest_name).write_text(json.dumps({**manifest, "complete": complete}, indent=2) + "\n")


@contextmanager
def writing(root: Path, manifest_name: str, generator: str, manifest: Dict[str, Any]) -> Iterator[None]:
    """Around the code that writes a fresh set into ``root``: prepares the folders
    (:func:`prepare`), records the manifest as incomplete, and marks it complete only when
    the body finished without an error."""
    root.mkdir(parents=True, exist_ok=True)
    prepare(root, manifest_name, generator)
    write_manifest(root, manifest_name, manifest, complete=False)
    yield
    write_manifest(root, manifest_name, manifest, complete=True)
