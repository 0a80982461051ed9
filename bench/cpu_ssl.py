"""End-to-end self-supervised training, CPU: ResNet-18 at 64 px, 64 images x 2 views a batch.

SimCLR training (NT-Xent, SimCLR v1's 2-layer head, Adam) from TLL-size JPEGs; views per
second from the second epoch on. The anchor is the *model-only bound*: forward, backward
and Adam on ready tensors, nothing else -- an input pipeline fully hidden would reach it.

Configurations:

* ``model-only``: the bound, float32, default (contiguous) layout -- the anchor;
* ``model-only-channels-last``: the same in channels-last layout;
* ``model-only-kept-memory``: the bound with the malloc setting the engine applies on the
  CPU (freed buffers kept for reuse, :mod:`finetuner_selfsup.engine.host_memory`), so
  the engine's own effect on the model step is separated from hiding the input pipeline;
* ``ours``: the tutorial's call, ``ft.fit(..., preprocess_fn=vision_preprocessor(64, 64))``,
  default settings (float32; on the CPU the default layout and freed memory kept for reuse);
* ``ours-bf16``: the same with ``precision='bf16'`` (bfloat16 autocast; CPUs with
  AVX-512-BF16/AMX);
* ``finetuner-0.4.1``: Finetuner 0.4.1's own ``fit`` and ``vision_preprocessor`` (its
  uint8 output converted to float, as FACTS.md says);
* ``lightly``: lightly's SimCLR recipe (``SimCLRTransform(input_size=64)``, its
  ``NTXentLoss``), JPEG decoded per access, torch DataLoader in the main process.

Run: ``python bench/cpu_ssl.py`` (needs ``pip install ".[bench]"``).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as H  # noqa: E402

IMAGES = 256
BATCH = 128  # views: 64 images x 2
SIDE = 64
EPOCHS = 4


def run_model_only(args, channels_last: bool = False, kept_memory: bool = False):
    import torch

    if kept_memory:
        from finetuner_selfsup.engine.host_memory import keep_freed_host_memory

        if not keep_freed_host_memory():
            raise SystemExit("model-only-kept-memory: the malloc setting is not available here")

    from finetuner_selfsup.losses import NTXentLoss

    model = H.resnet18_with_head()
    loss_fn = NTXentLoss(temperature=0.5)
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    inputs = torch.randn(BATCH, 3, SIDE, SIDE)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    labels = torch.arange(BATCH // 2).repeat(2)
    times = []
    for _ in range(EPOCHS):
        start = time.perf_counter()
        for _ in range(IMAGES * 2 // BATCH):
            loss = loss_fn(model(inputs), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        times.append(time.perf_counter() - start)
    return H.throughput(2 * IMAGES, times)


def run_ours(args, precision: str = "auto"):
    import finetuner as ft
    from finetuner.tuner.augmentation import vision_preprocessor
    from finetuner.tuner.pytorch.losses import NTXentLoss

    clock = H.EpochClock()
    ft.fit(
        H.resnet18_with_head(), H.jpeg_documents(args.data, IMAGES), epochs=EPOCHS, batch_size=BATCH,
        loss=NTXentLoss(temperature=0.5), preprocess_fn=vision_preprocessor(SIDE, SIDE),
        callbacks=[clock.as_callback()], precision=precision,
    )
    return H.throughput(2 * IMAGES, clock.times)


def run_finetuner(args):
    import finetuner as ft
    from finetuner.tuner.pytorch.losses import NTXentLoss

    preprocess = H.finetuner_041_preprocess(SIDE)

    clock = H.EpochClock()
    ft.fit(
        H.resnet18_with_head(), H.jpeg_documents(args.data, IMAGES), epochs=EPOCHS, batch_size=BATCH,
        loss=NTXentLoss(temperature=0.5), preprocess_fn=preprocess, callbacks=[clock.as_callback()],
    )
    return H.throughput(2 * IMAGES, clock.times)


def run_lightly(args):
    times = H.lightly_recipe(H.make_jpegs(args.data, IMAGES), SIDE, BATCH // 2, EPOCHS, H.resnet18_with_head())
    return H.throughput(2 * IMAGES, times)


CONFIGS = {
    "model-only": run_model_only,
    "model-only-channels-last": lambda args: run_model_only(args, channels_last=True),
    "model-only-kept-memory": lambda args: run_model_only(args, kept_memory=True),
    "ours": run_ours,
    "ours-bf16": lambda args: run_ours(args, precision="bf16"),
    "finetuner-0.4.1": run_finetuner,
    "lightly": run_lightly,
}


if __name__ == "__main__":
    H.main(
        f"CPU self-supervised training: ResNet-18, {SIDE} px, {BATCH // 2} images x 2 views a batch",
        CONFIGS, anchor="model-only", upstream=("finetuner-0.4.1",),
    )
