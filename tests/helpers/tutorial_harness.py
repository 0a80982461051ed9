"""Run the tutorial page's Python blocks exactly as written.

The ONE test-only hook (:func:`tutorial_substitutions`) replaces only what cannot run
in a test on a CPU machine without internet, and never edits the code blocks:

* ``torchvision.models.resnet50(pretrained=True)`` -> the same architecture with
  ``weights=None`` (no download),
* ``ft.fit(device='cuda')`` -> ``device='cpu'`` when CUDA is unavailable,
* ``ft.fit`` epochs and batch sizes -> the small values given, so that the run fits a
  test's time,

and records every ``ft.fit`` call's per-batch losses for the assertions.
"""
from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import Any, Dict, Iterator, List

import torch

from finetuner_selfsup.experiments.reproduce.columns import LossRecorder


def python_blocks(markdown_path: Path) -> List[str]:
    """The ```python fenced blocks of a Markdown page, in order, verbatim."""
    return re.findall(r"```python\n(.*?)```", markdown_path.read_text(), re.S)


@contextlib.contextmanager
def tutorial_substitutions(
    epochs: int, self_supervised_batch: int, supervised_batch: int
) -> Iterator[List[Dict[str, Any]]]:
    """Patch what the tutorial cannot do here; yields the list of recorded fit calls."""
    import finetuner
    import torchvision.models

    calls: List[Dict[str, Any]] = []
    real_fit, real_resnet50 = finetuner.fit, torchvision.models.resnet50

    def resnet50_without_download(*args: Any, pretrained: bool = False, **kwargs: Any):
        kwargs.setdefault("weights", None)
        return real_resnet50(*args, **kwargs)

    def scaled_fit(model, train_data, *args: Any, **kwargs: Any):
        labelled = "finetuner_label" in train_data[0].tags
        kwargs["epochs"] = epochs
        kwargs["batch_size"] = supervised_batch if labelled else self_supervised_batch
        if kwargs.get("device", "cpu").startswith("cuda") and not torch.cuda.is_available():
            kwargs["device"] = "cpu"
        recorder = LossRecorder()
        kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), recorder]
        result = real_fit(model, train_data, *args, **kwargs)
        calls.append({"kwargs": kwargs, "losses": recorder.losses, "model": result})
        return result

    finetuner.fit = scaled_fit
    torchvision.models.resnet50 = resnet50_without_download
    try:
        yield calls
    finally:
        finetuner.fit = real_fit
        torchvision.models.resnet50 = real_resnet50


def run_blocks(blocks: List[str], workdir: Path) -> Dict[str, Any]:
    """Execute the blocks in one namespace from ``workdir`` (the tutorial's relative
    globs expect the folder holding ``left/`` and ``right/``); return the namespace."""
    namespace: Dict[str, Any] = {"__name__": "__tutorial__"}
    previous = os.getcwd()
    os.chdir(workdir)
    try:
        for index, block in enumerate(blocks):
            exec(compile(block, f"<tutorial block {index}>", "exec"), namespace)
    finally:
        os.chdir(previous)
    return namespace
