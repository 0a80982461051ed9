"""The tutorial page's code runs unchanged on a TLL-shaped folder (see tutorial_harness)."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from tll_layout import make_tll_folder
from tutorial_harness import python_blocks, run_blocks, tutorial_substitutions

PAGE = Path(__file__).resolve().parents[2] / "tutorials" / "self-supervised-totally-looks-like" / "index.md"
SEED = Path(__file__).resolve().parents[3] / "shared" / "seed" / "self-supervised-totally-looks-like.md"


def _embed(model: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(batch)


def test_page_carries_the_seed_code_verbatim():
    if not SEED.exists():
        pytest.skip("the seed tutorial is not beside this checkout")
    import re

    def norm(block):
        return [l.rstrip() for l in block.strip().splitlines() if l.strip() and "import TripletEasyHardMiner" not in l]

    seed_blocks = re.findall(r"```(?:python|shell)\n(.*?)```", SEED.read_text(), re.S)
    page_blocks = re.findall(r"```(?:python|shell|bash)\n(.*?)```", PAGE.read_text(), re.S)
    for index, block in enumerate(seed_blocks):
        assert any(norm(block) == norm(p) for p in page_blocks), f"seed block {index} changed"


def test_tutorial_runs_unchanged(tmp_path):
    import finetuner

    assert getattr(finetuner, "__finetuner_selfsup__", False), "plugin is not active"
    make_tll_folder(tmp_path, num_pairs=20)
    blocks = python_blocks(PAGE)
    assert len(blocks) >= 3

    with tutorial_substitutions(epochs=1, self_supervised_batch=8, supervised_batch=4) as calls:
        ns = run_blocks(blocks, tmp_path)

    # the split the tutorial describes
    assert len(ns["train_da"]) == 2 * 14 and len(ns["finetune_da"]) == 2 * 2
    assert len(calls) == 2
    for call in calls:
        assert call["losses"], "a fit trained no batch"
        assert all(math.isfinite(v) for v in call["losses"])

    resnet, tuned, supervised = ns["resnet"], ns["tuned_model"], ns["tuned_model_supervised"]
    batch = torch.randn(2, 3, 224, 224)

    # first fit: head attached (1024-d), backbone reachable and 2048-d, weights trained
    assert _embed(tuned, batch).shape == (2, 1024)
    assert _embed(tuned.embed_model, batch).shape == (2, 2048)
    assert tuned.projection_head is ns["projection_head"]
    assert not torch.equal(tuned.embed_model.conv1.weight, resnet.conv1.weight)
    # the user's resnet itself is untouched (the tailor works on a copy)
    assert resnet.fc.out_features == 1000

    # second fit: head gone, 2048-d, weights moved away from the pre-trained backbone
    assert _embed(supervised, batch).shape == (2, 2048)
    assert not any("projection_head" in name for name, _ in supervised.named_modules())
    assert not torch.equal(supervised.conv1.weight, tuned.embed_model.conv1.weight)

    # the label-choice block: as many distinct left images as pairs to label, all from the
    # first 80 %
    to_label = ns["to_label"]
    candidates = [doc.uri for doc in ns["left_da"][:16]]
    assert len(set(to_label)) == len(to_label) == 2 and set(to_label) <= set(candidates)

    # the labelled documents were prepared by the tutorial's own function
    doc = ns["finetune_da"][0]
    assert doc.tags["finetuner_label"] == Path(doc.uri).name
    assert doc.tensor.shape[0] == 3 and doc.tensor.dtype.name == "float32"
