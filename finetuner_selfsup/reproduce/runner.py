"""Run the table's columns on a pair set, resume after interruptions, write the results.

Output folder layout::

    results.json            settings, data, versions, hardware and command of the run that
                            created the folder; each finished column (metrics, the rank of
                            every query's partner, and the command that computed it); and
                            under "invocations" every command that computed a column, with
                            its versions, hardware, device, workers and evaluation batch (a
                            resumed run may differ in these)
    results.md              the same as Markdown, table in the tutorial's format, and the
                            queries the self-supervision column ranked worst
    models/<column>.pt      final weights of each column's model (state_dict)
    checkpoints/            per-epoch checkpoint of the self-supervised stage
    curves/<column>--<stage>.png   training loss of every fit

A column already in ``results.json`` is not recomputed, nor is a finished epoch of the
self-supervised stage; a results file made with other settings or on other data (its
``fingerprint`` holds the settings and :func:`data_identity`) is refused (use another
output folder) rather than mixed with the new numbers. A results file of an earlier
version, which did not record the data's identity, is resumed when its recorded pair
count, split sizes and evaluation queries are those of the data given now.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ..data import (
    SelfSupervisedSplit,
    TLLPairs,
    load_tll,
    split_self_supervised,
    split_self_supervised_with_chosen_labels,
    pair_name,
    split_supervised,
)
from ..evaluation import (
    document_key,
    embed_documents,
    evaluate_pairs,
    format_table,
    pair_keys_to_partner,
    top_k,
)
from .columns import (
    COLUMNS,
    LABELS_ONLY,
    PRETRAINED,
    SELF_SUPERVISED,
    SELF_SUPERVISED_ONLY,
    SUPERVISED,
    ColumnRunner,
)
from .environment import describe_environment
from .settings import NOT_FINGERPRINTED, RunSettings

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


def _atomic_write(path: Path, text: str) -> None:
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


def _load_results(
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


def _metric_order(name: str) -> tuple:
    """hit@1, hit@5, hit@10, recall@..., ndcg@..., then mrr and map."""
    family, _, k = name.partition("@")
    families = ("hit", "recall", "ndcg", "mrr", "map")
    return (families.index(family) if family in families else len(families), int(k or 0), name)


def render_markdown(results: TableResults, ks: Sequence[int], title: str, command: str) -> str:
    """The results page: the tutorial's table, all metrics, settings and environment.

    :param command: the command of this run, shown when the results record none."""
    order = [c for c in COLUMNS if c in results.columns]
    hit_table = (
        format_table({c: results.columns[c]["metrics"] for c in order}, ks)
        if order else "(no column has finished yet)"
    )
    lines = [f"# {title}", ""] + _produced_by(results, order, command) + ["", hit_table, ""]
    if order:
        names = sorted(results.columns[order[0]]["metrics"], key=_metric_order)
        lines += ["## All metrics", "", "| column | " + " | ".join(names) + " | wall time (s) |"]
        lines.append("|" + "---|" * (len(names) + 2))
        for column in order:
            metrics = results.columns[column]["metrics"]
            values = " | ".join(f"{metrics[n]:.3f}" for n in names)
            lines.append(f"| {column} | {values} | {results.columns[column]['wall_seconds']:.0f} |")
    recipe_notes = _recipe_notes(results, order)
    if recipe_notes:
        lines += ["", "## What the recipe did", ""] + recipe_notes
    differences = _differences(results, order, ks)
    if differences:
        lines += ["", f"## '{SELF_SUPERVISED}' against the other columns", ""] + differences
    hardest = _hardest_queries(results, order)
    if hardest:
        lines += ["", "## Hardest queries", ""] + hardest
    lines += ["", "## Data", "", "```json", json.dumps(results.data, indent=2), "```"]
    lines += ["", "## Settings", "", "```json", json.dumps(results.settings, indent=2), "```"]
    lines += ["", "## Environment", "", "```json", json.dumps(results.environment, indent=2), "```", ""]
    lines += _other_environments(results, order)
    return "\n".join(lines)


def _produced_by(results: TableResults, order: Sequence[str], command: str) -> List[str]:
    """Which command computed which column: one line when one command computed them all,
    else a list (a resumed run; results of earlier versions did not record it)."""
    by_command: Dict[str, List[str]] = {}
    for column in order:
        by_command.setdefault(results.columns[column].get("command", ""), []).append(column)
    if len(by_command) <= 1:
        only = next(iter(by_command), "") or results.command or command
        return [f"Produced by: `{only}`"]
    lines = ["Produced by, column by column (a resumed run; the settings below are the first "
             "command's, and the others agree in everything that changes results -- results.json "
             f"lists each one's {', '.join(NOT_FINGERPRINTED)} under invocations):", ""]
    for each, columns in by_command.items():
        who = f"`{each}`" if each else "not recorded (by an earlier version)"
        lines.append(f"- {who}: {', '.join(columns)}")
    return lines


def _other_environments(results: TableResults, order: Sequence[str]) -> List[str]:
    """The environment of every later command that computed a column, where it differs
    from the first one's (shown under "Environment")."""
    lines = []
    for index, invocation in enumerate(results.invocations):
        columns = [c for c in order if results.columns[c].get("invocation") == index]
        if columns and invocation.get("environment") != results.environment:
            lines += [
                f"### Environment of `{invocation['command']}` ({', '.join(columns)})", "",
                "```json", json.dumps(invocation.get("environment"), indent=2), "```", "",
            ]
    return lines


def _recipe_notes(results: TableResults, order: Sequence[str]) -> List[str]:
    """One line per column for what a recipe chose on its own: the epoch early stopping
    kept, the pseudo-pairs made (and how many were true)."""
    notes = []
    for column in order:
        record = results.columns[column]
        if "chosen_epoch" in record:
            epoch = record["chosen_epoch"]
            kept = "the starting model (epoch 0)" if epoch == 0 else f"epoch {epoch}"
            notes.append(f"- {column}: early stopping kept {kept}")
        pairs = record.get("pseudo_pairs")
        if pairs:
            line = f"- {column}: {pairs['made']} pseudo-pairs made from the unlabelled images"
            if pairs["made"]:
                line += (
                    f", {pairs['correct']} of them true pairs ({pairs['precision']:.0%}; checked "
                    f"afterwards by file name, which the recipe does not use)"
                )
            notes.append(line)
    return notes


def _differences(results: TableResults, order: Sequence[str], ks: Sequence[int]) -> List[str]:
    """The self-supervision column minus every other column at each hit@k, with a 95 %
    paired bootstrap interval over the queries (:mod:`finetuner_selfsup.comparison`), so a
    reader can tell a difference from the noise of a small evaluation set. Empty before the
    self-supervision column has ranks; columns without ranks (older results) are left out."""
    from ..comparison import hit_difference

    ranks = results.ranks()
    if SELF_SUPERVISED not in ranks:
        return []
    others = [c for c in order if c != SELF_SUPERVISED and c in ranks]
    if not others:
        return []
    lines = [
        f"'{SELF_SUPERVISED}' minus each column, in hit@k, and in brackets the 95 % interval of "
        f"that difference over the {len(ranks[SELF_SUPERVISED])} queries (paired bootstrap: "
        "the queries resampled 10,000 times). An interval that includes 0 is not a clear "
        "difference on this many queries; the spread between training runs comes on top.",
        "",
        "| column | " + " | ".join(f"hit@{k}" for k in ks) + " |",
        "|" + "---|" * (len(ks) + 1),
    ]
    for column in others:
        cells = " | ".join(str(hit_difference(ranks[SELF_SUPERVISED], ranks[column], k)) for k in ks)
        lines.append(f"| {column} | {cells} |")
    return lines


#: how many queries results.md lists under "Hardest queries"
HARDEST_QUERIES = 10


def _hardest_queries(results: TableResults, order: Sequence[str], limit: int = HARDEST_QUERIES) -> List[str]:
    """The queries whose partner the self-supervision column ranked lowest, with the rank
    under every column -- which pairs the few labels and the unlabelled images did not
    teach, and whether full supervision found them (pairs of that kind are the ones worth
    covering among the labels). Empty before the self-supervision column has ranks."""
    ranks = results.ranks()
    if SELF_SUPERVISED not in ranks:
        return []
    worst = sorted(ranks[SELF_SUPERVISED].items(), key=lambda item: (-item[1], item[0]))[:limit]
    columns = [column for column in order if column in ranks]
    lines = [
        f"The {len(worst)} queries whose partner '{SELF_SUPERVISED}' ranked lowest, and the "
        f"partner's rank under every column (1 = first of {results.data.get('eval_queries', '?')}; "
        "every query's rank is in results.json). One that full supervision ('fine-tuned') "
        "finds and self-supervision does not is the kind of pair worth covering among the "
        "few labelled ones.",
        "",
        "| query | " + " | ".join(columns) + " |",
        "|" + "---|" * (len(columns) + 1),
    ]
    for query, _ in worst:
        cells = " | ".join(str(ranks[column].get(query, "-")) for column in columns)
        lines.append(f"| {query} | {cells} |")
    return lines


class TableRun:
    """One reproduction run over a TLL-shaped folder (see the module docstring)."""

    def __init__(
        self,
        settings: RunSettings,
        data_root: Path,
        out_dir: Path,
        title: str = "Totally-Looks-Like retrieval",
        command: str = "finetuner-selfsup reproduce",
        checkpoint_dir: Optional[Path] = None,
    ) -> None:
        """:param checkpoint_dir: where checkpoints go (default ``out_dir/checkpoints``); runs
            that differ only after the self-supervised stage may share one."""
        settings.validate()  # a bad setting fails before any work, not in the stage that reads it
        self.settings = settings
        self.out_dir = Path(out_dir)
        self.title = title
        self.command = command
        self.started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.environment = describe_environment(settings.device)
        #: this run's index in ``results.invocations``, once it has computed a column
        self._invocation: Optional[int] = None
        self.pairs = load_tll(data_root)
        self.ssl_split = split_self_supervised(
            self.pairs, settings.pretrain_ratio, settings.finetune_ratio
        )
        self.sup_split = split_supervised(self.pairs, settings.supervised_ratio)
        self._check_splits()
        self._labelled_split: Optional[SelfSupervisedSplit] = None if settings.chooses_labels else self.ssl_split
        #: the pair set's identity (:func:`data_identity`), part of both fingerprints
        self.data_identity = data_identity(self.pairs)
        self.runner = ColumnRunner(
            settings, Path(checkpoint_dir or self.out_dir / "checkpoints"), data_identity=self.data_identity
        )
        data = {
            "root": str(self.pairs.root),
            "pairs": len(self.pairs.left),
            "self_supervised_pretrain_images": len(self.ssl_split.pretrain),
            "finetune_images": len(self.ssl_split.finetune),
            "supervised_train_images": len(self.sup_split.train),
            "eval_queries": len(self.ssl_split.eval_left),
            "eval_index": len(self.ssl_split.eval_right),
            "identity": self.data_identity,
        }
        loaded = _load_results(
            self.out_dir / "results.json", settings, data, [document_key(d) for d in self.ssl_split.eval_left]
        )
        if loaded is not None and "identity" not in loaded.data:
            # an earlier version's results, checked to be of this data: record the
            # identity, and resume its self-supervised checkpoints under their new name
            loaded.data["identity"] = self.data_identity
            self.runner.adopt_checkpoints_without_data()
        self.results = loaded or TableResults(
            settings=settings.to_dict(), data=data, environment=self.environment, command=command,
        )
        # Written before any training, so that checkpoints in this folder are always
        # covered by the settings check of a later run.
        self.save()

    def _check_splits(self) -> None:
        """Raise before any work when the ratios leave a part of the split empty on this
        many pairs (the settings' own check cannot know the number of pairs)."""
        s, ssl, n = self.settings, self.ssl_split, len(self.pairs)
        parts = (
            ("pre-training pairs (the first pretrain_ratio)", len(ssl.pretrain)),
            ("labelled pairs (the next finetune_ratio)", len(ssl.finetune)),
            ("evaluation pairs (the rest)", len(ssl.eval_left)),
            ("fully supervised training pairs (the first supervised_ratio)", len(self.sup_split.train)),
        )
        empty = [name for name, size in parts if size == 0]
        if empty:
            raise ValueError(
                f"{n} pairs with pretrain_ratio={s.pretrain_ratio}, finetune_ratio={s.finetune_ratio} "
                f"and supervised_ratio={s.supervised_ratio} leave no {' and no '.join(empty)}; "
                f"use more pairs or other ratios"
            )

    # -- columns ---------------------------------------------------------------------
    def labelled_split(self) -> SelfSupervisedSplit:
        """The split the labelled fine-tunes use: the tutorial's cut, or with
        ``label_selection='typical'`` the pairs chosen from the self-supervised model's
        embeddings (chosen once per run, after the self-supervised stage, which still
        trains on the tutorial's pre-training part; the chosen file names go to
        ``results.json`` under ``data.labelled_pairs``)."""
        if self._labelled_split is None:
            from ..label_selection import choose_for_labelling

            s, cut = self.settings, self.ssl_split
            model = self.runner.self_supervised_only(cut.pretrain)
            # the left images of the first pretrain_ratio + finetune_ratio of the pairs, in order
            queries = list(cut.pretrain[: len(cut.pretrain) // 2]) + list(cut.finetune[: len(cut.finetune) // 2])
            chosen = choose_for_labelling(
                model, queries, len(cut.finetune) // 2, preprocess_fn=self.runner.plain_images,
                batch_size=s.eval_batch_size, device=s.device, seed=s.seed or 0, num_workers=s.num_workers,
            )
            self._labelled_split = split_self_supervised_with_chosen_labels(
                self.pairs, chosen, s.pretrain_ratio, s.finetune_ratio
            )
            self.results.data["labelled_pairs"] = sorted(
                document_key(doc) for doc in self._labelled_split.finetune[: len(chosen)]
            )
            logger.info("label selection: the %d most typical left images of %d chosen to label",
                        len(chosen), len(queries))
        return self._labelled_split

    def _train(self, column: str) -> nn.Module:
        r, ssl, sup = self.runner, self.ssl_split, self.sup_split
        if column == PRETRAINED:
            return r.pretrained()
        if column == SUPERVISED:
            return r.supervised(sup.train)
        if column == SELF_SUPERVISED:
            labelled = self.labelled_split()
            return r.self_supervised(labelled.pretrain, labelled.finetune)
        if column == LABELS_ONLY:
            return r.labels_only(self.labelled_split().finetune)
        if column == SELF_SUPERVISED_ONLY:
            return r.self_supervised_only(ssl.pretrain)
        raise ValueError(f"unknown column {column!r}; choose from {', '.join(COLUMNS)}")

    def model_path(self, column: str) -> Path:
        return self.out_dir / "models" / f"{column.replace('%', 'pct').replace(' ', '-')}.pt"

    def run(self, columns: Sequence[str] = COLUMNS) -> TableResults:
        for column in columns:
            if column not in COLUMNS:
                raise ValueError(f"unknown column {column!r}; choose from {', '.join(COLUMNS)}")
        for column in columns:
            if column in self.results.columns:
                logger.info("%s: already computed, skipped (delete %s to redo it)",
                            column, self.out_dir / "results.json")
                continue
            started = time.perf_counter()
            model = self._train(column)
            self.model_path(column).parent.mkdir(parents=True, exist_ok=True)
            torch.save(model.state_dict(), self.model_path(column))
            result = self.evaluate(model)
            self.results.columns[column] = {
                "metrics": result.metrics,
                # each query's partner rank, by the query's file name (the pair's key)
                "ranks": {
                    document_key(doc): int(rank)
                    for doc, rank in zip(self.ssl_split.eval_left, result.ranks.tolist())
                },
                "wall_seconds": time.perf_counter() - started,
                "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                # a resumed folder's columns come from several commands (and machines)
                "command": self.command,
                "invocation": self._invocation_index(),
            }
            if column in self.runner.chosen_epochs:
                self.results.columns[column]["chosen_epoch"] = self.runner.chosen_epochs[column]
            if column in self.runner.pseudo_pairs:
                self.results.columns[column]["pseudo_pairs"] = pseudo_pair_record(self.runner.pseudo_pairs[column])
            self._save_curves()
            self.save()
        return self.results

    def _invocation_index(self) -> int:
        """This run's entry in ``results.invocations``, added when it computes its first column."""
        if self._invocation is None:
            self.results.invocations.append(
                {
                    "command": self.command, "started": self.started, "environment": self.environment,
                    "settings": {name: getattr(self.settings, name) for name in NOT_FINGERPRINTED},
                }
            )
            self._invocation = len(self.results.invocations) - 1
        return self._invocation

    def evaluate(self, model: nn.Module):
        s = self.settings
        return evaluate_pairs(
            model, self.ssl_split.eval_left, self.ssl_split.eval_right,
            preprocess_fn=self.runner.plain_images, ks=s.ks, batch_size=s.eval_batch_size,
            device=s.device, num_workers=s.num_workers,
        )

    # -- outputs ---------------------------------------------------------------------
    def save(self) -> None:
        data = {
            "settings": self.results.settings,
            "fingerprint": self.settings.fingerprint(self.data_identity),
            "data": self.results.data,
            "environment": self.results.environment,
            "columns": self.results.columns,
            # the command that created the folder, as settings and environment are its;
            # each column and "invocations" say which command computed what
            "command": self.results.command or self.command,
            "invocations": self.results.invocations,
        }
        _atomic_write(self.out_dir / "results.json", json.dumps(data, indent=2))
        _atomic_write(
            self.out_dir / "results.md",
            render_markdown(self.results, self.settings.ks, self.title, self.command),
        )

    def _save_curves(self) -> None:
        from ..pictures import save_loss_curve

        for key, recorder in self.runner.recorders.items():
            if not recorder.losses:
                continue
            name = key.replace("/", "--").replace("%", "pct").replace(" ", "-")
            save_loss_curve(
                self.out_dir / "curves" / f"{name}.png", recorder.losses, title=key,
                epoch_boundaries=recorder.epoch_ends[:-1],
            )

    def save_examples(self, path: Path, column: str = SELF_SUPERVISED, num_queries: int = 8) -> Path:
        """A PNG of the first queries with their top-5 results under ``column``'s model."""
        from ..pictures import save_retrieval_examples

        model = self._train_or_load(column)
        s, left, right = self.settings, self.ssl_split.eval_left, self.ssl_split.eval_right
        query_emb, index_emb = (
            embed_documents(docs, model, self.runner.plain_images, s.eval_batch_size, s.device,
                            num_workers=s.num_workers)
            for docs in (left, right)
        )
        indices, _ = top_k(query_emb, index_emb, 5)
        partner = pair_keys_to_partner(
            [document_key(d) for d in left], [document_key(d) for d in right]
        )
        return save_retrieval_examples(
            path, left, right, indices, partner, num_queries=num_queries,
            title=f"{self.title}: top-5 under '{column}' (true partner outlined)",
        )

    def _train_or_load(self, column: str) -> nn.Module:
        path = self.model_path(column)
        if column == PRETRAINED or column not in self.results.columns or not path.exists():
            return self._train(column)
        model = self.runner.skeleton(column)
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return model
