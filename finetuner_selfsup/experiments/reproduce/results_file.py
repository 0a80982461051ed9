"""The results file of a reproduction run (``results.json``): what it records, and when
an output folder's results may be resumed.

A results file made with other settings or on other data (its ``fingerprint`` holds the
settings and :func:`data_identity`) is refused (use another output folder) rather than
mixed with new numbers. A results file of an earlier version, which did not record the
data's identity, is resumed when its recorded pair count, split sizes and evaluation
queries are those of the data given now.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..data import TLLPairs, pair_name
from .settings import RunSettings

logger = logging.getLogger("finetuner_selfsup")


@dataclass
class TableResults:
    """What a run produced: metrics per column plus everything needed to judge them."""

    #: settings, environment and command of the run that created the results
    settings: Dict[str, Any]
    data: Dict[str, Any]
    environment: Dict[str, Any]
    columns: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    command: str = ""
    #: every run that computed a column: its command, start, environment and the settings
    #: outside the fingerprint (a column's ``invocation`` is its index here); results of
    #: earlier versions have none
    invocations: List[Dict[str, Any]] = field(default_factory=list)

    def metrics(self) -> Dict[str, Dict[str, float]]:
        return {name: column["metrics"] for name, column in self.columns.items()}

    def ranks(self) -> Dict[str, Dict[str, int]]:
        """Each query's partner rank per column, for the columns that stored them (results
        files from before ranks were kept have none)."""
        return {name: column["ranks"] for name, column in self.columns.items() if column.get("ranks")}


def pseudo_pair_record(pairs: Sequence[Tuple[str, str, float]]) -> Dict[str, Any]:
    """What a results file keeps of a pseudo-pair recipe's pairs: how many, and how many
    are true pairs -- in a TLL folder the two images of a pair share a file name, which
    the recipe never looks at, so it can be checked afterwards."""
    correct = sum(Path(left).name == Path(right).name for left, right, _ in pairs)
    return {
        "made": len(pairs),
        "correct": correct,
        "precision": correct / len(pairs) if pairs else None,
        "smallest_margin": min((margin for _, _, margin in pairs), default=None),
    }


def atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    os.replace(partial, path)


def _differing(old: Dict[str, Any], new: Dict[str, Any]) -> List[str]:
    """The keys whose values differ between two fingerprints, a key that only one of them
    has included (e.g. label_selection, recorded only when it is not 'first')."""
    return sorted(key for key in old.keys() | new.keys() if old.get(key) != new.get(key))


def data_identity(pairs: TLLPairs) -> Dict[str, Any]:
    """A cheap identity of a pair set: the number of pairs and a SHA-256 of every image's
    side, file name and size in bytes (sorted), from the file system without reading an
    image. The same files give the same identity wherever the folder is; adding, removing
    or renaming a pair, or re-encoding an image, changes it (an edit that keeps a file's
    exact size does not). Part of the results' and the self-supervised checkpoints'
    fingerprints, so that a run on other data does not take their columns or epochs."""
    entries = sorted(
        f"{side}/{pair_name(doc)}\t{os.path.getsize(doc.uri)}"
        for side, docs in (("left", pairs.left), ("right", pairs.right))
        for doc in docs
    )
    digest = hashlib.sha256("\n".join(entries).encode()).hexdigest()
    return {"pairs": len(pairs), "sha256": digest}


#: what results.json's "data" records of the split; for a results file from before the
#: data's identity was recorded, these (and the evaluation queries) must match the data
SPLIT_SIZES = (
    "pairs", "self_supervised_pretrain_images", "finetune_images", "supervised_train_images",
    "eval_queries", "eval_index",
)


def _start_over(path: Path) -> str:
    return (f"use another output folder (--out), or delete {path} to start over (every column "
            f"is then computed afresh)")


def load_results(
    path: Path, settings: RunSettings, data: Dict[str, Any], eval_queries: Sequence[str]
) -> Optional[TableResults]:
    """The results in ``path`` if they were made with ``settings`` on the data described by
    ``data`` (``TableRun``'s ``results.data``, its ``identity`` included) whose evaluation
    queries are ``eval_queries``; None without a file.

    :raises ValueError: the file holds results of other settings or other data.
    """
    if not path.exists():
        return None
    saved = json.loads(path.read_text())
    old = saved.get("fingerprint") or {}
    if old != settings.fingerprint(data["identity"]):
        if "data" not in old:
            # written before the data's identity was recorded: compare the settings, then
            # what the file recorded of the data
            changed = _differing(old, settings.fingerprint())
            if not changed:
                _check_data_of_earlier_version(path, saved, data, eval_queries)
        else:
            changed = _differing(old, settings.fingerprint(data["identity"]))
        if changed == ["data"]:
            recorded = saved.get("data", {})
            raise ValueError(
                f"{path} holds results computed on other data ({old['data'].get('pairs')} pairs from "
                f"{recorded.get('root', '?')}, sha256 {str(old['data'].get('sha256'))[:12]}; given now: "
                f"{data['pairs']} pairs from {data['root']}, sha256 {data['identity']['sha256'][:12]}); "
                f"{_start_over(path)}."
            )
        if changed:
            raise ValueError(
                f"{path} holds results made with other settings (differing: {', '.join(changed)}); "
                f"use another output folder, or delete it to start over."
            )
    return TableResults(
        saved["settings"], saved["data"], saved["environment"], saved["columns"],
        command=saved.get("command", ""), invocations=saved.get("invocations", []),
    )


def _check_data_of_earlier_version(
    path: Path, saved: Dict[str, Any], data: Dict[str, Any], eval_queries: Sequence[str]
) -> None:
    """Accept a results file of an earlier version (no data identity in its fingerprint)
    when its recorded pair count and split sizes, and the queries of every column's ranks,
    are those of the data given now; else raise, saying what to do."""
    recorded = saved.get("data", {})
    differing = [
        f"{key} {recorded.get(key)} (now {data[key]})" for key in SPLIT_SIZES if recorded.get(key) != data[key]
    ]
    queries = sorted(eval_queries)
    for column, record in saved.get("columns", {}).items():
        if record.get("ranks") and sorted(record["ranks"]) != queries:
            differing.append(f"the evaluation queries of column {column!r}")
            break
    if differing:
        raise ValueError(
            f"{path} was written by an earlier version of finetuner-selfsup, which did not record "
            f"the identity of the data, and what it recorded does not match the data given now "
            f"({recorded.get('root', '?')} then, {data['root']} now; differing: {', '.join(differing)}): "
            f"its results were computed on other data; {_start_over(path)}."
        )
    logger.warning(
        "%s was written by an earlier version, which did not record the identity of the data; its "
        "pair count, split sizes and evaluation queries match %s, so its columns are kept, and the "
        "data's identity is recorded from now on", path, data["root"],
    )
