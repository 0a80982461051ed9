"""The experiment commands of ``finetuner-selfsup``.

* ``finetuner-selfsup reproduce --data DIR`` -- the tutorial's hit@k table on Totally-Looks-Like;
* ``finetuner-selfsup demo`` -- the same pipeline and table on a small built-in pair set,
  in minutes on a CPU, with no download.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import shlex
import sys
import time
from pathlib import Path
from typing import Any, List, Optional, Sequence

from ..experiments.reproduce.recipes import BEST_RECIPE, recipe_names
from ..experiments.reproduce.settings import DEMO, TUTORIAL, RunSettings


def _parse_value(settings: RunSettings, key: str, text: str) -> Any:
    fields = {f.name: f for f in dataclasses.fields(settings)}
    if key not in fields:
        raise SystemExit(f"--set: unknown setting {key!r}; known: {', '.join(sorted(fields))}")
    current = getattr(settings, key)
    if isinstance(current, bool):
        if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise SystemExit(f"--set {key}: expected true/false, got {text!r}")
        return text.lower() in ("true", "1", "yes")
    if isinstance(current, tuple):
        return tuple(int(v) for v in text.split(","))
    if key in ("seed", "finetune_seed") and text.lower() == "none":
        return None
    try:
        return type(current)(text) if current is not None else int(text)
    except ValueError:
        raise SystemExit(f"--set {key}: cannot read {text!r} as {type(current).__name__}") from None


def _settings(base: RunSettings, args: argparse.Namespace) -> RunSettings:
    changes = {}
    for flag in ("model", "weights", "device", "num_workers", "ssl_epochs", "ssl_batch_size",
                 "finetune_epochs", "supervised_epochs", "image_size", "layer_name", "seed",
                 "recipe"):
        value = getattr(args, flag, None)
        if value is not None:
            changes[flag] = value
    for item in args.set or []:
        key, sep, text = item.partition("=")
        if not sep:
            raise SystemExit(f"--set expects KEY=VALUE, got {item!r}")
        changes[key] = _parse_value(base, key, text)
    if "recipe" in changes:
        from ..experiments.reproduce.recipes import checked_recipe_name

        changes["recipe"] = checked_recipe_name(changes["recipe"])  # fails before any work
    # every value checked before the demo data is generated or anything trains
    return base.replace(**changes).validate()


def _common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, help="output folder (results, models, curves)")
    parser.add_argument("--device", help="'cpu', 'cuda' or 'cuda:N'")
    parser.add_argument("--num-workers", dest="num_workers", type=int, help="DataLoader workers")
    parser.add_argument("--model", choices=("resnet18", "resnet34", "resnet50"))
    parser.add_argument("--weights", choices=("imagenet", "none"), help="backbone initialisation")
    parser.add_argument("--layer-name", dest="layer_name", help="the tailor's embedding layer")
    parser.add_argument("--image-size", dest="image_size", type=int)
    parser.add_argument("--ssl-epochs", dest="ssl_epochs", type=int)
    parser.add_argument("--ssl-batch-size", dest="ssl_batch_size", type=int)
    parser.add_argument("--finetune-epochs", dest="finetune_epochs", type=int)
    parser.add_argument("--supervised-epochs", dest="supervised_epochs", type=int)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--recipe", help="how the labelled fine-tune runs: 'tutorial' (default, the "
                        f"seed's call as written), 'best' (the best measured: {BEST_RECIPE}), or "
                        f"one or more of {', '.join(recipe_names()[1:])} joined by '+' (see the "
                        "docs page 'Label efficiency')")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="any other setting, e.g. --set temperature=0.2 (repeatable)")
    # the names of reproduce.columns.COLUMNS, written out so that --help needs no torch import
    parser.add_argument("--columns", nargs="+", metavar="COLUMN",
                        help="only these columns, of 'pre-trained', 'fine-tuned', 'self-supervision', "
                             "'10%% labels only' and 'self-supervised only' (default: all five)")
    parser.add_argument("--save-examples", dest="save_examples", type=Path, metavar="PNG",
                        help="write a grid of queries with their top-5 results")


def add_commands(sub: "argparse._SubParsersAction") -> None:
    """Add ``reproduce`` and ``demo`` to the sub-command parser ``sub``."""
    reproduce = sub.add_parser("reproduce", help="the tutorial's table on Totally-Looks-Like")
    reproduce.add_argument("--data", type=Path, required=True,
                           help="folder with left/ and right/ (or left.zip and right.zip)")
    _common_options(reproduce)
    reproduce.set_defaults(run=run_table)
    demo = sub.add_parser("demo", help="the pipeline on a small built-in pair set, no download")
    demo.add_argument("--pairs", type=int, default=600, help="number of generated pairs")
    demo.add_argument("--dataset", choices=("shapes", "fonts"), default="shapes",
                      help="shapes: synthetic scenes restyled (default); fonts: one character "
                           "in two typefaces from matplotlib's fonts (needs matplotlib)")
    demo.add_argument("--data", type=Path, help="where to generate the pairs (default: OUT/data)")
    _common_options(demo)
    demo.set_defaults(run=run_table)


def _print_table(run, console) -> None:
    from ..evaluation import format_table

    console.print(format_table(run.results.metrics(), run.settings.ks), markup=False, highlight=False)


def _compare(metrics: dict, ks: Sequence[int], better: str, worse: str, ranks: Optional[dict] = None) -> tuple:
    """(word, differences, with intervals) of column ``better`` minus column ``worse`` at
    every hit@k.

    The word says at how many k the first column is higher; with both columns' per-query
    ranks each difference carries its 95 % paired bootstrap interval, so the reader sees
    which of them are clear."""
    first, second = metrics[better], metrics[worse]
    pairs = ranks or {}
    intervals = bool(pairs.get(better) and pairs.get(worse))
    if intervals:
        from ..experiments.comparison import hit_difference

        diffs = ", ".join(f"hit@{k} {hit_difference(pairs[better], pairs[worse], k)}" for k in ks)
    else:
        diffs = ", ".join(f"hit@{k} {first[f'hit@{k}'] - second[f'hit@{k}']:+.3f}" for k in ks)
    wins = sum(first[f"hit@{k}"] > second[f"hit@{k}"] for k in ks)
    word = "helped" if wins == len(ks) else "did not help" if wins == 0 else "helped partly"
    return word, diffs, intervals


def _verdict(metrics: dict, ks: Sequence[int], ranks: Optional[dict] = None) -> str:
    """What the table says about the tutorial's questions, in sentences: did the
    self-supervised stage help, did the fine-tune help, and how far is self-supervision
    from full supervision. ``ranks`` (per column, each query's partner rank) adds 95 %
    intervals over the queries (in brackets)."""
    from ..experiments.reproduce.columns import LABELS_ONLY, SELF_SUPERVISED, SELF_SUPERVISED_ONLY, SUPERVISED

    sentences, bracketed = [], False
    if SELF_SUPERVISED in metrics and LABELS_ONLY in metrics:
        word, diffs, intervals = _compare(metrics, ks, SELF_SUPERVISED, LABELS_ONLY, ranks)
        bracketed |= intervals
        sentences.append(f"Self-supervised pre-training {word} on this data: self-supervision "
                         f"minus '10% labels only' = {diffs}.")
    if SELF_SUPERVISED in metrics and SELF_SUPERVISED_ONLY in metrics:
        word, diffs, intervals = _compare(metrics, ks, SELF_SUPERVISED, SELF_SUPERVISED_ONLY, ranks)
        bracketed |= intervals
        sentences.append(f"The fine-tune on the labelled 10 % {word} the self-supervised model: "
                         f"self-supervision minus 'self-supervised only' = {diffs}.")
    if SELF_SUPERVISED in metrics and SUPERVISED in metrics:
        _, diffs, intervals = _compare(metrics, ks, SELF_SUPERVISED, SUPERVISED, ranks)
        bracketed |= intervals
        sentences.append(f"Against full supervision on 80 % of the labels: self-supervision "
                         f"minus '{SUPERVISED}' = {diffs}.")
    if bracketed:
        sentences.append("(In brackets: the 95 % interval of each difference over the queries, "
                         "paired bootstrap; one that includes 0 is not a clear difference.)")
    return " ".join(sentences)


def run_table(args: argparse.Namespace, console: "Console", command: str) -> int:
    """Run ``demo`` or ``reproduce`` as parsed into ``args``; ``command`` is recorded in the
    results as the invocation that computed the columns."""
    from ..experiments.reproduce.columns import COLUMNS, SELF_SUPERVISED
    from ..experiments.reproduce.runner import TableRun

    started = time.perf_counter()
    if args.command == "demo":
        settings = _settings(DEMO, args)
        if args.dataset == "fonts":
            from ..experiments.data.font_pairs import FONT_DESCRIPTION, make_font_pairs

            out = args.out or Path("finetuner-selfsup-demo-fonts")
            data = make_font_pairs(args.data or out / "data", num_pairs=args.pairs, seed=0)
            description, title = FONT_DESCRIPTION, "finetuner-selfsup demo (font pairs)"
        else:
            from ..experiments.data.demo_pairs import DEMO_DESCRIPTION, make_demo_pairs

            out = args.out or Path("finetuner-selfsup-demo")
            data = make_demo_pairs(args.data or out / "data", num_pairs=args.pairs, seed=0)
            description, title = DEMO_DESCRIPTION, "finetuner-selfsup demo (built-in synthetic pairs)"
        console.print(f"[bold]Demo data[/bold]: {description}")
        run = TableRun(settings, data, out, title=title, command=command)
    else:
        settings = _settings(TUTORIAL, args)
        out = args.out or Path("tll-results")
        run = TableRun(settings, args.data, out, command=command)

    run.run(args.columns or COLUMNS)
    _print_table(run, console)
    if settings.weights == "none":
        console.print(f"(weights=none: every column starts from a randomly initialised "
                      f"{settings.model}, so 'pre-trained' means untrained here.)")
    verdict = _verdict(run.results.metrics(), settings.ks, run.results.ranks())
    if verdict:
        console.print(verdict)
    if args.save_examples:
        # the seed's model when it was computed, else the last column asked for
        done = run.results.columns
        column = SELF_SUPERVISED if SELF_SUPERVISED in done else (args.columns or COLUMNS)[-1]
        console.print(f"examples: {run.save_examples(args.save_examples, column=column)}")
    console.print(f"results: {out / 'results.md'} and {out / 'results.json'}; "
                  f"loss curves in {out / 'curves'}; {time.perf_counter() - started:.0f} s")
    return 0
