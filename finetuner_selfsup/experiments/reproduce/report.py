"""``results.md``: a reproduction run's results as a page -- the tutorial's table, every
metric, the self-supervision column against the others with intervals, the hardest
queries, and the settings, data and environment behind them.
"""
from __future__ import annotations

import json
from typing import Dict, List, Sequence

from ...evaluation import format_table
from .columns import COLUMNS, SELF_SUPERVISED
from .results_file import TableResults
from .settings import NOT_FINGERPRINTED


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
    paired bootstrap interval over the queries (:mod:`finetuner_selfsup.experiments.comparison`), so a
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
