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
self-supervised stage; when a folder's results may be resumed is
:mod:`.results_file`'s rule, and ``results.md`` is :mod:`.report`'s page.
"""
from __future__ import annotations

import json
import logging
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch import nn

from ..data import (
    SelfSupervisedSplit,
    load_tll,
    split_self_supervised,
    split_self_supervised_with_chosen_labels,
    split_supervised,
)
from ...evaluation import (
    document_key,
    embed_documents,
    evaluate_pairs,
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
from .report import render_markdown
from .results_file import (
    TableResults,
    atomic_write,
    data_identity,
    load_results,
    pseudo_pair_record,
)
from .settings import NOT_FINGERPRINTED, RunSettings

logger = logging.getLogger("finetuner_selfsup")


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
        loaded = load_results(
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
        atomic_write(self.out_dir / "results.json", json.dumps(data, indent=2))
        atomic_write(
            self.out_dir / "results.md",
            render_markdown(self.results, self.settings.ks, self.title, self.command),
        )

    def _save_curves(self) -> None:
        from ...pictures import save_loss_curve

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
        from ...pictures import save_retrieval_examples

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
