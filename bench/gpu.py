"""All GPU measurements of the fast engine in one process, within about 8 minutes.

1. model-only bound: the tutorial's model (ResNet-50 + 2-layer head, 224 px), batch 512
   views, NT-Xent, bf16 autocast, channels-last, fused Adam, on ready tensors;
2. augmentation alone on the GPU: SimCLR views/s from uint8 TLL-size sources, as a
   multiple of what the model consumes (target >= 5x);
3. the tutorial's ``ft.fit`` call unchanged (ResNet-50 from scratch, batch 512, 224 px,
   ``vision_preprocessor()``) on ``--images`` generated TLL-size JPEGs: views/s after the
   first epoch as a share of the bound (target >= 0.85), and the 50-epoch time projected
   as first epoch + 49 steady ones (target <= 6 min on one H100);
4. Finetuner 0.4.1's own ``fit`` with the same call (its uint8 output made float, as
   FACTS.md says) on ``--upstream-images`` images, in a subprocess with the plugin off:
   our views/s as a multiple of its (target >= 10x);
0. first, the data-parallel helpers over NCCL in a process group of one (issue 5's
   one-GPU check).

Peak GPU memory and peak RSS are printed for each. ``--device cpu --images 64 --side 64``
is a smoke test of this script on a machine without a GPU.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as H  # noqa: E402

RESULTS: dict = {}


def report(name: str, **values) -> None:
    RESULTS[name] = values
    print(f"RESULT {name} {json.dumps(values)}", flush=True)


def synchronize(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def gpu_memory_gb(device) -> float:
    import torch

    return round(torch.cuda.max_memory_allocated() / 1024**3, 2) if device.type == "cuda" else 0.0


def reset_memory(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def tutorial_model():
    import torch
    import torchvision

    torch.manual_seed(0)
    return torchvision.models.resnet50(weights=None)


def model_only(args, device) -> float:
    import torch
    from torch import nn

    from finetuner_selfsup.heads import ProjectionHead
    from finetuner_selfsup.losses import NTXentLoss

    reset_memory(device)
    backbone = tutorial_model()
    backbone.fc = nn.Identity()
    model = nn.Sequential(backbone, ProjectionHead(in_features=2048, output_dim=1024, num_layers=2)).to(device)
    model = model.to(memory_format=torch.channels_last)
    fused = {"fused": True} if device.type == "cuda" else {}
    optimizer = torch.optim.Adam(model.parameters(), 1e-3, **fused)
    loss_fn = NTXentLoss(temperature=0.1)
    x = torch.randn(args.batch, 3, args.side, args.side, device=device).contiguous(memory_format=torch.channels_last)
    labels = torch.arange(args.batch // 2, device=device).repeat(2)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32

    def step():
        with torch.autocast(device.type, dtype=dtype, enabled=device.type == "cuda"):
            z = model(x)
        loss = loss_fn(z.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(3):
        step()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    synchronize(device)
    rate = args.batch * args.steps / (time.perf_counter() - start)
    report("model_only_bound", views_per_s=round(rate, 1), gpu_peak_gb=gpu_memory_gb(device))
    return rate


def augmentation_alone(args, device, bound: float) -> None:
    import torch

    from finetuner_selfsup.augment.batched import BatchedSimCLRAugmentation, SourceBatch
    from finetuner_selfsup.augment.simclr import SimCLRAugmentation
    from finetuner_selfsup.augment.preprocessor import IMAGENET_MEAN, IMAGENET_STD

    reset_memory(device)
    g = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (3, 245, 200), dtype=torch.uint8, generator=g) for _ in range(args.batch // 2)]
    sources = SourceBatch.from_images(images).to(device)
    augment = BatchedSimCLRAugmentation(SimCLRAugmentation(args.side, args.side))
    normalize = (IMAGENET_MEAN, IMAGENET_STD)
    for _ in range(3):
        augment(sources, 2, normalize=normalize)
    synchronize(device)
    start = time.perf_counter()
    for _ in range(args.steps):
        augment(sources, 2, normalize=normalize)
    synchronize(device)
    rate = args.batch * args.steps / (time.perf_counter() - start)
    report("augmentation_alone", views_per_s=round(rate, 1), times_model_consumption=round(rate / bound, 2),
           gpu_peak_gb=gpu_memory_gb(device))


def ours_end_to_end(args, device, bound: float) -> float:
    import finetuner as ft
    from finetuner.tailor.pytorch.projection_head import ProjectionHead
    from finetuner.tuner.augmentation import vision_preprocessor
    from finetuner.tuner.pytorch.losses import NTXentLoss

    reset_memory(device)
    docs = H.jpeg_documents(args.data, args.images)
    clock = H.EpochClock()
    layer = "adaptiveavgpool2d_173"
    optimiser = {}

    class RecordOptimiser:  # which optimiser the tutorial's call gets on the GPU
        def __getattr__(self, name):
            return lambda tuner, **kwargs: None

        def on_train_batch_begin(self, tuner):
            optimiser.update(kind=type(tuner._optimizer).__name__,
                             fused=bool(tuner._optimizer.defaults.get("fused")))

    ft.fit(
        model=tutorial_model(), train_data=docs, epochs=args.epochs, batch_size=args.batch,
        loss=NTXentLoss(temperature=0.1), device=str(device), preprocess_fn=vision_preprocessor(args.side, args.side),
        to_embedding_model=True, input_size=(3, args.side, args.side), layer_name=layer, freeze=False,
        projection_head=ProjectionHead(in_features=2048, output_dim=1024, num_layers=2),
        callbacks=[clock.as_callback(), RecordOptimiser()],
    )
    steady = H.throughput(2 * args.images, clock.times)
    first, rest = clock.times[0], min(clock.times[1:])
    projected = first + 49 * (2 * args.images / steady["views_per_s"])
    report("ours_tutorial_call", views_per_s=round(steady["views_per_s"], 1),
           share_of_bound=round(steady["views_per_s"] / bound, 3), epoch_s=steady["epoch_s"],
           projected_50_epochs_s=round(projected, 1), images=args.images,
           gpu_peak_gb=gpu_memory_gb(device), peak_rss_mb=round(H.peak_rss_mb(), 1),
           optimiser=optimiser.get("kind"), fused=optimiser.get("fused"))
    return steady["views_per_s"]


UPSTREAM = r'''
import json, sys, torchvision, torch
sys.path.insert(0, sys.argv[1])
import _harness as H
import finetuner as ft
from finetuner.tailor.pytorch.projection_head import ProjectionHead
from finetuner.tuner.pytorch.losses import NTXentLoss
args = json.loads(sys.argv[2])
docs = H.jpeg_documents(__import__("pathlib").Path(args["data"]), args["images"])
clock = H.EpochClock()
torch.manual_seed(0)
ft.fit(model=torchvision.models.resnet50(weights=None), train_data=docs, epochs=2, batch_size=args["batch"],
       loss=NTXentLoss(temperature=0.1), device=args["device"],
       preprocess_fn=H.finetuner_041_preprocess(args["side"]), to_embedding_model=True,
       input_size=(3, args["side"], args["side"]), layer_name="adaptiveavgpool2d_173", freeze=False,
       projection_head=ProjectionHead(in_features=2048, output_dim=1024, num_layers=2), callbacks=[clock.as_callback()])
print("UPSTREAM " + json.dumps({"epoch_s": clock.times, "views_per_s": 2 * args["images"] / clock.times[-1]}))
'''


def upstream(args, device, ours: float) -> None:
    env = dict(os.environ, FINETUNER_SELFSUP_DISABLE="1")
    spec = {"data": str(args.data), "images": args.upstream_images, "side": args.side,
            "batch": min(args.batch, 2 * args.upstream_images), "device": str(device)}
    process = subprocess.run([sys.executable, "-c", UPSTREAM, str(Path(__file__).parent), json.dumps(spec)],
                             env=env, capture_output=True, text=True, timeout=args.upstream_timeout)
    lines = [l for l in process.stdout.splitlines() if l.startswith("UPSTREAM ")]
    if not lines:
        report("finetuner_0_4_1", error=(process.stderr or process.stdout)[-1500:])
        return
    result = json.loads(lines[-1][len("UPSTREAM "):])
    report("finetuner_0_4_1", views_per_s=round(result["views_per_s"], 1), epoch_s=result["epoch_s"],
           images=args.upstream_images, ours_times_upstream=round(ours / result["views_per_s"], 2))


def collectives_check(device) -> None:
    """Issue 5's one-GPU check: our data-parallel helpers over NCCL (gloo on the CPU) in a
    process group of one -- gather with gradients, DDP step, flag/loss/module broadcasts."""
    import socket

    import torch
    import torch.distributed as dist
    from torch import nn

    from finetuner_selfsup import distributed as fd

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    backend = "nccl" if device.type == "cuda" else "gloo"
    try:
        dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
        z = torch.randn(6, 4, device=device, requires_grad=True)
        gathered, offset = fd.all_gather_with_grad(z)
        gathered.sum().backward()
        model = nn.Linear(4, 2).to(device)
        ddp = nn.parallel.DistributedDataParallel(model, device_ids=[device.index or 0] if device.type == "cuda" else None)
        ddp(torch.randn(3, 4, device=device)).sum().backward()
        fd.broadcast_module(model)
        ok = (torch.equal(gathered, z) and offset == 0 and torch.equal(z.grad, torch.ones_like(z))
              and fd.broadcast_flag(True, device) and abs(fd.all_reduce_mean(2.5, device) - 2.5) < 1e-12
              and model.weight.grad is not None)
        report("collectives_one_process", backend=backend, ok=bool(ok))
    except Exception as exc:  # reported, not fatal: the other measurements stand
        report("collectives_one_process", backend=backend, error=f"{type(exc).__name__}: {exc}"[:500])
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--side", type=int, default=224)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--images", type=int, default=8422, help="TLL's 70 %% split: 2 x 4211 images")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--upstream-images", type=int, default=1024)
    parser.add_argument("--upstream-timeout", type=int, default=200)
    parser.add_argument("--data", type=Path, default=H.DEFAULT_DATA)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    import torch

    device = torch.device(args.device)
    info = {"torch": torch.__version__, "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu"}
    report("environment", **info)
    collectives_check(device)
    bound = model_only(args, device)
    augmentation_alone(args, device, bound)
    ours = ours_end_to_end(args, device, bound)
    upstream(args, device, ours)
    if args.json:
        args.json.write_text(json.dumps(RESULTS, indent=1))


if __name__ == "__main__":
    main()
