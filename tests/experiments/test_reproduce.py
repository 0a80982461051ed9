"""The reproduction runner and the CLI, end to end at a reduced size on generated pairs."""
from __future__ import annotations

import json
import math

import pytest
import torch
from PIL import Image

from finetuner_selfsup.cli import main
from finetuner_selfsup.experiments.data.demo_pairs import make_demo_pairs
from finetuner_selfsup.engine.checkpoint import checkpoint_files, load_checkpoint
from finetuner_selfsup.experiments.reproduce.columns import COLUMNS, LABELS_ONLY, SELF_SUPERVISED, SELF_SUPERVISED_ONLY
from finetuner_selfsup.experiments.reproduce.runner import TableRun
from finetuner_selfsup.experiments.reproduce.settings import DEMO, TUTORIAL

TINY = DEMO.replace(
    image_size=32, ssl_epochs=2, ssl_batch_size=16, head_output_dim=16, finetune_epochs=1,
    finetune_batch_size=4, supervised_epochs=1, supervised_batch_size=8, eval_batch_size=16,
)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    return make_demo_pairs(tmp_path_factory.mktemp("pairs"), num_pairs=30, image_size=(32, 32), seed=0)


def test_tutorial_preset_is_the_seed_tutorial():
    assert (TUTORIAL.model, TUTORIAL.layer_name, TUTORIAL.image_size) == ("resnet50", "adaptiveavgpool2d_173", 224)
    assert (TUTORIAL.ssl_epochs, TUTORIAL.ssl_batch_size, TUTORIAL.temperature) == (50, 512, 0.1)
    assert (TUTORIAL.head_output_dim, TUTORIAL.head_layers) == (1024, 2)
    assert (TUTORIAL.finetune_epochs, TUTORIAL.finetune_batch_size, TUTORIAL.finetune_learning_rate) == (10, 128, 1e-5)
    assert (TUTORIAL.margin, TUTORIAL.num_items_per_class) == (0.3, 2)
    # the recipe of the published fully supervised column (FACTS.md)
    assert (TUTORIAL.supervised_epochs, TUTORIAL.supervised_batch_size, TUTORIAL.supervised_learning_rate) == (6, 128, 1e-5)
    assert (TUTORIAL.pretrain_ratio, TUTORIAL.finetune_ratio, TUTORIAL.supervised_ratio) == (0.7, 0.1, 0.8)


def test_all_columns_then_resume_without_recomputing(pairs, tmp_path):
    run = TableRun(TINY, pairs, tmp_path)
    assert run.results.data["pairs"] == 30 and run.results.data["eval_queries"] == 6
    results = run.run()
    assert list(results.columns) == list(COLUMNS)
    for column in results.columns.values():
        for name, value in column["metrics"].items():
            assert 0.0 <= value <= 1.0 and math.isfinite(value), name
        assert column["metrics"]["hit@10"] >= column["metrics"]["hit@5"] >= column["metrics"]["hit@1"]
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["settings"]["model"] == "resnet18" and "torch" in saved["environment"]["packages"]
    markdown = (tmp_path / "results.md").read_text()
    assert "| hit@1  |" in markdown and SELF_SUPERVISED in markdown

    # every query's partner rank is kept, and agrees with the metrics
    queries = [doc.uri.split("/")[-1] for doc in run.ssl_split.eval_left]
    for name, column in saved["columns"].items():
        ranks = column["ranks"]
        assert sorted(ranks) == sorted(queries) and all(1 <= rank <= 6 for rank in ranks.values()), name
        for k in (1, 5):
            assert column["metrics"][f"hit@{k}"] == pytest.approx(sum(r <= k for r in ranks.values()) / 6), name
    # results.md lists the self-supervision column's worst queries with every column's rank
    hardest = markdown.split("## Hardest queries")[1].split("\n## ")[0]
    rows = [line for line in hardest.splitlines() if line.startswith("| ") and not line.startswith("| query")]
    worst_first = sorted(saved["columns"][SELF_SUPERVISED]["ranks"].items(), key=lambda item: (-item[1], item[0]))
    assert [row.split(" | ")[0][2:] for row in rows] == [query for query, _ in worst_first]  # 6 < 10: all
    header = next(line for line in hardest.splitlines() if line.startswith("| query"))
    assert header == "| query | " + " | ".join(COLUMNS) + " |"
    query, _ = worst_first[0]
    expected = " | ".join(str(saved["columns"][column]["ranks"][query]) for column in COLUMNS)
    assert rows[0] == f"| {query} | {expected} |"
    # and self-supervision minus every other column, with the paired bootstrap interval
    from finetuner_selfsup.experiments.comparison import hit_difference

    against = markdown.split(f"## '{SELF_SUPERVISED}' against the other columns")[1].split("\n## ")[0]
    rows = [line for line in against.splitlines() if line.startswith("| ") and not line.startswith("| column")]
    assert [row.split(" | ")[0][2:] for row in rows] == [c for c in COLUMNS if c != SELF_SUPERVISED]
    column = rows[0].split(" | ")[0][2:]
    expected = [str(hit_difference(saved["columns"][SELF_SUPERVISED]["ranks"], saved["columns"][column]["ranks"], k))
                for k in TINY.ks]
    assert rows[0] == f"| {column} | " + " | ".join(expected) + " |"
    for curve in (tmp_path / "curves").glob("*.png"):
        Image.open(curve).verify()
    assert len(list((tmp_path / "curves").glob("*.png"))) == 4  # the five columns have four fits

    # a second run finds every column done: nothing is trained again
    again = TableRun(TINY, pairs, tmp_path)
    build_backbone = again.runner.backbone
    again.runner.backbone = lambda: pytest.fail("a finished column was recomputed")
    assert again.run().metrics() == results.metrics()
    again.runner.backbone = build_backbone  # the saved weights need the architecture

    # the example grid under a finished column loads that column's saved model
    path = again.save_examples(tmp_path / "examples.png", column=LABELS_ONLY, num_queries=4)
    with Image.open(path) as image:
        image.verify()


def test_other_settings_in_the_same_folder_are_refused(pairs, tmp_path):
    TableRun(TINY, pairs, tmp_path)
    with pytest.raises(ValueError, match="temperature"):
        TableRun(TINY.replace(temperature=0.5), pairs, tmp_path)


def test_typical_label_selection_chooses_the_labelled_pairs_from_the_self_supervised_model(pairs, tmp_path):
    from finetuner_selfsup.experiments.label_selection import choose_for_labelling

    settings = TINY.replace(label_selection="typical")
    # the self-supervised stage is shared with the tutorial's cut; results files of runs
    # from before the setting existed (label_selection 'first') stay valid
    assert settings.self_supervised_fingerprint() == TINY.self_supervised_fingerprint()
    assert "label_selection" not in TINY.fingerprint() and settings.fingerprint()["label_selection"] == "typical"
    run = TableRun(settings, pairs, tmp_path)
    results = run.run([LABELS_ONLY, SELF_SUPERVISED])
    # 30 pairs: the tutorial labels pairs 21-23; here 3 of the first 24, chosen by typicality
    model = run.runner.self_supervised_only(run.ssl_split.pretrain)
    queries = list(run.ssl_split.pretrain[:21]) + list(run.ssl_split.finetune[:3])
    expected = [queries[i].uri.split("/")[-1] for i in choose_for_labelling(
        model, queries, 3, preprocess_fn=run.runner.plain_images, progress=False)]
    assert results.data["labelled_pairs"] == sorted(expected)
    labelled = run.labelled_split()
    assert sorted(d.tags["finetuner_label"] for d in labelled.finetune) == sorted(expected * 2)
    unlabelled = [d.uri.split("/")[-1] for d in labelled.pretrain]
    assert len(unlabelled) == 42 and not set(unlabelled) & set(expected)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["data"]["labelled_pairs"] == sorted(expected)
    # a resumed run chooses the same pairs again
    again = TableRun(settings, pairs, tmp_path).labelled_split()
    assert [d.uri for d in again.finetune] == [d.uri for d in labelled.finetune]

    with pytest.raises(ValueError, match="label_selection must be one of 'first', 'typical', got 'best'"):
        TableRun(TINY.replace(label_selection="best"), pairs, tmp_path / "other")


def test_self_supervised_stage_resumes_from_its_last_epoch(pairs, tmp_path):
    run = TableRun(TINY, pairs, tmp_path)
    first = run.runner.self_supervised_pretraining(run.ssl_split.pretrain)
    (folder,) = (tmp_path / "checkpoints").glob("self-supervised-pretraining-*")
    saved = checkpoint_files(folder)
    assert [p.name for p in saved] == [f"saved_model_epoch_{TINY.ssl_epochs:02d}"]
    assert load_checkpoint(saved[-1])["epoch"] == TINY.ssl_epochs
    # all epochs done: a new runner gets the checkpoint's weights without training a batch
    rerun = TableRun(TINY, pairs, tmp_path)
    second = rerun.runner.self_supervised_pretraining(rerun.ssl_split.pretrain)
    for key, value in first.state_dict().items():
        assert torch.equal(value, second.state_dict()[key]), key
    assert rerun.runner.recorders[f"{SELF_SUPERVISED}/pre-training"].losses == []


def test_cli_demo_end_to_end(tmp_path, capsys):
    code = main([
        "demo", "--out", str(tmp_path / "out"), "--pairs", "30", "--image-size", "32",
        "--ssl-epochs", "1", "--finetune-epochs", "1", "--supervised-epochs", "1",
        "--set", "ssl_batch_size=16", "--set", "finetune_batch_size=4", "--set", "supervised_batch_size=8",
        "--columns", "pre-trained", "10% labels only", "--save-examples", str(tmp_path / "examples.png"),
    ])
    assert code == 0
    printed = capsys.readouterr().out
    assert "synthetic" in printed and "| hit@5  |" in printed and "10% labels only" in printed
    assert "'pre-trained' means untrained" in printed
    assert "self-supervision" not in json.loads((tmp_path / "out" / "results.json").read_text())["columns"]
    with Image.open(tmp_path / "examples.png") as image:
        image.verify()


def test_verdict_compares_self_supervision_with_labels_only():
    from finetuner_selfsup.cli.experiments import _verdict

    metrics = {
        SELF_SUPERVISED: {"hit@1": 0.3, "hit@5": 0.5},
        LABELS_ONLY: {"hit@1": 0.2, "hit@5": 0.6},
    }
    assert _verdict(metrics, (1, 5)) == (
        "Self-supervised pre-training helped partly on this data: self-supervision minus "
        "'10% labels only' = hit@1 +0.100, hit@5 -0.100."
    )
    assert _verdict({LABELS_ONLY: metrics[LABELS_ONLY]}, (1, 5)) == ""
    metrics[SELF_SUPERVISED_ONLY] = {"hit@1": 0.4, "hit@5": 0.6}
    assert _verdict(metrics, (1, 5)).endswith(
        "The fine-tune on the labelled 10 % did not help the self-supervised model: "
        "self-supervision minus 'self-supervised only' = hit@1 -0.100, hit@5 -0.100."
    )


def test_verdict_brackets_each_difference_with_its_interval_and_compares_with_full_supervision():
    from finetuner_selfsup.cli.experiments import _verdict
    from finetuner_selfsup.experiments.reproduce.columns import SUPERVISED

    # 10 queries: self-supervision finds 6 partners first, full supervision 3 (the same 3)
    ranks = {
        SELF_SUPERVISED: {f"q{i}": 1 if i < 6 else 8 for i in range(10)},
        SUPERVISED: {f"q{i}": 1 if i < 3 else 8 for i in range(10)},
    }
    metrics = {column: {"hit@1": sum(r == 1 for r in by_query.values()) / 10,
                        "hit@5": sum(r <= 5 for r in by_query.values()) / 10}
               for column, by_query in ranks.items()}
    verdict = _verdict(metrics, (1, 5), ranks)
    # per query differences: three +1, seven 0 -> +0.3, resampled means from 0 to ~0.6
    assert verdict.startswith("Against full supervision on 80 % of the labels: self-supervision minus "
                              "'fine-tuned' = hit@1 +0.300 (+0.000 to +0.600), hit@5 +0.300 (+0.000 to +0.600).")
    assert verdict.endswith("one that includes 0 is not a clear difference.)")
    # without ranks: the plain differences, no bracket note
    assert _verdict(metrics, (1, 5)) == (
        "Against full supervision on 80 % of the labels: self-supervision minus 'fine-tuned' = "
        "hit@1 +0.300, hit@5 +0.300."
    )


def test_cli_reports_bad_input_without_traceback(tmp_path, capsys):
    assert main(["reproduce", "--data", str(tmp_path / "nowhere")]) == 2
    assert "error" in capsys.readouterr().err


def test_every_column_starts_from_the_same_random_initialisation(tmp_path):
    from finetuner_selfsup.experiments.reproduce.columns import ColumnRunner

    runner = ColumnRunner(TINY, tmp_path)
    first, second = runner.backbone().state_dict(), runner.backbone().state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_finetune_seed_changes_only_the_labelled_fits(tmp_path):
    from finetuner_selfsup.experiments.reproduce.columns import ColumnRunner

    assert TINY.labelled_seed == TINY.seed == 0
    reseeded = TINY.replace(finetune_seed=7)
    assert reseeded.labelled_seed == 7
    # the self-supervised stage (and so its checkpoint folder) is shared across fine-tune seeds
    assert reseeded.self_supervised_fingerprint() == TINY.self_supervised_fingerprint()
    assert reseeded.fingerprint() != TINY.fingerprint()
    # the initial weights still come from `seed`
    a = ColumnRunner(TINY, tmp_path).backbone().state_dict()
    b = ColumnRunner(reseeded, tmp_path).backbone().state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_projection_head_initialisation_does_not_depend_on_what_ran_before(tmp_path):
    from finetuner_selfsup.experiments.reproduce.columns import ColumnRunner

    runner = ColumnRunner(TINY, tmp_path)
    first = runner._with_head().state_dict()
    torch.rand(1000)  # e.g. another column trained first
    second = runner._with_head().state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_hardest_queries_lists_the_worst_ten_and_tolerates_columns_without_ranks():
    from finetuner_selfsup.experiments.reproduce.columns import SUPERVISED
    from finetuner_selfsup.experiments.reproduce.report import render_markdown
    from finetuner_selfsup.experiments.reproduce.results_file import TableResults

    ssl_ranks = {f"{i:05d}.jpg": 1 + (i * 7) % 30 for i in range(30)}  # ranks 1..30, each once
    results = TableResults(settings={}, data={"eval_queries": 30}, environment={})
    results.columns[SUPERVISED] = {"metrics": {"hit@1": 0.5}, "wall_seconds": 1.0}  # an older file: no ranks
    page = render_markdown(results, (1,), "t", "c")
    assert "## Hardest queries" not in page  # no self-supervision ranks yet
    results.columns[SELF_SUPERVISED] = {"metrics": {"hit@1": 0.1}, "wall_seconds": 1.0, "ranks": ssl_ranks}
    results.columns[LABELS_ONLY] = {
        "metrics": {"hit@1": 0.0}, "wall_seconds": 1.0, "ranks": {query: 30 for query in ssl_ranks},
    }
    page = render_markdown(results, (1,), "t", "c")
    section = page.split("## Hardest queries")[1].split("\n## ")[0]
    assert "1 = first of 30" in section
    rows = [line for line in section.splitlines() if line.startswith("| 0")]
    worst = sorted(ssl_ranks, key=lambda query: -ssl_ranks[query])[:10]
    assert [row.split(" | ")[0][2:] for row in rows] == worst
    assert rows[0] == f"| {worst[0]} | 30 | 30 |"  # only the columns that have ranks
    assert f"| query | {SELF_SUPERVISED} | {LABELS_ONLY} |" in section


def test_the_presets_are_valid_settings():
    assert DEMO.validate() is DEMO and TUTORIAL.validate() is TUTORIAL and TINY.validate() is TINY
    # any integer seeds (seeding takes it modulo 2**32), as before validation existed
    DEMO.replace(seed=-1, finetune_seed=2**40).validate()
    with pytest.raises(ValueError, match="seed must be an integer or none, got 1.5"):
        DEMO.replace(seed=1.5).validate()


@pytest.mark.parametrize("changes, message", [
    ({"ssl_optimizer": "larss"}, "ssl_optimizer must be one of 'default', 'adam', 'adamw-cosine', 'lars', got 'larss'"),
    ({"ks": (10, 0)}, r"ks must be one or more integers >= 1"),
    ({"pretrain_ratio": 0.9}, r"pretrain_ratio \+ finetune_ratio must be below 1"),
    ({"ssl_epochs": -3}, "ssl_epochs must be an integer >= 1, got -3"),
    ({"temperature": float("nan")}, "temperature must be a positive finite number, got nan"),
    ({"margin": float("nan")}, "margin must be a non-negative finite number, got nan"),
    ({"finetune_ratio": 0.0}, "finetune_ratio must be a positive finite number"),
    ({"weights": "imagnet"}, "weights must be one of 'imagenet', 'none', got 'imagnet'"),
    ({"label_selection": "best"}, "label_selection must be one of 'first', 'typical', got 'best'"),
    ({"ssl_augmentation": "crop-2"}, "ssl_augmentation must be"),
    ({"recipe": "head-layer", "head_layers": 1}, "use head_layers >= 2"),
    ({"finetune_batch_size": 3}, r"finetune_batch_size must be an integer >= 4"),
    ({"finetune_seed": 0.5}, "finetune_seed must be an integer or none, got 0.5"),
    ({"device": "gpu"}, "device: Unknown device 'gpu'"),
])
def test_bad_settings_are_refused_before_the_data_are_read(pairs, tmp_path, monkeypatch, changes, message):
    def read(root):
        pytest.fail("the data were read before the settings were checked")

    monkeypatch.setattr("finetuner_selfsup.experiments.reproduce.runner.load_tll", read)
    with pytest.raises(ValueError, match=message):
        TableRun(TINY.replace(**changes), pairs, tmp_path)
    assert not (tmp_path / "results.json").exists()


def test_every_bad_setting_is_listed_at_once():
    with pytest.raises(ValueError) as error:
        TINY.replace(ssl_epochs=0, temperature=-1.0, model="vgg").validate()
    assert all(name in str(error.value) for name in ("ssl_epochs", "temperature", "model must be one of 'resnet18'"))


def test_ratios_that_leave_a_part_of_the_split_empty_on_the_data_are_refused(pairs, tmp_path):
    # 30 pairs: the first 70 % are 21 pairs and the first 71 % too, so no pair is labelled
    with pytest.raises(ValueError, match=r"30 pairs .* leave no labelled pairs"):
        TableRun(TINY.replace(finetune_ratio=0.01, supervised_ratio=0.7), pairs, tmp_path)


def test_cli_refuses_a_bad_set_value_before_generating_data(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["demo", "--out", str(out), "--pairs", "30", "--set", "ssl_optimizer=larss"]) == 2
    assert "ssl_optimizer must be one of 'default', 'adam', 'adamw-cosine', 'lars'" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("changes", [{"pretrain_ratio": 0.6}, {"supervised_ratio": 0.9}])
def test_a_supervised_split_that_reaches_into_the_evaluation_pairs_is_refused(pairs, tmp_path, changes):
    with pytest.raises(ValueError, match=r"supervised_ratio \(0\.[89]\) must be at most pretrain_ratio \+ finetune_ratio"):
        TableRun(TINY.replace(**changes), pairs, tmp_path)


@pytest.mark.parametrize("changes", [{}, {"supervised_ratio": 0.5}, {"pretrain_ratio": 0.6, "supervised_ratio": 0.7}])
def test_the_supervised_column_never_trains_on_evaluation_images(pairs, tmp_path, changes):
    run = TableRun(TINY.replace(**changes), pairs, tmp_path)
    evaluated = {d.uri for d in run.ssl_split.eval_left} | {d.uri for d in run.ssl_split.eval_right}
    assert evaluated and not {d.uri for d in run.sup_split.train} & evaluated


def test_the_refusal_names_a_setting_only_the_old_results_recorded(pairs, tmp_path):
    # label_selection is in the fingerprint only when it is not 'first' (older files lack it)
    TableRun(TINY.replace(label_selection="typical"), pairs, tmp_path)
    with pytest.raises(ValueError, match=r"differing: label_selection\)"):
        TableRun(TINY, pairs, tmp_path)


@pytest.fixture(scope="module")
def other_pairs(tmp_path_factory):
    """As many pairs as ``pairs``, with the same file names, drawn from another seed."""
    return make_demo_pairs(tmp_path_factory.mktemp("other-pairs"), num_pairs=30, image_size=(32, 32), seed=1)


def test_results_of_other_data_in_the_same_folder_are_refused(pairs, other_pairs, tmp_path):
    from finetuner_selfsup.experiments.reproduce.columns import PRETRAINED

    run = TableRun(TINY, pairs, tmp_path / "out")
    run.run([PRETRAINED])
    assert run.results.data["identity"] == {"pairs": 30, "sha256": run.data_identity["sha256"]}
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["fingerprint"]["data"] == run.data_identity
    with pytest.raises(ValueError, match=r"results computed on other data \(30 pairs from .*; given now: 30 pairs "
                                         r"from .*\); use another output folder \(--out\), or delete .*results.json"):
        TableRun(TINY, other_pairs, tmp_path / "out")
    # the self-supervised checkpoints of other data are not resumed either
    one, two = (TableRun(TINY, data, tmp_path / name).runner for data, name in ((pairs, "a"), (other_pairs, "b")))
    assert one.self_supervised_checkpoints().name != two.self_supervised_checkpoints().name
    # the same files elsewhere are the same data: the finished column is kept
    import shutil

    moved = shutil.copytree(pairs, tmp_path / "moved")
    again = TableRun(TINY, moved, tmp_path / "out")
    assert again.run([PRETRAINED]).columns == run.results.columns


def _as_written_by_an_earlier_version(run: TableRun) -> None:
    """Rewrite ``run``'s folder as versions without the data's identity left it."""
    path = run.out_dir / "results.json"
    saved = json.loads(path.read_text())
    del saved["fingerprint"]["data"], saved["data"]["identity"]
    path.write_text(json.dumps(saved))
    new = run.runner.self_supervised_checkpoints()
    if new.exists():
        new.rename(run.runner.self_supervised_checkpoints(without_data=True))


def test_results_of_an_earlier_version_are_resumed_on_the_same_data_only(pairs, tmp_path):
    from finetuner_selfsup.experiments.reproduce.columns import PRETRAINED

    settings = TINY.replace(ssl_epochs=1)
    run = TableRun(settings, pairs, tmp_path)
    run.run([PRETRAINED])
    run.runner.self_supervised_pretraining(run.ssl_split.pretrain)
    _as_written_by_an_earlier_version(run)

    resumed = TableRun(settings, pairs, tmp_path)
    assert resumed.results.columns == run.results.columns
    assert resumed.results.data["identity"] == run.data_identity
    assert json.loads((tmp_path / "results.json").read_text())["fingerprint"]["data"] == run.data_identity
    # its self-supervised checkpoints are resumed under their new name: no batch is trained
    assert resumed.runner.self_supervised_checkpoints().is_dir()
    resumed.runner.self_supervised_pretraining(resumed.ssl_split.pretrain)
    assert resumed.runner.recorders[f"{SELF_SUPERVISED}/pre-training"].losses == []

    _as_written_by_an_earlier_version(resumed)
    fewer = make_demo_pairs(tmp_path / "fewer", num_pairs=20, image_size=(32, 32), seed=0)
    with pytest.raises(ValueError, match=r"written by an earlier version .* differing: pairs 30 \(now 20\).*"
                                         r"use another output folder \(--out\), or delete .*results.json to start over"):
        TableRun(settings, fewer, tmp_path)


def test_cli_demo_refuses_a_folder_of_another_number_of_pairs(tmp_path, capsys):
    out = str(tmp_path / "out")
    common = ["demo", "--out", out, "--image-size", "32", "--columns", "pre-trained"]
    assert main(common + ["--pairs", "20"]) == 0
    assert main(common + ["--pairs", "30"]) == 2
    assert "results computed on other data (20 pairs" in capsys.readouterr().err
    assert json.loads((tmp_path / "out" / "results.json").read_text())["data"]["pairs"] == 20


def test_a_resumed_folder_says_which_command_computed_which_column(pairs, tmp_path, monkeypatch):
    from finetuner_selfsup.experiments.reproduce.columns import PRETRAINED

    TableRun(TINY, pairs, tmp_path, command="first command").run([PRETRAINED])
    # resumed on another machine
    monkeypatch.setattr("finetuner_selfsup.experiments.reproduce.runner.describe_environment", lambda device: {"machine": "other"})
    TableRun(TINY.replace(eval_batch_size=7), pairs, tmp_path, command="second command").run([PRETRAINED, LABELS_ONLY])
    TableRun(TINY, pairs, tmp_path, command="third command").run([PRETRAINED])  # computes nothing

    saved = json.loads((tmp_path / "results.json").read_text())
    # settings, environment and command are the first command's, which created the folder
    assert saved["command"] == "first command" and saved["environment"] != {"machine": "other"}
    assert [each["command"] for each in saved["invocations"]] == ["first command", "second command"]
    assert saved["invocations"][0]["environment"] == saved["environment"]
    first, second = saved["columns"][PRETRAINED], saved["columns"][LABELS_ONLY]
    assert (first["command"], first["invocation"]) == ("first command", 0)
    assert (second["command"], second["invocation"]) == ("second command", 1)
    assert saved["invocations"][1]["environment"] == {"machine": "other"}
    assert saved["invocations"][1]["settings"] == {"device": "cpu", "num_workers": 0, "eval_batch_size": 7}
    assert saved["settings"]["eval_batch_size"] == TINY.eval_batch_size

    markdown = (tmp_path / "results.md").read_text()
    assert "Produced by: `" not in markdown
    assert f"- `first command`: {PRETRAINED}\n- `second command`: {LABELS_ONLY}\n" in markdown
    assert f"### Environment of `second command` ({LABELS_ONLY})" in markdown and '"machine": "other"' in markdown


def test_results_md_names_one_command_and_marks_columns_of_earlier_versions():
    from finetuner_selfsup.experiments.reproduce.columns import PRETRAINED
    from finetuner_selfsup.experiments.reproduce.report import render_markdown
    from finetuner_selfsup.experiments.reproduce.results_file import TableResults

    results = TableResults(settings={}, data={}, environment={}, command="created it")
    assert "Produced by: `created it`" in render_markdown(results, (1,), "t", "this run")
    results.columns[PRETRAINED] = {"metrics": {"hit@1": 0.5}, "wall_seconds": 1.0}  # an earlier version's
    assert "Produced by: `created it`" in render_markdown(results, (1,), "t", "this run")
    results.columns[LABELS_ONLY] = {"metrics": {"hit@1": 0.5}, "wall_seconds": 1.0, "command": "this run"}
    page = render_markdown(results, (1,), "t", "this run")
    assert f"- not recorded (by an earlier version): {PRETRAINED}\n- `this run`: {LABELS_ONLY}" in page


def test_columns_help_names_every_column():
    from finetuner_selfsup.cli import build_parser

    demo = build_parser()._subparsers._group_actions[0].choices["demo"]
    (columns,) = [action for action in demo._actions if action.dest == "columns"]
    text = columns.help % {}
    assert "all five" in text and len(COLUMNS) == 5
    assert all(repr(column) in text for column in COLUMNS)


def test_evaluation_and_every_embedding_use_the_num_workers_setting(pairs, tmp_path, monkeypatch):
    """Evaluation, the example grid, label selection, early stopping's validation and the
    pseudo-pairs embed images in a DataLoader like training: with --num-workers N workers."""
    import inspect

    from finetuner_selfsup import evaluation
    from finetuner_selfsup.experiments.reproduce.columns import ColumnRunner
    from finetuner_selfsup.experiments.reproduce.early_stopping import BestEpochKeeper

    real, seen = evaluation.embed_documents, []

    def embed_documents(*args, **kwargs):
        bound = inspect.signature(real).bind(*args, **kwargs)
        bound.apply_defaults()
        seen.append(bound.arguments["num_workers"])
        bound.arguments["num_workers"] = 0  # no worker processes in the test
        return real(*bound.args, **bound.kwargs)

    for module in ("finetuner_selfsup.evaluation", "finetuner_selfsup.experiments.reproduce.runner",
                   "finetuner_selfsup.experiments.reproduce.pseudo_pairs"):
        monkeypatch.setattr(f"{module}.embed_documents", embed_documents)
    settings = TINY.replace(num_workers=2, label_selection="typical", recipe="pseudo-pairs")
    run = TableRun(settings, pairs, tmp_path)
    model = run.runner.pretrained()
    run.evaluate(model)
    assert seen == [2, 2]  # queries and index
    run.runner.self_supervised_only = lambda pretrain: model  # no training: only the embedding matters
    run.labelled_split()
    run.save_examples(tmp_path / "examples.png", column="pre-trained", num_queries=2)
    BestEpochKeeper((run.ssl_split.eval_left, run.ssl_split.eval_right), run.runner.plain_images, settings).score(model)
    runner = ColumnRunner(settings, tmp_path / "checkpoints")
    runner._self_supervised_finetune = lambda model, *rest: model  # the fine-tunes around the pairing
    runner._pseudo_paired_finetune(model, run.ssl_split.pretrain, run.ssl_split.finetune)
    assert len(seen) == 2 + 1 + 2 + 2 + 2 and set(seen) == {2}
