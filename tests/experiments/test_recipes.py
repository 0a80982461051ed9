"""Fine-tuning recipes (reproduce --recipe): what each changes, checked on tiny runs."""
from __future__ import annotations

import pytest
import torch
from docarray import Document, DocumentArray
from torch import nn

from finetuner_selfsup.experiments.data.demo_pairs import make_demo_pairs
from finetuner_selfsup.experiments.data.tll import LABEL_TAG
from finetuner_selfsup.experiments.reproduce.columns import (
    LABELS_ONLY,
    PSEUDO_PAIRING,
    SELF_SUPERVISED,
    SELF_SUPERVISED_ONLY,
    ColumnRunner,
)
from finetuner_selfsup.experiments.reproduce.early_stopping import BestEpochKeeper, split_validation
from finetuner_selfsup.experiments.reproduce.recipes import Recipe, get_recipe, recipe_names
from finetuner_selfsup.experiments.reproduce.runner import TableRun
from finetuner_selfsup.experiments.reproduce.settings import DEMO

TINY = DEMO.replace(
    image_size=32, ssl_epochs=1, ssl_batch_size=16, head_output_dim=16, finetune_epochs=2,
    finetune_batch_size=4, supervised_epochs=1, supervised_batch_size=8, eval_batch_size=16,
)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    return make_demo_pairs(tmp_path_factory.mktemp("pairs"), num_pairs=60, image_size=(32, 32), seed=0)


def test_recipe_names_and_combinations():
    assert recipe_names() == (
        "tutorial", "head-layer", "contrastive", "frozen-stem", "early-stopping", "semi-supervised",
        "augmented", "interpolated", "pseudo-pairs", "assigned-pairs",
    )
    assert get_recipe("tutorial") == Recipe("tutorial")
    combined = get_recipe("contrastive+early-stopping")
    assert combined.finetune_loss == "contrastive" and combined.validation_share == 0.2
    assert combined.head_blocks_kept == 0 and combined.frozen_modules == ()
    assert get_recipe("best") == get_recipe("semi-supervised")
    with pytest.raises(ValueError, match="unknown recipe 'bogus'"):
        get_recipe("contrastive+bogus")
    with pytest.raises(ValueError, match="finetune_loss"):
        Recipe("x", finetune_loss="hinge")


def _labelled(num_pairs: int) -> DocumentArray:
    left = [Document(uri=f"left/{i:05d}.jpg", tags={LABEL_TAG: f"{i:05d}.jpg"}) for i in range(num_pairs)]
    right = [Document(uri=f"right/{i:05d}.jpg", tags={LABEL_TAG: f"{i:05d}.jpg"}) for i in range(num_pairs)]
    return DocumentArray(left + right)


def test_split_validation_holds_out_whole_pairs_by_label():
    train, (val_left, val_right) = split_validation(_labelled(10), 0.2)
    assert len(train) == 16 and len(val_left) == len(val_right) == 2
    assert [d.uri for d in val_left] == ["left/00008.jpg", "left/00009.jpg"]
    assert [d.uri for d in val_right] == ["right/00008.jpg", "right/00009.jpg"]
    assert not {d.tags[LABEL_TAG] for d in train} & {d.tags[LABEL_TAG] for d in val_left}
    everything = _labelled(10)
    assert split_validation(everything, 0.0) == (everything, None)
    with pytest.raises(ValueError, match="fewer than 2 to train on"):
        split_validation(_labelled(3), 0.5)


def test_split_validation_never_holds_out_pseudo_pairs():
    from finetuner_selfsup.experiments.reproduce.pseudo_pairs import PSEUDO_LABEL_PREFIX

    pseudo = [
        Document(uri=f"{side}/x{i}.jpg", tags={LABEL_TAG: f"{PSEUDO_LABEL_PREFIX}{i}"})
        for i in range(6) for side in ("left", "right")
    ]
    labelled = DocumentArray(list(_labelled(10)) + pseudo)
    train, (val_left, val_right) = split_validation(labelled, 0.2)
    assert [d.uri for d in val_left] == ["left/00008.jpg", "left/00009.jpg"]  # a fifth of the 10 real pairs
    assert [d.uri for d in val_right] == ["right/00008.jpg", "right/00009.jpg"]
    assert len(train) == 16 + 12  # every pseudo-pair trains


class _FakeTuner:
    def __init__(self, model):
        self.embed_model = model
        self.state = type("State", (), {"epoch": 0})()


def test_best_epoch_keeper_restores_the_best_state_including_the_start():
    model = nn.Linear(2, 2)
    keeper = BestEpochKeeper((None, None), None, TINY)
    scores = iter([0.3, 0.5, 0.4])
    keeper.score = lambda m: next(scores)
    tuner = _FakeTuner(model)
    keeper.on_fit_begin(tuner)  # epoch 0: the starting model
    with torch.no_grad():
        model.weight.fill_(1.0)
    keeper.on_train_epoch_end(tuner)  # epoch 1: best
    with torch.no_grad():
        model.weight.fill_(2.0)
    tuner.state.epoch = 1
    keeper.on_train_epoch_end(tuner)  # epoch 2: worse
    assert keeper.restore_best(model) == 1
    assert torch.equal(model.weight, torch.ones(2, 2))

    start = nn.Linear(2, 2)
    original = start.weight.detach().clone()
    keeper = BestEpochKeeper((None, None), None, TINY)
    scores = iter([0.9, 0.1])
    keeper.score = lambda m: next(scores)
    keeper.on_fit_begin(_FakeTuner(start))
    with torch.no_grad():
        start.weight.add_(1.0)
    keeper.on_train_epoch_end(_FakeTuner(start))
    assert keeper.restore_best(start) == 0 and torch.equal(start.weight, original)


def test_head_layer_recipe_fine_tunes_from_the_first_head_block(pairs, tmp_path):
    run = TableRun(TINY.replace(recipe="head-layer"), pairs, tmp_path)
    ssl = run.runner.self_supervised_pretraining(run.ssl_split.pretrain)
    only = run.runner.self_supervised_only(run.ssl_split.pretrain)
    assert isinstance(only, nn.Sequential) and len(only) == 4  # backbone, Linear, BN, ReLU
    assert torch.equal(only[1].weight, ssl.projection_head.head_layers[0].weight)
    assert only(torch.zeros(2, 3, 32, 32)).shape == (2, 512)
    run.run([SELF_SUPERVISED, SELF_SUPERVISED_ONLY])
    # the saved models load back into the right architecture
    path = run.save_examples(tmp_path / "examples.png", column=SELF_SUPERVISED, num_queries=2)
    assert path.exists()
    with pytest.raises(ValueError, match="head has 0"):
        ColumnRunner(TINY.replace(recipe="head-layer", head_layers=1), tmp_path / "x")._starting_model(
            ColumnRunner(TINY.replace(head_layers=1), tmp_path / "y")._with_head()
        )


def test_frozen_stem_recipe_leaves_the_early_layers_untouched(pairs, tmp_path):
    runner = ColumnRunner(TINY.replace(recipe="frozen-stem", finetune_learning_rate=1e-2), tmp_path)
    run = TableRun(TINY, pairs, tmp_path / "split")
    start = runner.cut(runner.backbone())
    tuned = runner.labels_only(run.ssl_split.finetune)
    before, after = start.state_dict(), tuned.state_dict()
    for name in ("conv1.weight", "layer1.0.conv1.weight", "layer2.1.conv2.weight"):
        assert torch.equal(before[name], after[name]), name
    assert not torch.equal(before["layer4.1.conv2.weight"], after["layer4.1.conv2.weight"])


def test_contrastive_and_early_stopping_recipes_run_and_record_the_kept_epoch(pairs, tmp_path):
    run = TableRun(TINY.replace(recipe="contrastive+early-stopping"), pairs, tmp_path)
    results = run.run([LABELS_ONLY])
    kept = results.columns[LABELS_ONLY]["chosen_epoch"]
    assert 0 <= kept <= TINY.finetune_epochs
    expected = "the starting model (epoch 0)" if kept == 0 else f"epoch {kept}"
    assert f"- {LABELS_ONLY}: early stopping kept {expected}" in (tmp_path / "results.md").read_text()
    losses = run.runner.recorders[f"{LABELS_ONLY}/fine-tuning"].losses
    assert losses and all(torch.isfinite(torch.tensor(losses)))
    # NT-Xent over 4 pairs (8 images) starts near log(7), far above a triplet loss's margin
    assert losses[0] > 1.0


def test_semi_supervised_recipe_alternates_both_objectives_on_one_backbone(pairs, tmp_path):
    run = TableRun(TINY.replace(recipe="semi-supervised+early-stopping"), pairs, tmp_path)
    ssl = run.runner.self_supervised_pretraining(run.ssl_split.pretrain)
    tuned = run.runner.self_supervised(run.ssl_split.pretrain, run.ssl_split.finetune)
    recorders = run.runner.recorders
    labelled = recorders[f"{SELF_SUPERVISED}/fine-tuning"]
    unlabelled = recorders[f"{SELF_SUPERVISED}/fine-tuning-contrastive"]
    # one epoch of each per round
    assert len(labelled.epoch_ends) == len(unlabelled.epoch_ends) == TINY.finetune_epochs
    assert 0 <= run.runner.chosen_epochs[SELF_SUPERVISED] <= TINY.finetune_epochs
    # the cached self-supervised model is untouched (the column trains a copy)
    assert not any(
        torch.equal(a, b) for a, b in zip(ssl.embed_model.state_dict().values(), tuned.state_dict().values())
        if a.dtype.is_floating_point and a.numel() > 100
    ) or run.runner.chosen_epochs[SELF_SUPERVISED] == 0
    assert tuned(torch.zeros(2, 3, 32, 32)).shape == (2, 512)


def test_augmented_recipe_fine_tunes_on_fresh_crops_and_flips_without_colour_changes(pairs, tmp_path):
    from finetuner_selfsup.experiments.reproduce.columns import PlainImage, labelled_views

    settings = TINY.replace(recipe="augmented+semi-supervised")
    runner = ColumnRunner(settings, tmp_path)
    views = runner.finetune_images
    assert views.phase == "train"
    aug = views.augmentation
    assert aug.crop_scale == settings.ssl_crop_scale and aug.hflip_p == 0.5
    assert aug.color_jitter_p == aug.grayscale_p == aug.blur_p == 0.0
    assert isinstance(ColumnRunner(TINY, tmp_path).finetune_images, PlainImage)
    # two reads of one image differ (a fresh draw per epoch) but keep its colours: a crop
    # and flip only rearrange pixels, so each channel's mean stays near the plain image's
    doc = Document(uri=str(pairs / "left" / "00000.jpg"))
    torch.manual_seed(0)
    first, second = views(doc), views(doc)
    assert first.shape == second.shape == (3, TINY.image_size, TINY.image_size)
    assert not torch.equal(first, second)
    plain = PlainImage(TINY.image_size)(doc)
    assert torch.allclose(first.mean(dim=(1, 2)), plain.mean(dim=(1, 2)), atol=0.35)
    assert labelled_views(TINY).augmentation.crop_scale == TINY.ssl_crop_scale


def test_augmented_recipe_trains_the_labelled_fits_on_augmented_views(pairs, tmp_path):
    """The recipe's views reach ft.fit: a fine-tune run with them changes the model
    differently from the plain-image fine-tune of the same seed."""
    run = TableRun(TINY, pairs, tmp_path / "split")
    plain = ColumnRunner(TINY, tmp_path / "plain").labels_only(run.ssl_split.finetune)
    augmented = ColumnRunner(TINY.replace(recipe="augmented"), tmp_path / "aug").labels_only(run.ssl_split.finetune)
    weights = "layer4.1.conv2.weight"
    assert not torch.equal(plain.state_dict()[weights], augmented.state_dict()[weights])


def test_interpolated_recipe_moves_the_fine_tuned_weights_back_towards_the_start(pairs, tmp_path):
    """WiSE-FT: the same seeded fine-tune as the tutorial's recipe, then every float weight
    and batch-norm statistic at start + 0.75 * (fine-tuned - start)."""
    run = TableRun(TINY, pairs, tmp_path / "split")
    start = ColumnRunner(TINY, tmp_path / "start").cut(ColumnRunner(TINY, tmp_path / "start").backbone())
    plain = ColumnRunner(TINY, tmp_path / "plain").labels_only(run.ssl_split.finetune)
    mixed = ColumnRunner(TINY.replace(recipe="interpolated"), tmp_path / "mixed").labels_only(run.ssl_split.finetune)
    before, tuned, after = start.state_dict(), plain.state_dict(), mixed.state_dict()
    assert set(after) == set(tuned)
    for name in ("conv1.weight", "layer4.1.conv2.weight", "bn1.running_mean", "layer3.0.bn2.weight"):
        assert not torch.equal(before[name], tuned[name]), name  # the fine-tune moved it
        expected = before[name] + 0.75 * (tuned[name] - before[name])
        torch.testing.assert_close(after[name], expected, rtol=0, atol=1e-6)
    assert torch.equal(after["bn1.num_batches_tracked"], tuned["bn1.num_batches_tracked"])
    with pytest.raises(ValueError, match="interpolation"):
        Recipe("x", interpolation=0.0)


def test_interpolated_semi_supervised_recipe_runs_on_the_shared_backbone(pairs, tmp_path):
    run = TableRun(TINY.replace(recipe="semi-supervised+interpolated"), pairs, tmp_path)
    tuned = run.runner.self_supervised(run.ssl_split.pretrain, run.ssl_split.finetune)
    start = run.runner.self_supervised_only(run.ssl_split.pretrain)
    assert set(tuned.state_dict()) == set(start.state_dict())
    assert tuned(torch.zeros(2, 3, 32, 32)).shape == (2, 512)


def test_pseudo_pairs_recipe_fine_tunes_afresh_on_real_and_matched_pairs(pairs, tmp_path):
    run = TableRun(TINY.replace(recipe="pseudo-pairs"), pairs, tmp_path)
    run.run([SELF_SUPERVISED])
    made = run.runner.pseudo_pairs[SELF_SUPERVISED]
    unlabelled_left = len(run.ssl_split.pretrain) // 2
    assert 0 < len(made) <= unlabelled_left
    assert all("/left/" in left and "/right/" in right for left, right, _ in made)
    assert len({left for left, _, _ in made}) == len({right for _, right, _ in made}) == len(made)
    record = run.results.columns[SELF_SUPERVISED]["pseudo_pairs"]
    assert record["made"] == len(made) and 0 <= record["correct"] <= len(made)
    page = (tmp_path / "results.md").read_text()
    assert f"- {SELF_SUPERVISED}: {len(made)} pseudo-pairs made from the unlabelled images, {record['correct']} of them true pairs" in page
    # two fine-tunes of the recipe's length: the pairing one on the labelled pairs only,
    # the final one on more pairs, so more batches per epoch
    pairing = run.runner.recorders[f"{PSEUDO_PAIRING}/fine-tuning"]
    final = run.runner.recorders[f"{SELF_SUPERVISED}/fine-tuning"]
    assert len(pairing.epoch_ends) == len(final.epoch_ends) == TINY.finetune_epochs
    assert len(final.losses) > len(pairing.losses)
    with pytest.raises(ValueError, match="pseudo_pairs"):
        Recipe("x", pseudo_pairs=1.5)


def test_assigned_pairs_recipe_pairs_every_unlabelled_image_one_to_one(pairs, tmp_path):
    assert get_recipe("assigned-pairs").pseudo_pair_matching == "assignment"
    run = TableRun(TINY.replace(recipe="assigned-pairs"), pairs, tmp_path)
    run.run([SELF_SUPERVISED])
    made = run.runner.pseudo_pairs[SELF_SUPERVISED]
    lefts = {doc.uri for doc in run.ssl_split.pretrain if "/left/" in doc.uri}
    rights = {doc.uri for doc in run.ssl_split.pretrain if "/right/" in doc.uri}
    assert {left for left, _, _ in made} == lefts and {right for _, right, _ in made} == rights
    assert [margin for _, _, margin in made] == sorted((margin for _, _, margin in made), reverse=True)
    with pytest.raises(ValueError, match="pseudo_pair_matching"):
        Recipe("x", pseudo_pairs=1.0, pseudo_pair_matching="greedy")


def test_pseudo_pairs_recipe_refuses_unlabelled_images_without_a_side_before_training(tmp_path):
    runner = ColumnRunner(TINY.replace(recipe="pseudo-pairs"), tmp_path)
    unlabelled = DocumentArray([Document(id="loose", uri=str(tmp_path / "images" / "a.jpg"))])
    with pytest.raises(ValueError, match="'loose'.*'left/' or 'right/'"):
        runner.self_supervised(unlabelled, _labelled(4))
    assert runner._self_supervised_model is None  # nothing was trained


def test_cli_resolves_best_and_rejects_unknown_recipes_before_any_work():
    from finetuner_selfsup.cli import build_parser
    from finetuner_selfsup.cli.experiments import _settings

    args = build_parser().parse_args(["demo", "--recipe", "best"])
    assert _settings(DEMO, args).recipe == "semi-supervised"
    args = build_parser().parse_args(["demo", "--recipe", "contrastive+nonsense"])
    with pytest.raises(ValueError, match="unknown recipe 'nonsense'"):
        _settings(DEMO, args)



def test_cli_help_lists_every_recipe(capsys):
    from finetuner_selfsup.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["demo", "--help"])
    text = " ".join(capsys.readouterr().out.split()).replace("- ", "-")
    for name in recipe_names():
        assert name in text, name


# ---------------------------------------------------------------- the self-supervised stage's settings


@pytest.mark.parametrize(
    "name, crop_scale",
    [("default", (0.5, 1.0)), ("simclr-crop", (0.08, 1.0)), ("crop-0.25", (0.25, 1.0)), ("crop-1", (1.0, 1.0))],
)
def test_ssl_augmentation_names_choose_the_crop_range(name, crop_scale):
    from finetuner_selfsup.experiments.reproduce.columns import self_supervised_views

    views = self_supervised_views(TINY.replace(ssl_augmentation=name))
    assert views.augmentation.crop_scale == crop_scale
    assert (views.height, views.width) == (TINY.image_size, TINY.image_size)


@pytest.mark.parametrize("name", ["crop-0", "crop-1.5", "crop-half", "strong"])
def test_unknown_ssl_augmentation_is_refused_with_the_choices(name):
    from finetuner_selfsup.experiments.reproduce.columns import self_supervised_views

    with pytest.raises(ValueError, match="crop-<smallest share>") as error:
        self_supervised_views(TINY.replace(ssl_augmentation=name))
    assert repr(name) in str(error.value)


def test_ssl_optimizer_names_give_fit_arguments():
    from finetuner_selfsup.optim import LargeBatchRecipe
    from finetuner_selfsup.experiments.reproduce.columns import self_supervised_optimizer

    assert self_supervised_optimizer(TINY) == {}  # the tutorial's call: ft.fit's own default
    adam = self_supervised_optimizer(TINY.replace(ssl_optimizer="adam", ssl_learning_rate=0.01))
    optimizer = adam["configure_optimizer"](nn.Linear(2, 2))
    assert isinstance(optimizer, torch.optim.Adam) and optimizer.param_groups[0]["lr"] == 0.01
    lars = self_supervised_optimizer(TINY.replace(ssl_optimizer="lars", ssl_epochs=20))
    recipe = lars["configure_optimizer"]
    assert isinstance(recipe, LargeBatchRecipe)
    assert (recipe.base_lr, recipe.scaling, recipe.warmup_epochs) == (0.3, "linear", 2)
    with pytest.raises(ValueError, match="ssl_optimizer"):
        self_supervised_optimizer(TINY.replace(ssl_optimizer="sgd"))


@pytest.mark.parametrize("optimizer", ["default", "lars"])
def test_a_learning_rate_the_ssl_optimizer_does_not_use_is_refused(optimizer):
    """'default' and 'lars' set their own learning rate: another ssl_learning_rate would be
    recorded in results.json (and the fingerprint) while training at the same rate."""
    with pytest.raises(ValueError, match=f"ssl_learning_rate=0.5 is not used by ssl_optimizer='{optimizer}'.*"
                                         "only 'adam' and 'adamw-cosine' train at ssl_learning_rate"):
        TINY.replace(ssl_optimizer=optimizer, ssl_learning_rate=0.5).validate()
    assert TINY.replace(ssl_optimizer=optimizer).validate()  # the default rate: what runs recorded
    for used in ("adam", "adamw-cosine"):
        assert TINY.replace(ssl_optimizer=used, ssl_learning_rate=0.5).validate()


def test_results_record_the_crops_that_default_stands_for():
    """'default' has meant other crops in earlier versions: the fingerprint (results-folder
    check and self-supervised checkpoint name) holds the crop range itself."""
    from finetuner_selfsup.augment.preprocessor import DEFAULT_CROP_SCALE

    assert TINY.fingerprint()["ssl_crop_scale"] == list(DEFAULT_CROP_SCALE)
    assert TINY.self_supervised_fingerprint()["ssl_crop_scale"] == list(DEFAULT_CROP_SCALE)
    older = TINY.replace(ssl_augmentation="crop-0.25")
    assert older.self_supervised_fingerprint() != TINY.self_supervised_fingerprint()
