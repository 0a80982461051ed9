"""Label efficiency: the five rows of issue 7 on the proxies, for the tutorial's recipe and others.

Rows (the ``finetuner-selfsup reproduce`` columns, all from the same random init):

* ``random init``           -- ``pre-trained`` with ``weights='none'``: no training;
* ``10% labels only``       -- the tutorial's fine-tune on the labelled 10 %, from random init;
* ``self-supervised only``  -- SimCLR on the unlabelled 70 %, nothing else;
* ``self-supervision``      -- SimCLR, then the fine-tune on the 10 % (the seed's two fits);
* ``80% labels``            -- ``fine-tuned``: triplet training on 80 % of the pairs.

Data sets (``--datasets``): ``shapes`` (the built-in demo pairs) and ``fonts`` (one character
in DejaVu Sans and in STIX General Italic, from matplotlib's wheel). Settings: the demo
preset (ResNet-18 from scratch, 64 px, 20 SimCLR epochs, see ``reproduce/settings.py``)
plus ``--set KEY=VALUE`` changes.

Every recipe after the first reuses the self-supervised checkpoint (same settings) and
recomputes only the columns its fine-tune changes. ``--finetune-seeds 0 1 2`` repeats the
labelled fits (fine-tune, 10 % only, 80 %) with other seeds on the same self-supervised
model and reports mean ± standard deviation: on 120 evaluation queries a single run's
hit@k moves by several points between seeds. Results: ``OUT/<dataset>/<recipe>/
finetune-seed-<N>/results.{json,md}`` and a summary table on stdout and in ``OUT/summary.md``.

Run: ``python bench/label_efficiency.py --out /tmp/label-efficiency --recipes tutorial contrastive``
"""
from __future__ import annotations

import argparse
import json
import logging
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List

from finetuner_selfsup.cli.experiments import _parse_value
from finetuner_selfsup.experiments.reproduce.columns import (
    LABELS_ONLY,
    PRETRAINED,
    SELF_SUPERVISED,
    SELF_SUPERVISED_ONLY,
    SUPERVISED,
)
from finetuner_selfsup.experiments.reproduce.recipes import checked_recipe_name, get_recipe
from finetuner_selfsup.experiments.reproduce.runner import TableRun
from finetuner_selfsup.experiments.reproduce.settings import DEMO

ROWS = (
    (PRETRAINED, "random init"),
    (LABELS_ONLY, "10% labels only"),
    (SELF_SUPERVISED_ONLY, "self-supervised only"),
    (SELF_SUPERVISED, "self-supervised + 10% labels"),
    (SUPERVISED, "80% labels"),
)


def make_data(name: str, root: Path, pairs: int, seed: int = 0) -> Path:
    """The proxy ``name`` in ``root``; ``seed`` draws which pairs it holds and their
    order, and so which of them fall in the unlabelled, labelled and evaluated parts."""
    if name == "fonts":
        from finetuner_selfsup.experiments.data.font_pairs import make_font_pairs

        return make_font_pairs(root, num_pairs=pairs, seed=seed)
    if name == "shapes":
        from finetuner_selfsup.experiments.data.demo_pairs import make_demo_pairs

        return make_demo_pairs(root, num_pairs=pairs, seed=seed)
    raise SystemExit(f"unknown data set {name!r}; choose shapes or fonts")


def columns_for(recipe_name: str, first_recipe: bool, first_seed: bool,
                only_self_supervised: bool = False) -> List[str]:
    """The columns a (recipe, fine-tune seed) run must compute: all five once; for other
    recipes only those the recipe changes; for further seeds only the labelled fits."""
    recipe = get_recipe(recipe_name)
    if only_self_supervised:
        return [SELF_SUPERVISED_ONLY, SELF_SUPERVISED] if first_seed else [SELF_SUPERVISED]
    if first_recipe:
        if first_seed:
            return [column for column, _ in ROWS]
        return [LABELS_ONLY, SELF_SUPERVISED, SUPERVISED]
    columns = [SELF_SUPERVISED, LABELS_ONLY]
    if recipe.head_blocks_kept and first_seed:
        columns.append(SELF_SUPERVISED_ONLY)
    return columns


def _mean_sd(values: List[float]) -> str:
    mean = statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.3f}"
    return f"{mean:.3f} ± {statistics.stdev(values):.3f}"


def summary(results: Dict[str, Dict[str, List[dict]]], ks=(1, 5, 10)) -> str:
    """One line per data set, recipe and row: mean ± sd over the fine-tune seeds."""
    lines = ["| data | recipe | row | " + " | ".join(f"hit@{k}" for k in ks) + " | runs | wall (s) | kept epochs |",
             "|---|---|---|" + "---|" * (len(ks) + 3)]
    for dataset, by_recipe in results.items():
        for recipe, runs in by_recipe.items():
            for column, label in ROWS:
                entries = [run[column] for run in runs if column in run]
                if not entries:
                    continue
                hits = " | ".join(_mean_sd([e["metrics"][f"hit@{k}"] for e in entries]) for k in ks)
                wall = statistics.fmean(e["wall_seconds"] for e in entries)
                kept = ",".join(str(e["chosen_epoch"]) for e in entries if "chosen_epoch" in e)
                lines.append(f"| {dataset} | {recipe} | {label} | {hits} | {len(entries)} | {wall:.0f} | {kept} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--datasets", nargs="+", default=["shapes", "fonts"])
    parser.add_argument("--recipes", nargs="+", default=["tutorial"])
    parser.add_argument("--finetune-seeds", nargs="+", type=int, default=[0],
                        help="seeds of the labelled fits; each is a repeat of the labelled stage "
                             "on the same self-supervised model (default: 0, the demo's seed)")
    parser.add_argument("--pairs", type=int, default=600)
    parser.add_argument("--data-seed", type=int, default=0,
                        help="draw of the pair set and so of its split (default 0: the recorded runs); "
                             "another draw measures how much the result depends on which pairs are labelled")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--only-self-supervised", action="store_true",
                        help="compute only the columns that start from the self-supervised stage "
                             "(to compare settings of that stage; the others do not depend on it)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    # 'best' is recorded under the recipe it stands for, as `finetuner-selfsup reproduce` does
    try:
        args.recipes = [checked_recipe_name(name) for name in args.recipes]
    except ValueError as error:
        parser.error(str(error))

    settings = DEMO
    for item in args.set:
        key, _, text = item.partition("=")
        settings = settings.replace(**{key: _parse_value(settings, key, text)})
    try:
        settings.validate()  # before the data are generated or anything trains
    except ValueError as error:
        parser.error(str(error))
    command = "python bench/label_efficiency.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    results: Dict[str, Dict[str, List[dict]]] = {}
    for dataset in args.datasets:
        data = make_data(dataset, args.out / dataset / "data", args.pairs, args.data_seed)
        results[dataset] = {}
        for position, recipe in enumerate(args.recipes):
            results[dataset][recipe] = []
            for seed_position, seed in enumerate(args.finetune_seeds):
                started = time.perf_counter()
                run = TableRun(
                    settings.replace(recipe=recipe, finetune_seed=seed), data,
                    args.out / dataset / recipe / f"finetune-seed-{seed}",
                    title=f"label efficiency: {dataset}, recipe {recipe}, fine-tune seed {seed}",
                    command=command, checkpoint_dir=args.out / dataset / "checkpoints",
                )
                run.run(columns_for(recipe, position == 0, seed_position == 0, args.only_self_supervised))
                results[dataset][recipe].append(run.results.columns)
                print(f"{dataset} / {recipe} / seed {seed}: {time.perf_counter() - started:.0f} s", flush=True)
    table = summary(results)
    print(table)
    (args.out / "summary.md").write_text(f"Produced by: `{command}`\n\n{table}\n")
    (args.out / "summary.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
