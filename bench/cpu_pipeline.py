"""Input pipeline alone, CPU: SimCLR views per second at 224 px from TLL-size JPEGs.

The model is a near-free linear map on a 4x4 pooled image, so the input pipeline is the
bottleneck; every configuration trains it with NT-Xent for a few epochs, in one process
(``num_workers=0``), and is timed from the second epoch on (the first one decodes).

Configurations:

* ``ours``: ``ft.fit(..., preprocess_fn=vision_preprocessor())`` -- the tutorial's call
  (decode once, batched views);
* ``ours-per-view``: the same augmentation called view by view (a plain function
  around ``vision_preprocessor()``, which the engine cannot batch): the naive torchvision v2 pipeline on
  cached uint8 tensors;
* ``finetuner-0.4.1``: Finetuner 0.4.1's own ``fit`` and ``vision_preprocessor``
  (albumentations 1.3 on OpenCV, the decoded image cached on the document), made
  runnable: its uint8 output is converted to float (FACTS.md);
* ``lightly``: lightly's ``SimCLRTransform`` on a JPEG decoded per access, a torch
  DataLoader, the same model and loss;
* ``ours-malloc-as-is``: ``ours`` with ``FINETUNER_SELFSUP_MALLOC_TUNING=0`` (malloc's own
  thresholds: every batch's buffers paged in anew), the engine before it kept freed
  memory for reuse (:mod:`finetuner_selfsup.engine.host_memory`);
* ``ours-eager``: ``ours`` with ``FINETUNER_SELFSUP_COMPILE=0`` (the hue shift in eager
  mode instead of the fused ``torch.compile`` kernel, :mod:`finetuner_selfsup.augment.compiled`);
* ``ours-2-workers``: ``ours`` with ``num_workers=2`` (views made in two worker
  processes, each with its own decode cache) -- beyond the one-process setting.

Run: ``python bench/cpu_pipeline.py`` (needs ``pip install ".[bench]"``).
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as H  # noqa: E402

IMAGES = 512
BATCH = 256  # views
EPOCHS = 4


def cheap_model():
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(48, 32))


def run_ours(args, per_view: bool = False, workers: int = 0):
    import finetuner as ft
    from finetuner.tuner.augmentation import vision_preprocessor
    from finetuner.tuner.pytorch.losses import NTXentLoss

    clock = H.EpochClock()
    preprocess = vision_preprocessor()
    if per_view:
        def preprocess_one(doc, _p=preprocess):  # a plain function: the engine calls it per view
            return _p(doc)
    ft.fit(
        cheap_model(), H.jpeg_documents(args.data, IMAGES), epochs=EPOCHS, batch_size=BATCH, loss=NTXentLoss(),
        preprocess_fn=preprocess_one if per_view else preprocess, callbacks=[clock.as_callback()],
        num_workers=workers,
    )
    return H.throughput(2 * IMAGES, clock.times)


def run_ours_with(variable: str):
    """``ours`` with the environment switch ``variable`` set to 0 (one engine feature off)."""

    def run(args):
        import os

        os.environ[variable] = "0"
        return run_ours(args)

    return run


def run_finetuner(args):
    import finetuner as ft

    preprocess = H.finetuner_041_preprocess(224)

    clock = H.EpochClock()
    ft.fit(
        cheap_model(), H.jpeg_documents(args.data, IMAGES), epochs=EPOCHS, batch_size=BATCH, loss="NTXentLoss",
        preprocess_fn=preprocess, callbacks=[clock.as_callback()],
    )
    return H.throughput(2 * IMAGES, clock.times)


def run_lightly(args):
    times = H.lightly_recipe(H.make_jpegs(args.data, IMAGES), 224, BATCH // 2, EPOCHS, cheap_model())
    return H.throughput(2 * IMAGES, times)


CONFIGS = {
    "finetuner-0.4.1": run_finetuner,
    "ours": run_ours,
    "ours-per-view": lambda args: run_ours(args, per_view=True),
    "ours-malloc-as-is": run_ours_with("FINETUNER_SELFSUP_MALLOC_TUNING"),
    "ours-eager": run_ours_with("FINETUNER_SELFSUP_COMPILE"),
    # not the one-process setting: the same call with num_workers=2
    "ours-2-workers": lambda args: run_ours(args, workers=2),
    "lightly": run_lightly,
}


if __name__ == "__main__":
    H.main(
        f"CPU input pipeline: SimCLR views/s at 224 px from {IMAGES} TLL-size JPEGs, one process",
        CONFIGS, anchor="finetuner-0.4.1", upstream=("finetuner-0.4.1",),
    )
